"""Downsampled ImageNet as a sequence of subpixels with 3D positions."""

import numpy as np

from experiments.tasks.perceiver_ar import imagenet64
from experiments.tasks.perceiver_ar import sequences


def test_events_and_positions_of_a_tiny_image():
  image = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
  events = imagenet64.image_events(image)
  np.testing.assert_array_equal(events, [sequences.SOS_ID] + list(range(3, 15)))
  positions = imagenet64.image_positions(2)
  assert positions.shape == (13, 3)
  np.testing.assert_array_equal(positions[0], [1, 1, 1])  # SOS.
  # Raster order: row 0 (y + 2 = 2) pixel 0 (x + 2 = 2) channels 2, 3, 4, then pixel 1.
  np.testing.assert_array_equal(
    positions[1:7], [[2, 2, 2], [2, 2, 3], [2, 2, 4], [3, 2, 2], [3, 2, 3], [3, 2, 4]]
  )
  np.testing.assert_array_equal(positions[7], [2, 3, 2])  # Row 1, pixel 0, red.
  assert imagenet64.image_positions().max(axis=0).tolist() == [65, 65, 4]
  assert np.all(imagenet64.image_positions().max(axis=0) < imagenet64.INPUT_IDX_SIZE)


def test_fake_images_have_structure():
  images = imagenet64.fake_images(np.random.default_rng(0), 3, resolution=16)
  assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
  # Neighbouring pixels are much closer than random pairs.
  near = np.abs(np.diff(images.astype(float), axis=1)).mean()
  assert near < 0.3 * images.astype(float).std() + 8


def test_tfds_images_through_mock_data():
  """The TFDS path (splits, shuffling, resumption) on mocked 64x64 images."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from configs import perceiver_ar as perceiver_ar_config  # pylint: disable=g-import-not-at-top

  images = np.stack([np.full((64, 64, 3), 10 * i, np.uint8) for i in range(5)])

  def as_dataset(self, split, **kwargs):
    del self, kwargs
    assert str(split) in ('validation', 'train') or 'train' in str(split), split
    return tf.data.Dataset.from_tensor_slices({'image': images})

  config = perceiver_ar_config.get_config('imagenet64')
  config.data.eval_images = 2
  config.data.max_context_length = 64
  config.data.minimum_crop_length = 10
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    held_out = imagenet64.eval_images('validation', config)
    batches = imagenet64.train_batches(config, batch_dims=[1, 2], start_step=0, host=0)
    first, second = next(batches), next(batches)
    resumed = next(
      imagenet64.train_batches(config, batch_dims=[1, 2], start_step=1, host=0)
    )
  np.testing.assert_array_equal(held_out, images[:2])  # The first images, in order.
  assert first['inputs'].shape == (1, 2, 64) and first['input_idxs'].shape == (
    1,
    2,
    64,
    3,
  )
  np.testing.assert_array_equal(resumed['inputs'], second['inputs'])
  lengths = (first['inputs'] > 0).sum(axis=-1)
  assert lengths.min() >= 10
  # Subpixels are value + 3 of one of the images (each image is constant).
  values = set(np.unique(first['inputs'][first['inputs'] > 2] - 3).tolist())
  assert values <= {0, 10, 20, 30, 40}
