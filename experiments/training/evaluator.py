"""Evaluation jobs that read a training run's checkpoints without touching them.

`--mode=eval` evaluates one checkpoint (default: the newest intact one);
`--mode=eval_continuous` follows a running trainer, as the release's jaxline runs an
evaluation job beside training: it evaluates every new complete checkpoint once, in
order, and stops after evaluating the final step (`training.num_steps`), or after
`evaluation.idle_timeout_s` without a new checkpoint.

Neither writes, deletes or cleans anything in `workdir/checkpoints` (checkpoints are
opened read-only, `checkpoint_manager.CheckpointReader`), and neither takes the
workdir's lock, so they can run while a trainer writes. A checkpoint the trainer
deletes (its keep policy) before it is read is skipped; a damaged one is reported and
skipped (the trainer sets it aside).

Outputs go to `workdir/eval_<split>/` (host 0): `metrics.jsonl` and TensorBoard
events (`tensorboard --logdir=<workdir>` shows them as run `eval_<split>`). With
`evaluation.best_metric` set, the checkpoint that is best by that metric is kept in
`workdir/eval_<split>/best/`: `checkpoints/<step>/` (the full train state as an
orbax checkpoint, written from the evaluated state), `params.npz` (params and model state in the library's npz
format) and `best.json` (`step`, `metric`, `value`). A restarted evaluator continues
after the newest step in its `metrics.jsonl`. Metrics are always logged first, so an
evaluation of a read-only workdir still prints them when they cannot be written.
"""

import json
import math
import os
import shutil
import time
from typing import Any, Dict, Optional, Tuple

from absl import logging
import jax
import ml_collections

from experiments.training import checkpoint_manager
from experiments.training import errors
from experiments.training import evaluation
from experiments.training import experiment as experiment_lib
from experiments.training import metrics_writer
from experiments.training import parallel

BEST_SUBDIR = 'best'
BEST_RECORD = 'best.json'


def output_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`workdir/eval_<split>`: where an evaluator writes."""
  return os.path.join(os.path.abspath(workdir), f'eval_{config.evaluation.split}')


class _Job:
  """The restore target, evaluator and checkpoint reader of one experiment."""

  def __init__(self, exp: experiment_lib.Experiment, workdir: str):
    self.config = exp.config
    self.num_steps = exp.num_steps
    self.target = exp.abstract_state()
    _, _, eval_rng = experiment_lib.rngs(exp.config)
    self.evaluate = evaluation.SplitEvaluator(exp, eval_rng)
    self.reader = checkpoint_manager.CheckpointReader(workdir)
    self.out_dir = output_dir(exp.config, workdir)

  def restore(self, step: int) -> Optional[Any]:
    """Checkpoint `step`'s state, or None if it vanished or is damaged (logged)."""
    try:
      return self.reader.restore(self.target, step)
    except FileNotFoundError:
      logging.warning(
        'Checkpoint %d in %s was removed (the trainer keeps only the newest ones) '
        'before it could be evaluated; skipping it.',
        step,
        self.reader.directory,
      )
    except checkpoint_manager.DamagedCheckpointError as e:
      # A checkpoint the trainer is deleting looks damaged for a moment.
      time.sleep(1.0)
      if not os.path.isdir(os.path.join(self.reader.directory, str(step))):
        logging.warning('Checkpoint %d was removed while being read; skipping it.', step)
      else:
        logging.warning('Not evaluating %s.', e)
    return None

  def open_writer(self, step: int) -> Optional[metrics_writer.MetricsWriter]:
    try:
      return metrics_writer.MetricsWriter(
        self.out_dir, total_steps=step, batch_size=self.config.evaluation.batch_size
      )
    except Exception as e:  # pylint: disable=broad-except  # E.g. a read-only disk.
      logging.warning(
        'Cannot write evaluation metrics to %s (%s); they are only logged.',
        self.out_dir,
        e,
      )
      return None


def _log(step: int, split: str, metrics: Dict[str, float]) -> None:
  line = ', '.join(f'{k} {v:.6g}' for k, v in sorted(metrics.items()))
  logging.info('[eval %s] step %d: %s', split, step, line)


def _write(job: _Job, writer, step: int, metrics: Dict[str, float]) -> None:
  if writer is None:
    return
  try:
    writer.write_eval(step, metrics, split_name=job.config.evaluation.split)
  except Exception as e:  # pylint: disable=broad-except  # E.g. a read-only disk.
    logging.warning(
      'Cannot write evaluation metrics of step %d to %s (%s); see the line above.',
      step,
      job.out_dir,
      e,
    )


def evaluate_checkpoint(
  exp: experiment_lib.Experiment, workdir: str, step: Optional[int] = None
) -> Dict[str, float]:
  """Evaluates checkpoint `step` (default: the newest intact one) of `workdir`.

  Args:
    exp: the experiment (its config checked by the caller, `trainer.run`).
    workdir: the training run's workdir.
    step: which checkpoint.

  Returns:
    The summary metrics, with `num_examples` and `step`.

  Raises:
    errors.DataError: no (intact) checkpoint to evaluate.
  """
  config = exp.config
  job = _Job(exp, workdir)
  steps = job.reader.all_steps() if step is None else [step]
  if not steps:
    raise errors.DataError(
      f'no checkpoint in {job.reader.directory}; train first (--mode=train).'
    )
  if step is not None:
    state = job.reader.restore(job.target, step)
  else:
    state = next(filter(None, (job.restore(s) for s in reversed(steps))), None)
    if state is None:
      raise errors.DataError(f'no intact checkpoint in {job.reader.directory}.')
  step = int(state.step)
  metrics = job.evaluate(job.evaluate.put_state(state))
  _log(step, config.evaluation.split, metrics)
  writer = job.open_writer(step)
  _write(job, writer, step, metrics)
  if writer is not None:
    writer.close()
  return dict(metrics, step=step)


