"""Tests of the GLUE input pipeline (experiments/tasks/language/glue_data.py, glue.load)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from configs import glue as glue_config
from experiments.tasks.language import glue
from experiments.tasks.language import glue_data as glue_input

SEP = 5


def _ids(text: str):
  return [b + 6 for b in text.encode('utf-8')]


def _encode(texts, seq_len):
  out = glue_input.encode_texts([tf.constant(t) for t in texts], seq_len)
  return {k: v.numpy() for k, v in out.items()}


def test_single_sentence_and_pair_values():
  out = _encode(['héllo'], 9)
  np.testing.assert_array_equal(out['inputs'], _ids('héllo') + [0, 0, 0])
  np.testing.assert_array_equal(out['input_mask'], [1] * 6 + [0] * 3)
  assert out['truncated'] == 0
  out = _encode(['ab', 'cde'], 7)
  np.testing.assert_array_equal(out['inputs'], _ids('ab') + [SEP] + _ids('cde') + [0])
  np.testing.assert_array_equal(out['input_mask'], [1] * 6 + [0])
  assert out['truncated'] == 0


@pytest.mark.parametrize(
  'first,second,seq_len,keep',
  [
    ('abcdefgh', 'xy', 7, (4, 2)),  # the longer text gives way
    ('ab', 'uvwxyz', 6, (2, 3)),
    ('abcdef', 'uvwxyz', 7, (3, 3)),  # both long: split the budget
    ('abcdefg', 'uvwxyz', 8, (4, 3)),
  ],
)
def test_pairs_truncate_longest_first(first, second, seq_len, keep):
  out = _encode([first, second], seq_len)
  expected = _ids(first[: keep[0]]) + [SEP] + _ids(second[: keep[1]])
  np.testing.assert_array_equal(out['inputs'], expected)
  assert out['input_mask'].all() and out['truncated'] == 1


def test_long_single_sentence_is_flagged():
  out = _encode(['abcdefghij'], 4)
  np.testing.assert_array_equal(out['inputs'], _ids('abcd'))
  assert out['truncated'] == 1


def test_fake_examples_have_learnable_labels():
  task = glue_input.get_task('mnli')
  ex = glue_input.fake_examples(task, seed=0, count=11)
  assert set(ex) == {'premise', 'hypothesis', 'label'} and len(ex['label']) == 11
  counts = np.array([len(t.split()) for t in ex['premise']])
  np.testing.assert_array_equal(ex['label'], counts % 3)
  with pytest.raises(ValueError, match='Unknown GLUE task'):
    glue_input.get_task('squad')


def _config(task):
  config = glue_config.get_config(f'{task},debug')
  config.data.seq_len = 48
  config.data.shuffle_buffer = 8
  return config


def test_load_with_tfds_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  config = _config('stsb')
  with tfds.testing.mock_data(num_examples=13):
    batch = next(glue.load('train', is_training=True, batch_dims=[1, 4], config=config))
    num = glue.num_examples('validation', config)
    batches = list(
      glue.load('validation', is_training=False, batch_dims=[1, 5], config=config)
    )
  assert set(batch) == {'inputs', 'input_mask', 'label', 'truncated'}
  assert batch['inputs'].shape == (1, 4, 48) and batch['label'].dtype == np.float32
  assert num == 13 and len(batches) == math.ceil(13 / 5)
  mask = np.concatenate([b['mask'].reshape(-1) for b in batches])
  np.testing.assert_array_equal(mask, [1] * 13 + [0] * 2)
  # Pairs hold exactly one SEP each (mock texts are shorter than 48 bytes).
  inputs = np.concatenate([b['inputs'].reshape(-1, 48) for b in batches])[mask > 0]
  assert np.all(np.sum(inputs == SEP, axis=1) == 1)


def test_fake_data_eval_covers_split_and_test_split_is_refused():
  config = _config('mrpc')
  config.data.fake = True
  config.data.fake_examples = 40
  num = glue.num_examples('validation', config)
  batches = list(
    glue.load('validation', is_training=False, batch_dims=[1, 3], config=config)
  )
  assert num == 10 and len(batches) == 4
  assert sum(b['mask'].sum() for b in batches) == 10
  labels = np.concatenate([b['label'].reshape(-1) for b in batches])
  assert labels.dtype == np.int32 and set(labels[:10]) <= {0, 1}
  with pytest.raises(ValueError, match='labels are hidden'):
    glue.load('test', is_training=False, batch_dims=[1, 3], config=config)


def test_config_variants():
  for task in glue_config.TASKS:
    config = glue_config.get_config(task)
    assert config.data.task == task and config.data.seq_len == 2048
  assert glue_config.get_config('mnli').evaluation.split == 'validation_matched'
  assert glue_config.get_config('debug').data.task == 'cola'
  with pytest.raises(ValueError, match='variant'):
    glue_config.get_config('squad')
