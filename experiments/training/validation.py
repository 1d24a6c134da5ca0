"""Checks of a run's config before anything is compiled, trained or written.

Every field the loop divides by, indexes with or reads only at the end of training
(the evaluation split and batch) is checked at the start, so that a mistake fails in
seconds with a message naming the field and its value, instead of after the whole
training run (or as a bare ZeroDivisionError).
"""

import types

import jax
import ml_collections

from experiments.training import parallel
from experiments.training import task as task_lib

EVALUATING_MODES = ('eval', 'eval_continuous', 'train_and_eval')
TRAINING_MODES = ('train', 'train_and_eval')


def _positive_int(config: ml_collections.ConfigDict, path: str) -> None:
  value = config
  for part in path.split('.'):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'config.{path}={value!r} must be a positive integer.')


def check_evaluation(config: ml_collections.ConfigDict, task: types.ModuleType) -> None:
  """Checks `evaluation.*`: the batch divides over the devices, the split exists.

  Raises:
    ValueError: naming the field and its value.
  """
  evaluation = config.evaluation
  _positive_int(config, 'evaluation.batch_size')
  parallel.local_batch_dims(evaluation.batch_size, name='config.evaluation.batch_size')
  try:
    num_examples = task.num_examples(evaluation.split, config)
  except (ValueError, KeyError) as e:
    raise ValueError(
      f'config.evaluation.split={evaluation.split!r} cannot be evaluated by task '
      f'{config.task}: {e}'
    ) from e
  if not isinstance(num_examples, int) or num_examples < 1:
    raise ValueError(
      f'config.evaluation.split={evaluation.split!r} of task {config.task} has '
      f'{num_examples!r} examples; nothing to evaluate.'
    )
  if evaluation.get('poll_every_s', 1.0) <= 0:
    raise ValueError(
      f'config.evaluation.poll_every_s={evaluation.poll_every_s!r} must be positive.'
    )


def check_training(config: ml_collections.ConfigDict, task: types.ModuleType) -> int:
  """Checks `training.*` fields; returns the number of training steps.

  Raises:
    ValueError: naming the field and its value.
  """
  training = config.training
  for field in ('batch_size', 'log_every_steps', 'checkpoint_every_steps'):
    _positive_int(config, f'training.{field}')
  _positive_int(config, 'training.keep_checkpoints')
  _, per_device = parallel.local_batch_dims(
    training.batch_size, name='config.training.batch_size'
  )
  accum = training.get('grad_accum_steps', 1)
  if isinstance(accum, bool) or not isinstance(accum, int) or accum < 1:
    raise ValueError(
      f'config.training.grad_accum_steps={accum!r} must be an integer >= 1.'
    )
  if per_device % accum:
    raise ValueError(
      f'the per-device batch {per_device} (config.training.batch_size='
      f'{training.batch_size} over {jax.device_count()} device(s)) is not divisible '
      f'by config.training.grad_accum_steps={accum}.'
    )
  prefetch = training.get('prefetch_to_device', 0)
  if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
    raise ValueError(
      f'config.training.prefetch_to_device={prefetch!r} must be an integer >= 0.'
    )
  check_parallel(config)
  rollbacks = training.get('rollback_on_nonfinite', 0)
  if isinstance(rollbacks, bool) or not isinstance(rollbacks, int) or rollbacks < 0:
    raise ValueError(
      f'config.training.rollback_on_nonfinite={rollbacks!r} must be an integer >= 0.'
    )
  return task_lib.num_train_steps(config, task)


def check_parallel(config: ml_collections.ConfigDict) -> None:
  """Checks `parallel.*` fields.

  Raises:
    ValueError: naming the field and its value.
  """
  section = config.get('parallel', {})
  strategy = section.get('strategy', 'pmap')
  if strategy not in ('pmap', 'sharded'):
    raise ValueError(
      f"config.parallel.strategy={strategy!r} is not one of ('pmap', 'sharded')."
    )
  if section.get('fsdp', False) and strategy != 'sharded':
    raise ValueError(
      'config.parallel.fsdp=True needs config.parallel.strategy=sharded '
      f'(got {strategy!r}).'
    )


def check_config(
  config: ml_collections.ConfigDict, task: types.ModuleType, *, mode: str
) -> None:
  """Checks every field `mode` will use (see `trainer.MODES`).

  Raises:
    ValueError: naming the first bad field and its value.
  """
  if mode in TRAINING_MODES:
    check_training(config, task)
  if mode in EVALUATING_MODES:
    check_evaluation(config, task)
