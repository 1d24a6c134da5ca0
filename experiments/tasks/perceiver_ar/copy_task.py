"""The copy task of the Perceiver AR paper and release: a random first half, mirrored.

A sequence of `L` (`data.sequence_length`, even) events is SOS, `h = L / 2 - 1` random
byte tokens, the same tokens in reverse order, and EOS:

  [SOS, x_1, ..., x_h, x_h, ..., x_1, EOS]

The first half cannot be predicted; every token of the mirrored half (and EOS) is a
copy of an earlier one, which the model can find only by attending `2 (h - k) + 1`
positions back for the k-th mirrored token, up to the whole context. Examples are
generated: training draws fresh sequences every step, cropped as in the release to a
random length (at least `data.minimum_crop_length` inputs, so that the latents see the
second half); evaluation scores the h mirrored targets of `data.eval_sequences`
held-out sequences (from another seed) in blocks of `evaluation.eval_block_size`.

Shape glossary:
  L: events per sequence; M = L: inputs per example; h: random tokens.
"""

import numpy as np

from experiments.tasks.perceiver_ar import sequences
from experiments.training import errors

_EVAL_STREAM = 1_000_003  # Seed stream of the held-out sequences.
_EVAL_SPLITS = ('validation', 'test')


def half_length(sequence_length: int) -> int:
  """h, the random tokens of a sequence of `sequence_length` events."""
  if sequence_length < 4 or sequence_length % 2:
    raise errors.ConfigError(
      f'data.sequence_length must be even and >= 4, got {sequence_length!r}.'
    )
  return sequence_length // 2 - 1


def mirrored_sequences(rng: np.random.Generator, num: int, sequence_length: int):
  """`[num, L]` int32 sequences `[SOS, x, reversed(x), EOS]` with random bytes x."""
  h = half_length(sequence_length)
  first = rng.integers(0, 256, size=(num, h)).astype(np.int32) + sequences.NUM_RESERVED
  return np.concatenate(
    [
      np.full([num, 1], sequences.SOS_ID, np.int32),
      first,
      first[:, ::-1],
      np.full([num, 1], sequences.EOS_ID, np.int32),
    ],
    axis=1,
  )


def scored_targets(sequence_length: int):
  """`(first, last)`: the targets of the mirrored half, `[h, 2h)` (target j predicts
  event j + 1)."""
  h = half_length(sequence_length)
  return h, 2 * h


def train_batch(rng: np.random.Generator, num: int, *, config) -> sequences.Example:
  """`num` fresh sequences, each cropped to a random number of inputs in
  `[minimum_crop_length, L - 1]` (all targets weighted)."""
  length = config.data.sequence_length
  context = config.data.max_context_length
  events = mirrored_sequences(rng, num, length)
  positions = sequences.linear_positions(length)
  low = min(max(1, config.data.minimum_crop_length), length - 1)
  ends = rng.integers(low, length, size=num)  # Inputs events[0:end], end <= L - 1.
  return sequences.stack(
    sequences.example(
      events[i], positions, start=max(0, end - context), end=int(end), context=context
    )
    for i, end in enumerate(ends)
  )


def eval_source(split: str, config):
  """`(num_examples, example(i))`: windows scoring the mirrored targets of the
  held-out sequences of `split` (each split its own seed)."""
  if split not in _EVAL_SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {_EVAL_SPLITS} (or train).')
  length = config.data.sequence_length
  context = config.data.max_context_length
  rng = np.random.default_rng([config.seed, _EVAL_STREAM, _EVAL_SPLITS.index(split)])
  events = mirrored_sequences(rng, config.data.eval_sequences, length)
  positions = sequences.linear_positions(length)
  first, last = scored_targets(length)
  windows = sequences.eval_windows(
    last, context=context, block=config.evaluation.eval_block_size, first=first
  )

  def example(index):
    row, window = divmod(index, len(windows))
    start, end, score = windows[window]
    return sequences.example(
      events[row], positions, start=start, end=end, context=context, score=score
    )

  return len(events) * len(windows), example
