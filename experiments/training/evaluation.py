"""Evaluation of a device-resident train state on every example of a split, once.

Used by the trainer (periodic and final evaluation) and by the evaluation jobs
(`evaluator.py`). Every host runs the same number of evaluation steps, padding with
all-padding batches where its share is shorter; the per-example outputs of all hosts
are gathered, padding is dropped, and the task summarises the whole split.
"""

import math
from typing import Any, Dict, Optional

import jax
import numpy as np

from experiments.training import experiment as experiment_lib
from experiments.training import parallel
from experiments.training import task as task_lib


class SplitEvaluator:
  """Evaluates a placed train state on a split of the experiment's task."""

  def __init__(self, experiment: experiment_lib.Experiment, rng: jax.Array):
    """Prepares evaluation.

    Args:
      experiment: the run (its config's `evaluation.*` fields, task and strategy).
      rng: the key passed to the model (dropout is off in evaluation).
    """
    self._experiment = experiment
    self._rng = experiment.strategy.put_rng(rng)

  def put_state(self, host_state: Any) -> Any:
    """A host state placed on the devices as this evaluator's steps expect it."""
    return self._experiment.strategy.put_state(host_state)

  def __call__(self, state: Any, split: Optional[str] = None) -> Dict[str, float]:
    """Summarised metrics of a placed `state` on `split` (default: the config's).

    Raises:
      ValueError: the task's evaluation batches do not cover the split exactly once
        (a task that breaks its contract).
    """
    config, task = self._experiment.config, self._experiment.task
    strategy = self._experiment.strategy
    split = split or config.evaluation.split
    global_batch = config.evaluation.batch_size
    batch_dims = parallel.local_batch_dims(global_batch, name='evaluation.batch_size')
    num_examples = task.num_examples(split, config)
    num_batches = math.ceil(num_examples / global_batch)

    def run(batch):
      return strategy.eval_step(state, strategy.put_batch(batch), self._rng)

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
      outputs.append(run(batch))
    if template is None:
      raise ValueError(
        f'task {config.task} yielded no evaluation batch for split '
        f'{split!r} on host {jax.process_index()}.'
      )
    # Hosts with fewer batches run all-padding ones so that every host runs the
    # same number of steps.
    while len(outputs) < num_batches:
      outputs.append(run(task_lib.padding_batch(template)))

    local = jax.tree.map(
      lambda *xs: np.concatenate(xs), *[strategy.local_outputs(o) for o in outputs]
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
