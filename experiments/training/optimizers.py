"""Optimizers, learning-rate schedules and the weight-decay mask.

The default follows the Perceiver IO release: global-norm clipping, then LAMB whose
decoupled weight decay skips biases and normalisation parameters, with a learning rate
that stays constant for the first half of training and then follows a cosine to zero.
All learning rates in the config are given for a batch of 256 and, with
`optimizer.scale_by_batch`, multiplied by `batch_size / 256` (the linear scaling rule).
"""

from typing import Any, Callable, Tuple

import jax
import ml_collections
import optax

from experiments.training import errors
from experiments.training import fused_updates

# A parameter is excluded from weight decay when one of its module path components
# contains one of these (Haiku LayerNorm / BatchNorm / RMSNorm modules) ...
NORM_MODULE_NAMES = ('layer_norm', 'batchnorm', 'batch_norm', 'rms_norm')
# ... or when it is a bias.
BIAS_NAMES = ('b',)
# Trainable position embeddings (`TrainablePositionEncoding`), decayed iff
# `optimizer.decay_pos_embs`.
POS_EMBS_NAMES = ('pos_embs',)

SCHEDULE_TYPES = ('constant_cosine', 'warmup_cosine', 'step', 'constant')
OPTIMIZER_NAMES = ('lamb', 'adamw')


def _path_names(path) -> Tuple[str, ...]:
  names = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      names.append(str(key.key))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      names.append(key.name)
    else:
      names.append(str(getattr(key, 'idx', key)))
  return tuple(names)


def decays(module_name: str, param_name: str, *, decay_pos_embs: bool = True) -> bool:
  """Whether the parameter `module_name/param_name` gets weight decay."""
  modules = module_name.split('/')
  if any(norm in module for module in modules for norm in NORM_MODULE_NAMES):
    return False
  if param_name in BIAS_NAMES:
    return False
  if param_name in POS_EMBS_NAMES:
    return decay_pos_embs
  return True


def weight_decay_mask(params: Any, *, decay_pos_embs: bool = True) -> Any:
  """A tree of bools shaped like Haiku `params`: True where weight decay applies.

  Args:
    params: `{module_path: {param_name: array}}` (any nesting; the last key is the
      parameter name, the ones before it the module path).
    decay_pos_embs: whether trainable position embeddings (`pos_embs`) are decayed.
  """

  def leaf_mask(path, _):
    names = _path_names(path)
    return decays('/'.join(names[:-1]), names[-1], decay_pos_embs=decay_pos_embs)

  return jax.tree_util.tree_map_with_path(leaf_mask, params)


def scaled_lr(value: float, batch_size: int, scale_by_batch: bool) -> float:
  """`value * batch_size / 256` when `scale_by_batch`, else `value`."""
  return value * batch_size / 256 if scale_by_batch else value


