"""Checks of a run's config and workdir before anything is compiled, trained or written.

Every field the loop divides by, indexes with or reads only at the end of training
(the evaluation split and batch) is checked at the start, so that a mistake fails in
seconds with a message naming the field and its value, instead of after the whole
training run (or as a bare ZeroDivisionError). `trainer.run` calls `check_config` once
per run; nothing after it checks the config again.
"""

import os
import tempfile
import types

import jax
import ml_collections

from experiments.training import errors
from experiments.training import parallel
from experiments.training import strategies
from experiments.training import task as task_lib

EVALUATING_MODES = ('eval', 'eval_continuous', 'train_and_eval')
TRAINING_MODES = ('train', 'train_and_eval')


def _positive_int(config: ml_collections.ConfigDict, path: str) -> None:
  value = config
  for part in path.split('.'):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise errors.ConfigError(f'config.{path}={value!r} must be a positive integer.')


def _count(config: ml_collections.ConfigDict, path: str) -> None:
  """An integer >= 0 (not a bool)."""
  value = config
  for part in path.split('.'):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise errors.ConfigError(f'config.{path}={value!r} must be an integer >= 0.')


def check_evaluation(config: ml_collections.ConfigDict, task: types.ModuleType) -> None:
  """Checks `evaluation.*`: the batch divides over the devices, the split exists.

  Raises:
    errors.ConfigError: naming the field and its value.
  """
  evaluation = config.evaluation
  _positive_int(config, 'evaluation.batch_size')
  parallel.local_batch_dims(evaluation.batch_size, name='config.evaluation.batch_size')
  try:
    num_examples = task.num_examples(evaluation.split, config)
  except errors.DataError:
    raise
  except (ValueError, KeyError) as e:
    raise errors.ConfigError(
      f'config.evaluation.split={evaluation.split!r} cannot be evaluated by task '
      f'{config.task}: {e}'
    ) from e
  if not isinstance(num_examples, int) or num_examples < 1:
    raise errors.ConfigError(
      f'config.evaluation.split={evaluation.split!r} of task {config.task} has '
      f'{num_examples!r} examples; nothing to evaluate.'
    )
  if evaluation.poll_every_s <= 0:
    raise errors.ConfigError(
      f'config.evaluation.poll_every_s={evaluation.poll_every_s!r} must be positive.'
    )


def check_training(config: ml_collections.ConfigDict, task: types.ModuleType) -> int:
  """Checks `training.*` and `parallel.*` fields; returns the number of training steps.

  Raises:
    errors.ConfigError: naming the field and its value.
  """
  training = config.training
  for field in ('batch_size', 'log_every_steps', 'checkpoint_every_steps'):
    _positive_int(config, f'training.{field}')
  _positive_int(config, 'training.keep_checkpoints')
  _positive_int(config, 'training.grad_accum_steps')
  _count(config, 'training.prefetch_to_device')
  _count(config, 'training.rollback_on_nonfinite')
  _, per_device = parallel.local_batch_dims(
    training.batch_size, name='config.training.batch_size'
  )
  accum = training.grad_accum_steps
  if per_device % accum:
    raise errors.ConfigError(
      f'the per-device batch {per_device} (config.training.batch_size='
      f'{training.batch_size} over {jax.device_count()} device(s)) is not divisible '
      f'by config.training.grad_accum_steps={accum}.'
    )
  strategies.check(config)
  return task_lib.num_train_steps(config, task)


def check_workdir(workdir: str, *, mode: str) -> None:
  """Checks `--workdir`: given; existing (evaluation modes) or writable (training,
  created if missing).

  Raises:
    errors.ConfigError: naming the folder and the problem.
  """
  if not workdir:
    raise errors.ConfigError('--workdir is empty: give the folder of the run.')
  if mode not in TRAINING_MODES:
    if not os.path.isdir(workdir):
      raise errors.ConfigError(f'--workdir={workdir!r} does not exist; train first.')
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise errors.ConfigError(
      f'--workdir={workdir!r} cannot be written: {e.strerror or e}. Training writes '
      'its lock, checkpoints and metrics there.'
    ) from e


def check_config(
  config: ml_collections.ConfigDict, task: types.ModuleType, *, mode: str
) -> None:
  """Checks every field `mode` will use (see `trainer.MODES`).

  Raises:
    errors.ConfigError: naming the first bad field and its value.
  """
  if mode in TRAINING_MODES:
    check_training(config, task)
  if mode in EVALUATING_MODES:
    check_evaluation(config, task)
