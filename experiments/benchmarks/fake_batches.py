"""Training batches built with NumPy alone, for benchmarks on machines without TensorFlow.

The accelerator benchmark (`experiments.benchmarks.accelerator`) times the train step on
one device-resident batch; the values do not matter, only the keys, shapes and dtypes,
which every task declares (`batch_spec`, tested against its real pipeline). The task
pipelines use tf.data; these batches let the benchmark run where TensorFlow is not
installed.
"""

from typing import Dict, Sequence

import ml_collections
import numpy as np

from experiments.training import task as task_lib

Batch = Dict[str, np.ndarray]


def train_batch(
  config: ml_collections.ConfigDict, batch_dims: Sequence[int], seed: int = 0
) -> Batch:
  """A training batch `[*batch_dims, ...]` of `config.task` (`batch_spec`): floats
  uniform in [0, 1), integers 1 (a valid class or token id, and an unmasked position,
  in every task)."""
  task = task_lib.load_task(config.task)
  rng = np.random.RandomState(seed)
  batch = {}
  for name, spec in task.batch_spec(config).items():
    shape = tuple(batch_dims) + tuple(spec.shape)
    if np.issubdtype(spec.dtype, np.floating):
      batch[name] = rng.random_sample(shape).astype(spec.dtype)
    else:
      batch[name] = np.ones(shape, spec.dtype)
  return batch
