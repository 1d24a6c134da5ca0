"""Training order: plain epochs of shuffled clips, or class-balanced sampling.

AudioSet's unbalanced training set is dominated by a few classes (speech, music);
the usual remedy is to draw clips with probabilities that favour rare classes. With
`class_balanced_weights`, clip i is drawn with probability proportional to
`sum_{c in labels(i)} n_c^(-power)`, `n_c` the number of clips labelled c, so with
`power = 1` every class gets the same total weight (each class's clips share one
unit, and a clip with several labels collects a share from each).

Both orders are pure functions of `(seed, step)`, so a resumed run sees the same data.

Shape glossary:
  N: clips of the split; K: classes; G: global batch.
"""

from typing import Optional

import numpy as np

from experiments.training import array_data
from experiments.training import errors

_WEIGHTED_STREAM = 7


def class_balanced_weights(labels: np.ndarray, power: float = 1.0) -> np.ndarray:
  """Sampling probabilities `[N]` from multi-hot labels `[N, K]`.

  Args:
    labels: `[N, K]` 0/1 labels.
    power: 1 balances classes fully, 0 gives every labelled clip the same weight
      times its number of labels.

  Returns:
    `[N]` float64 probabilities summing to 1; clips without labels get 0.
  """
  labels = np.asarray(labels, np.float64)
  if labels.ndim != 2:
    raise ValueError(f'labels must have shape [N, K], got {labels.shape}.')
  if power < 0:
    raise errors.ConfigError(f'class balancing power must be >= 0, got {power}.')
  counts = labels.sum(axis=0)
  class_weight = np.where(counts > 0, np.maximum(counts, 1) ** -float(power), 0.0)
  weights = labels @ class_weight
  total = weights.sum()
  if total <= 0:
    raise errors.DataError('no clip has a label: cannot compute class-balanced weights.')
  return weights / total


def train_indices(
  step: int,
  *,
  num_examples: int,
  global_batch: int,
  seed: int,
  weights: Optional[np.ndarray] = None,
) -> np.ndarray:
  """The `[G]` clip indices of global training batch `step`.

  Without `weights`, consecutive batches walk through one permutation per epoch
  (`array_data.epoch_permutation`, as the in-memory pipelines); with `weights`, each
  batch draws G clips with replacement from those probabilities.
  """
  if num_examples <= 0:
    raise errors.DataError(f'num_examples={num_examples}: the split has no clips.')
  if weights is not None:
    if len(weights) != num_examples:
      raise ValueError(f'{len(weights)} weights for {num_examples} clips.')
    rng = np.random.default_rng([seed, _WEIGHTED_STREAM, step])
    return rng.choice(num_examples, size=global_batch, replace=True, p=weights)
  positions = np.arange(step * global_batch, (step + 1) * global_batch)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty(global_batch, np.int64)
  for epoch in np.unique(epochs):
    where = epochs == epoch
    out[where] = array_data.epoch_permutation(seed, int(epoch), num_examples)[
      offsets[where]
    ]
  return out
