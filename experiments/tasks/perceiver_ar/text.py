"""Byte-level text for Perceiver AR: local files or the PG-19 layout, and n-gram baselines.

Sources (`config.data`):
  files: comma-separated glob patterns of local text files (e.g. the Python standard
    library's sources); each file is a document, and the documents whose content hash
    falls below `heldout_fraction` form the held-out split ('validation' and 'test').
  pg19_dir: a directory in the PG-19 layout, one `.txt` book per file under `train/`,
    `validation/` and `test/` (used instead of `files` when set).

A split's documents are encoded as bytes (`b + 3`) and concatenated with EOS after each.
Training draws random windows of M + 1 tokens from the training stream; evaluation
scores the first `eval_bytes` tokens of the held-out stream in blocks of
`evaluation.eval_block_size`, each block seen with the M - 1 tokens before it (bits
per byte: EOS targets are not scored). Unigram and bigram models of the training bytes
(add-one smoothing) give the baselines reported beside the model's bits per byte.

Shape glossary:
  M: inputs per example; T: tokens of a stream.
"""

import functools
import glob as glob_lib
import hashlib
import os
from typing import List, Tuple

import numpy as np

from experiments.tasks.perceiver_ar import sequences
from experiments.training import errors

PG19_SPLITS = ('train', 'validation', 'test')
HELDOUT_SPLITS = ('validation', 'test')


def expand_patterns(files: str) -> List[str]:
  """Sorted unique files matching comma-separated glob patterns.

  Raises:
    errors.ConfigError: no pattern.
    errors.DataError: a pattern that matches no file (named).
  """
  patterns = [p.strip() for p in str(files).split(',') if p.strip()]
  if not patterns:
    raise errors.ConfigError(f'config.data.files={files!r} names no file pattern.')
  paths = set()
  for pattern in patterns:
    matches = [p for p in glob_lib.glob(os.path.expanduser(pattern)) if os.path.isfile(p)]
    if not matches:
      raise errors.DataError(f'config.data.files: pattern {pattern!r} matches no file.')
    paths.update(matches)
  return sorted(paths)


def is_heldout(content: bytes, fraction: float) -> bool:
  """Whether a document belongs to the held-out split: its SHA-256, read as a number
  in [0, 1), is below `fraction` (stable across runs, machines and file orders)."""
  value = int.from_bytes(hashlib.sha256(content).digest()[:8], 'big') / 2.0**64
  return value < fraction


def pg19_files(root: str, split: str) -> List[str]:
  """The `.txt` books of `split` in a PG-19 layout directory, sorted by name.

  Raises:
    errors.ConfigError: unknown split.
    errors.DataError: a missing split directory, or no book in it.
  """
  if split not in PG19_SPLITS:
    raise errors.ConfigError(
      f'split={split!r} is not one of the PG-19 splits {PG19_SPLITS}.'
    )
  folder = os.path.join(os.path.expanduser(root), split)
  if not os.path.isdir(folder):
    raise errors.DataError(
      f'config.data.pg19_dir={root!r} has no {split}/ directory (expected the PG-19 '
      'layout: train/, validation/, test/ with one .txt book per file).'
    )
  books = sorted(
    os.path.join(folder, n) for n in os.listdir(folder) if n.endswith('.txt')
  )
  if not books:
    raise errors.DataError(f'{folder} holds no .txt book.')
  return books


