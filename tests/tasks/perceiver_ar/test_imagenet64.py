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
