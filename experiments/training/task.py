"""The task-module contract between an experiment and the training loop.

`config.task` names a module (e.g. `'experiments.tasks.digits.task'`) that satisfies the
`Task` protocol below, checked by `load_task`; `docs/adding_a_task.md` walks through one:

  build_model(config) -> hk.TransformedWithState
      forward `f(batch, *, is_training)` returning logits or a dict of outputs.
  batch_spec(config) -> {name: jax.ShapeDtypeStruct}
      the shape (without the batch dims) and dtype of every entry of a training batch
      (what `load('train', is_training=True, ...)` yields); code outside the family
      (checkpoint restore targets, weight loading, benchmarks) builds example batches
      from it instead of reading data (`example_batch`). A task with a length
      curriculum (the Perceiver AR copy task) trains its first steps on shorter
      sequences; its spec is that of the batches after the curriculum.
  load(split, *, is_training, batch_dims, config, start_step=0) -> iterator of batches
      dicts of NumPy arrays, each leaf shaped `[*batch_dims, ...]` (`batch_dims` is
      `[local_devices, per_device_batch]`). Data is sharded by host
      (`jax.process_index()` of `jax.process_count()`). Training iterators repeat
      forever in an order fixed by `config.seed`; with `start_step`, they begin at the
      batch a fresh iterator would yield at that step (so a resumed run sees the same
      data as an uninterrupted one).
      Evaluation iterators cover this host's share of the split exactly once, pad the
      last batch and add `'mask'` (float32, 1 for real examples, 0 for padding); every
      host yields the same number of batches, `ceil(num_examples / global_batch)`.
      TensorFlow never leaks out of `load`.
  num_examples(split, config) -> int
  train_loss(outputs, batch, config) -> (scalar loss, {name: scalar})   jittable
  eval_outputs(outputs, batch, config) -> {name: per-example [B, ...]}   jittable
  summarize_eval(per_example, config) -> {name: float}
      gets the concatenation of `eval_outputs` over the whole split, padding removed.
"""

import importlib
import inspect
import math
import types
from typing import (
  Any,
  Dict,
  Iterator,
  Mapping,
  Protocol,
  Sequence,
  Tuple,
  runtime_checkable,
)

import haiku as hk
import jax
import ml_collections
import numpy as np

from experiments.training import errors

REQUIRED_FUNCTIONS = (
  'build_model',
  'batch_spec',
  'load',
  'num_examples',
  'train_loss',
  'eval_outputs',
  'summarize_eval',
)


@runtime_checkable
class Task(Protocol):
  """What a task module defines (see the module docstring for the semantics)."""

  def build_model(self, config: ml_collections.ConfigDict) -> hk.TransformedWithState: ...

  def batch_spec(
    self, config: ml_collections.ConfigDict
  ) -> Dict[str, jax.ShapeDtypeStruct]: ...

  def load(
    self,
    split: str,
    *,
    is_training: bool,
    batch_dims: Sequence[int],
    config: ml_collections.ConfigDict,
    start_step: int = 0,
  ) -> Iterator[Dict[str, np.ndarray]]: ...

  def num_examples(self, split: str, config: ml_collections.ConfigDict) -> int: ...

  def train_loss(
    self, outputs: Any, batch: Mapping[str, Any], config: ml_collections.ConfigDict
  ) -> Tuple[Any, Dict[str, Any]]: ...

  def eval_outputs(
    self, outputs: Any, batch: Mapping[str, Any], config: ml_collections.ConfigDict
  ) -> Dict[str, Any]: ...

  def summarize_eval(
    self, per_example: Dict[str, np.ndarray], config: ml_collections.ConfigDict
  ) -> Dict[str, float]: ...


def check_task(module: types.ModuleType) -> None:
  """Raises ValueError unless `module` satisfies `Task`, with keyword-only `load`
  arguments `is_training`, `batch_dims`, `config` and `start_step`."""
  name = getattr(module, '__name__', repr(module))
  missing = [f for f in REQUIRED_FUNCTIONS if not callable(getattr(module, f, None))]
  if missing or not isinstance(module, Task):
    raise errors.ConfigError(f'task module {name!r} does not define {missing}.')
  params = inspect.signature(module.load).parameters
  for keyword in ('is_training', 'batch_dims', 'config', 'start_step'):
    if keyword not in params or params[keyword].kind not in (
      inspect.Parameter.KEYWORD_ONLY,
      inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
      raise errors.ConfigError(
        f'task module {name!r}: load() must take the keyword argument {keyword!r} '
        '(see experiments/training/task.py).'
      )


def load_task(name: str) -> types.ModuleType:
  """Imports the task module `name` and checks it against the `Task` protocol."""
  if not name:
    raise errors.ConfigError(
      'config.task is empty; set it to a task module such as '
      '"experiments.tasks.digits.task".'
    )
  try:
    module = importlib.import_module(name)
  except ModuleNotFoundError as e:
    raise errors.ConfigError(f'config.task={name!r} cannot be imported: {e}') from e
  check_task(module)
  return module


def num_train_steps(config: ml_collections.ConfigDict, task: types.ModuleType) -> int:
  """Total optimizer steps: from `training.num_epochs` when set (> 0), else `num_steps`."""
  training = config.training
  if training.num_epochs is not None and training.num_epochs > 0:
    num_examples = task.num_examples('train', config)
    return max(1, math.ceil(training.num_epochs * num_examples / training.batch_size))
  if training.num_steps is None or training.num_steps <= 0:
    raise errors.ConfigError(
      f'training.num_steps={training.num_steps} and training.num_epochs='
      f'{training.num_epochs}: set one of them to a positive value.'
    )
  return training.num_steps


def train_iterator(
  task: types.ModuleType,
  config: ml_collections.ConfigDict,
  *,
  batch_dims: Sequence[int],
  start_step: int,
) -> Iterator[dict]:
  """The task's training iterator positioned at `start_step`."""
  return task.load(
    'train', is_training=True, batch_dims=batch_dims, config=config, start_step=start_step
  )


def example_batch(
  task: types.ModuleType,
  config: ml_collections.ConfigDict,
  batch_size: int = 1,
) -> Dict[str, np.ndarray]:
  """Zeros shaped like a training batch of `batch_size` examples (`task.batch_spec`).

  Enough to initialise the model, shape a restore target or time a step; no data is
  read.
  """
  return {
    name: np.zeros((batch_size,) + tuple(spec.shape), spec.dtype)
    for name, spec in task.batch_spec(config).items()
  }


def padding_batch(batch: dict) -> dict:
  """A batch like `batch` with zeros everywhere, including `'mask'` (all padding)."""
  return {k: np.zeros_like(v) for k, v in batch.items()}
