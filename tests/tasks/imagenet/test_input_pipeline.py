"""Tests of the ImageNet input pipeline (experiments/tasks/imagenet/input_pipeline.py).

Runs on `tfds.testing.mock_data` JPEGs and on a real TFDS build (by
experiments/tasks/imagenet/prepare.py) of tiny ILSVRC-style archives.
"""

import io
import itertools
import tarfile
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import imagenet as imagenet_config
from experiments.benchmarks import imagenet_input as imagenet_input_benchmark
from experiments.tasks.imagenet import input_pipeline as imagenet_input
from experiments.tasks.imagenet import prepare as imagenet_prepare
from experiments.training import errors

NUM_MOCK = 7


def _config(**data):
  config = imagenet_config.get_config('debug')
  config.data.fake = True
  config.data.fake_num_examples = NUM_MOCK
  config.data.randaugment_layers = 1
  for key, value in data.items():
    config.data[key] = value
  return config


@pytest.fixture(scope='module')
def mock():
  return imagenet_input.mock_examples(NUM_MOCK)


@pytest.mark.parametrize(
  'total, count', list(itertools.product([0, 1, 7, 10, 50_001], [1, 2, 3, 8]))
)
def test_host_ranges_are_disjoint_contiguous_and_balanced(total, count):
  ranges = [imagenet_input.host_range(5, 5 + total, p, count) for p in range(count)]
  assert ranges[0][0] == 5 and ranges[-1][1] == 5 + total
  for (_, end), (start, _) in zip(ranges, ranges[1:]):
    assert end == start
  sizes = [end - start for start, end in ranges]
  assert max(sizes) - min(sizes) <= 1 and max(sizes) == -(-total // count)
  with pytest.raises(ValueError, match='process_index'):
    imagenet_input.host_range(0, total, count, count)


def test_split_range_resolves_tfds_split_strings():
  infos = {
    'train': types.SimpleNamespace(num_examples=1_281_167),
    'validation': types.SimpleNamespace(num_examples=50_000),
  }
  assert imagenet_input.split_range('train', infos) == ('train', 0, 1_281_167)
  assert imagenet_input.split_range('train[10000:]', infos) == (
    'train',
    10_000,
    1_281_167,
  )
  assert imagenet_input.split_range('train[:10000]', infos) == ('train', 0, 10_000)
  assert imagenet_input.split_range('validation[:10%]', infos) == ('validation', 0, 5_000)
  with pytest.raises(ValueError, match='one contiguous range'):
    imagenet_input.split_range('train+validation', infos)


def test_mock_examples_are_jpegs_with_labels(mock):
  assert len(mock['image']) == NUM_MOCK and mock['label'].dtype == np.int32
  for image in mock['image']:
    assert image[:2] == b'\xff\xd8'  # JPEG start-of-image marker.
    assert tf.image.extract_jpeg_shape(image).numpy()[2] == 3
  assert np.all((mock['label'] >= 0) & (mock['label'] < 1000))


def test_eval_covers_every_example_once_with_a_ragged_last_batch(mock):
  config = _config()
  batches = list(
    imagenet_input.load('validation', is_training=False, batch_dims=[2, 2], config=config)
  )
  assert len(batches) == 2  # ceil(7 / 4)
  for batch in batches:
    assert all(isinstance(v, np.ndarray) for v in batch.values())
    assert batch['images'].shape == (2, 2, 16, 16, 3)
    assert batch['images'].dtype == np.float32 and batch['labels'].dtype == np.int32
  images = np.concatenate([b['images'].reshape(-1, 16, 16, 3) for b in batches])
  labels = np.concatenate([b['labels'].reshape(-1) for b in batches])
  mask = np.concatenate([b['mask'].reshape(-1) for b in batches])
  np.testing.assert_array_equal(mask, [1] * NUM_MOCK + [0])
  np.testing.assert_array_equal(labels[:NUM_MOCK], mock['label'])
  assert np.all(images[NUM_MOCK:] == 0) and labels[NUM_MOCK] == 0
  # The pipeline's images are the center-crop preprocessing of each example.
  for i in (0, NUM_MOCK - 1):
    expected = imagenet_input.preprocess_eval(
      {'image': tf.constant(mock['image'][i]), 'label': tf.constant(0)}, image_size=16
    )
    np.testing.assert_allclose(images[i], expected['images'].numpy(), atol=1e-5)


def test_host_sharding_gives_disjoint_covers_and_equal_batch_counts(mock):
  config = _config()
  seen = []
  for host in range(3):
    ds = imagenet_input.make_dataset(
      'validation',
      is_training=False,
      batch_dims=[2],
      config=config,
      process_index=host,
      process_count=3,
    )
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2  # ceil(7 / (2 x 3 hosts)) on every host.
    labels = np.concatenate([b['labels'] for b in batches])
    mask = np.concatenate([b['mask'] for b in batches])
    start, end = imagenet_input.host_range(0, NUM_MOCK, host, 3)
    np.testing.assert_array_equal(labels[mask > 0], mock['label'][start:end])
    seen.extend(range(start, end))
  assert sorted(seen) == list(range(NUM_MOCK))


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_training_batches_with_mixup_and_cutmix():
  # RandAugment is covered elsewhere; without it the four pipelines build faster.
  config = _config(fake_num_examples=5, randaugment_layers=0)
  batches = _take(
    imagenet_input.load('train', is_training=True, batch_dims=[2, 3], config=config), 3
  )
  for batch in batches:
    assert set(batch) == {'images', 'labels'}
    assert batch['images'].shape == (2, 3, 16, 16, 3)
    assert batch['images'].dtype == np.float32 and np.all(np.isfinite(batch['images']))
    labels = batch['labels'].reshape(6, 1000)
    assert batch['labels'].dtype == np.float32
    np.testing.assert_allclose(labels.sum(-1), 1.0, atol=1e-5)
    assert np.all(labels >= 0) and np.all(np.count_nonzero(labels, axis=-1) <= 2)
    # Alternate pairs use CutMix, whose weights are multiples of 1 / (16 * 16).
    cutmix = labels[1::2] * 256
    np.testing.assert_allclose(cutmix, np.round(cutmix), atol=1e-3)
  # A fixed seed fixes the stream; resuming at step k gives the (k+1)-th batch
  # (here each step consumes 12 of the 5 examples, so epochs wrap mid-batch).
  again = _take(
    imagenet_input.load('train', is_training=True, batch_dims=[2, 3], config=config), 3
  )
  resumed = _take(
    imagenet_input.load(
      'train', is_training=True, batch_dims=[2, 3], config=config, start_step=2
    ),
    1,
  )
  for a, b in zip(batches + batches[2:], again + resumed):
    np.testing.assert_array_equal(a['images'], b['images'])
    np.testing.assert_array_equal(a['labels'], b['labels'])
  config.seed += 1
  other = _take(
    imagenet_input.load('train', is_training=True, batch_dims=[2, 3], config=config), 1
  )
  assert not np.array_equal(other[0]['images'], batches[0]['images'])


def test_training_without_mixing_gives_integer_labels_per_host(mock):
  config = _config(mixup_alpha=0.0, cutmix=False)
  streams = []
  for host in range(2):
    ds = imagenet_input.make_dataset(
      'train',
      is_training=True,
      batch_dims=[4],
      config=config,
      process_index=host,
      process_count=2,
    )
    batch = next(ds.as_numpy_iterator())
    assert batch['labels'].dtype == np.int32 and batch['labels'].shape == (4,)
    start, end = imagenet_input.host_range(0, NUM_MOCK, host, 2)
    assert set(batch['labels']) <= set(mock['label'][start:end])
    streams.append(batch['images'])
  assert not np.array_equal(streams[0], streams[1])


def test_bad_arguments_fail_clearly(tmp_path):
  config = _config()
  with pytest.raises(ValueError, match='batch_dims'):
    imagenet_input.make_dataset(
      'train', is_training=True, batch_dims=[0, 2], config=config
    )
  with pytest.raises(ValueError, match='mixup_alpha'):
    imagenet_input.make_dataset(
      'train', is_training=True, batch_dims=[2], config=_config(mixup_alpha=-1.0)
    )
  real = _config(fake=False, data_dir=str(tmp_path))
  with pytest.raises(
    errors.DataError, match='experiments.tasks.imagenet.prepare --manual_dir'
  ):
    imagenet_input.num_examples('validation', real)


def test_prepare_names_the_missing_archives(tmp_path):
  (tmp_path / 'ILSVRC2012_img_val.tar').write_bytes(b'')
  with pytest.raises(errors.DataError, match=r"\['ILSVRC2012_img_train.tar'\]"):
    imagenet_prepare.prepare(str(tmp_path), str(tmp_path / 'tfds'))


def _tar_member(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _jpeg_bytes(height, width, seed):
  image = np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)
  return tf.io.encode_jpeg(image).numpy()


@pytest.fixture(scope='module')
def prepared_tfds(tmp_path_factory):
  """A real TFDS imagenet2012 built by `imagenet_prepare` from tiny ILSVRC archives."""
  manual_dir = tmp_path_factory.mktemp('archives')
  with tarfile.open(manual_dir / 'ILSVRC2012_img_train.tar', 'w') as outer:
    for k, synset in enumerate(['n01440764', 'n01443537']):  # Classes 0 and 1.
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode='w') as inner:
        for i in range(3):
          _tar_member(inner, f'{synset}_{i}.JPEG', _jpeg_bytes(20 + i, 30, 10 * k + i))
      _tar_member(outer, f'{synset}.tar', inner_bytes.getvalue())
  with tarfile.open(manual_dir / 'ILSVRC2012_img_val.tar', 'w') as val:
    for i in range(1, 6):
      _tar_member(val, f'ILSVRC2012_val_{i:08d}.JPEG', _jpeg_bytes(25, 21, 100 + i))
  data_dir = str(manual_dir / 'tfds')
  splits = imagenet_prepare.prepare(str(manual_dir), data_dir)
  assert splits == {'train': 6, 'validation': 5}
  return data_dir


