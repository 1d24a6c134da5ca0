"""The train state and the one definition of each step: train, evaluation, gradients.

Each step is a pure function of one device's share of a global batch, `(state, batch,
rng)` once the model, optimizer and task functions are bound with `functools.partial`.
Its collectives name the device axis `parallel.AXIS_NAME`, which a strategy binds
(`strategies.py`): `jax.pmap` over the local devices, or `jax.vmap` over the global
device axis of a batch sharded over a mesh under `jax.jit`. Both run this same code,
so the two strategies give the same keys, the same per-share statistics and the same
update.

Shape glossary:
  G: global device count.
  b: per-device batch.
  k: micro-batches per step (`training.grad_accum_steps`).
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.training import fused_updates
from experiments.training import parallel

Batch = Dict[str, jax.Array]
Metrics = Dict[str, jax.Array]
# (outputs, batch) -> (scalar loss, {name: scalar}).
LossFn = Callable[[Any, Batch], Tuple[jax.Array, Metrics]]
# (outputs, batch) -> {name: [b, ...]}.
OutputsFn = Callable[[Any, Batch], Dict[str, jax.Array]]


class TrainState(NamedTuple):
  """Everything a checkpoint holds.

  Attributes:
    step: int32 scalar, the number of optimizer updates applied so far.
    params: Haiku parameters.
    state: Haiku state (e.g. BatchNorm statistics); `{}` for stateless models.
    opt_state: the optax optimizer state.
  """

  step: jax.Array
  params: hk.Params
  state: hk.State
  opt_state: optax.OptState


def init_train_state(
  model: hk.TransformedWithState,
  optimizer: optax.GradientTransformation,
  batch: Batch,
  rng: jax.Array,
  *,
  initial: Optional[Tuple[hk.Params, hk.State]] = None,
) -> TrainState:
  """The state at step 0, as host NumPy.

  Args:
    model: the task's transformed model.
    optimizer: the optax transformation.
    batch: one device's batch `[b, ...]` (arrays or `jax.ShapeDtypeStruct`s are not
      enough: `init` runs), for the shapes.
    rng: the initialisation key.
    initial: `(params, state)` entries that replace the initialised ones (a subset,
      e.g. from `weights.load`). They are arguments of the jitted initialisation, never
      constants compiled into it, and the optimizer state is initialised from them.
  """
  initial = initial or ({}, {})
  return jax.device_get(_jitted_init(model, optimizer)(rng, batch, initial))


def abstract_train_state(
  model: hk.TransformedWithState, optimizer: optax.GradientTransformation, batch: Batch
) -> TrainState:
  """Zeros shaped like `init_train_state`'s result, without compiling the init.

  A restore target: only the structure, shapes and dtypes matter.
  """

  def init(rng, batch):
    params, state = model.init(rng, batch, is_training=True)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      state=state,
      opt_state=optimizer.init(params),
    )

  shapes = jax.eval_shape(init, jax.random.PRNGKey(0), batch)
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _merge(base, override):
  out = {m: dict(d) for m, d in base.items()}
  for module, entries in override.items():
    out.setdefault(module, {}).update(entries)
  return out


@functools.lru_cache(maxsize=16)
def _jitted_init(model: hk.TransformedWithState, optimizer: optax.GradientTransformation):
  def init(rng, batch, initial):
    params, state = model.init(rng, batch, is_training=True)
    params, state = _merge(params, initial[0]), _merge(state, initial[1])
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      state=state,
      opt_state=optimizer.init(params),
    )

  return jax.jit(init)


def _all_finite(tree: Any) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _micro_batches(batch: Batch, grad_accum_steps: int) -> Batch:
  """`[b, ...]` leaves as `[k, b / k, ...]`: k consecutive micro-batches."""

  def split(x):
    if x.shape[0] % grad_accum_steps:
      raise ValueError(
        f'the per-device batch ({x.shape[0]}) is not divisible by '
        f'config.training.grad_accum_steps={grad_accum_steps}.'
      )
    return x.reshape((grad_accum_steps, x.shape[0] // grad_accum_steps) + x.shape[1:])

  return jax.tree.map(split, batch)


def device_gradients(
  params: hk.Params,
  model_state: hk.State,
  batch: Batch,
  rng: jax.Array,
  step: jax.Array,
  *,
  model: hk.TransformedWithState,
  loss_fn: LossFn,
  grad_accum_steps: int = 1,
) -> Tuple[hk.Params, hk.State, Metrics]:
  """Gradients, new model state and metrics of one device's share, not yet averaged.

  Runs where `parallel.AXIS_NAME` is bound (inside `jax.pmap`, or `jax.vmap` over the
  device axis of a globally sharded batch): the key is folded with `step` and the
  device's global index. With `grad_accum_steps = k > 1` the `b` examples are split
  into `k` consecutive micro-batches of `b / k`, run one after the other (`lax.scan`,
  so activations of one micro-batch live at a time); the model state (e.g. BatchNorm
  moving averages) threads through them, gradients and metrics are their means, and
  micro-batch `i` gets the device key folded with `i`. For a loss that is a mean over
  equally weighted examples and a model without batch statistics or dropout, the
  result equals the `k = 1` one on the whole share (to float rounding).

  Args:
    params: the parameters (the same on every device).
    model_state: Haiku state.
    batch: `[b, ...]` leaves.
    rng: the same key on every device.
    step: the optimizer step (int32 scalar).
    model: the task's transformed model.
    loss_fn: `(outputs, batch) -> (loss, metrics)`.
    grad_accum_steps: `k`, the number of micro-batches.

  Returns:
    `(grads, new_model_state, metrics)` including `loss` in metrics.
  """
  rng = parallel.device_rng(rng, step)

  def objective(params, model_state, batch, rng):
    outputs, new_state = model.apply(params, model_state, rng, batch, is_training=True)
    loss, metrics = loss_fn(outputs, batch)
    return loss, (new_state, metrics)

  grad_fn = jax.grad(objective, has_aux=True)
  if grad_accum_steps == 1:
    grads, (new_state, metrics) = grad_fn(params, model_state, batch, rng)
    return grads, new_state, metrics

  micro = _micro_batches(batch, grad_accum_steps)
  first = jax.tree.map(lambda x: x[0], micro)
  metric_shapes = jax.eval_shape(lambda: grad_fn(params, model_state, first, rng)[1][1])
  zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)

  def body(carry, xs):
    grad_sum, state, metric_sum = carry
    index, micro_batch = xs
    grads, (state, metrics) = grad_fn(
      params, state, micro_batch, jax.random.fold_in(rng, index)
    )
    add = lambda a, b: jax.tree.map(jnp.add, a, b)
    return (add(grad_sum, grads), state, add(metric_sum, metrics)), None

  init = (
    jax.tree.map(jnp.zeros_like, params),
    model_state,
    zeros(metric_shapes),
  )
  (grad_sum, new_state, metric_sum), _ = jax.lax.scan(
    body, init, (jnp.arange(grad_accum_steps), micro)
  )
  mean = lambda tree: jax.tree.map(lambda x: x / grad_accum_steps, tree)
  return mean(grad_sum), new_state, mean(metric_sum)


def apply_gradients(
  train_state: TrainState,
  grads: hk.Params,
  new_state: hk.State,
  metrics: Metrics,
  *,
  optimizer: optax.GradientTransformation,
) -> Tuple[TrainState, Metrics]:
  """One optimizer update from gradients already averaged over every device.

  A non-finite loss or gradient leaves the state unchanged and reports `finite = 0`.
  """
  grad_norm = fused_updates.global_norm(grads)
  # The sum of squares is inf or NaN when any gradient is: one reduction instead of a
  # check per leaf (which XLA compiles into thousands of instructions).
  finite = jnp.logical_and(jnp.isfinite(grad_norm), _all_finite(metrics))

  def update(state):
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      state=new_state,
      opt_state=new_opt_state,
    )

  # A branch rather than a select per leaf: the update writes the donated buffers in
  # place, where a select made XLA copy every optimizer-state leaf first.
  new_train_state = jax.lax.cond(finite, update, lambda state: state, train_state)
  metrics = dict(metrics)
  metrics['grad_norm'] = grad_norm
  metrics['finite'] = finite.astype(jnp.float32)
  return new_train_state, metrics


def _is_float(x) -> bool:
  return jnp.issubdtype(x.dtype, jnp.inexact)


def train_step(
  train_state: TrainState,
  batch: Batch,
  rng: jax.Array,
  *,
  model: hk.TransformedWithState,
  optimizer: optax.GradientTransformation,
  loss_fn: LossFn,
  grad_accum_steps: int = 1,
  constrain: Callable[[Any], Any] = lambda tree: tree,
) -> Tuple[TrainState, Metrics]:
  """One optimizer update from one device's share of the global batch.

  Gradients, metrics and float model state (e.g. moving averages) are averaged over
  every device of every host, so with equal shares the update equals a single-device
  update on the global batch; integer state (counters) agrees on every device already.
  A non-finite loss or gradient leaves the state unchanged and reports `finite = 0`;
  the loop stops on it.

  Args:
    train_state: the state (the same on every device).
    batch: `[b, ...]` leaves.
    rng: the same key on every device; folded with the step and the device index.
    model: the task's transformed model.
    optimizer: the optax transformation.
    loss_fn: `(outputs, batch) -> (loss, metrics)` on this device's examples.
    grad_accum_steps: micro-batches per step (see `device_gradients`).
    constrain: applied to the averaged gradients (the sharded strategy lays them out
      like the parameters there).

  Returns:
    `(new_train_state, metrics)`: metrics are cross-device means and include
    `loss`, `grad_norm` and `finite`.
  """
  grads, new_state, metrics = device_gradients(
    train_state.params,
    train_state.state,
    batch,
    rng,
    train_state.step,
    model=model,
    loss_fn=loss_fn,
    grad_accum_steps=grad_accum_steps,
  )
  grads = constrain(parallel.cross_device_mean(grads))
  new_state = jax.tree.map(
    lambda x: (
      parallel.cross_device_mean(x) if _is_float(x) else parallel.cross_device_max(x)
    ),
    new_state,
  )
  metrics = parallel.cross_device_mean(metrics)
  return apply_gradients(train_state, grads, new_state, metrics, optimizer=optimizer)


def eval_step(
  train_state: TrainState,
  batch: Batch,
  rng: jax.Array,
  *,
  model: hk.TransformedWithState,
  outputs_fn: OutputsFn,
) -> Dict[str, jax.Array]:
  """Per-example evaluation outputs `[b, ...]` for one device's share, plus `mask`."""
  outputs, _ = model.apply(
    train_state.params, train_state.state, rng, batch, is_training=False
  )
  per_example = dict(outputs_fn(outputs, batch))
  per_example['mask'] = batch['mask']
  return per_example