def learning_rate_schedule(
  config: ml_collections.ConfigDict, *, num_steps: int, batch_size: int
) -> optax.Schedule:
  """The learning rate at each optimizer step, from `config` (= `config.optimizer`).

  Args:
    config: the optimizer config (`base_lr`, `scale_by_batch`, `schedule.*`).
    num_steps: total training steps.
    batch_size: global batch, for `scale_by_batch`.
  """
  if num_steps <= 0:
    raise ValueError(f'num_steps={num_steps} must be positive.')
  sched = config.schedule
  scale = lambda v: scaled_lr(v, batch_size, config.scale_by_batch)
  peak = scale(config.base_lr)
  end_value = scale(sched.end_value)
  if sched.type not in SCHEDULE_TYPES:
    raise errors.ConfigError(
      f'optimizer.schedule.type={sched.type!r} is not one of {SCHEDULE_TYPES}.'
    )
  warmup_fraction = sched.get('warmup_fraction', 0.0) or 0.0
  if sched.type != 'warmup_cosine' and (sched.warmup_steps or warmup_fraction):
    raise errors.ConfigError(
      f'optimizer.schedule.warmup_steps={sched.warmup_steps} / warmup_fraction='
      f"{warmup_fraction} are only used by the 'warmup_cosine' schedule, not "
      f'{sched.type!r}; set them to 0.'
    )
  if sched.warmup_steps and warmup_fraction:
    raise errors.ConfigError(
      f'Set only one of optimizer.schedule.warmup_steps={sched.warmup_steps} and '
      f'optimizer.schedule.warmup_fraction={warmup_fraction}.'
    )
  if not 0.0 <= warmup_fraction < 1.0:
    raise errors.ConfigError(
      f'optimizer.schedule.warmup_fraction={warmup_fraction} must be in [0, 1).'
    )
  warmup_steps = sched.warmup_steps or int(warmup_fraction * num_steps)

  if sched.type == 'constant':
    return optax.constant_schedule(peak)

  if sched.type == 'constant_cosine':
    if not 0.0 <= sched.constant_fraction <= 1.0:
      raise errors.ConfigError(
        f'optimizer.schedule.constant_fraction='
        f'{sched.constant_fraction} must be in [0, 1].'
      )
    constant_steps = int(sched.constant_fraction * num_steps)
    decay_steps = num_steps - constant_steps
    if decay_steps == 0:
      return optax.constant_schedule(peak)
    cosine = optax.cosine_decay_schedule(
      init_value=peak, decay_steps=decay_steps, alpha=end_value / peak if peak else 0.0
    )
    return optax.join_schedules(
      [optax.constant_schedule(peak), cosine], boundaries=[constant_steps]
    )

  if sched.type == 'warmup_cosine':
    if not 0 <= warmup_steps < num_steps:
      raise errors.ConfigError(
        f'optimizer.schedule.warmup_steps={warmup_steps} must be '
        f'in [0, num_steps={num_steps}).'
      )
    return optax.warmup_cosine_decay_schedule(
      init_value=scale(sched.init_value),
      peak_value=peak,
      warmup_steps=warmup_steps,
      decay_steps=num_steps,
      end_value=end_value,
    )

  # 'step': multiply by decay_rate at each boundary (fractions of training).
  boundaries = tuple(sched.decay_boundaries)
  if list(boundaries) != sorted(boundaries) or any(not 0.0 < b < 1.0 for b in boundaries):
    raise errors.ConfigError(
      f'optimizer.schedule.decay_boundaries={boundaries} must be '
      'increasing fractions of training in (0, 1).'
    )
  steps = [int(b * num_steps) for b in boundaries]
  scales = {}
  for s in steps:  # Boundaries that round to the same step compound.
    scales[s] = scales.get(s, 1.0) * sched.decay_rate
  return optax.piecewise_constant_schedule(init_value=peak, boundaries_and_scales=scales)


def make_optimizer(
  config: ml_collections.ConfigDict, *, num_steps: int, batch_size: int
) -> Tuple[optax.GradientTransformation, optax.Schedule]:
  """Clipping + LAMB (or AdamW) with the masked weight decay and the schedule.

  The update is `fused_updates.clipped_adam`: `optax.chain(optax.clip_by_global_norm,
  optax.lamb)` (or `optax.adamw`) in fewer XLA kernels, with the same state.

  Args:
    config: `config.optimizer`.
    num_steps: total training steps (for the schedule).
    batch_size: global batch (for `scale_by_batch`).

  Returns:
    `(optimizer, schedule)`; `schedule(step)` is the learning rate used at `step`.
  """
  if config.name not in OPTIMIZER_NAMES:
    raise errors.ConfigError(
      f'optimizer.name={config.name!r} is not one of {OPTIMIZER_NAMES}.'
    )
  schedule = learning_rate_schedule(config, num_steps=num_steps, batch_size=batch_size)
  mask: Callable[[Any], Any] = lambda params: weight_decay_mask(
    params, decay_pos_embs=config.decay_pos_embs
  )
  optimizer = fused_updates.clipped_adam(
    schedule,
    b1=config.b1,
    b2=config.b2,
    eps=config.eps,
    weight_decay=config.weight_decay,
    mask=mask,
    trust_ratio=config.name == 'lamb',
    max_norm=config.max_norm if config.max_norm > 0 else None,
  )
  return optimizer, schedule