def _read(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


@functools.lru_cache(maxsize=4)
def documents(
  split: str, files: str, pg19_dir: str, heldout_fraction: float
) -> Tuple[bytes, ...]:
  """The documents of `split` ('train', 'validation' or 'test'), in file order."""
  if pg19_dir:
    return tuple(_read(p) for p in pg19_files(pg19_dir, split))
  if split not in ('train',) + HELDOUT_SPLITS:
    raise errors.ConfigError(
      f'split={split!r} is not one of {("train",) + HELDOUT_SPLITS}.'
    )
  if not 0.0 < heldout_fraction < 1.0:
    raise errors.ConfigError(
      f'data.heldout_fraction={heldout_fraction} must be in (0, 1).'
    )
  wanted = split != 'train'
  docs = [_read(p) for p in expand_patterns(files)]
  picked = tuple(d for d in docs if d and is_heldout(d, heldout_fraction) == wanted)
  if not picked:
    raise errors.DataError(
      f'No {split} document among the {len(docs)} files of config.data.files={files!r} '
      f'(heldout_fraction={heldout_fraction}); add files or change the fraction.'
    )
  return picked


def stream(docs) -> np.ndarray:
  """`[T]` int32 tokens: each document's bytes followed by EOS."""
  parts = []
  for doc in docs:
    parts += [sequences.encode_bytes(doc), np.array([sequences.EOS_ID], np.int32)]
  return np.concatenate(parts)


def split_stream(split: str, config) -> np.ndarray:
  d = config.data
  return stream(documents(split, d.files, d.pg19_dir, float(d.heldout_fraction)))


def fake_stream(split: str, length: int) -> np.ndarray:
  """Generated text for smoke tests: words of a small vocabulary, with EOS lines."""
  rng = np.random.default_rng(PG19_SPLITS.index(split) if split in PG19_SPLITS else 0)
  words = [b'the', b'model', b'reads', b'long', b'context', b'and', b'predicts', b'bytes']
  text = b' '.join(words[i] for i in rng.integers(0, len(words), size=length // 4))
  return stream([text[i : i + 200] for i in range(0, len(text), 200)])


def train_batch(tokens: np.ndarray, rng: np.random.Generator, num: int, *, context: int):
  """`num` random windows of `context + 1` tokens (inputs and targets) of a stream;
  EOS targets get weight 0."""
  if len(tokens) < context + 1:
    raise errors.DataError(
      f'The training text has {len(tokens)} tokens, fewer than max_context_length + 1 '
      f'({context + 1}).'
    )
  positions = sequences.linear_positions(len(tokens))
  starts = rng.integers(0, len(tokens) - context, size=num)
  examples = []
  for start in starts:
    window_positions = positions[start : start + context] - int(start)
    ex = sequences.example(
      tokens, positions, start=int(start), end=int(start) + context, context=context
    )
    ex['input_idxs'] = window_positions
    ex['weights'] *= ex['targets'] != sequences.EOS_ID
    examples.append(ex)
  return sequences.stack(examples)


def eval_source(tokens: np.ndarray, *, context: int, block: int, eval_bytes: int):
  """`(num_examples, example(i))`: block-wise evaluation windows over the first
  `eval_bytes` targets of a stream. Positions restart at 1 in every window, as in
  training."""
  num_targets = min(int(eval_bytes), len(tokens) - 1)
  positions = sequences.linear_positions(len(tokens))
  windows = sequences.eval_windows(num_targets, context=context, block=block)

  def example(index):
    start, end, score = windows[index]
    ex = sequences.example(
      tokens, positions, start=start, end=end, context=context, score=score
    )
    ex['input_idxs'][: end - start] -= start
    ex['weights'] *= ex['targets'] != sequences.EOS_ID
    return ex

  return len(windows), example


class NGramBaselines:
  """Unigram and bigram models of a training stream, add-one smoothed over the
  259 tokens."""

  def __init__(self, tokens: np.ndarray, vocab_size: int = sequences.VOCAB_SIZE):
    unigram = np.bincount(tokens, minlength=vocab_size).astype(np.float64) + 1.0
    self.unigram_log2 = np.log2(unigram / unigram.sum())
    pairs = np.zeros((vocab_size, vocab_size), np.float64)
    np.add.at(pairs, (tokens[:-1], tokens[1:]), 1.0)
    pairs += 1.0
    self.bigram_log2 = np.log2(pairs / pairs.sum(axis=1, keepdims=True))

  def bits(self, previous: np.ndarray, targets: np.ndarray):
    """`(unigram, bigram)` mean bits per target of the pairs `(previous, target)`."""
    if len(targets) == 0:
      raise ValueError('No target to score.')
    return (
      float(-np.mean(self.unigram_log2[targets])),
      float(-np.mean(self.bigram_log2[previous, targets])),
    )


@functools.lru_cache(maxsize=2)
def _baselines(files: str, pg19_dir: str, heldout_fraction: float) -> NGramBaselines:
  return NGramBaselines(stream(documents('train', files, pg19_dir, heldout_fraction)))


def baselines(config) -> NGramBaselines:
  """The n-gram baselines of the config's training text."""
  d = config.data
  if d.fake:
    return NGramBaselines(fake_stream('train', 4096))
  return _baselines(d.files, d.pg19_dir, float(d.heldout_fraction))
