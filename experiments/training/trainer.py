"""The training and evaluation loop behind `python -m experiments.train`.

Usable from a notebook:

    from configs import digits
    from experiments.training import trainer
    final_state = trainer.train(digits.get_config(), '/tmp/digits', evaluate=True)

Modes: `train` (train, checkpoint, export), `train_and_eval` (train, evaluating every
`training.eval_every_steps` and at the end), `eval` (evaluate the newest intact
checkpoint) and `eval_continuous` (follow a running trainer, evaluating each new
checkpoint; see `evaluator.py`). The evaluation modes only read the checkpoints and
can run beside a trainer; a trainer holds the workdir's lock (`workdir_lock.py`).
A restarted run resumes from its latest checkpoint with the same data order, so it
ends with the same parameters as an uninterrupted one.
"""

import functools
import itertools
import json
import math
import os
import types
from typing import Any, Dict, NamedTuple, Optional

from absl import logging
import haiku as hk
import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections
import numpy as np
import optax

from experiments.training import checkpoint_manager
from experiments.training import metrics_writer
from experiments.training import optimizers
from experiments.training import parallel
from experiments.training import preemption
from experiments.training import prefetch
from experiments.training import strategies
from experiments.training import task as task_lib
from experiments.training import train_state as train_state_lib
from experiments.training import validation
from experiments.training import workdir_lock

MODES = ('train', 'eval', 'train_and_eval', 'eval_continuous')


class NonFiniteError(RuntimeError):
  """A training step produced a non-finite loss or gradient."""


def _with_config(outputs, batch, *, fn, config):
  return fn(outputs, batch, config)


class Steps(NamedTuple):
  """The model, optimizer and compiled step functions of one config.

  Attributes:
    num_steps: total training steps.
    model: the task's transformed model.
    optimizer: the optax transformation.
    schedule: the learning rate per step.
    strategy: where state and batches live and the compiled train and evaluation
      steps (`strategies.PmapStrategy` or `strategies.ShardedStrategy`, after
      `config.parallel.strategy`).
  """

  num_steps: int
  model: hk.TransformedWithState
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  strategy: Any


# Steps per config, so that training the same config again in this process (a
# notebook, a test) reuses the compiled functions instead of recompiling.
_STEPS_CACHE: Dict[Any, Steps] = {}
# Fields that do not change any compiled function.
_HOST_ONLY_FIELDS = (
  'log_every_steps',
  'checkpoint_every_steps',
  'eval_every_steps',
  'keep_checkpoints',
  'prefetch_to_device',
  'rollback_on_nonfinite',
  'compilation_cache',
)


def _steps_cache_key(config: ml_collections.ConfigDict, task: types.ModuleType):
  fields = config.to_dict()
  fields.pop('task', None)
  for name in _HOST_ONLY_FIELDS:
    fields.get('training', {}).pop(name, None)
  epochs_based = config.training.num_epochs is not None and config.training.num_epochs > 0
  return (
    json.dumps(fields, sort_keys=True, default=repr),
    task.build_model,
    task.train_loss,
    task.eval_outputs,
    task.num_examples if epochs_based else None,
    jax.local_device_count(),
    jax.process_count(),
  )


def build_steps(config: ml_collections.ConfigDict, task: types.ModuleType) -> Steps:
  """The model, optimizer and compiled steps for `config` (cached per process)."""
  key = _steps_cache_key(config, task)
  if key not in _STEPS_CACHE:
    num_steps = task_lib.num_train_steps(config, task)
    model = task.build_model(config)
    optimizer, schedule = optimizers.make_optimizer(
      config.optimizer, num_steps=num_steps, batch_size=config.training.batch_size
    )
    loss_fn = functools.partial(_with_config, fn=task.train_loss, config=config)
    outputs_fn = functools.partial(_with_config, fn=task.eval_outputs, config=config)
    _STEPS_CACHE[key] = Steps(
      num_steps=num_steps,
      model=model,
      optimizer=optimizer,
      schedule=schedule,
      strategy=strategies.make_strategy(
        config,
        model=model,
        optimizer=optimizer,
        loss_fn=loss_fn,
        outputs_fn=outputs_fn,
      ),
    )
  return _STEPS_CACHE[key]


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


