"""GLUE input pipeline: TFDS `glue/<task>` examples as UTF-8 byte ids.

A single-sentence example becomes the ids of its sentence; a sentence pair
becomes `sentence1 SEP sentence2`. Ids are padded with PAD to `seq_len` and
`input_mask` marks the real ones. A pair longer than `seq_len` is truncated
longest-first (always keeping the SEP), a single sentence at its end; every
batch carries `truncated` (int32 `[B]`, 1 where that happened), reported as a
metric, so truncation is never silent. `label` is int32 (classes) or float32
(STS-B similarity in [0, 5]).

Batches: `inputs`, `input_mask` (int32 `[*batch_dims, L]`), `label`,
`truncated` (`[*batch_dims]`), and `mask` at evaluation.
"""

import dataclasses
import math
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from experiments.tasks.language import corpora
from experiments.tasks.language import mlm_pipeline
from experiments.training import errors

NUM_RESERVED = corpora.NUM_RESERVED


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """What a GLUE task's TFDS examples hold.

  Attributes:
    text_keys: one or two text features, in input order.
    num_classes: number of classes; 1 means a regression target (STS-B).
    eval_split: the default evaluation split.
  """

  text_keys: Tuple[str, ...]
  num_classes: int
  eval_split: str = 'validation'

  @property
  def is_regression(self) -> bool:
    return self.num_classes == 1


TASKS: Dict[str, GlueTask] = {
  'cola': GlueTask(('sentence',), 2),
  'sst2': GlueTask(('sentence',), 2),
  'mrpc': GlueTask(('sentence1', 'sentence2'), 2),
  'qqp': GlueTask(('question1', 'question2'), 2),
  'stsb': GlueTask(('sentence1', 'sentence2'), 1),
  'mnli': GlueTask(('premise', 'hypothesis'), 3, 'validation_matched'),
  'qnli': GlueTask(('question', 'sentence'), 2),
  'rte': GlueTask(('sentence1', 'sentence2'), 2),
  'wnli': GlueTask(('sentence1', 'sentence2'), 2),
}


def get_task(name: str) -> GlueTask:
  if name not in TASKS:
    raise errors.ConfigError(
      f'Unknown GLUE task {name!r}; expected one of {sorted(TASKS)}.'
    )
  return TASKS[name]


def _byte_ids(text: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.io.decode_raw(text, tf.uint8), tf.int32) + NUM_RESERVED


def encode_texts(texts: Sequence[tf.Tensor], seq_len: int) -> Dict[str, tf.Tensor]:
  """Encodes one text or a pair as padded byte ids (see the module docstring).

  Args:
    texts: one or two scalar string tensors (UTF-8).
    seq_len: L.

  Returns:
    dict with `inputs`, `input_mask` (int32 `[L]`) and `truncated` (int32 `[]`).
  """
  if len(texts) not in (1, 2):
    raise ValueError(f'GLUE examples have 1 or 2 texts, got {len(texts)}.')
  pieces = [_byte_ids(t) for t in texts]
  if len(pieces) == 1:
    total = tf.shape(pieces[0])[0]
    ids = pieces[0][:seq_len]
  else:
    budget = seq_len - 1  # One id goes to the SEP.
    n1, n2 = tf.shape(pieces[0])[0], tf.shape(pieces[1])[0]
    total = n1 + n2 + 1
    half = budget // 2
    # Longest-first: the shorter text keeps min(its length, half) ids at least,
    # the longer one takes the rest of the budget.
    keep1 = tf.where(
      n1 + n2 <= budget,
      n1,
      tf.where(n1 <= n2, tf.minimum(n1, half), budget - tf.minimum(n2, half)),
    )
    keep2 = tf.minimum(n2, budget - keep1)
    ids = tf.concat(
      [pieces[0][:keep1], tf.constant([corpora.SEP_ID], tf.int32), pieces[1][:keep2]],
      axis=0,
    )
  length = tf.shape(ids)[0]
  inputs = tf.pad(ids, [[0, seq_len - length]], constant_values=corpora.PAD_ID)
  input_mask = tf.cast(tf.range(seq_len) < length, tf.int32)
  inputs = tf.ensure_shape(inputs, [seq_len])
  input_mask = tf.ensure_shape(input_mask, [seq_len])
  return dict(
    inputs=inputs, input_mask=input_mask, truncated=tf.cast(total > seq_len, tf.int32)
  )


