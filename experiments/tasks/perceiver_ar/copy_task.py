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

A context curriculum (`data.curriculum_contexts`, `data.curriculum_stage_steps`) lets a
long copy task train on a small machine: until the cross-attention has found the mirror
alignment, its gradient is spread evenly over every input, so the loss sits at ln 256
for a number of steps that grows with the context. Stage k (`curriculum_stage_steps`
steps each) trains on windows of `curriculum_contexts[k]` inputs that end just past the
fold, placed so that every latent predicts a mirrored token whose source lies in the
window; the events keep their positions in the whole sequence, so what a short window
teaches (the position `2h - j` that holds the target of input j) holds at every
context. After the last stage, training crops are the release's.

Shape glossary:
  L: events per sequence; M = L: inputs per example; h: random tokens.
  C: inputs per example of a curriculum stage; N: latents (`z_index_dim`).
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


def check_curriculum(config) -> None:
  """Raises a ConfigError unless the curriculum's windows fit the task and the model."""
  contexts = tuple(config.data.curriculum_contexts)
  stage_steps = config.data.curriculum_stage_steps
  if not contexts:
    return
  latents = config.model.perceiver_ar.z_index_dim
  h = half_length(config.data.sequence_length)
  if not isinstance(stage_steps, int) or stage_steps < 1:
    raise errors.ConfigError(
      f'data.curriculum_stage_steps={stage_steps!r} must be a positive int when '
      f'data.curriculum_contexts={contexts} is set.'
    )
  for context in contexts:
    # Latents [end - N, end) all mirrored and every source 2h - j in the window.
    if not isinstance(context, int) or not 2 * latents <= context <= 2 * h:
      raise errors.ConfigError(
        f'data.curriculum_contexts holds {context!r}; each context must be an int in '
        f'[2 * model.perceiver_ar.z_index_dim = {2 * latents}, data.sequence_length - 2 '
        f'= {2 * h}] so that its window holds the latents and their sources.'
      )
    if context > config.data.max_context_length:
      raise errors.ConfigError(
        f'data.curriculum_contexts holds {context}, more than data.max_context_length='
        f'{config.data.max_context_length}.'
      )


def curriculum_context(config, step: int) -> int:
  """The window length of training step `step`: the curriculum stage's context, or 0
  once the curriculum is over (the release's crops)."""
  contexts = tuple(config.data.curriculum_contexts)
  stage = step // config.data.curriculum_stage_steps if contexts else 0
  return contexts[stage] if stage < len(contexts) else 0


def train_batch(
  rng: np.random.Generator, num: int, step: int = 0, *, config
) -> sequences.Example:
  """`num` fresh sequences for training step `step`, each cropped to a random number
  of inputs in `[minimum_crop_length, L - 1]` (all targets weighted), or during a
  curriculum stage of context C to a window of C inputs ending at `end` in
  `[h + N, h + C / 2]` (`[C]` arrays; N latents)."""
  length = config.data.sequence_length
  events = mirrored_sequences(rng, num, length)
  positions = sequences.linear_positions(length)
  context = curriculum_context(config, step)
  if context:
    h = half_length(length)
    low = h + config.model.perceiver_ar.z_index_dim
    ends = rng.integers(low, h + context // 2 + 1, size=num)
  else:
    context = config.data.max_context_length
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