class Evaluator:
  """Evaluates a device-resident train state on every example of a split exactly once."""

  def __init__(
    self, task: types.ModuleType, config: ml_collections.ConfigDict, rng: jax.Array
  ):
    """Prepares evaluation.

    Args:
      task: the task module.
      config: the experiment config (`evaluation.*` fields).
      rng: the key passed to the model (dropout is off in evaluation).
    """
    self._task = task
    self._config = config
    self._strategy = build_steps(config, task).strategy
    self._rng = self._strategy.put_rng(rng)

  def __call__(
    self, p_state: train_state_lib.TrainState, split: Optional[str] = None
  ) -> Dict[str, float]:
    """Summarised metrics of `p_state` (see `put_state`) on `split` (default: config's).

    Raises:
      ValueError: the task's evaluation batches do not cover the split exactly once.
    """
    config, task = self._config, self._task
    split = split or config.evaluation.split
    global_batch = config.evaluation.batch_size
    batch_dims = parallel.local_batch_dims(global_batch, name='evaluation.batch_size')
    num_examples = task.num_examples(split, config)
    num_batches = math.ceil(num_examples / global_batch)

    outputs = []
    template = None
    for index, batch in enumerate(
      task.load(split, is_training=False, batch_dims=batch_dims, config=config)
    ):
      if index >= num_batches:
        raise ValueError(
          f'task {config.task} yields more than ceil({num_examples} / '
          f'{global_batch}) = {num_batches} evaluation batches for split {split!r}.'
        )
      if 'mask' not in batch:
        raise ValueError(
          f'evaluation batches of task {config.task} have no "mask" '
          f'entry (keys: {sorted(batch)}).'
        )
      parallel.check_batch_dims(batch, batch_dims)
      template = batch
      outputs.append(self._eval(p_state, batch))
    if template is None:
      raise ValueError(
        f'task {config.task} yielded no evaluation batch for split '
        f'{split!r} on host {jax.process_index()}.'
      )
    # Hosts with fewer batches run all-padding ones so that every host runs the
    # same number of steps.
    while len(outputs) < num_batches:
      outputs.append(self._eval(p_state, task_lib.padding_batch(template)))

    local = jax.tree.map(
      lambda *xs: np.concatenate(xs),
      *[self._strategy.local_outputs(o) for o in outputs],
    )
    # [num_batches * D, b, ...] -> [num_batches * D * b, ...]
    local = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), local)
    gathered = parallel.gather_from_hosts(local)  # [P, N_local, ...]
    gathered = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), gathered)
    real = gathered.pop('mask') > 0.5
    if int(real.sum()) != num_examples:
      raise ValueError(
        f'evaluation of split {split!r} covered {int(real.sum())} examples; '
        f'task {config.task} reports num_examples={num_examples}.'
      )
    per_example = {k: v[real] for k, v in gathered.items()}
    summary = dict(task.summarize_eval(per_example, config))
    summary['num_examples'] = num_examples
    return summary

  def _eval(self, p_state, batch):
    strategy = self._strategy
    return strategy.eval_step(p_state, strategy.put_batch(batch), self._rng)

  def put_state(self, host_state: train_state_lib.TrainState):
    """A host state placed on the devices as this evaluator's steps expect it."""
    return self._strategy.put_state(host_state)


def _rngs(config: ml_collections.ConfigDict):
  init_rng, train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  return init_rng, train_rng, eval_rng