def _read_progress(job: _Job) -> Tuple[int, Optional[Dict[str, Any]]]:
  """(newest evaluated step or -1, best record or None) of an earlier evaluator."""
  newest = -1
  path = os.path.join(job.out_dir, metrics_writer.METRICS_FILE)
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue  # A line cut short by a crash.
        if record.get('split') == 'eval':
          newest = max(newest, int(record.get('step', -1)))
  best = None
  try:
    with open(os.path.join(job.out_dir, BEST_SUBDIR, BEST_RECORD)) as f:
      best = json.load(f)
  except (OSError, ValueError):
    pass
  return newest, best


def _is_better(value: float, best: Optional[Dict[str, Any]], higher: bool) -> bool:
  if not math.isfinite(value):
    return False
  if best is None:
    return True
  return value > best['value'] if higher else value < best['value']


def _keep_best(job: _Job, step: int, state: Any, value: float) -> Dict[str, Any]:
  """Writes the best state as a checkpoint, an npz export and a record.

  The state is written from memory (it was verified against its checksum when read),
  so a trainer deleting its checkpoint meanwhile does not matter.
  """
  record = {'step': step, 'metric': job.config.evaluation.best_metric, 'value': value}
  best_dir = os.path.join(job.out_dir, BEST_SUBDIR)
  staging = best_dir + '.tmp'
  if jax.process_index() == 0:
    shutil.rmtree(staging, ignore_errors=True)
  parallel.sync_hosts('best_staging')
  try:
    metadata = job.reader.metadata(step)
  except checkpoint_manager.DamagedCheckpointError:
    metadata = {}
  checkpointer = checkpoint_manager.Checkpointer(staging, keep=1)
  checkpointer.save(
    step, state, loss=metadata.get('loss'), data_offset=metadata.get('data_offset', 0)
  )
  checkpointer.close()
  if jax.process_index() == 0:
    from perceiver import checkpoint as npz_format  # pylint: disable=g-import-not-at-top

    npz_format.save_npz(os.path.join(staging, 'params.npz'), state.params, state.state)
    with open(os.path.join(staging, BEST_RECORD), 'w') as f:
      json.dump(record, f)
    # Swap in the new best; the previous one is removed only once the new one is whole.
    previous = best_dir + '.previous'
    shutil.rmtree(previous, ignore_errors=True)
    if os.path.exists(best_dir):
      os.rename(best_dir, previous)
    os.rename(staging, best_dir)
    shutil.rmtree(previous, ignore_errors=True)
  parallel.sync_hosts('best_written')
  logging.info(
    'New best checkpoint: step %d, %s = %.6g (%s).',
    step,
    record['metric'],
    value,
    best_dir,
  )
  return record


def evaluate_continuously(
  exp: experiment_lib.Experiment, workdir: str
) -> Optional[Dict[str, Any]]:
  """Evaluates each new checkpoint of a (running) training job until its final step.

  Args:
    exp: the experiment (its config checked by the caller, `trainer.run`).
    workdir: the training run's workdir.

  Returns:
    The best record (`step`, `metric`, `value`) when `evaluation.best_metric` is set,
    else None.

  Raises:
    errors.ConfigError: `evaluation.best_metric` is not one of the task's metrics.
  """
  config = exp.config
  settings = config.evaluation
  job = _Job(exp, workdir)
  newest, best = _read_progress(job)
  if newest >= job.num_steps:
    logging.warning(
      'Nothing to evaluate: %s already holds step %d, and this config trains to '
      'training.num_steps=%d. To follow a longer run, give the evaluator the '
      "trainer's --config.training.num_steps.",
      job.out_dir,
      newest,
      job.num_steps,
    )
    return best
  writer = job.open_writer(job.num_steps)
  idle_since = time.monotonic()
  logging.info(
    'Following %s: evaluating each new checkpoint until step %d.',
    job.reader.directory,
    job.num_steps,
  )
  try:
    while newest < job.num_steps:
      new_steps = [s for s in job.reader.all_steps() if s > newest]
      if not new_steps:
        if time.monotonic() - idle_since > settings.idle_timeout_s:
          logging.warning(
            'No new checkpoint in %s for %.0f s (evaluation.idle_timeout_s); '
            'stopping before the final step %d.',
            job.reader.directory,
            settings.idle_timeout_s,
            job.num_steps,
          )
          break
        time.sleep(settings.poll_every_s)
        continue
      idle_since = time.monotonic()
      for step in new_steps:
        if step > job.num_steps:
          logging.warning(
            "Checkpoint %d is past this config's training.num_steps=%d: evaluating "
            "it, then stopping (give the evaluator the trainer's "
            '--config.training.num_steps to follow a longer run).',
            step,
            job.num_steps,
          )
        state = job.restore(step)
        newest = step
        if state is None:
          continue
        metrics = job.evaluate(job.evaluate.put_state(state))
        _log(step, settings.split, metrics)
        _write(job, writer, step, metrics)
        if settings.best_metric:
          if settings.best_metric not in metrics:
            raise errors.ConfigError(
              f'config.evaluation.best_metric={settings.best_metric!r} is not one '
              f'of the metrics of task {config.task}: {sorted(metrics)}.'
            )
          value = float(metrics[settings.best_metric])
          if _is_better(value, best, settings.best_metric_higher_is_better):
            best = _keep_best(job, step, state, value)
  finally:
    if writer is not None:
      writer.close()
  return best
