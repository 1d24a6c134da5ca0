"""Batching for datasets that fit in host memory (dicts of equal-length NumPy arrays).

Training order is a pure function of `(seed, step)`: the examples are reshuffled every
epoch with a permutation seeded by `(seed, epoch)` and global batch `s` takes positions
`[s * G, (s + 1) * G)` of the concatenated epochs. Host `h` of `P` takes the `h`-th
slice of each global batch, so the global batches do not depend on the host count, and
a resumed iterator (`start_step`) continues exactly where an uninterrupted one would.

Evaluation visits examples in order; global batch `s` covers positions
`[s * G, (s + 1) * G)`, each host its slice; positions past the end are padding
(`mask` 0). Every host yields `ceil(N / G)` batches.

Shape glossary:
  N: examples in the split.
  G: global batch, `prod(batch_dims) * P`.
  batch_dims: `[local_devices, per_device_batch]` (any leading dims work).
"""

import itertools
from typing import Dict, Iterator, List, Optional, Sequence

import jax
import numpy as np

Arrays = Dict[str, np.ndarray]


def _num_examples(arrays: Arrays) -> int:
  sizes = {k: len(v) for k, v in arrays.items()}
  if not sizes or len(set(sizes.values())) != 1:
    raise ValueError(f'arrays must be non-empty and of equal length, got {sizes}.')
  n = next(iter(sizes.values()))
  if n == 0:
    raise ValueError('arrays hold no examples.')
  return n


def _host(process_index: Optional[int], process_count: Optional[int]):
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f'process_index={index} must be in [0, process_count={count}).')
  return index, count


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order of the examples in `epoch` (a pure function of its arguments)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def _take(arrays: Arrays, indices: np.ndarray, batch_dims: Sequence[int]) -> Arrays:
  return {
    k: v[indices].reshape(tuple(batch_dims) + v.shape[1:]) for k, v in arrays.items()
  }


def train_batches(
  arrays: Arrays,
  *,
  batch_dims: Sequence[int],
  seed: int,
  start_step: int = 0,
  process_index: Optional[int] = None,
  process_count: Optional[int] = None,
) -> Iterator[Arrays]:
  """Shuffled batches forever, starting at global step `start_step`.

  Args:
    arrays: the split, `{name: [N, ...]}`.
    batch_dims: leading dims of each host batch.
    seed: fixes the order.
    start_step: the first step yielded.
    process_index, process_count: this host and the host count (default: JAX's).

  Yields:
    `{name: [*batch_dims, ...]}`.
  """
  num_examples = _num_examples(arrays)
  host, hosts = _host(process_index, process_count)
  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be >= 0.')
  host_batch = int(np.prod(batch_dims))
  global_batch = host_batch * hosts
  permutations = {}
  for step in itertools.count(start_step):
    first = step * global_batch + host * host_batch
    positions = np.arange(first, first + host_batch)
    epochs, offsets = np.divmod(positions, num_examples)
    for epoch in set(epochs.tolist()) - set(permutations):
      permutations[epoch] = epoch_permutation(seed, epoch, num_examples)
    for epoch in [e for e in permutations if e < epochs.min()]:
      del permutations[epoch]
    indices = np.array(
      [permutations[e][o] for e, o in zip(epochs, offsets)], dtype=np.int64
    )
    yield _take(arrays, indices, batch_dims)


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  """`ceil(N / G)`."""
  return -(-num_examples // global_batch)


def eval_batches(
  arrays: Arrays,
  *,
  batch_dims: Sequence[int],
  process_index: Optional[int] = None,
  process_count: Optional[int] = None,
) -> Iterator[Arrays]:
  """Every example once, in order, padded, with a float32 `mask` (1 real, 0 padding).

  Args:
    arrays: the split, `{name: [N, ...]}` (must not contain `mask`).
    batch_dims: leading dims of each host batch.
    process_index, process_count: this host and the host count (default: JAX's).

  Yields:
    `{name: [*batch_dims, ...], 'mask': [*batch_dims]}`.
  """
  if 'mask' in arrays:
    raise ValueError("arrays already contain a 'mask' entry.")
  num_examples = _num_examples(arrays)
  host, hosts = _host(process_index, process_count)
  host_batch = int(np.prod(batch_dims))
  global_batch = host_batch * hosts
  for step in range(num_eval_batches(num_examples, global_batch)):
    first = step * global_batch + host * host_batch
    positions = np.arange(first, first + host_batch)
    real = positions < num_examples
    batch = _take(arrays, np.where(real, positions, 0), batch_dims)
    for name, value in batch.items():  # Padding rows hold zeros, not copies.
      value.reshape((host_batch,) + value.shape[len(batch_dims) :])[~real] = 0
    batch['mask'] = real.astype(np.float32).reshape(tuple(batch_dims))
    yield batch


def example_rngs(
  seed: int,
  stream: int,
  step: int,
  host_batch: int,
  *,
  process_index: Optional[int] = None,
  process_count: Optional[int] = None,
) -> List[np.random.Generator]:
  """A generator per example of this host's batch at `step`, for augmentation.

  Example `i` of the host batch draws from `default_rng([seed, stream, step, g])`,
  where `g` is its slot in the global batch: the draws are a pure function of the
  config's seed, the family's stream number, the step and the slot, so a resumed run
  and a run on any number of hosts augment every example alike.
  """
  host, _ = _host(process_index, process_count)
  first = host * host_batch
  return [
    np.random.default_rng([seed, stream, step, first + slot])
    for slot in range(host_batch)
  ]