def _first_device(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  return {k: v[0] for k, v in batch.items()}


def _count_params(params: Any) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


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


def _restore(checkpointer, target, step=None):
  """`(step, state, data_offset)` of checkpoint `step`, or of the newest intact one."""
  if step is None:
    step, state = checkpointer.restore_latest_intact(target)
    if step is None:
      return 0, None, 0
  else:
    state = checkpointer.restore(target, step)
  return step, state, int(checkpointer.metadata(step).get('data_offset', 0))


def train(
  config: ml_collections.ConfigDict, workdir: str, *, evaluate: bool = False
) -> train_state_lib.TrainState:
  """Trains (resuming from the latest checkpoint in `workdir`) and exports the result.

  Holds the workdir's lock (`workdir_lock`) while it runs. A damaged latest checkpoint
  is moved aside and training resumes from the newest intact one.

  Args:
    config: a locked experiment config.
    workdir: where checkpoints, `metrics.jsonl`, TensorBoard events and the export go.
    evaluate: also evaluate every `training.eval_every_steps` and at the end.

  Returns:
    The final train state (host NumPy).

  Raises:
    NonFiniteError: a step had a non-finite loss or gradient (after
      `training.rollback_on_nonfinite` rollbacks); the message names the latest good
      checkpoint.
    preemption.Preempted: SIGTERM arrived; the step it arrived during was checkpointed.
    workdir_lock.WorkdirBusyError: another trainer runs in `workdir`.
    checkpoint_manager.CheckpointWriteError: the disk filled while checkpointing.
    ValueError: a bad config field (checked before anything is compiled).
  """
  task = task_lib.load_task(config.task)
  validation.check_config(config, task, mode='train_and_eval' if evaluate else 'train')
  lock = workdir_lock.WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  try:
    return _train(config, workdir, task, evaluate=evaluate)
  finally:
    lock.release()


def _train(config, workdir, task, *, evaluate):
  steps = build_steps(config, task)
  training = config.training
  batch_dims = parallel.local_batch_dims(training.batch_size, name='training.batch_size')

  checkpointer = checkpoint_manager.Checkpointer(workdir, keep=training.keep_checkpoints)
  try:
    return _train_loop(
      config, workdir, task, steps, checkpointer, batch_dims, evaluate=evaluate
    )
  finally:
    # Finishes saves already started (all of them hold finite states).
    checkpointer.close()


def _train_loop(config, workdir, task, steps, checkpointer, batch_dims, *, evaluate):
  num_steps, schedule = steps.num_steps, steps.schedule
  training = config.training
  init_rng, train_rng, eval_rng = _rngs(config)
  prefetch_size = training.get('prefetch_to_device', 0)

  def iterator_at(step, data_offset):
    return task_lib.train_iterator(
      task, config, batch_dims=batch_dims, start_step=min(step, num_steps) + data_offset
    )

  # The data position of the latest checkpoint; its first batch shapes the restore
  # target (and is trained on unless an earlier checkpoint is restored instead).
  guess_step = checkpointer.latest_step() or 0
  try:
    guess_offset = int(checkpointer.metadata(guess_step).get('data_offset', 0))
  except checkpoint_manager.DamagedCheckpointError:
    guess_offset = 0
  train_iter = iterator_at(guess_step, guess_offset)
  batch = next(train_iter)
  parallel.check_batch_dims(batch, batch_dims)
  target = train_state_lib.abstract_train_state(
    steps.model, steps.optimizer, _first_device(batch)
  )
  start_step, host_state, data_offset = _restore(checkpointer, target)
  if host_state is not None:
    logging.info('Resumed from checkpoint %d in %s.', start_step, checkpointer.directory)
  else:
    host_state = train_state_lib.init_train_state(
      steps.model, steps.optimizer, _first_device(batch), init_rng
    )
  if int(host_state.step) != start_step:
    raise ValueError(
      f'checkpoint {start_step} holds a state at step {int(host_state.step)}.'
    )
  if (start_step, data_offset) != (guess_step, guess_offset):
    train_iter = iterator_at(start_step, data_offset)
    batch = None
  if start_step > num_steps:
    logging.warning(
      'The latest checkpoint (step %d) is past training.num_steps=%d; nothing to train.',
      start_step,
      num_steps,
    )
  logging.info(
    'Task %s: %d parameters, %d steps of global batch %d over %d host(s) x %d '
    'device(s) (per-device batch %d); strategy %s%s, %d micro-batch(es) per step, '
    '%d batch(es) prefetched.',
    config.task,
    _count_params(host_state.params),
    num_steps,
    training.batch_size,
    jax.process_count(),
    jax.local_device_count(),
    batch_dims[1],
    steps.strategy.name,
    ' + FSDP' if getattr(steps.strategy, 'fsdp', False) else '',
    training.get('grad_accum_steps', 1),
    prefetch_size,
  )

  writer = metrics_writer.MetricsWriter(
    workdir, total_steps=num_steps, batch_size=training.batch_size
  )
  evaluator = Evaluator(task, config, eval_rng) if evaluate else None
  strategy = steps.strategy
  p_state = strategy.put_state(host_state)
  p_rng = strategy.put_rng(train_rng)

  def device_batches(first_batch, host_iter):
    # The first batch (read to shape the restore target) is trained on first.
    head = [] if first_batch is None else [first_batch]
    return prefetch.prefetch_to_device(
      itertools.chain(head, host_iter), prefetch_size, strategy.put_batch
    )

  device_iter = device_batches(batch, train_iter)

  accumulator = _MeanAccumulator()
  pending = None  # (step, metrics) of the last dispatched step, not yet checked.
  last_loss = [None]  # Training loss of the newest checked step.
  rollbacks_left = training.get('rollback_on_nonfinite', 0)

  def check(pending):
    step, p_metrics = pending
    metrics = strategy.get_metrics(p_metrics)
    if metrics.pop('finite') < 1.0:
      raise _Diverged(step, metrics)
    last_loss[0] = metrics.get('loss')
    accumulator.add(metrics)

  def save(step, state):
    checkpointer.save(step, state, loss=last_loss[0], data_offset=data_offset)

  step = start_step
  writer.start(step)
  watch = preemption.PreemptionWatch()
  try:
    watch.start()
    while step < num_steps:
      try:
        p_state, p_metrics = strategy.train_step(p_state, next(device_iter), p_rng)
        step += 1
        # Checking the previous step while this one runs keeps the device busy.
        if pending is not None:
          check(pending)
        pending = (step, p_metrics)

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
        loss = diverged.metrics.get('loss')
        grad_norm = diverged.metrics.get('grad_norm')
        if rollbacks_left <= 0 or good is None:
          raise NonFiniteError(
            f'Non-finite loss or gradient at step {bad} (loss={loss}, '
            f'grad_norm={grad_norm}); training stopped. The latest good checkpoint '
            f'(finite parameters and loss, older than the step {bad - 1} whose '
            f'parameters gave the bad step) is step {good} in '
            f'{checkpointer.directory}'
            + (
              '; set training.rollback_on_nonfinite to go back to it and skip the '
              'batches after it.'
              if good is not None
              else '.'
            )
          ) from None
        rollbacks_left -= 1
        for later in [s for s in checkpointer.all_steps() if s > good]:
          checkpointer.set_aside(later, 'rolled_back')
        _, host_state, old_offset = _restore(checkpointer, target, good)
        # Skip the batches of steps good+1 .. bad: the next step reads the batch that
        # followed the bad one.
        data_offset = old_offset + (bad - good)
        logging.warning(
          'Non-finite loss or gradient at step %d (loss=%s, grad_norm=%s): rolled back '
          'to checkpoint %d and skipping %d batches (%d rollback(s) left).',
          bad,
          loss,
          grad_norm,
          good,
          bad - good,
          rollbacks_left,
        )
        p_state = strategy.put_state(host_state)
        step = start_step = good
        device_iter = device_batches(None, iterator_at(good, data_offset))
        pending = None
        accumulator.means_and_reset()
        writer.start(step)
        continue

      if log_now:
        metrics = accumulator.means_and_reset()
        metrics['learning_rate'] = float(schedule(step - 1))
        writer.write_train(step, metrics)
      if save_now:
        save(step, strategy.get_state(p_state))
      if eval_now:
        writer.pause()
        writer.write_eval(step, evaluator(p_state), split_name=config.evaluation.split)
        writer.resume()
      if stop_now:
        save(step, strategy.get_state(p_state))  # No-op if saved.
        checkpointer.wait()
        raise preemption.Preempted(step, checkpointer.directory)

    if pending is not None:
      check(pending)
    host_state = strategy.get_state(p_state)
    if int(host_state.step) not in checkpointer.all_steps():
      save(int(host_state.step), host_state)
    checkpointer.wait()
    checkpoint_manager.export_npz(workdir, host_state.params, host_state.state)
    if evaluate:
      writer.write_eval(
        int(host_state.step), evaluator(p_state), split_name=config.evaluation.split
      )
  finally:
    watch.stop()
    writer.close()
  return host_state


def evaluate_checkpoint(
  config: ml_collections.ConfigDict, workdir: str, step: Optional[int] = None
) -> Dict[str, float]:
  """Evaluates checkpoint `step` (default: newest intact) of `workdir`, read-only.

  See `evaluator.evaluate_checkpoint`.
  """
  from experiments.training import evaluator  # pylint: disable=g-import-not-at-top

  return evaluator.evaluate_checkpoint(config, workdir, step)


def use_compilation_cache(directory: str, *, min_compile_time_s: float = 1.0) -> None:
  """Stores compiled executables in `directory` and loads them from there.

  Executables that took at least `min_compile_time_s` to compile are kept, so a
  resumed run starts without recompiling its train and evaluation steps.
  """
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', min_compile_time_s)
  # JAX decides whether the cache is on at the first compilation; start it afresh in
  # case something compiled before (e.g. in a notebook).
  compilation_cache.reset_cache()


def run(config: ml_collections.ConfigDict, workdir: str, mode: str) -> Any:
  """Runs `mode` (one of MODES) for `config` in `workdir`."""
  if mode not in MODES:
    raise ValueError(f'mode={mode!r} is not one of {MODES}.')
  task = task_lib.load_task(config.task)
  validation.check_config(config, task, mode=mode)
  evaluating = mode in ('eval', 'eval_continuous')
  if evaluating and not os.path.isdir(workdir):
    raise FileNotFoundError(f'--workdir={workdir!r} does not exist; train first.')
  os.makedirs(workdir, exist_ok=True)
  if config.training.get('compilation_cache', False) and os.access(workdir, os.W_OK):
    use_compilation_cache(os.path.join(workdir, 'compilation_cache'))
  if evaluating:
    from experiments.training import evaluator  # pylint: disable=g-import-not-at-top

    if mode == 'eval':
      return evaluator.evaluate_checkpoint(config, workdir)
    return evaluator.evaluate_continuously(config, workdir)
  return train(config, workdir, evaluate=(mode == 'train_and_eval'))
