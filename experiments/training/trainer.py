"""The training and evaluation loop behind `python -m experiments.train`.

Usable from a notebook:

    from configs import digits
    from experiments.training import trainer
    final_state = trainer.run(digits.get_config(), '/tmp/digits', 'train_and_eval')

Modes: `train` (train, checkpoint, export), `train_and_eval` (train, evaluating every
`training.eval_every_steps` and at the end), `eval` (evaluate the newest intact
checkpoint) and `eval_continuous` (follow a running trainer, evaluating each new
checkpoint; see `evaluator.py`). The evaluation modes only read the checkpoints and
can run beside a trainer; a trainer holds the workdir's lock (`workdir_lock.py`).
A restarted run resumes from its latest intact checkpoint with the same data order, so
it ends with the same parameters as an uninterrupted one. `run` checks the config once
(`validation.py`) before anything is compiled.
"""

import os
from typing import Any, Dict, Optional

from absl import logging
import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections

from experiments.training import checkpoint_manager
from experiments.training import errors
from experiments.training import evaluation
from experiments.training import evaluator
from experiments.training import experiment as experiment_lib
from experiments.training import metrics_writer
from experiments.training import parallel
from experiments.training import preemption
from experiments.training import prefetch
from experiments.training import steps
from experiments.training import task as task_lib
from experiments.training import validation
from experiments.training import weights
from experiments.training import workdir_lock

MODES = ('train', 'eval', 'train_and_eval', 'eval_continuous')


class NonFiniteError(errors.UserError):
  """A training step produced a non-finite loss or gradient."""


class NoIntactCheckpointError(errors.UserError):
  """The workdir has checkpoints, but none of them can be restored."""


class _MeanAccumulator:
  """Running means of scalar metrics between two log lines."""

  def __init__(self):
    self._sums: Dict[str, float] = {}
    self._count = 0

  def add(self, metrics: Dict[str, float]) -> None:
    for k, v in metrics.items():
      self._sums[k] = self._sums.get(k, 0.0) + float(v)
    self._count += 1

  def means_and_reset(self) -> Dict[str, float]:
    means = {k: v / self._count for k, v in self._sums.items()} if self._count else {}
    self._sums, self._count = {}, 0
    return means


class _Diverged(Exception):
  """Internal: the step `step` had a non-finite loss or gradient."""

  def __init__(self, step: int, metrics: Dict[str, float]):
    super().__init__(step)
    self.step = step
    self.metrics = metrics


def good_step(
  checkpointer: checkpoint_manager.Checkpointer, before: int
) -> Optional[int]:
  """The newest checkpoint before step `before` that is good to go back to.

  Good: its parameters were finite and the training loss of its step was finite when
  it was saved (as recorded in its metadata; older checkpoints without the record count
  as good). Call with `before = bad_step - 1`: the parameters of step `bad_step - 1`
  are the ones that gave the non-finite loss or gradient, so they are not good however
  finite they are.
  """
  for step in reversed(checkpointer.all_steps()):
    if step >= before:
      continue
    try:
      metadata = checkpointer.metadata(step)
    except checkpoint_manager.DamagedCheckpointError:
      continue
    if metadata.get('params_finite', True) and metadata.get('loss_finite', True):
      return step
  return None


def _data_offset(checkpointer, step: int) -> int:
  return int(checkpointer.metadata(step).get('data_offset', 0))


