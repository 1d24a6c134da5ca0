"""The train state and the pure per-device train and evaluation steps.

`train_step` and `eval_step` run on one device's share of a batch inside
`parallel.pmap_step`; they bind the model, optimizer and task functions with
`functools.partial`, leaving `(state, batch, rng)` as the mapped arguments.

Shape glossary:
  b: per-device batch.
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Tuple

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
) -> TrainState:
  """Initialises parameters from one device's batch `[b, ...]`; returns host NumPy."""
  return jax.device_get(_jitted_init(model, optimizer)(rng, batch))


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


@functools.lru_cache(maxsize=16)
def _jitted_init(model: hk.TransformedWithState, optimizer: optax.GradientTransformation):
  def init(rng, batch):
    params, state = model.init(rng, batch, is_training=True)
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


def train_step(
  train_state: TrainState,
  batch: Batch,
  rng: jax.Array,
  *,
  model: hk.TransformedWithState,
  optimizer: optax.GradientTransformation,
  loss_fn: LossFn,
) -> Tuple[TrainState, Metrics]:
  """One optimizer update from one device's share of the global batch.

  Gradients, metrics and model state are averaged over every device, so with equal
  per-device batches the update equals a single-device update on the global batch.
  A non-finite loss or gradient leaves the state unchanged and reports `finite = 0`;
  the loop stops on it.

  Args:
    train_state: this device's replica.
    batch: `[b, ...]` leaves.
    rng: the same key on every device; folded with the step and the device index.
    model: the task's transformed model.
    optimizer: the optax transformation.
    loss_fn: `(outputs, batch) -> (loss, metrics)` on this device's examples.

  Returns:
    `(new_train_state, metrics)`: metrics are cross-device means and include
    `loss`, `grad_norm` and `finite`.
  """
  rng = parallel.device_rng(rng, train_state.step)

  def objective(params):
    outputs, new_state = model.apply(
      params, train_state.state, rng, batch, is_training=True
    )
    loss, metrics = loss_fn(outputs, batch)
    return loss, (new_state, metrics)

  grads, (new_state, metrics) = jax.grad(objective, has_aux=True)(train_state.params)
  grads = parallel.cross_device_mean(grads)
  # Float state (e.g. moving averages) is averaged; integer counters agree already.
  new_state = jax.tree.map(
    lambda x: (
      parallel.cross_device_mean(x) if jnp.issubdtype(x.dtype, jnp.inexact) else x
    ),
    new_state,
  )
  metrics = parallel.cross_device_mean(metrics)

  updates, new_opt_state = optimizer.update(
    grads, train_state.opt_state, train_state.params
  )
  new_params = optax.apply_updates(train_state.params, updates)
  grad_norm = fused_updates.global_norm(grads)
  # The sum of squares is inf or NaN when any gradient is: one reduction instead of a
  # check per leaf (which XLA compiles into thousands of instructions).
  finite = jnp.logical_and(jnp.isfinite(grad_norm), _all_finite(metrics))

  candidate = TrainState(
    step=train_state.step + 1, params=new_params, state=new_state, opt_state=new_opt_state
  )
  new_train_state = jax.tree.map(
    lambda new, old: jnp.where(finite, new, old), candidate, train_state
  )
  metrics = dict(metrics)
  metrics['grad_norm'] = grad_norm
  metrics['finite'] = finite.astype(jnp.float32)
  return new_train_state, metrics


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
