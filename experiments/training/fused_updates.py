"""Clipped LAMB and AdamW in one pass per parameter, with optax's state layout.

`optax.chain(optax.clip_by_global_norm(m), optax.lamb(...))` composes five
transformations, each mapped over every parameter: each norm is computed twice
(`safe_norm`), and the scalar square roots, trust ratios and learning-rate schedule
become kernels of their own per parameter. `clipped_adam` computes the same update
written as one function of each parameter's gradient, moments and value, which XLA
compiles into far fewer kernels (docs/performance.md has the counts and timings).

The arithmetic is optax's, operation for operation; under `jax.jit` the tests find the
updates and states bit-identical to optax's. Inside a whole train step the norms are
summed in another order and XLA fuses the update differently, so the two can differ by
float rounding. The state is the one
`optax.chain(optax.clip_by_global_norm(...), optax.lamb(...))` (or `optax.adamw`)
creates, leaf for leaf, so checkpoints written with either continue with the other.
"""

from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import optax

ScalarOrSchedule = Union[float, Callable[[jax.Array], jax.Array]]
MaskOrFn = Optional[Union[Any, Callable[[Any], Any]]]


def sum_scalars(values: Sequence[jax.Array]) -> jax.Array:
  """The sum of float scalars, as one XLA reduction.

  XLA simplifies a Python sum of scalars (and the reduction of their concatenation)
  into a chain of scalar adds, then copies the chain into every fusion that reads the
  result. Summing the ~100 per-parameter squares of a Perceiver's gradients and using
  the total in each parameter's update (clipping, the finiteness guard) compiled into
  ~100 x 100 scalar adds: seconds of LLVM time. A reduction over a padded `[rows, 16]`
  matrix stays one kernel whose scalar result the consumers read.
  """
  values = [jnp.asarray(v) for v in values]
  if not values:
    return jnp.zeros([], jnp.float32)
  stacked = jnp.stack(values)  # [n]
  columns = 16
  rows = -(-stacked.shape[0] // columns)
  stacked = jnp.pad(stacked, (0, rows * columns - stacked.shape[0]))
  return jnp.sum(jnp.sum(stacked.reshape(rows, columns), axis=1))


def _squared_norm(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.sum(jnp.square(x))


def global_norm(tree: Any) -> jax.Array:
  """`sqrt(sum of squares)` over every leaf of `tree`, accumulated in float32 (or
  the leaves' wider type)."""
  return jnp.sqrt(sum_scalars([_squared_norm(x) for x in jax.tree.leaves(tree)]))


def _reference_chain(
  learning_rate, b1, b2, eps, eps_root, weight_decay, mask, trust_ratio, max_norm
):
  core = (optax.lamb if trust_ratio else optax.adamw)(
    learning_rate=learning_rate,
    b1=b1,
    b2=b2,
    eps=eps,
    eps_root=eps_root,
    weight_decay=weight_decay,
    mask=mask,
  )
  if max_norm is None:
    return core
  return optax.chain(optax.clip_by_global_norm(max_norm), core)


def _find(state, kind):
  if isinstance(state, kind):
    return [state]
  if isinstance(state, (tuple, list)) and not hasattr(state, '_fields'):
    return [found for s in state for found in _find(s, kind)]
  return []


def _replace(state, adam_state, schedule_state):
  if isinstance(state, optax.ScaleByAdamState):
    return adam_state
  if isinstance(state, optax.ScaleByScheduleState):
    return schedule_state
  if isinstance(state, (tuple, list)) and not hasattr(state, '_fields'):
    return type(state)(_replace(s, adam_state, schedule_state) for s in state)
  return state


def _safe_increment(count: jax.Array) -> jax.Array:
  max_value = jnp.array(jnp.iinfo(count.dtype).max, count.dtype)
  return jnp.where(count < max_value, count + 1, max_value)


def clipped_adam(
  learning_rate: ScalarOrSchedule,
  *,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-6,
  eps_root: float = 0.0,
  weight_decay: float = 0.0,
  mask: MaskOrFn = None,
  trust_ratio: bool = True,
  max_norm: Optional[float] = None,
) -> optax.GradientTransformation:
  """Global-norm clipping, Adam moments, decoupled weight decay, LAMB trust ratio.

  Computes `optax.chain(optax.clip_by_global_norm(max_norm), optax.lamb(
  learning_rate, b1, b2, eps, eps_root, weight_decay, mask))` with
  `trust_ratio=True`, the same with `optax.adamw` with `trust_ratio=False`; with
  `max_norm=None`, no clipping (the chain without its first element).

  Args:
    learning_rate: a float or a schedule `count -> lr` (evaluated, as
      `optax.scale_by_learning_rate` does, at the number of updates applied before).
    b1, b2, eps, eps_root: Adam's moment decays and denominators.
    weight_decay: decoupled weight decay (a float).
    mask: a tree of bools shaped like the parameters, or a function of the
      parameters returning one: True where weight decay applies. None: everywhere.
    trust_ratio: scale each parameter's update by `||param|| / ||update||` (LAMB).
    max_norm: clip gradients to this global norm first (None: no clipping).
  """
  if callable(weight_decay):
    raise ValueError(f'weight_decay={weight_decay!r} must be a float, not a schedule.')
  if max_norm is not None and not max_norm > 0:
    raise ValueError(f'max_norm={max_norm} must be positive (or None for no clipping).')
  reference = _reference_chain(
    learning_rate, b1, b2, eps, eps_root, weight_decay, mask, trust_ratio, max_norm
  )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('clipped_adam needs params (for weight decay and trust ratios).')
    (adam_state,) = _find(state, optax.ScaleByAdamState)
    schedule_states = _find(state, optax.ScaleByScheduleState)
    treedef = jax.tree.structure(params)
    grads = treedef.flatten_up_to(updates)
    param_leaves = treedef.flatten_up_to(params)
    mus = treedef.flatten_up_to(adam_state.mu)
    nus = treedef.flatten_up_to(adam_state.nu)
    if mask is None:
      decays = [True] * len(param_leaves)
    else:
      decays = treedef.flatten_up_to(mask(params) if callable(mask) else mask)

    if max_norm is not None:
      g_norm = global_norm(grads)
      trigger = g_norm < max_norm
      grads = [
        jax.lax.select(trigger, g, (g / g_norm.astype(g.dtype)) * max_norm) for g in grads
      ]
    count_inc = _safe_increment(adam_state.count)
    mu_correction = 1 - b1**count_inc
    nu_correction = 1 - b2**count_inc
    if schedule_states:
      (schedule_state,) = schedule_states
      step_size = -learning_rate(schedule_state.count)
      schedule_state = optax.ScaleByScheduleState(
        count=_safe_increment(schedule_state.count)
      )
    else:
      step_size, schedule_state = -learning_rate, None

    new_updates, new_mus, new_nus = [], [], []
    for g, mu, nu, p, decay in zip(grads, mus, nus, param_leaves, decays):
      mu = (1 - b1) * g + b1 * mu
      nu = (1 - b2) * (g**2) + b2 * nu
      new_mus.append(mu)
      new_nus.append(nu)
      u = (mu / mu_correction.astype(mu.dtype)) / (
        jnp.sqrt(nu / nu_correction.astype(nu.dtype) + eps_root) + eps
      )
      if weight_decay != 0.0 and decay is not False:
        # A Python True adds the decay; a traced mask selects it per parameter.
        u = (
          u + weight_decay * p
          if decay is True
          else jnp.where(decay, u + weight_decay * p, u)
        )
      if trust_ratio:
        param_norm = jnp.sqrt(jnp.sum(jnp.square(p)))
        update_norm = jnp.sqrt(jnp.sum(jnp.square(u)))
        ratio = jnp.where(
          jnp.logical_or(param_norm == 0.0, update_norm == 0.0),
          jnp.array(1.0, dtype=p.dtype),
          param_norm / update_norm,
        )
        u = u * ratio
      new_updates.append(jnp.array(step_size, dtype=u.dtype) * u)

    new_adam_state = optax.ScaleByAdamState(
      count=count_inc,
      mu=jax.tree.unflatten(treedef, new_mus),
      nu=jax.tree.unflatten(treedef, new_nus),
    )
    return (
      jax.tree.unflatten(treedef, new_updates),
      _replace(state, new_adam_state, schedule_state),
    )

  return optax.GradientTransformation(reference.init, update_fn)
