"""Token sequences for Perceiver AR: the release's token layout, training crops and
block-wise evaluation windows.

Tokens follow the release: 0 is padding, 1 end of sequence (EOS), 2 start of sequence
(SOS), and a byte or pixel value `b` is token `b + 3` (259 tokens). A sequence of events
`e[0], e[1], ...` becomes examples of M inputs and their next tokens:

  inputs[i] = e[start + i], targets[i] = e[start + i + 1], input_idxs[i] = positions of
  e[start + i], weights[i] = 1 where the target counts,

padded with zeros after the end. The model's latents sit at the last N inputs, so
latent j of an example predicts `targets[length - N + j]`.

Block-wise evaluation scores each target once: the targets to score are cut into
blocks of `block` (<= N) and each block gets a window that ends with it and starts up
to M inputs earlier, so every scored target sees the full context the model allows
(all earlier tokens, up to M).

Shape glossary:
  M: inputs per example (`data.max_context_length`); I: position dimensions.
"""

from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from experiments.training import errors

PAD_ID = 0
EOS_ID = 1
SOS_ID = 2
NUM_RESERVED = 3
VOCAB_SIZE = 256 + NUM_RESERVED

Example = Dict[str, np.ndarray]


def encode_bytes(data: bytes) -> np.ndarray:
  """UTF-8 (or any) bytes -> int32 tokens `b + 3`."""
  return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + NUM_RESERVED


def decode_tokens(tokens) -> bytes:
  """Tokens -> bytes, dropping the reserved ids (padding, EOS, SOS)."""
  tokens = np.asarray(tokens)
  return bytes((tokens[tokens >= NUM_RESERVED] - NUM_RESERVED).astype(np.uint8).tolist())


def linear_positions(length: int) -> np.ndarray:
  """`[length, 1]` positions 1, 2, ... (0 marks padding)."""
  return np.arange(1, length + 1, dtype=np.int32)[:, None]


def example(
  events: np.ndarray,
  positions: np.ndarray,
  *,
  start: int,
  end: int,
  context: int,
  score: Optional[Tuple[int, int]] = None,
) -> Example:
  """One example: inputs `events[start:end]`, targets `events[start + 1:end + 1]`.

  Args:
    events: `[L]` tokens.
    positions: `[L, I]` their positions.
    start, end: the inputs' range (`end - start <= context`, `end < L`).
    context: M, the padded length.
    score: `(first, last)` targets (indices into events' targets `j`, which predict
      `events[j + 1]`) to weight 1; default: every target of the window.

  Returns:
    `inputs [M]`, `input_idxs [M, I]`, `targets [M]` (int32) and `weights [M]`
    (float32).
  """
  length = end - start
  if not 0 < length <= context or end >= len(events) or start < 0:
    raise ValueError(
      f'Window [{start}, {end}) of {len(events)} events does not fit a context of '
      f'{context} inputs with a target after it.'
    )
  out = {
    'inputs': np.zeros([context], np.int32),
    'input_idxs': np.zeros([context, positions.shape[1]], np.int32),
    'targets': np.zeros([context], np.int32),
    'weights': np.zeros([context], np.float32),
  }
  out['inputs'][:length] = events[start:end]
  out['input_idxs'][:length] = positions[start:end]
  out['targets'][:length] = events[start + 1 : end + 1]
  first, last = score if score is not None else (start, end)
  first, last = max(first, start), min(last, end)
  out['weights'][first - start : last - start] = 1.0
  out['weights'] *= out['targets'] > 0
  return out


def eval_windows(num_targets: int, *, context: int, block: int, first: int = 0):
  """`[(start, end, (first, last))]` windows scoring targets `[first, num_targets)`
  in blocks of `block`, each with up to `context` inputs before its end."""
  if block < 1 or block > context:
    raise errors.ConfigError(
      f'eval_block_size={block} must be in [1, context={context}].'
    )
  windows = []
  for block_start in range(first, num_targets, block):
    block_end = min(block_start + block, num_targets)
    windows.append((max(0, block_end - context), block_end, (block_start, block_end)))
  return windows


def stack(examples) -> Example:
  """A list of examples -> `{name: [N, ...]}`."""
  examples = list(examples)
  if not examples:
    raise ValueError('No examples to stack.')
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def step_rng(seed: int, step: int, host: int) -> np.random.Generator:
  """The generator of one training step on one host (a pure function of its inputs,
  so a resumed run draws the same data)."""
  return np.random.default_rng([seed, step, host])


def batches_forever(
  make_batch, *, batch_dims, seed: int, start_step: int, host: int
) -> Iterator[Example]:
  """`make_batch(rng, n, step) -> {name: [n, ...]}` for every step from `start_step`,
  reshaped to `[*batch_dims, ...]`."""
  size = int(np.prod(batch_dims))
  step = start_step
  while True:
    batch = make_batch(step_rng(seed, step, host), size, step)
    yield {k: v.reshape(tuple(batch_dims) + v.shape[1:]) for k, v in batch.items()}
    step += 1


def eval_batches(
  num_examples: int,
  get_example,
  *,
  batch_dims,
  process_index: int,
  process_count: int,
) -> Iterator[Example]:
  """Every example `get_example(i)`, `i < num_examples`, once, built as its batch is
  needed (not all held in memory), padded, with a float32 `mask`.

  Global batch s covers examples `[s G, (s + 1) G)` and host h takes its h-th slice
  (as `experiments.training.array_data.eval_batches`); positions past the end are
  padding: zeros with mask 0.
  """
  host_batch = int(np.prod(batch_dims))
  global_batch = host_batch * process_count
  template = None
  for step in range(-(-num_examples // global_batch)):
    first = step * global_batch + process_index * host_batch
    rows, mask = [], []
    for i in range(first, first + host_batch):
      if i < num_examples:
        rows.append(get_example(i))
        template = rows[-1] if template is None else template
        mask.append(1.0)
      else:
        rows.append(None)
        mask.append(0.0)
    if template is None:
      template = get_example(0)
    rows = [
      r if r is not None else {k: np.zeros_like(v) for k, v in template.items()}
      for r in rows
    ]
    batch = stack(rows)
    batch['mask'] = np.asarray(mask, np.float32)
    yield {k: v.reshape(tuple(batch_dims) + v.shape[1:]) for k, v in batch.items()}