def _encode_fn(task: GlueTask, seq_len: int):
  def encode(example):
    out = encode_texts([example[k] for k in task.text_keys], seq_len)
    label_dtype = tf.float32 if task.is_regression else tf.int32
    out['label'] = tf.cast(example['label'], label_dtype)
    return out

  return encode


def fake_examples(task: GlueTask, seed: int, count: int) -> Dict[str, np.ndarray]:
  """Generated examples whose label is a function of the text (learnable).

  Classification: the class is the number of words of the first text, modulo
  the number of classes. Regression: that word count modulo 6, as a float.
  """
  documents = corpora.fake_documents(seed, count * len(task.text_keys))
  # One sentence per text keeps the examples short, like GLUE's.
  sentences = [d.split(b'. ')[0].rstrip(b'.') + b'.' for d in documents]
  features = {}
  for i, key in enumerate(task.text_keys):
    features[key] = np.array(sentences[i :: len(task.text_keys)][:count], dtype=object)
  word_counts = np.array([len(t.split()) for t in features[task.text_keys[0]]])
  if task.is_regression:
    features['label'] = (word_counts % 6).astype(np.float32)
  else:
    features['label'] = (word_counts % task.num_classes).astype(np.int64)
  return features


def examples_dataset(
  task_name: str,
  split: str,
  *,
  is_training: bool,
  shard_index: int,
  shard_count: int,
  seed: int,
  fake: bool = False,
  fake_examples_count: int = 256,
  data_dir: Optional[str] = None,
) -> tf.data.Dataset:
  """This host's raw examples of `glue/<task_name>` (or fake ones)."""
  task = get_task(task_name)
  if fake:
    count = fake_examples_count if split == 'train' else fake_examples_count // 4
    examples = fake_examples(task, seed + (0 if split == 'train' else 1), count)
    ds = tf.data.Dataset.from_tensor_slices(examples)
    return ds.shard(shard_count, shard_index)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  host_split = split
  if shard_count > 1:
    host_split = tfds.even_splits(split, n=shard_count)[shard_index]
  return tfds.load(
    f'glue/{task_name}',
    split=host_split,
    data_dir=data_dir,
    shuffle_files=is_training,
    read_config=tfds.ReadConfig(shuffle_seed=seed),
  )


def count_examples(
  task_name: str,
  split: str,
  *,
  fake: bool = False,
  fake_examples_count: int = 256,
  data_dir: Optional[str] = None,
) -> int:
  """Examples in a split: from TFDS metadata, else by reading the split once."""
  if fake:
    return fake_examples_count if split == 'train' else fake_examples_count // 4
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  builder = tfds.builder(f'glue/{task_name}', data_dir=data_dir)
  try:
    return builder.info.splits[split].num_examples
  except KeyError:
    # No metadata (e.g. tfds.testing.mock_data): count the examples.
    ds = tfds.load(f'glue/{task_name}', split=split, data_dir=data_dir)
    return int(ds.reduce(0, lambda count, _: count + 1).numpy())


def train_batches(
  ds: tf.data.Dataset,
  task_name: str,
  *,
  seq_len: int,
  batch_dims: Sequence[int],
  seed: int,
  shuffle_buffer: int,
  start_step: int = 0,
) -> Iterator[Dict[str, np.ndarray]]:
  """Endless shuffled training batches; `start_step` resumes the same order."""
  task = get_task(task_name)
  batch_size = math.prod(batch_dims)
  ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
  if start_step:
    ds = ds.skip(start_step * batch_size)
  ds = ds.map(
    _encode_fn(task, seq_len), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
  for batch in ds.as_numpy_iterator():
    yield {k: v.reshape(tuple(batch_dims) + v.shape[1:]) for k, v in batch.items()}


def eval_batches(
  ds: tf.data.Dataset,
  task_name: str,
  *,
  seq_len: int,
  batch_dims: Sequence[int],
  num_batches: int,
) -> Iterator[Dict[str, np.ndarray]]:
  """Every example once, in `num_batches` padded batches with `mask`."""
  task = get_task(task_name)
  ds = ds.map(
    _encode_fn(task, seq_len), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  ds = ds.batch(math.prod(batch_dims)).prefetch(2)
  zeros = np.zeros([seq_len], np.int32)
  empty = dict(
    inputs=zeros,
    input_mask=zeros,
    truncated=np.int32(0),
    label=np.float32(0) if task.is_regression else np.int32(0),
  )
  yield from mlm_pipeline.padded_batches(
    ds.as_numpy_iterator(),
    batch_dims=batch_dims,
    num_batches=num_batches,
    batched=True,
    empty_example=empty,
  )
