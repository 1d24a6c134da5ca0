"""tf.data assembly of text batches: masking, shuffling and device batching.

The producers of sequences are plain Python iterators (see `text_input`); this
module wraps them in `tf.data`, applies `text_masking.whole_word_mask` inside
the pipeline and returns NumPy batches shaped `[*batch_dims, L]`. TensorFlow
never leaves this module.

Shape glossary:
  L: sequence length in byte ids.
  batch_dims: `[local_devices, per_device_batch]` (any leading dims work).
"""

import math
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from experiments.tasks.language import masking as text_masking
from experiments.training import errors
from experiments.training import host_tensorflow

host_tensorflow.keep_on_host(tf)

Sequences = Iterator[Tuple[np.ndarray, np.ndarray]]
Batch = Dict[str, np.ndarray]


def _sequence_dataset(
  make_sequences: Callable[[], Sequences], seq_len: int
) -> tf.data.Dataset:
  spec = tf.TensorSpec([seq_len], tf.int32)
  return tf.data.Dataset.from_generator(make_sequences, output_signature=(spec, spec))


def _masking_fn(
  *, seed: int, mask_rate: float, mask_token_prob: float, random_token_prob: float
):
  def apply(index, sequence):
    ids, input_mask = sequence
    masked = text_masking.whole_word_mask(
      ids,
      text_masking.example_seed(seed, index),
      mask_rate=mask_rate,
      mask_token_prob=mask_token_prob,
      random_token_prob=random_token_prob,
    )
    return dict(
      inputs=masked['inputs'],
      input_mask=input_mask,
      targets=ids,
      weights=masked['weights'],
    )

  return apply


def _reshape(batch: Batch, batch_dims: Sequence[int]) -> Batch:
  return {k: v.reshape(tuple(batch_dims) + v.shape[1:]) for k, v in batch.items()}


def masked_lm_train_batches(
  make_sequences: Callable[[], Sequences],
  *,
  seq_len: int,
  batch_dims: Sequence[int],
  seed: int,
  mask_rate: float,
  mask_token_prob: float,
  random_token_prob: float,
  shuffle_buffer: int,
  start_step: int = 0,
) -> Iterator[Batch]:
  """Endless masked-LM training batches from an endless sequence iterator.

  Masks are drawn anew for every sequence (dynamic masking), seeded by
  `(seed, sequence number)`, so the stream is a deterministic function of the
  sequence order and `seed`; `start_step` skips the batches of earlier steps
  before masking them.

  Yields:
    dicts with `inputs` (masked ids), `input_mask`, `targets` (original ids),
    int32, and `weights` (float32, 1.0 at masked bytes), each
    `[*batch_dims, L]`.
  """
  batch_size = math.prod(batch_dims)
  ds = _sequence_dataset(make_sequences, seq_len)
  if shuffle_buffer > 1:
    ds = ds.shuffle(shuffle_buffer, seed=seed)
  ds = ds.enumerate()
  if start_step:
    ds = ds.skip(start_step * batch_size)
  ds = ds.map(
    _masking_fn(
      seed=seed,
      mask_rate=mask_rate,
      mask_token_prob=mask_token_prob,
      random_token_prob=random_token_prob,
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
  for batch in ds.as_numpy_iterator():
    yield _reshape(batch, batch_dims)


def masked_lm_eval_batches(
  make_sequences: Callable[[], Sequences],
  *,
  seq_len: int,
  batch_dims: Sequence[int],
  num_batches: int,
  seed: int,
  mask_rate: float,
  mask_token_prob: float,
  random_token_prob: float,
) -> Iterator[Batch]:
  """Masked-LM evaluation batches covering a finite sequence stream once.

  The masks depend only on `seed` and the sequence number, so every evaluation
  scores the same masked bytes. The last batch is padded and `num_batches`
  batches are always produced (all-padding ones at the end if the stream is
  short), so every host runs the same number of evaluation steps.

  Yields:
    the keys of `masked_lm_train_batches` plus `mask` (float32 `[*batch_dims]`,
    1.0 for real sequences).
  """
  ds = _sequence_dataset(make_sequences, seq_len).enumerate()
  ds = ds.map(
    _masking_fn(
      seed=seed,
      mask_rate=mask_rate,
      mask_token_prob=mask_token_prob,
      random_token_prob=random_token_prob,
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  examples = ds.prefetch(2).as_numpy_iterator()
  zeros = np.zeros([seq_len], np.int32)
  empty = dict(
    inputs=zeros, input_mask=zeros, targets=zeros, weights=zeros.astype(np.float32)
  )
  yield from padded_batches(
    examples, batch_dims=batch_dims, num_batches=num_batches, empty_example=empty
  )


def padded_batches(
  examples,
  *,
  batch_dims: Sequence[int],
  num_batches: Optional[int] = None,
  batched: bool = False,
  empty_example: Optional[Batch] = None,
) -> Iterator[Batch]:
  """Groups examples into `[*batch_dims, ...]` batches with a `mask` entry.

  Args:
    examples: iterator of dicts of NumPy arrays, one example each (or batches
      of up to `prod(batch_dims)` examples when `batched`).
    batch_dims: leading dims of every output batch.
    num_batches: exact number of batches to yield; missing ones are all
      padding. Raises if the examples need more batches. None: as many as the
      examples need.
    batched: whether `examples` already holds batches.
    empty_example: one example of zeros, the model of all-padding batches when
      this host has no example at all (needed only then).

  Yields:
    dicts shaped `[*batch_dims, ...]`; padding entries are zeros with mask 0.
  """
  batch_size = math.prod(batch_dims)

  def finish(parts):
    stacked = {
      k: (
        np.concatenate([p[k] for p in parts])
        if batched
        else np.stack([p[k] for p in parts])
      )
      for k in parts[0]
    }
    count = next(iter(stacked.values())).shape[0]
    pad = batch_size - count
    out = {
      k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
      for k, v in stacked.items()
    }
    out['mask'] = (np.arange(batch_size) < count).astype(np.float32)
    return _reshape(out, batch_dims), out

  produced = 0
  template = None
  parts, count = [], 0
  for example in examples:
    size = next(iter(example.values())).shape[0] if batched else 1
    if count + size > batch_size:
      raise ValueError(f'input batches of {size} exceed the batch size {batch_size}.')
    parts.append(example)
    count += size
    if count == batch_size:
      batch, template = finish(parts)
      produced += 1
      if num_batches is not None and produced > num_batches:
        raise ValueError(
          f'The evaluation data holds more than num_batches='
          f'{num_batches} batches of {batch_size}.'
        )
      yield batch
      parts, count = [], 0
  if parts:
    batch, template = finish(parts)
    produced += 1
    if num_batches is not None and produced > num_batches:
      raise ValueError(
        f'The evaluation data holds more than num_batches='
        f'{num_batches} batches of {batch_size}.'
      )
    yield batch
  if num_batches is not None and produced < num_batches:
    if template is None:
      if empty_example is None:
        raise errors.DataError(
          'This host has no evaluation examples at all, so the '
          'shape of its padding batches is unknown.'
        )
      template = {
        k: np.zeros((batch_size,) + np.shape(v), np.asarray(v).dtype)
        for k, v in empty_example.items()
      }
      template['mask'] = np.zeros([batch_size], np.float32)
    empty = {k: np.zeros_like(v) for k, v in template.items()}
    for _ in range(num_batches - produced):
      yield _reshape(empty, batch_dims)