def _restore_or_init(exp, checkpointer, *, allow_restart_from_scratch: bool):
  """`(step, host_state, data_offset)`: the newest intact checkpoint, else step 0.

  Raises:
    NoIntactCheckpointError: checkpoints exist but none is intact, and
      `allow_restart_from_scratch` is False.
  """
  config = exp.config
  target = exp.abstract_state()
  found = checkpointer.all_steps()
  step, host_state = checkpointer.restore_latest_intact(target)
  if host_state is not None:
    logging.info('Resumed from checkpoint %d in %s.', step, checkpointer.directory)
    if int(host_state.step) != step:
      raise checkpoint_manager.CheckpointMismatchError(
        f'checkpoint {step} holds a state at step {int(host_state.step)}.'
      )
    return step, host_state, _data_offset(checkpointer, step)
  if found:
    set_aside = os.path.join(checkpointer.workdir, checkpoint_manager.SET_ASIDE_SUBDIR)
    if not allow_restart_from_scratch:
      raise NoIntactCheckpointError(
        f'none of the checkpoints {found} in {checkpointer.directory} can be restored '
        f'(each was damaged and is now in {set_aside}); nothing was trained. Repair or '
        'put back one of them, or pass --allow_restart_from_scratch to start again '
        'from step 0 (the old metrics are then moved aside).'
      )
    logging.warning(
      'None of the checkpoints %s could be restored (moved to %s); starting from '
      'step 0 as --allow_restart_from_scratch asks.',
      found,
      set_aside,
    )
  initial = None
  if config.model.init_checkpoint:
    initial = weights.load(
      exp.model,
      task_lib.example_batch(exp.task, config),
      config.model.init_checkpoint,
      arg_name='config.model.init_checkpoint',
      select=weights.select_modules(config.model.init_modules),
      config=config,
    )
  init_rng, _, _ = experiment_lib.rngs(config)
  host_state = steps.init_train_state(
    exp.model,
    exp.optimizer,
    task_lib.example_batch(exp.task, config),
    init_rng,
    initial=initial,
  )
  return 0, host_state, 0


def _divergence_message(bad, good, metrics, checkpointer, rollbacks_left) -> str:
  loss, grad_norm = metrics.get('loss'), metrics.get('grad_norm')
  head = (
    f'Non-finite loss or gradient at step {bad} (loss={loss}, grad_norm={grad_norm}); '
    'training stopped.'
  )
  if good is None:
    return (
      f'{head} No finite checkpoint older than step {bad - 1} exists in '
      f'{checkpointer.directory} to go back to: lower config.optimizer.base_lr (or '
      'raise config.optimizer.max_norm clipping), or save checkpoints more often '
      '(config.training.checkpoint_every_steps) so that a rollback has one.'
    )
  message = (
    f'{head} The latest good checkpoint (finite parameters and loss, older than the '
    f'step {bad - 1} whose parameters gave the bad step) is step {good} in '
    f'{checkpointer.directory}'
  )
  if rollbacks_left <= 0:
    message += (
      '; set config.training.rollback_on_nonfinite to go back to it and skip the '
      'batches after it.'
    )
  return message


def _train(exp, workdir: str, *, evaluate: bool, allow_restart_from_scratch: bool):
  """The training loop (the config is checked and the lock held by the caller)."""
  config, strategy = exp.config, exp.strategy
  training = config.training
  num_steps = exp.num_steps
  batch_dims = parallel.local_batch_dims(training.batch_size, name='training.batch_size')
  checkpointer = checkpoint_manager.Checkpointer(workdir, keep=training.keep_checkpoints)
  try:
    start_step, host_state, data_offset = _restore_or_init(
      exp, checkpointer, allow_restart_from_scratch=allow_restart_from_scratch
    )
    if start_step > num_steps:
      logging.warning(
        'The latest checkpoint (step %d) is past training.num_steps=%d; nothing to '
        'train.',
        start_step,
        num_steps,
      )
    logging.info(
      'Task %s: %d parameters, %d steps of global batch %d over %d host(s) x %d '
      'device(s) (per-device batch %d); strategy %s%s, %d micro-batch(es) per step, '
      '%d batch(es) prefetched.',
      config.task,
      experiment_lib.count_params(host_state.params),
      num_steps,
      training.batch_size,
      jax.process_count(),
      jax.local_device_count(),
      batch_dims[1],
      strategy.name,
      ' + FSDP' if strategy.fsdp else '',
      training.grad_accum_steps,
      training.prefetch_to_device,
    )
    return _loop(
      exp,
      workdir,
      checkpointer,
      batch_dims,
      start_step=start_step,
      host_state=host_state,
      data_offset=data_offset,
      evaluate=evaluate,
    )
  finally:
    # Finishes saves already started (all of them hold finite states).
    checkpointer.close()


def _checked(batches, batch_dims):
  for batch in batches:
    parallel.check_batch_dims(batch, batch_dims)
    yield batch


