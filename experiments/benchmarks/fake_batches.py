"""Training batches built with NumPy alone, for benchmarks on machines without TensorFlow.

The accelerator benchmark (`experiments.benchmarks.accelerator`) times the train step on
one device-resident batch; the values do not matter, only the keys, shapes and dtypes,
which must be those of the task's own `load(..., is_training=True)` batch (tests compare
each builder with its task's real pipeline on `data.fake=True`, so they cannot drift).
The task pipelines use tf.data; these builders let the benchmark run where TensorFlow is
not installed.

Shape glossary: D local devices, b per-device batch, S image side, K classes, L bytes.
"""

from typing import Callable, Dict, Sequence

import ml_collections
import numpy as np

from perceiver import bytes_tokenizer

Batch = Dict[str, np.ndarray]
Builder = Callable[
  [ml_collections.ConfigDict, Sequence[int], np.random.RandomState], Batch
]


def imagenet_batch(config, batch_dims, rng) -> Batch:
  """'images' float32 `[D, b, S, S, 3]` (standard normal, like normalised pixels);
  'labels' int32 `[D, b]`, or float32 `[D, b, K]` label distributions when MixUp or
  CutMix is on (as `experiments.tasks.imagenet.input_pipeline` makes them)."""
  dims = tuple(batch_dims)
  size = int(config.data.image_size)
  num_classes = int(config.data.num_classes)
  images = rng.standard_normal(dims + (size, size, 3)).astype(np.float32)
  labels = rng.randint(0, num_classes, size=dims).astype(np.int32)
  if float(config.data.mixup_alpha) > 0 or bool(config.data.cutmix):
    labels = np.eye(num_classes, dtype=np.float32)[labels]
  return {'images': images, 'labels': labels}


def mlm_batch(config, batch_dims, rng) -> Batch:
  """Masked-LM batch `[D, b, L]` as `experiments.tasks.language.mlm.load` gives it:
  'inputs' int32 (bytes, a `data.mask_rate` share replaced by MASK), 'input_mask' int32
  (all 1: full sequences), 'targets' int32 (the original bytes), 'weights' float32 (1 at
  the masked positions)."""
  dims = tuple(batch_dims) + (int(config.data.seq_len),)
  num_reserved = bytes_tokenizer.NUM_RESERVED_TOKENS
  targets = rng.randint(num_reserved, num_reserved + 256, size=dims).astype(np.int32)
  selected = rng.random_sample(dims) < float(config.data.mask_rate)
  mask_id = bytes_tokenizer.BytesTokenizer().mask_token
  return {
    'inputs': np.where(selected, mask_id, targets).astype(np.int32),
    'input_mask': np.ones(dims, np.int32),
    'targets': targets,
    'weights': selected.astype(np.float32),
  }


BUILDERS: Dict[str, Builder] = {
  'experiments.tasks.imagenet.task': imagenet_batch,
  'experiments.tasks.language.mlm': mlm_batch,
}


def train_batch(
  config: ml_collections.ConfigDict, batch_dims: Sequence[int], seed: int = 0
) -> Batch:
  """A training batch `[*batch_dims, ...]` for `config.task`, built without TensorFlow.

  Args:
    config: an experiment config whose `task` has a builder in `BUILDERS`.
    batch_dims: `[local devices, per-device batch]`.
    seed: NumPy seed of the values.
  """
  builder = BUILDERS.get(config.task)
  if builder is None:
    raise ValueError(
      f'No NumPy batch builder for config.task={config.task!r}; '
      f'available: {sorted(BUILDERS)}.'
    )
  return builder(config, batch_dims, np.random.RandomState(seed))
