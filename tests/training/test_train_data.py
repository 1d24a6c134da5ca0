"""In-memory batching and the digits pipeline: determinism, resumption, host shards."""

import itertools

import numpy as np
import pytest

from configs import digits as digits_config
from experiments.tasks.digits import task as digits
from experiments.training import array_data

ARRAYS = {
  'x': np.arange(7 * 3, dtype=np.float32).reshape(7, 3),
  'y': np.arange(7, dtype=np.int32),
}


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def test_train_batches_cover_each_epoch_once():
  # Global batch 3 over 7 examples: steps 0-6 span exactly 3 epochs.
  batches = _take(array_data.train_batches(ARRAYS, batch_dims=(1, 3), seed=5), 7)
  ids = np.concatenate([b['y'].reshape(-1) for b in batches])
  for epoch in range(3):
    np.testing.assert_array_equal(np.sort(ids[epoch * 7 : (epoch + 1) * 7]), np.arange(7))
    np.testing.assert_array_equal(
      ids[epoch * 7 : (epoch + 1) * 7], array_data.epoch_permutation(5, epoch, 7)
    )
  assert batches[0]['x'].shape == (1, 3, 3) and batches[0]['y'].shape == (1, 3)
  np.testing.assert_array_equal(batches[2]['x'][0, :, 0], ids[6:9] * 3)


def test_train_batches_resume_and_seed():
  full = _take(array_data.train_batches(ARRAYS, batch_dims=(2, 2), seed=1), 9)
  resumed = _take(
    array_data.train_batches(ARRAYS, batch_dims=(2, 2), seed=1, start_step=4), 5
  )
  for a, b in zip(full[4:], resumed):
    np.testing.assert_array_equal(a['y'], b['y'])
  other = _take(array_data.train_batches(ARRAYS, batch_dims=(2, 2), seed=2), 9)
  assert any(not np.array_equal(a['y'], b['y']) for a, b in zip(full, other))


def test_hosts_split_the_global_batch():
  single = _take(array_data.train_batches(ARRAYS, batch_dims=(1, 4), seed=3), 5)
  hosts = [
    _take(
      array_data.train_batches(
        ARRAYS, batch_dims=(1, 2), seed=3, process_index=h, process_count=2
      ),
      5,
    )
    for h in range(2)
  ]
  for step in range(5):
    joined = np.concatenate([hosts[0][step]['y'], hosts[1][step]['y']], axis=1)
    np.testing.assert_array_equal(joined, single[step]['y'])


@pytest.mark.parametrize('hosts', [1, 2, 3])
def test_eval_batches_pad_and_mask(hosts):
  seen = []
  counts = set()
  for h in range(hosts):
    batches = list(
      array_data.eval_batches(
        ARRAYS, batch_dims=(1, 2), process_index=h, process_count=hosts
      )
    )
    counts.add(len(batches))
    for b in batches:
      mask = b['mask'].reshape(-1)
      assert b['mask'].dtype == np.float32
      seen.extend(b['y'].reshape(-1)[mask == 1].tolist())
      np.testing.assert_array_equal(b['x'].reshape(-1, 3)[mask == 0], 0.0)
  assert counts == {array_data.num_eval_batches(7, 2 * hosts)}
  assert sorted(seen) == list(range(7))


def test_bad_host_index():
  with pytest.raises(ValueError, match='process_index=2'):
    next(
      array_data.eval_batches(ARRAYS, batch_dims=(1, 2), process_index=2, process_count=2)
    )


def test_translate_hand_computed():
  images = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
  down_left = digits.translate(images, np.array([[1, -1]]), max_shift=1)[0, ..., 0]
  np.testing.assert_array_equal(down_left, [[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0]])
  with pytest.raises(ValueError, match='max_shift=1'):
    digits.translate(images, np.array([[2, 0]]), max_shift=1)


def test_digits_splits_and_augmentation():
  config = digits_config.get_config()
  train, test = digits.split_arrays('train', config), digits.split_arrays('test', config)
  assert len(train['labels']) == digits.num_examples('train', config) == 1437
  assert len(test['labels']) == digits.num_examples('test', config) == 360
  assert train['images'].shape == (1437, 8, 8, 1)
  assert 0.0 <= train['images'].min() and train['images'].max() <= 1.0
  # The split is fixed: no test image is also a training image.
  train_rows = {row.tobytes() for row in train['images']}
  overlap = sum(row.tobytes() in train_rows for row in test['images'])
  assert overlap <= 3  # The raw dataset itself holds a few duplicate images.

  with config.unlocked():
    config.data.max_shift = 1
  plain = _take(
    digits.load(
      'train', is_training=True, batch_dims=(1, 5), config=digits_config.get_config()
    ),
    3,
  )
  shifted = _take(
    digits.load('train', is_training=True, batch_dims=(1, 5), config=config), 3
  )
  resumed = _take(
    digits.load(
      'train', is_training=True, batch_dims=(1, 5), config=config, start_step=2
    ),
    1,
  )
  np.testing.assert_array_equal(resumed[0]['images'], shifted[2]['images'])
  for a, b in zip(plain, shifted):
    np.testing.assert_array_equal(a['labels'], b['labels'])
    # Translation moves ink around but never creates any.
    assert np.all(
      b['images'].sum(axis=(2, 3, 4)) <= a['images'].sum(axis=(2, 3, 4)) + 1e-5
    )
  assert any(not np.array_equal(a['images'], b['images']) for a, b in zip(plain, shifted))


def test_fake_digits_run_through_the_same_pipeline():
  config = digits_config.get_config()
  config.data.fake = True
  real = digits.split_arrays('train', digits_config.get_config())
  fake = digits.split_arrays('train', config)
  assert fake['images'].shape == real['images'].shape
  assert not np.array_equal(fake['images'], real['images'])
  assert 0.0 <= fake['images'].min() and fake['images'].max() <= 1.0
  # The batches are the fake split's examples in the order the real pipeline takes:
  # every example of the first epoch exactly once, as `array_data` orders them.
  batches = digits.load('train', is_training=True, batch_dims=(2, 3), config=config)
  want = array_data.train_batches(fake, batch_dims=(2, 3), seed=config.seed)
  for _ in range(4):
    got, expected = next(batches), next(want)
    assert got['images'].shape == (2, 3, 8, 8, 1) and got['labels'].dtype == np.int32
    np.testing.assert_array_equal(got['images'], expected['images'])
    np.testing.assert_array_equal(got['labels'], expected['labels'])
  rows = {r.tobytes(): i for i, r in enumerate(fake['images'])}
  first = next(digits.load('train', is_training=True, batch_dims=(1, 5), config=config))
  for image, label in zip(first['images'][0], first['labels'][0]):
    assert fake['labels'][rows[image.tobytes()]] == label