def test_real_tfds_path_counts_shards_and_covers_the_split(prepared_tfds):
  config = _config(fake=False, data_dir=prepared_tfds, randaugment_layers=0)
  assert imagenet_input.num_examples('train', config) == 6
  assert imagenet_input.num_examples('validation', config) == 5
  assert imagenet_input.num_examples('validation[1:]', config) == 4
  reference = tfds.builder('imagenet2012', data_dir=prepared_tfds).as_dataset(
    split='validation', shuffle_files=False
  )
  expected = [int(ex['label']) for ex in reference.as_numpy_iterator()]
  seen = []
  for host in range(2):
    ds = imagenet_input.make_dataset(
      'validation',
      is_training=False,
      batch_dims=[2],
      config=config,
      process_index=host,
      process_count=2,
    )
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2  # ceil(5 / (2 x 2 hosts)) on both hosts.
    labels = np.concatenate([b['labels'] for b in batches])
    seen.extend(labels[np.concatenate([b['mask'] for b in batches]) > 0].tolist())
  assert seen == expected
  config.data.train_split = 'train[1:]'
  assert imagenet_input.num_examples('train', config) == 5
  batch = next(
    imagenet_input.load('train', is_training=True, batch_dims=[2, 2], config=config)
  )
  assert batch['images'].shape == (2, 2, 16, 16, 3)
  np.testing.assert_allclose(batch['labels'].sum(-1), 1.0, atol=1e-5)
  assert set(np.nonzero(batch['labels'].reshape(4, 1000))[1]) <= {0, 1}


def test_benchmark_jpegs_have_the_requested_size():
  examples = imagenet_input_benchmark.synthetic_jpegs(2, 37, 53, quality=90)
  for image in examples['image']:
    assert tuple(tf.image.extract_jpeg_shape(image).numpy()) == (37, 53, 3)
  assert examples['label'].shape == (2,)
