"""Whole-word masking of byte sequences for masked language modelling.

The sequences are ids from `perceiver.bytes_tokenizer.BytesTokenizer`: ids
below `NUM_RESERVED` are special tokens (PAD, BOS, EOS, MASK, CLS, SEP), byte
`b` is id `b + NUM_RESERVED`.

A *word unit* is a maximal run of non-whitespace bytes together with the
whitespace immediately before it, so that masking a word also hides the space
that introduces it (the released byte model is known to fill masked spans best
when they start with a space). A run of whitespace that ends a sequence (or
precedes a special token) forms a unit of its own. Special tokens belong to no
unit and are never masked.

Each unit is selected independently with probability `mask_rate`. A selected
unit is, as a whole, replaced by MASK ids (probability `mask_token_prob`), by
uniformly random bytes (probability `random_token_prob`) or kept unchanged
(the rest): BERT's 80/10/10 recipe applied per word. The loss weights are 1.0
at every byte of a selected unit and 0.0 elsewhere.

Everything is written with TensorFlow's stateless random ops, so the same
function runs eagerly (deterministic given the seed) and inside `tf.data`.
"""

from typing import Dict

import tensorflow as tf

from experiments.training import errors
from experiments.training import host_tensorflow
from perceiver import bytes_tokenizer

host_tensorflow.keep_on_host(tf)

_TOKENIZER = bytes_tokenizer.BytesTokenizer()
# Reserved ids of BytesTokenizer: PAD 0, BOS 1, EOS 2, MASK 3, CLS 4, SEP 5.
NUM_RESERVED = bytes_tokenizer.NUM_RESERVED_TOKENS
MASK_ID = _TOKENIZER.mask_token
VOCAB_SIZE = _TOKENIZER.vocab_size
# ASCII whitespace: tab, newline, vertical tab, form feed, carriage return, space.
WHITESPACE_BYTES = (9, 10, 11, 12, 13, 32)


def _check_probabilities(mask_rate, mask_token_prob, random_token_prob):
  if not 0.0 <= mask_rate <= 1.0:
    raise errors.ConfigError(f'mask_rate must be in [0, 1], got {mask_rate}.')
  if (
    mask_token_prob < 0
    or random_token_prob < 0
    or (mask_token_prob + random_token_prob > 1.0)
  ):
    raise errors.ConfigError(
      'mask_token_prob and random_token_prob must be non-negative with a sum'
      f' of at most 1, got {mask_token_prob} and {random_token_prob}.'
    )


def word_units(ids: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Finds the word units of byte-id sequences.

  Args:
    ids: int32 `[..., L]` token ids.

  Returns:
    dict with `is_text` (bool `[..., L]`, false at special tokens),
    `unit_start` (bool `[..., L]`, true at the first byte of each unit) and
    `unit_id` (int32 `[..., L]`, index of the unit a byte belongs to within its
    sequence; 0 before the first unit).
  """
  ids = tf.convert_to_tensor(ids, tf.int32)
  is_text = ids >= NUM_RESERVED
  whitespace = tf.constant(WHITESPACE_BYTES, tf.int32) + NUM_RESERVED
  is_space = tf.reduce_any(ids[..., None] == whitespace, axis=-1)
  boundary = tf.ones_like(is_text[..., :1])  # [..., 1]
  prev_special = tf.concat([boundary, ~is_text[..., :-1]], axis=-1)
  prev_space = tf.concat([~boundary, is_space[..., :-1]], axis=-1)
  unit_start = is_text & (prev_special | (is_space & ~prev_space))
  unit_id = tf.maximum(tf.cumsum(tf.cast(unit_start, tf.int32), axis=-1) - 1, 0)
  return dict(is_text=is_text, unit_start=unit_start, unit_id=unit_id)


def whole_word_mask(
  ids: tf.Tensor,
  seed: tf.Tensor,
  *,
  mask_rate: float = 0.15,
  mask_token_prob: float = 0.8,
  random_token_prob: float = 0.1,
) -> Dict[str, tf.Tensor]:
  """Masks whole word units of byte-id sequences.

  Args:
    ids: int32 `[..., L]` original token ids (the targets).
    seed: int32 `[2]` stateless random seed; equal seeds give equal masks.
    mask_rate: probability that a word unit is selected.
    mask_token_prob: probability that a selected unit becomes MASK ids.
    random_token_prob: probability that a selected unit becomes random bytes.

  Returns:
    dict with `inputs` (int32 `[..., L]`, the corrupted ids) and `weights`
    (float32 `[..., L]`, 1.0 at the bytes of selected units).
  """
  _check_probabilities(mask_rate, mask_token_prob, random_token_prob)
  ids = tf.convert_to_tensor(ids, tf.int32)
  if ids.shape.rank is None or ids.shape.rank < 1:
    raise ValueError(f'ids must have a known rank >= 1, got shape {ids.shape}.')
  units = word_units(ids)
  batch_dims = ids.shape.rank - 1
  shape = tf.shape(ids)
  select_seed, mode_seed, byte_seed = tf.unstack(tf.random.split(seed, 3))

  def per_unit(draw):
    # Draw index u is the draw of unit u: one value per unit, spread to its bytes.
    return tf.gather(draw, units['unit_id'], axis=-1, batch_dims=batch_dims)

  select_draw = per_unit(tf.random.stateless_uniform(shape, select_seed))
  mode_draw = per_unit(tf.random.stateless_uniform(shape, mode_seed))
  selected = units['is_text'] & (select_draw < mask_rate)
  use_mask = selected & (mode_draw < mask_token_prob)
  use_random = (
    selected
    & (mode_draw >= mask_token_prob)
    & (mode_draw < mask_token_prob + random_token_prob)
  )
  random_bytes = tf.random.stateless_uniform(
    shape, byte_seed, minval=NUM_RESERVED, maxval=VOCAB_SIZE, dtype=tf.int32
  )
  inputs = tf.where(
    use_mask, tf.constant(MASK_ID, tf.int32), tf.where(use_random, random_bytes, ids)
  )
  return dict(inputs=inputs, weights=tf.cast(selected, tf.float32))


def example_seed(base_seed: int, index: tf.Tensor) -> tf.Tensor:
  """A stateless seed `[2]` for example number `index` of a stream."""
  return tf.stack([tf.constant(base_seed, tf.int64), tf.cast(index, tf.int64)])