def _loop(
  exp, workdir, checkpointer, batch_dims, *, start_step, host_state, data_offset, evaluate
):
  config, strategy = exp.config, exp.strategy
  training = config.training
  num_steps, schedule = exp.num_steps, exp.schedule
  _, train_rng, eval_rng = experiment_lib.rngs(config)

  def device_batches(step, offset):
    host_iter = task_lib.train_iterator(
      exp.task,
      config,
      batch_dims=batch_dims,
      start_step=min(step, num_steps) + offset,
    )
    return prefetch.prefetch_to_device(
      _checked(host_iter, batch_dims), training.prefetch_to_device, strategy.put_batch
    )

  writer = metrics_writer.MetricsWriter(
    workdir, total_steps=num_steps, batch_size=training.batch_size
  )
  evaluate_split = evaluation.SplitEvaluator(exp, eval_rng) if evaluate else None
  state = strategy.put_state(host_state)
  rng = strategy.put_rng(train_rng)
  device_iter = device_batches(start_step, data_offset)

  accumulator = _MeanAccumulator()
  pending = None  # (step, metrics) of the last dispatched step, not yet checked.
  last_loss = [None]  # Training loss of the newest checked step.
  rollbacks_left = training.rollback_on_nonfinite

  def check(pending):
    step, device_metrics = pending
    metrics = strategy.get_metrics(device_metrics)
    if metrics.pop('finite') < 1.0:
      raise _Diverged(step, metrics)
    last_loss[0] = metrics.get('loss')
    accumulator.add(metrics)

  def save(step, host_state):
    checkpointer.save(step, host_state, loss=last_loss[0], data_offset=data_offset)

  step = start_step
  writer.supersede_after(step)
  writer.start(step)
  watch = preemption.PreemptionWatch()
  try:
    watch.start()
    while step < num_steps:
      try:
        state, device_metrics = strategy.train_step(state, next(device_iter), rng)
        step += 1
        # Checking the previous step while this one runs keeps the device busy.
        if pending is not None:
          check(pending)
        pending = (step, device_metrics)

        if step == start_step + 1:
          # Speeds and the ETA leave out the first step, which includes compilation.
          check(pending)
          pending = None
          writer.start(step)

        is_last = step == num_steps
        log_now = is_last or step % training.log_every_steps == 0
        save_now = not is_last and step % training.checkpoint_every_steps == 0
        eval_now = (
          evaluate
          and not is_last
          and training.eval_every_steps > 0
          and step % training.eval_every_steps == 0
        )
        stop_now = not is_last and watch.should_stop(step)
        if (log_now or save_now or eval_now or stop_now) and pending is not None:
          check(pending)
          pending = None
      except _Diverged as diverged:
        checkpointer.wait()
        bad = diverged.step
        good = good_step(checkpointer, bad - 1)
        if rollbacks_left <= 0 or good is None:
          raise NonFiniteError(
            _divergence_message(bad, good, diverged.metrics, checkpointer, rollbacks_left)
          ) from None
        rollbacks_left -= 1
        for later in [s for s in checkpointer.all_steps() if s > good]:
          checkpointer.set_aside(later, 'rolled_back')
        host_state = checkpointer.restore(exp.abstract_state(), good)
        # This attempt read the batches at positions good + data_offset .. bad - 1 +
        # data_offset (earlier attempts read fewer): the next step reads the one after
        # the bad batch, so every batch tried since the good checkpoint is skipped.
        skipped = bad - good
        data_offset += skipped
        logging.warning(
          'Non-finite loss or gradient at step %d (loss=%s, grad_norm=%s): rolled back '
          'to checkpoint %d and skipping %d more batches (%d skipped in all; %d '
          'rollback(s) left).',
          bad,
          diverged.metrics.get('loss'),
          diverged.metrics.get('grad_norm'),
          good,
          skipped,
          data_offset,
          rollbacks_left,
        )
        state = strategy.put_state(host_state)
        step = start_step = good
        device_iter = device_batches(good, data_offset)
        pending = None
        accumulator.means_and_reset()
        writer.supersede_after(step)
        writer.start(step)
        continue

      if log_now:
        metrics = accumulator.means_and_reset()
        metrics['learning_rate'] = float(schedule(step - 1))
        writer.write_train(step, metrics)
      if save_now:
        save(step, strategy.get_state(state))
      if eval_now:
        writer.pause()
        writer.write_eval(step, evaluate_split(state), split_name=config.evaluation.split)
        writer.resume()
      if stop_now:
        save(step, strategy.get_state(state))  # No-op if saved.
        checkpointer.wait()
        raise preemption.Preempted(step, checkpointer.directory)

    if pending is not None:
      check(pending)
    host_state = strategy.get_state(state)
    if int(host_state.step) not in checkpointer.all_steps():
      save(int(host_state.step), host_state)
    checkpointer.wait()
    checkpoint_manager.export_npz(workdir, host_state.params, host_state.state)
    if evaluate:
      writer.write_eval(
        int(host_state.step), evaluate_split(state), split_name=config.evaluation.split
      )
  finally:
    watch.stop()
    writer.close()
  return host_state


