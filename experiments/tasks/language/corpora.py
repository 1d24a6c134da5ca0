"""Text sources and fixed-length packing for byte-level language modelling.

Documents come from TFDS (e.g. `c4/en`, `wikipedia/20230601.en`, mixed with
configurable weights) or from local files (plain text or JSON lines). They are
encoded as UTF-8 bytes with `perceiver.bytes_tokenizer.BytesTokenizer` (byte
`b` -> id `b + 6`), each followed by one EOS id, and cut into fixed-length
sequences:

* `packing='pack'`: documents are concatenated and cut every `seq_len` ids, so
  a sequence can hold the end of one document and the start of the next; only
  the very last sequence of a finite stream is padded.
* `packing='pad'`: every document starts a new sequence; a long document fills
  several sequences and its last one is padded.

Padding uses PAD ids with `input_mask` 0; nothing is truncated or dropped
(empty documents excepted), so `unpack_sequences` recovers every document.

Local plain-text files are split into documents by `document_unit`:
`paragraph` (blocks separated by blank lines), `line` or `file`. JSON-lines
files hold one document per line, the text in field `text_field`. The held-out
split of local files is chosen by hashing each document's bytes, so it is
stable across runs, file orders and hosts, and duplicated documents never
straddle the train / held-out boundary.
"""

import glob as glob_lib
import hashlib
import json
import os
import random
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from experiments.training import errors
from perceiver import bytes_tokenizer

_TOKENIZER = bytes_tokenizer.BytesTokenizer()
PAD_ID = _TOKENIZER.pad_token
EOS_ID = _TOKENIZER.eos_token
SEP_ID = _TOKENIZER.sep_token
NUM_RESERVED = bytes_tokenizer.NUM_RESERVED_TOKENS

FILE_FORMATS = ('auto', 'text', 'jsonl')
DOCUMENT_UNITS = ('paragraph', 'line', 'file')
PACKING_MODES = ('pack', 'pad')
_JSONL_SUFFIXES = ('.jsonl', '.json', '.ndjson', '.jsonl.gz')
# Split names meaning "the held-out documents" of local files.
HELDOUT_SPLITS = ('validation', 'test', 'eval', 'heldout')


# ------------------------------------------------------------------- local files


def _open(path: str, mode: str = 'rb'):
  if '://' in path:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return tf.io.gfile.GFile(path, mode)
  return open(path, mode)


def expand_file_patterns(files) -> List[str]:
  """Sorted, de-duplicated paths matching comma-separated glob patterns.

  Args:
    files: a string of comma-separated glob patterns or a sequence of them.

  Raises:
    ValueError: if `files` is empty or a pattern matches no file.
  """
  patterns = files.split(',') if isinstance(files, str) else list(files)
  patterns = [p.strip() for p in patterns if p and p.strip()]
  if not patterns:
    raise errors.ConfigError(f'config.data.files={files!r} names no file pattern.')
  paths = []
  for pattern in patterns:
    if '://' in pattern:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel

      matches = tf.io.gfile.glob(pattern)
    else:
      matches = glob_lib.glob(os.path.expanduser(pattern), recursive=True)
      matches = [m for m in matches if os.path.isfile(m)]
    if not matches:
      raise errors.DataError(f'config.data.files pattern {pattern!r} matches no file.')
    paths.extend(matches)
  return sorted(set(paths))


def file_format_of(path: str, file_format: str = 'auto') -> str:
  """'text' or 'jsonl' for `path`; 'auto' decides by the file name's suffix."""
  if file_format not in FILE_FORMATS:
    raise errors.ConfigError(
      f'file_format must be one of {FILE_FORMATS}, got {file_format!r}.'
    )
  if file_format != 'auto':
    return file_format
  return 'jsonl' if path.lower().endswith(_JSONL_SUFFIXES) else 'text'


def _text_documents(f, document_unit: str) -> Iterator[bytes]:
  """Documents of a binary plain-text file object."""
  if document_unit == 'file':
    data = f.read()
    if data.strip():
      yield data
    return
  paragraph = []
  for line in f:
    if document_unit == 'line':
      line = line.rstrip(b'\r\n')
      if line.strip():
        yield line
    elif line.strip():
      paragraph.append(line)
    elif paragraph:
      yield b''.join(paragraph).rstrip(b'\r\n')
      paragraph = []
  if paragraph:
    yield b''.join(paragraph).rstrip(b'\r\n')


