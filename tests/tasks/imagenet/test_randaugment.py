"""Tests of experiments/tasks/imagenet/randaugment.py: each op on values, RandAugment as a whole."""

import numpy as np
import pytest
import tensorflow as tf

from experiments.tasks.imagenet import randaugment as ra


def _random_image(height=9, width=11, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)


def _run(fn, image, *args):
  return fn(tf.constant(image), *args).numpy()


def test_pixelwise_ops_on_hand_computed_values():
  row = np.array([[0, 50, 100, 127, 128, 200, 255]], np.uint8)
  image = np.stack([row] * 3, axis=-1)  # [1, 7, 3]
  channel = lambda out: out[0, :, 0].tolist()
  assert channel(_run(ra.invert, image)) == [255, 205, 155, 128, 127, 55, 0]
  assert channel(_run(ra.posterize, image, 2)) == [0, 0, 64, 64, 128, 192, 192]
  assert channel(_run(ra.posterize, image, 0)) == [0] * 7
  assert channel(_run(ra.posterize, image, 8)) == row[0].tolist()
  assert channel(_run(ra.solarize, image, 128)) == [0, 50, 100, 127, 127, 55, 0]
  assert channel(_run(ra.solarize, image, 256)) == row[0].tolist()
  assert channel(_run(ra.solarize_add, image, 110)) == [110, 160, 210, 237, 128, 200, 255]
  assert channel(_run(ra.solarize_add, image, 200)) == [200, 250, 255, 255, 128, 200, 255]
  assert channel(_run(ra.solarize_add, image, -60)) == [0, 0, 40, 67, 128, 200, 255]
  assert channel(_run(ra.solarize_add, image, 10, 256)) == [
    10,
    60,
    110,
    137,
    138,
    210,
    255,
  ]
  assert channel(_run(ra.brightness, image, 0.5)) == [0, 25, 50, 63, 64, 100, 127]
  assert channel(_run(ra.brightness, image, 1.9)) == [0, 95, 190, 241, 243, 255, 255]


def test_autocontrast_stretches_each_channel():
  image = np.zeros((1, 3, 3), np.uint8)
  image[0, :, 0] = [50, 100, 150]
  image[0, :, 1] = [7, 7, 7]  # Constant channels stay as they are.
  image[0, :, 2] = [0, 128, 255]
  out = _run(ra.autocontrast, image)
  assert out[0, :, 0].tolist() == [0, 127, 255]
  assert out[0, :, 1].tolist() == [7, 7, 7]
  assert out[0, :, 2].tolist() == [0, 128, 255]


def test_equalize_on_hand_computed_histograms():
  # 4 grey levels, 1000 pixels each: step = (4000 - 1000) // 255 = 11, the lookup
  # table maps the levels to (cumulative count before them + 5) // 11, clipped.
  levels = np.repeat(np.array([100, 101, 102, 103], np.uint8), 1000).reshape(40, 100)
  out = _run(ra.equalize, np.stack([levels] * 3, axis=-1))
  assert sorted(np.unique(out[..., 0]).tolist()) == [0, 91, 182, 255]
  # An already uniform histogram is a fixed point.
  uniform = np.tile(np.arange(256, dtype=np.uint8), 4).reshape(32, 32)
  uniform = np.stack([uniform] * 3, axis=-1)
  np.testing.assert_array_equal(_run(ra.equalize, uniform), uniform)
  # Too few distinct pixels (step 0) leaves the image unchanged, as PIL does.
  small = _random_image(3, 4)
  np.testing.assert_array_equal(_run(ra.equalize, small), small)


def test_enhancement_ops_interpolate_between_degenerate_image_and_image():
  image = _random_image()
  for op in (ra.color, ra.contrast, ra.brightness, ra.sharpness):
    np.testing.assert_array_equal(_run(op, image, 1.0), image)
  grey = _run(ra.color, image, 0.0)
  assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])
  luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(grey[..., 0], luma, atol=1.0)
  flat = _run(ra.contrast, image, 0.0)
  assert np.unique(flat).size == 1
  assert abs(int(flat[0, 0, 0]) - luma.mean()) <= 1.0
  # Sharpness smooths the interior with [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13.
  impulse = np.zeros((5, 5, 3), np.uint8)
  impulse[2, 2] = 255
  smooth = _run(ra.sharpness, impulse, 0.0)[..., 0]
  assert smooth[2, 2] == round(255 * 5 / 13)
  assert smooth[1, 1] == smooth[1, 2] == smooth[3, 3] == round(255 / 13)
  assert np.all(smooth[0] == 0) and np.all(smooth[:, 0] == 0)  # Borders are kept.
  # Extrapolation (factor > 1) clips to [0, 255].
  sharp = _run(ra.sharpness, impulse, 1.9)[..., 0]
  assert sharp[2, 2] == 255 and sharp[1, 1] == 0