# The compilation cache this module turned on for a run's workdir (None: none yet).
_RUN_CACHE_DIR: Optional[str] = None


def use_compilation_cache(directory: str, *, min_compile_time_s: float = 1.0) -> None:
  """Stores compiled executables in `directory` and loads them from there.

  Executables that took at least `min_compile_time_s` to compile are kept, so a
  resumed run starts without recompiling its train and evaluation steps.
  """
  global _RUN_CACHE_DIR
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', min_compile_time_s)
  # JAX decides whether the cache is on at the first compilation; start it afresh in
  # case something compiled before (e.g. in a notebook).
  compilation_cache.reset_cache()
  _RUN_CACHE_DIR = directory


def _maybe_use_run_cache(workdir: str) -> None:
  """The workdir's compilation cache, unless the user set a cache directory of their
  own (`JAX_COMPILATION_CACHE_DIR`, `jax.config`), which is then kept."""
  configured = jax.config.jax_compilation_cache_dir
  if configured and configured != _RUN_CACHE_DIR:
    logging.info('Using the compilation cache in %s (set outside this run).', configured)
    return
  if os.access(workdir, os.W_OK):
    use_compilation_cache(os.path.join(workdir, 'compilation_cache'))


def run(
  config: ml_collections.ConfigDict,
  workdir: str,
  mode: str,
  *,
  allow_restart_from_scratch: bool = False,
) -> Any:
  """Runs `mode` (one of MODES) for `config` in `workdir`.

  Args:
    config: a locked experiment config; checked here, once, before anything compiles.
    workdir: where checkpoints, `metrics.jsonl`, TensorBoard events and the export go.
    mode: one of MODES.
    allow_restart_from_scratch: when the workdir has checkpoints and none can be
      restored, train from step 0 (moving the old metrics aside) instead of stopping.

  Returns:
    The final train state (host NumPy) of the training modes; the metrics of `eval`;
    the best record (or None) of `eval_continuous`.

  Raises:
    errors.ConfigError: a bad config field or mode (before anything is compiled).
    NoIntactCheckpointError: see `allow_restart_from_scratch`.
    NonFiniteError: a step had a non-finite loss or gradient (after
      `training.rollback_on_nonfinite` rollbacks); the message names the latest good
      checkpoint.
    preemption.Preempted: SIGTERM arrived; the step it arrived during was checkpointed.
    workdir_lock.WorkdirBusyError: another trainer runs in `workdir`.
    checkpoint_manager.CheckpointWriteError: the disk filled while checkpointing.
  """
  if mode not in MODES:
    raise errors.ConfigError(f'--mode={mode!r} is not one of {MODES}.')
  task = task_lib.load_task(config.task)
  validation.check_config(config, task, mode=mode)
  validation.check_workdir(workdir, mode=mode)
  if config.training.compilation_cache:
    _maybe_use_run_cache(workdir)
  exp = experiment_lib.build(config, task)
  if mode == 'eval':
    return evaluator.evaluate_checkpoint(exp, workdir)
  if mode == 'eval_continuous':
    return evaluator.evaluate_continuously(exp, workdir)
  lock = workdir_lock.WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  try:
    return _train(
      exp,
      workdir,
      evaluate=mode == 'train_and_eval',
      allow_restart_from_scratch=allow_restart_from_scratch,
    )
  finally:
    lock.release()


def train(
  config: ml_collections.ConfigDict, workdir: str, *, evaluate: bool = False
) -> steps.TrainState:
  """`run(config, workdir, 'train_and_eval' if evaluate else 'train')`."""
  return run(config, workdir, 'train_and_eval' if evaluate else 'train')


def evaluate_checkpoint(
  config: ml_collections.ConfigDict, workdir: str, step: Optional[int] = None
) -> Dict[str, float]:
  """Evaluates checkpoint `step` (default: newest intact) of `workdir`, read-only.

  See `evaluator.evaluate_checkpoint`; the config is checked first.
  """
  task = task_lib.load_task(config.task)
  validation.check_config(config, task, mode='eval')
  validation.check_workdir(workdir, mode='eval')
  return evaluator.evaluate_checkpoint(experiment_lib.build(config, task), workdir, step)