def _jsonl_documents(f, path: str, text_field: str) -> Iterator[bytes]:
  for line_number, line in enumerate(f, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise errors.DataError(f'{path}:{line_number} is not valid JSON: {e}') from e
    if not isinstance(record, dict) or text_field not in record:
      raise errors.DataError(
        f'{path}:{line_number} has no field {text_field!r} (set '
        'config.data.text_field to the field holding the text).'
      )
    text = record[text_field]
    if not isinstance(text, str):
      raise errors.DataError(
        f'{path}:{line_number} field {text_field!r} holds a '
        f'{type(text).__name__}, expected a string.'
      )
    if text.strip():
      yield text.encode('utf-8')


def iter_file_documents(
  paths: Sequence[str],
  *,
  file_format: str = 'auto',
  text_field: str = 'text',
  document_unit: str = 'paragraph',
) -> Iterator[bytes]:
  """Yields the non-empty documents of `paths` as UTF-8 bytes, in file order.

  Args:
    paths: files to read.
    file_format: 'auto' (JSON lines for `.jsonl` / `.json` / `.ndjson`, plain
      text otherwise), 'text' or 'jsonl'.
    text_field: the JSON field holding a record's text.
    document_unit: how plain text splits into documents: 'paragraph' (blocks
      separated by blank lines), 'line' or 'file'.
  """
  if document_unit not in DOCUMENT_UNITS:
    raise errors.ConfigError(
      f'document_unit must be one of {DOCUMENT_UNITS}, got {document_unit!r}.'
    )
  for path in paths:
    fmt = file_format_of(path, file_format)
    with _open(path) as f:
      if fmt == 'jsonl':
        yield from _jsonl_documents(f, path, text_field)
      else:
        yield from _text_documents(f, document_unit)


def heldout_value(document: bytes) -> float:
  """A pseudo-random number in [0, 1) determined by the document's bytes."""
  digest = hashlib.blake2b(document, digest_size=8).digest()
  return int.from_bytes(digest, 'little') / 2.0**64


def is_heldout_split(split: str) -> bool:
  """Whether `split` names the held-out part of local files (else 'train')."""
  if split == 'train':
    return False
  if split in HELDOUT_SPLITS:
    return True
  raise errors.ConfigError(
    f'Local text files have splits "train" and the held-out '
    f'{HELDOUT_SPLITS}; got split={split!r}.'
  )


def split_documents(
  documents: Iterable[bytes], split: str, heldout_fraction: float
) -> Iterator[bytes]:
  """Keeps the documents of `split` (held-out ones have `heldout_value < f`)."""
  if not 0.0 < heldout_fraction < 1.0:
    raise errors.ConfigError(
      f'heldout_fraction must be in (0, 1), got {heldout_fraction}.'
    )
  heldout = is_heldout_split(split)
  for document in documents:
    if (heldout_value(document) < heldout_fraction) == heldout:
      yield document


def shard(items: Iterable, index: int, count: int) -> Iterator:
  """Every `count`-th item starting at `index` (one host's share)."""
  if not 0 <= index < count:
    raise ValueError(f'shard index {index} must be in [0, {count}).')
  for i, item in enumerate(items):
    if i % count == index:
      yield item


def shuffle_buffer(items: Iterable, size: int, rng: random.Random) -> Iterator:
  """Approximately shuffles a stream with a buffer of `size` items."""
  buffer = []
  for item in items:
    if len(buffer) < size:
      buffer.append(item)
      continue
    j = rng.randrange(size)
    yield buffer[j]
    buffer[j] = item
  rng.shuffle(buffer)
  yield from buffer


# ------------------------------------------------------------------------ packing


def encode_document(document) -> np.ndarray:
  """Ids of a document (str or UTF-8 bytes) followed by EOS, int32 `[n + 1]`."""
  ids = _TOKENIZER.to_int(document)
  return np.concatenate([ids, np.array([EOS_ID], np.int32)])


def pack_documents(
  documents: Iterable,
  seq_len: int,
  *,
  packing: str = 'pack',
) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """Cuts encoded documents into fixed-length sequences.

  Args:
    documents: str or UTF-8 bytes documents; empty ones are skipped.
    seq_len: L, ids per sequence.
    packing: 'pack' (concatenate documents) or 'pad' (one document per
      sequence run, the last one padded).

  Yields:
    `(ids, input_mask)`, int32 `[L]` each; `input_mask` is 1 at real ids
    (bytes and EOS) and 0 at padding.
  """
  if packing not in PACKING_MODES:
    raise errors.ConfigError(f'packing must be one of {PACKING_MODES}, got {packing!r}.')
  if seq_len < 2:
    raise errors.ConfigError(f'seq_len must be at least 2, got {seq_len}.')

  def padded(ids):
    n = ids.shape[0]
    mask = np.zeros([seq_len], np.int32)
    mask[:n] = 1
    return np.pad(ids, (0, seq_len - n), constant_values=PAD_ID), mask

  full_mask = np.ones([seq_len], np.int32)
  pending = []  # encoded pieces not yet emitted (pack mode)
  pending_len = 0
  for document in documents:
    if not document:
      continue
    ids = encode_document(document)
    if packing == 'pad':
      for start in range(0, ids.shape[0], seq_len):
        chunk = ids[start : start + seq_len]
        if chunk.shape[0] == seq_len:
          yield chunk, full_mask.copy()
        else:
          yield padded(chunk)
      continue
    pending.append(ids)
    pending_len += ids.shape[0]
    if pending_len < seq_len:
      continue
    stream = np.concatenate(pending)
    num_full = stream.shape[0] // seq_len
    for i in range(num_full):
      yield stream[i * seq_len : (i + 1) * seq_len], full_mask.copy()
    rest = stream[num_full * seq_len :]
    pending, pending_len = ([rest], rest.shape[0]) if rest.size else ([], 0)
  if pending_len:
    yield padded(np.concatenate(pending))


def unpack_sequences(ids: np.ndarray, input_mask: np.ndarray) -> List[bytes]:
  """Inverse of `pack_documents`: the documents of a run of sequences, in order.

  Args:
    ids: int `[S, L]` sequences in the order they were produced.
    input_mask: `[S, L]`.
  """
  ids = np.asarray(ids)
  valid = np.asarray(input_mask).astype(bool)
  stream = ids[valid]
  documents = []
  ends = np.flatnonzero(stream == EOS_ID)
  start = 0
  for end in ends:
    piece = stream[start:end]
    documents.append((piece - NUM_RESERVED).astype(np.uint8).tobytes())
    start = end + 1
  if start < stream.shape[0]:
    raise ValueError(
      f'{stream.shape[0] - start} ids after the last EOS: the '
      'sequences do not end at a document boundary.'
    )
  return documents


def count_sequences(documents: Iterable, seq_len: int, *, packing: str = 'pack') -> int:
  """Number of sequences `pack_documents` produces, from document lengths only."""
  if packing not in PACKING_MODES:
    raise errors.ConfigError(f'packing must be one of {PACKING_MODES}, got {packing!r}.')
  total = 0
  count = 0
  for document in documents:
    if not document:
      continue
    n = len(document.encode('utf-8') if isinstance(document, str) else document) + 1
    if packing == 'pad':
      count += -(-n // seq_len)
    else:
      total += n
  return count + (-(-total // seq_len) if packing == 'pack' else 0)


# ---------------------------------------------------------------- TFDS documents


def _load_tfds(name: str, *, split: str, data_dir: Optional[str], **kwargs):
  """`tfds.load` without downloading; a dataset that is not there is a ValueError."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    # Never downloads: preparing C4 or Wikipedia takes a Beam cluster, not a run.
    return tfds.load(name, split=split, data_dir=data_dir, download=False, **kwargs)
  except Exception as e:  # pylint: disable=broad-except  # Not prepared, bad name.
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise errors.DataError(
      f'TFDS dataset {name!r} (split {split!r}) is not available in '
      f'{data_dir or "the default TFDS data directory"}: {first_line} Prepare it '
      'first (`tfds build`), set config.data.tfds_data_dir, or train on local files '
      'with --config.data.files=PATTERN.'
    ) from None


def check_tfds_available(
  names: Sequence[str], splits: Sequence[str], *, data_dir: Optional[str] = None
) -> None:
  """Raises ValueError (naming the dataset) unless every `names[i]` has `splits[i]`.

  Called before an input pipeline starts, so that a missing corpus fails at once
  instead of inside TensorFlow's iterator (or by starting a download).
  """
  for name, split in zip(names, splits):
    _load_tfds(name, split=split, data_dir=data_dir)


def tfds_documents(
  names: Sequence[str],
  splits: Sequence[str],
  *,
  weights: Optional[Sequence[float]] = None,
  is_training: bool,
  shard_index: int = 0,
  shard_count: int = 1,
  seed: int = 0,
  text_key: str = 'text',
  shuffle_buffer_size: int = 10_000,
  data_dir: Optional[str] = None,
) -> Iterator[bytes]:
  """Yields text documents (UTF-8 bytes) from one or more TFDS datasets.

  Training streams repeat forever and are sampled with probabilities
  proportional to `weights`; evaluation streams read each dataset's split once,
  one dataset after the other. Each host reads `tfds.even_splits(split,
  shard_count)[shard_index]`.

  Args:
    names: TFDS names, e.g. `('c4/en:3.1.0', 'wikipedia/20230601.en')`.
    splits: one TFDS split per name (slicing allowed, e.g. `'train[:99%]'`).
    weights: mixture weights (training), one per name; default uniform.
    is_training: whether to shuffle, repeat and mix.
    shard_index, shard_count: this host's share.
    seed: shuffling and mixing seed.
    text_key: feature holding the text.
    shuffle_buffer_size: documents in the shuffle buffer (training).
    data_dir: TFDS data directory (None: the default).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  names = list(names)
  splits = list(splits)
  if not names:
    raise errors.ConfigError('config.data.tfds_names names no dataset.')
  if len(splits) != len(names):
    raise errors.ConfigError(
      f'Need one split per TFDS dataset: {len(names)} names '
      f'{names} but {len(splits)} splits {splits}.'
    )
  if weights is None or len(weights) == 0:
    weights = [1.0] * len(names)
  weights = [float(w) for w in weights]
  if len(weights) != len(names) or min(weights) < 0 or sum(weights) <= 0:
    raise errors.ConfigError(
      f'config.data.weights={weights} must hold one non-negative '
      f'weight per dataset {names}, with a positive sum.'
    )
  datasets = []
  for i, (name, split) in enumerate(zip(names, splits)):
    host_split = tfds.even_splits(split, n=shard_count)[shard_index]
    ds = _load_tfds(
      name,
      split=host_split,
      data_dir=data_dir,
      shuffle_files=is_training,
      read_config=tfds.ReadConfig(shuffle_seed=seed + i),
    )
    ds = ds.map(lambda ex: ex[text_key], num_parallel_calls=tf.data.AUTOTUNE)
    if is_training:
      ds = ds.repeat().shuffle(shuffle_buffer_size, seed=seed + i)
    datasets.append(ds)
  if is_training and len(datasets) > 1:
    total = sum(weights)
    mixed = tf.data.Dataset.sample_from_datasets(
      datasets, weights=[w / total for w in weights], seed=seed
    )
  else:
    mixed = datasets[0]
    for ds in datasets[1:]:
      mixed = mixed.concatenate(ds)
  for document in tfds.as_numpy(mixed.prefetch(tf.data.AUTOTUNE)):
    yield bytes(document)


# ----------------------------------------------------------------- fake documents

_FAKE_WORDS = (
  'the of and to in is was for that with as on by at from his her an which '
  'are were be this had not but they have one their it all new first its after '
  'two who also has been other more than into time years when used city people '
  'world school river music house water light stone garden window morning '
  'perceiver attention latent bytes model language question answer'
).split()


def fake_documents(seed: int, count: int) -> List[bytes]:
  """`count` deterministic English-like documents (Zipf-distributed words).

  Used with `config.data.fake`: the real packing, masking and batching run on
  them, so a pipeline or a model can be exercised without any dataset.
  """
  rng = np.random.default_rng(seed)
  ranks = np.arange(1, len(_FAKE_WORDS) + 1)
  probs = (1.0 / ranks) / np.sum(1.0 / ranks)
  documents = []
  for _ in range(count):
    sentences = []
    for _ in range(int(rng.integers(1, 6))):
      words = rng.choice(len(_FAKE_WORDS), size=int(rng.integers(3, 15)), p=probs)
      sentence = ' '.join(_FAKE_WORDS[w] for w in words)
      sentences.append(sentence[0].upper() + sentence[1:] + '.')
    documents.append(' '.join(sentences).encode('utf-8'))
  return documents