def test_geometric_ops_on_values():
  image = _random_image(7, 7)
  np.testing.assert_array_equal(_run(ra.rotate, image, 0.0), image)
  np.testing.assert_array_equal(_run(ra.rotate, image, 90.0), np.rot90(image, 1))
  np.testing.assert_array_equal(_run(ra.rotate, image, -90.0), np.rot90(image, -1))

  wide = _random_image(5, 9)
  moved = _run(ra.translate_x, wide, 3.0)
  np.testing.assert_array_equal(moved[:, 3:], wide[:, :-3])
  assert np.all(moved[:, :3] == 128)
  moved = _run(ra.translate_y, wide, -2.0)
  np.testing.assert_array_equal(moved[:-2], wide[2:])
  assert np.all(moved[-2:] == 128)

  sheared = _run(ra.shear_x, wide, 1.0)
  for y in range(5):
    np.testing.assert_array_equal(sheared[y, : 9 - y], wide[y, y:])
    assert np.all(sheared[y, 9 - y :] == 128)
  sheared = _run(ra.shear_y, wide, 0.0)
  np.testing.assert_array_equal(sheared, wide)


def test_cutout_fills_a_clipped_square_with_grey():
  image = np.zeros((10, 12, 3), np.uint8)
  out = _run(ra.cutout, image, 2, 5, 6)
  assert np.sum(out[..., 0] == 128) == 16
  assert np.all(out[3:7, 4:8] == 128)
  corner = _run(ra.cutout, image, 3, 0, 11)  # Clipped at the top-right corner.
  assert np.sum(corner[..., 0] == 128) == 3 * 4
  assert np.all(corner[0:3, 8:12] == 128)


def test_ops_match_pil_where_available():
  pil = pytest.importorskip('PIL')
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from PIL import ImageEnhance  # pylint: disable=g-import-not-at-top
  from PIL import ImageOps  # pylint: disable=g-import-not-at-top

  del pil
  image = _random_image(23, 31, seed=3)
  smooth = np.asarray(Image.fromarray(image).resize((31, 23), Image.BILINEAR))
  pil_image = Image.fromarray(image)
  np.testing.assert_array_equal(
    _run(ra.autocontrast, image), np.asarray(ImageOps.autocontrast(pil_image))
  )
  big = np.asarray(Image.fromarray(_random_image(64, 64, seed=4)).resize((300, 300)))
  np.testing.assert_array_equal(
    _run(ra.equalize, big), np.asarray(ImageOps.equalize(Image.fromarray(big)))
  )
  np.testing.assert_array_equal(
    _run(ra.posterize, image, 3), np.asarray(ImageOps.posterize(pil_image, 3))
  )
  np.testing.assert_array_equal(
    _run(ra.solarize, image, 100), np.asarray(ImageOps.solarize(pil_image, 100))
  )
  for op, enhancer in (
    (ra.color, ImageEnhance.Color),
    (ra.contrast, ImageEnhance.Contrast),
    (ra.brightness, ImageEnhance.Brightness),
    (ra.sharpness, ImageEnhance.Sharpness),
  ):
    for factor in (0.1, 0.55, 1.9):
      ours = _run(op, smooth, factor).astype(int)
      theirs = np.asarray(enhancer(Image.fromarray(smooth)).enhance(factor)).astype(int)
      # PIL rounds where we truncate, and its greyscale is integer arithmetic.
      assert np.max(np.abs(ours - theirs)) <= 2, (op.__name__, factor)


@pytest.mark.parametrize('shape', [(1, 3, 3), (5, 7, 3), (33, 17, 3)])
def test_every_op_keeps_shape_dtype_at_every_magnitude(shape):
  image = tf.constant(_random_image(*shape[:2], seed=5))
  for index in range(len(ra.OP_NAMES)):
    for magnitude in (0.0, 5.0, 10.0, 20.0):
      out = ra.apply_op(image, index, magnitude, tf.constant([index, 1]))
      assert out.dtype == tf.uint8 and out.shape == shape


def test_rand_augment_eager_and_in_tf_data():
  images = np.stack([_random_image(13, 17, seed=s) for s in range(6)])
  seeds = np.array([[s, 11] for s in range(6)], np.int64)
  augment = lambda image, seed: ra.rand_augment(image, seed, num_layers=3, magnitude=9)
  eager = np.stack(
    [augment(tf.constant(i), tf.constant(s)).numpy() for i, s in zip(images, seeds)]
  )
  ds = tf.data.Dataset.from_tensor_slices((images, seeds)).map(augment)
  in_data = np.stack(list(ds.as_numpy_iterator()))
  assert eager.dtype == np.uint8 and eager.shape == images.shape
  np.testing.assert_array_equal(eager, in_data)
  # Same seed, same result; most images are changed at magnitude 9.
  again = augment(tf.constant(images[0]), tf.constant(seeds[0])).numpy()
  np.testing.assert_array_equal(again, eager[0])
  changed = [not np.array_equal(e, i) for e, i in zip(eager, images)]
  assert sum(changed) >= 4
  # Zero layers is the identity.
  same = ra.rand_augment(
    tf.constant(images[1]), tf.constant([0, 0]), num_layers=0, magnitude=9
  )
  np.testing.assert_array_equal(same.numpy(), images[1])


def test_rand_augment_rejects_bad_arguments():
  image = tf.constant(_random_image())
  with pytest.raises(ValueError, match='num_layers'):
    ra.rand_augment(image, tf.constant([0, 0]), num_layers=-1, magnitude=5)
  with pytest.raises(ValueError, match='magnitude'):
    ra.rand_augment(image, tf.constant([0, 0]), num_layers=2, magnitude=-1)
  with pytest.raises(ValueError, match='uint8'):
    ra.rand_augment(
      tf.cast(image, tf.float32), tf.constant([0, 0]), num_layers=2, magnitude=5
    )
