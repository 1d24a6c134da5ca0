"""Tests of experiments/tasks/imagenet/augment.py: crops, flips, normalisation, MixUp, CutMix.

Every random op is checked eagerly and inside `tf.data.Dataset.map`, which must agree
(the ops are stateless, so a seed fixes the result in both modes).
"""

import numpy as np
import pytest
import tensorflow as tf

from experiments.tasks.imagenet import augment as image_augment

SHAPES = [(375, 500, 3), (37, 53, 3), (17, 47, 3), (500, 333, 3)]
SEEDS = [[s, 7 * s + 1] for s in range(40)]


def _in_tf_data(fn, *inputs):
  """Runs `fn` on each element of `inputs` through tf.data; stacks the results."""
  ds = tf.data.Dataset.from_tensor_slices(inputs).map(fn)
  return [np.asarray(x) for x in zip(*ds.as_numpy_iterator())]


def _jpeg(height, width, seed=0):
  rng = np.random.RandomState(seed)
  small = rng.randint(0, 256, (max(2, height // 6), max(2, width // 6), 3))
  image = tf.image.resize(small.astype(np.float32), (height, width))
  return tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90)


@pytest.mark.parametrize('shape', SHAPES)
def test_random_crop_windows_are_valid_inception_crops(shape):
  height, width, _ = shape
  shape_t = tf.constant(shape, tf.int32)
  eager = np.stack(
    [image_augment.random_crop_window(shape_t, tf.constant(s)).numpy() for s in SEEDS]
  )
  (in_data,) = _in_tf_data(
    lambda s: (image_augment.random_crop_window(shape_t, s),), np.array(SEEDS)
  )
  np.testing.assert_array_equal(eager, in_data)

  center = image_augment.center_crop_window(shape_t).numpy()
  y, x, h, w = eager.T
  assert np.all(y >= 0) and np.all(x >= 0)
  assert np.all(y + h <= height) and np.all(x + w <= width)
  assert np.all(h >= 1) and np.all(w >= 1)
  sampled = ~np.all(eager == center, axis=1)
  assert sampled.sum() >= len(SEEDS) // 2  # Most draws succeed.
  area = h[sampled] * w[sampled] / (height * width)
  assert np.all(area >= 0.08 - 0.02) and np.all(area <= 1.0)
  # Integer rounding of the sides loosens the aspect-ratio bounds slightly.
  ratio = w[sampled] / h[sampled]
  assert np.all(ratio >= 3 / 4 * 0.85) and np.all(ratio <= 4 / 3 / 0.85)
  # Different seeds give different crops.
  assert len({tuple(row) for row in eager[sampled]}) > len(SEEDS) // 3


def test_random_crop_falls_back_to_center_crop_when_sampling_fails():
  # A 1-pixel-high image cannot host a crop with aspect ratio <= 4/3 and 8% area.
  shape = tf.constant([1, 40, 3], tf.int32)
  window = image_augment.random_crop_window(shape, tf.constant([1, 2])).numpy()
  np.testing.assert_array_equal(window, image_augment.center_crop_window(shape).numpy())


@pytest.mark.parametrize(
  'shape, expected',
  [
    ((375, 500, 3), (24, 86, 328, 328)),  # int(0.875 * 375) = 328
    ((500, 333, 3), (105, 21, 291, 291)),  # int(0.875 * 333) = 291
    ((7, 11, 3), (1, 3, 6, 6)),  # int(6.125) = 6, offsets round up
    ((256, 256, 3), (16, 16, 224, 224)),
  ],
)
def test_center_crop_window_values(shape, expected):
  window = image_augment.center_crop_window(tf.constant(shape, tf.int32)).numpy()
  assert tuple(window) == expected


def test_decode_and_crop_decodes_the_window_of_the_jpeg():
  jpeg = _jpeg(75, 101)
  assert tuple(image_augment.image_shape(jpeg).numpy()) == (75, 101, 3)
  full = tf.io.decode_jpeg(jpeg, channels=3).numpy()
  for window in ([3, 5, 40, 50], [17, 33, 31, 29], [0, 0, 75, 101]):
    crop = image_augment.decode_and_crop(jpeg, tf.constant(window)).numpy()
    y, x, h, w = window
    assert crop.shape == (h, w, 3) and crop.dtype == np.uint8
    # libjpeg upsamples chroma differently on the crop's left/right edge columns only.
    np.testing.assert_array_equal(crop[:, 1:-1], full[y : y + h, x + 1 : x + w - 1])
  decoded = tf.constant(full)
  np.testing.assert_array_equal(
    image_augment.decode_and_crop(decoded, tf.constant([17, 33, 31, 29])).numpy(),
    full[17:48, 33:62],
  )


def test_eval_center_crop_resize_and_normalize_on_a_hand_made_image():
  image = np.arange(7 * 11 * 3, dtype=np.uint8).reshape(7, 11, 3)
  window = image_augment.center_crop_window(tf.constant(image.shape))
  crop = image_augment.decode_and_crop(tf.constant(image), window)
  np.testing.assert_array_equal(crop.numpy(), image[1:7, 3:9])
  # Resizing to the crop's own size is the identity.
  out = image_augment.normalize(image_augment.resize(crop, 6)).numpy()
  mean = np.array([0.485, 0.456, 0.406]) * 255
  std = np.array([0.229, 0.224, 0.225]) * 255
  np.testing.assert_allclose(out, (image[1:7, 3:9] - mean) / std, atol=1e-4)
  # Bicubic resizing keeps a constant image constant and does not clamp overshoot.
  up = image_augment.resize(tf.fill([4, 6, 3], tf.constant(200, tf.uint8)), 9).numpy()
  np.testing.assert_allclose(up, 200.0, atol=1e-3)
  step = np.zeros((4, 4, 3), np.uint8)
  step[:, 2:] = 255
  overshoot = image_augment.resize(tf.constant(step), 16).numpy()
  assert overshoot.min() < 0 and overshoot.max() > 255


def test_random_flip_is_exact_and_seeded():
  image = np.random.RandomState(1).randint(0, 256, (5, 7, 3)).astype(np.uint8)
  eager = [
    image_augment.random_flip(tf.constant(image), tf.constant(s)).numpy() for s in SEEDS
  ]
  (in_data,) = _in_tf_data(
    lambda s: (image_augment.random_flip(tf.constant(image), s),), np.array(SEEDS)
  )
  np.testing.assert_array_equal(np.stack(eager), in_data)
  flipped = [np.array_equal(e, image[:, ::-1]) for e in eager]
  kept = [np.array_equal(e, image) for e in eager]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 5 < sum(flipped) < len(SEEDS) - 5


def test_sample_beta_is_in_unit_interval_with_the_right_mean():
  draws = np.array(
    [image_augment.sample_beta(tf.constant([s, 3]), 0.2).numpy() for s in range(300)]
  )
  assert np.all((draws >= 0) & (draws <= 1))
  assert abs(draws.mean() - 0.5) < 0.08
  # Beta(0.2, 0.2) puts most of its mass near 0 and 1.
  assert np.mean((draws < 0.1) | (draws > 0.9)) > 0.5
  with pytest.raises(ValueError, match='alpha'):
    image_augment.sample_beta(tf.constant([0, 0]), 0.0)


def test_mixup_mixes_images_and_labels_with_the_same_weight():
  rng = np.random.RandomState(2)
  a = rng.normal(size=(9, 9, 3)).astype(np.float32)
  b = rng.normal(size=(9, 9, 3)).astype(np.float32)
  for s in SEEDS[:10]:
    out = image_augment.mixup(a, b, 3, 8, tf.constant(s), alpha=0.2, num_classes=10)
    labels = out['labels'].numpy()
    lam = labels[3]
    np.testing.assert_allclose(labels.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(lam, out['mix_weight'].numpy(), atol=1e-7)
    np.testing.assert_allclose(labels[8], 1.0 - lam, atol=1e-6)
    assert np.count_nonzero(labels) <= 2
    np.testing.assert_allclose(out['images'].numpy(), lam * a + (1 - lam) * b, atol=1e-5)
  # Identical labels keep a one-hot label.
  same = image_augment.mixup(a, b, 4, 4, tf.constant([1, 1]), alpha=0.2, num_classes=10)
  np.testing.assert_allclose(same['labels'].numpy(), np.eye(10)[4], atol=1e-6)


@pytest.mark.parametrize('size', [(16, 16), (7, 13)])
def test_cutmix_label_weights_match_the_pasted_area_exactly(size):
  height, width = size
  a = np.zeros((height, width, 3), np.float32)
  b = np.ones((height, width, 3), np.float32)

  def check(images, labels, weight):
    pasted = np.mean(images[..., 0] == 1.0)
    assert np.all((images == 0.0) | (images == 1.0))
    np.testing.assert_allclose(labels.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(labels[5], pasted, atol=1e-6)
    np.testing.assert_allclose(labels[2], 1.0 - pasted, atol=1e-6)
    np.testing.assert_allclose(weight, 1.0 - pasted, atol=1e-6)
    # The pasted region is one axis-aligned box.
    rows, cols = np.nonzero(images[..., 0])
    if rows.size:
      assert rows.size == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return pasted

  eager = []
  for s in SEEDS:
    out = image_augment.cutmix(a, b, 2, 5, tf.constant(s), num_classes=10)
    eager.append(
      check(out['images'].numpy(), out['labels'].numpy(), out['mix_weight'].numpy())
    )
  # Boxes of many sizes, some clipped by the border.
  assert len(set(eager)) > 10 and min(eager) < 0.2 and max(eager) > 0.5

  def mix(seed):
    out = image_augment.cutmix(tf.constant(a), tf.constant(b), 2, 5, seed, num_classes=10)
    return out['images'], out['labels'], out['mix_weight']

  images, labels, weights = _in_tf_data(mix, np.array(SEEDS))
  in_data = [check(i, lab, w) for i, lab, w in zip(images, labels, weights)]
  np.testing.assert_array_equal(eager, in_data)


def test_box_mask_values():
  mask = image_augment.box_mask(4, 5, tf.constant([1, 2, 3, 4]))[..., 0].numpy()
  expected = np.ones((4, 5), np.float32)
  expected[1:3, 2:4] = 0.0
  np.testing.assert_array_equal(mask, expected)
