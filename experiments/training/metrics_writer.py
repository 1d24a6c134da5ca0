"""Training output a person can follow: console lines, JSON lines, TensorBoard.

Host 0 writes, to `workdir`:
  * a console line per logged step (step, loss, learning rate, steps/s, examples/s, ETA)
    and per evaluation;
  * `metrics.jsonl`: one JSON object per logged step and per evaluation, with `step`,
    `split` (`train` or `eval`) and the metric names (`loss`, `top_1_acc`, ...). It
    describes the run as it stands: when training goes back to an earlier step
    (resuming from a checkpoint, rolling back, restarting from scratch), the rows of
    later steps move to `metrics_superseded.jsonl` (appended, each with the step
    training went back to as `superseded_at`), so no step appears twice;
  * TensorBoard event files (`tensorboard --logdir=<workdir>`), written with
    `tf.summary`; train scalars under `train/`, evaluation scalars under `eval/`.
Other hosts write nothing.
"""

import datetime
import json
import math
import os
import time
from typing import Any, Mapping, Optional

from absl import logging
import jax

from experiments.training import host_tensorflow

METRICS_FILE = 'metrics.jsonl'
# Rows of steps a run went back before (a resume, a rollback, a restart from scratch).
SUPERSEDED_FILE = 'metrics_superseded.jsonl'


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  return str(datetime.timedelta(seconds=int(round(seconds))))


def _format_value(value: float) -> str:
  return f'{value:.4g}' if isinstance(value, float) else str(value)


class MetricsWriter:
  """Writes training and evaluation metrics of one run.

  Attributes:
    jsonl_path: the JSON-lines file.
  """

  def __init__(
    self, workdir: str, *, total_steps: int, batch_size: int, tensorboard: bool = True
  ):
    """Opens the outputs (host 0) and starts the speed clock.

    Args:
      workdir: where `metrics.jsonl` and the TensorBoard events go.
      total_steps: the step training ends at (for the ETA).
      batch_size: global batch (for examples/s).
      tensorboard: whether to write TensorBoard event files.
    """
    self._active = jax.process_index() == 0
    self._total_steps = total_steps
    self._batch_size = batch_size
    self._last_time: Optional[float] = None
    self._last_step: Optional[int] = None
    self._pause_start: Optional[float] = None
    self.jsonl_path = os.path.join(workdir, METRICS_FILE)
    self._summary_writer = None
    if self._active:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        # TensorFlow is only imported for its summary writer.
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        host_tensorflow.keep_on_host(tf)
        self._tf = tf
        self._summary_writer = tf.summary.create_file_writer(workdir)
        self._scalar_metadata = tf.compat.v1.SummaryMetadata(
          plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name='scalars')
        )

  def start(self, step: int) -> None:
    """Marks `step` as the point speeds are measured from (call before training)."""
    self._last_time = time.perf_counter()
    self._last_step = step

  def supersede_after(self, step: int) -> int:
    """Moves the rows of steps after `step` to `metrics_superseded.jsonl` (host 0).

    Returns:
      How many rows moved.
    """
    if not self._active or not os.path.exists(self.jsonl_path):
      return 0
    with open(self.jsonl_path) as f:
      lines = [line for line in f if line.strip()]
    keep, moved = [], []
    for line in lines:
      try:
        later = int(json.loads(line).get('step', -1)) > step
      except (ValueError, AttributeError, TypeError):
        later = False  # A line cut short by a crash stays where it is.
      (moved if later else keep).append(line)
    if not moved:
      return 0
    superseded = os.path.join(os.path.dirname(self.jsonl_path), SUPERSEDED_FILE)
    with open(superseded, 'a') as f:
      for line in moved:
        f.write(json.dumps(dict(json.loads(line), superseded_at=step)) + '\n')
    temporary = self.jsonl_path + '.tmp'
    with open(temporary, 'w') as f:
      f.writelines(line if line.endswith('\n') else line + '\n' for line in keep)
    os.replace(temporary, self.jsonl_path)
    logging.info(
      'Training continues from step %d: moved %d metric rows of later steps to %s.',
      step,
      len(moved),
      superseded,
    )
    return len(moved)

  def _append_json(self, record: Mapping[str, Any]) -> None:
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def _write_summaries(
    self, prefix: str, step: int, metrics: Mapping[str, float]
  ) -> None:
    if self._summary_writer is None:
      return
    tf = self._tf
    with self._summary_writer.as_default(step=step):
      for name, value in metrics.items():
        # What `tf.summary.scalar` writes, without needing the tensorboard package.
        tf.summary.write(
          f'{prefix}/{name}',
          tf.constant(value, tf.float32),
          metadata=self._scalar_metadata,
        )
    self._summary_writer.flush()

  def write_train(self, step: int, metrics: Mapping[str, float]) -> None:
    """Logs the training metrics at `step` (means since the last log) with speeds."""
    now = time.perf_counter()
    metrics = {k: float(v) for k, v in metrics.items()}
    if self._last_time is not None and step > self._last_step and now > self._last_time:
      steps_per_sec = (step - self._last_step) / (now - self._last_time)
      metrics['steps_per_sec'] = steps_per_sec
      metrics['examples_per_sec'] = steps_per_sec * self._batch_size
      eta = (self._total_steps - step) / steps_per_sec
    else:
      eta = float('nan')
    self._last_time, self._last_step = now, step
    if not self._active:
      return
    line = [f'step {step}/{self._total_steps}']
    if 'loss' in metrics:
      line.append(f'loss {metrics["loss"]:.4f}')
    if 'learning_rate' in metrics:
      line.append(f'lr {metrics["learning_rate"]:.3g}')
    if 'steps_per_sec' in metrics:
      line.append(f'{metrics["steps_per_sec"]:.2f} steps/s')
      line.append(f'{metrics["examples_per_sec"]:.0f} examples/s')
    line.append(f'ETA {_format_duration(eta)}')
    extra = sorted(
      set(metrics) - {'loss', 'learning_rate', 'steps_per_sec', 'examples_per_sec'}
    )
    line.extend(f'{k} {_format_value(metrics[k])}' for k in extra)
    logging.info('[train] %s', ', '.join(line))
    self._append_json({'step': step, 'split': 'train', **metrics})
    self._write_summaries('train', step, metrics)

  def write_eval(
    self, step: int, metrics: Mapping[str, float], *, split_name: str
  ) -> None:
    """Logs evaluation `metrics` of the checkpoint at `step` on split `split_name`."""
    if not self._active:
      return
    metrics = {k: v if isinstance(v, int) else float(v) for k, v in metrics.items()}
    line = ', '.join(f'{k} {_format_value(v)}' for k, v in sorted(metrics.items()))
    logging.info('[eval %s] step %d: %s', split_name, step, line)
    self._append_json(
      {'step': step, 'split': 'eval', 'eval_split': split_name, **metrics}
    )
    self._write_summaries('eval', step, metrics)

  def pause(self) -> None:
    """Excludes the time until the next `resume` (e.g. evaluation) from speeds."""
    self._pause_start = time.perf_counter()

  def resume(self) -> None:
    """Ends a `pause`."""
    if self._last_time is not None and self._pause_start is not None:
      self._last_time += time.perf_counter() - self._pause_start
    self._pause_start = None

  def close(self) -> None:
    """Flushes and closes the TensorBoard writer."""
    if self._summary_writer is not None:
      self._summary_writer.close()
