"""Per-example image ops of the ImageNet input pipeline, in TensorFlow.

Cropping (Inception-style random-resized crops for training, the release's center crop
for evaluation), decoding only the cropped window of a JPEG, flipping, resizing,
mean/std normalisation, and the MixUp / CutMix pair ops. RandAugment lives in
`experiments/tasks/imagenet/randaugment.py`.

Every random op is stateless: it takes a `seed` tensor of shape `[2]` (int32/int64), so
the same seed gives the same result eagerly, inside `tf.data.Dataset.map` and on any
number of parallel calls. The input pipeline derives one seed per example.

Conventions (facts of the official release, `perceiver/train/dataset.py`):
  * crop windows are `[offset_y, offset_x, height, width]` int32 tensors;
  * the training crop samples 8%-100% of the image area with aspect ratio in
    [3/4, 4/3] (10 attempts, at least 10% of the image covered) and falls back to the
    center crop when sampling fails;
  * the evaluation crop is the centered square of side `224 / (224 + 32)` of the shorter
    side (`int` of the product; offsets round up), whatever the output size;
  * crops are resized bicubically without clamping the overshoot, then normalised with
    the ImageNet mean and standard deviation expressed in [0, 255] pixel units.

Shape glossary:
  H, W: image height and width; h, w: crop height and width; S: output side.
  K: number of classes.
"""

from typing import Dict, Tuple

import tensorflow as tf

from experiments.training import errors

MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# The release pads 224-pixel crops by 32 pixels: 224 / 256 of the shorter side.
CENTER_CROP_FRACTION = 224 / (224 + 32)


def as_seed(seed) -> tf.Tensor:
  """A `[2]` int64 stateless seed (int32 and int64 seeds give the same streams)."""
  seed = tf.cast(seed, tf.int64)
  return tf.ensure_shape(seed, [2])


def image_shape(image: tf.Tensor) -> tf.Tensor:
  """`[H, W, C]` int32 of an encoded JPEG (string scalar, header only) or a decoded image."""
  if image.dtype == tf.string:
    return tf.image.extract_jpeg_shape(image, output_type=tf.int32)
  return tf.shape(image, out_type=tf.int32)


def center_crop_window(
  shape: tf.Tensor, crop_fraction: float = CENTER_CROP_FRACTION
) -> tf.Tensor:
  """The centered square window of side `int(crop_fraction * min(H, W))`.

  Args:
    shape: `[H, W, ...]` int32 image shape.
    crop_fraction: side of the square as a fraction of the shorter image side.

  Returns:
    `[offset_y, offset_x, side, side]` int32.
  """
  if not 0.0 < crop_fraction <= 1.0:
    raise ValueError(f'crop_fraction must be in (0, 1], got {crop_fraction!r}.')
  height, width = shape[0], shape[1]
  side = tf.cast(crop_fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  side = tf.maximum(side, 1)
  offset_y = (height - side + 1) // 2
  offset_x = (width - side + 1) // 2
  return tf.stack([offset_y, offset_x, side, side])


def random_crop_window(
  shape: tf.Tensor,
  seed: tf.Tensor,
  *,
  min_object_covered: float = 0.1,
  aspect_ratio_range: Tuple[float, float] = (3 / 4, 4 / 3),
  area_range: Tuple[float, float] = (0.08, 1.0),
  max_attempts: int = 10,
) -> tf.Tensor:
  """An Inception-style random crop window, or the center crop if sampling fails.

  Args:
    shape: `[H, W, C]` int32 image shape.
    seed: `[2]` stateless seed.
    min_object_covered: the crop covers at least this fraction of the whole image.
    aspect_ratio_range: allowed width / height of the crop.
    area_range: allowed crop area as a fraction of the image area.
    max_attempts: samples tried before giving up.

  Returns:
    `[offset_y, offset_x, h, w]` int32, inside the image.
  """
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.cast(shape, tf.int32),
    bounding_boxes=whole_image,
    seed=as_seed(seed),
    min_object_covered=min_object_covered,
    aspect_ratio_range=aspect_ratio_range,
    area_range=area_range,
    max_attempts=max_attempts,
    use_image_if_no_bounding_boxes=True,
  )
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  # Sampling returns the whole image when every attempt failed.
  failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
  return tf.cond(failed, lambda: center_crop_window(shape), lambda: window)


def decode_and_crop(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """Decodes only `window` of an encoded JPEG (or crops a decoded image).

  Args:
    image: JPEG bytes (string scalar) or a decoded `[H, W, 3]` uint8 image.
    window: `[offset_y, offset_x, h, w]` int32.

  Returns:
    `[h, w, 3]` uint8.
  """
  if image.dtype == tf.string:
    return tf.image.decode_and_crop_jpeg(image, window, channels=3)
  return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors `[H, W, C]` left-right with probability 1/2."""
  return tf.image.stateless_random_flip_left_right(image, as_seed(seed))


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bicubic resize of `[h, w, 3]` to float32 `[S, S, 3]`; overshoot is not clamped."""
  return tf.image.resize(
    tf.cast(image, tf.float32), (size, size), method=tf.image.ResizeMethod.BICUBIC
  )


def normalize(image: tf.Tensor) -> tf.Tensor:
  """`(image - mean) / std` per channel, with ImageNet statistics in [0, 255] units."""
  image = tf.cast(image, tf.float32)
  mean = tf.constant(MEAN_RGB, tf.float32, shape=[1, 1, 3])
  std = tf.constant(STDDEV_RGB, tf.float32, shape=[1, 1, 3])
  return (image - mean) / std


def sample_beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
  """A float32 scalar from Beta(alpha, alpha), as a ratio of two Gamma samples."""
  if alpha <= 0:
    raise errors.ConfigError(f'Beta concentration alpha must be > 0, got {alpha!r}.')
  seeds = tf.random.experimental.stateless_split(as_seed(seed), num=2)
  x = tf.random.stateless_gamma([], seed=seeds[0], alpha=alpha, dtype=tf.float32)
  y = tf.random.stateless_gamma([], seed=seeds[1], alpha=alpha, dtype=tf.float32)
  total = x + y
  # Both Gamma samples underflow to 0 only for tiny alpha; fall back to an even mix.
  return tf.where(total > 0, x / tf.maximum(total, 1e-30), 0.5)


def cutmix_box(height: int, width: int, seed: tf.Tensor, alpha: float = 1.0) -> tf.Tensor:
  """A CutMix box `[y0, x0, y1, x1]` (int32, half-open, clipped to the image).

  The box centre is uniform over the pixels; its sides are `sqrt(1 - lam)` times the
  image sides (rounded down, then halved to each side of the centre) with
  `lam ~ Beta(alpha, alpha)`; `alpha=1` (uniform `lam`) is the release's choice.
  """
  seeds = tf.random.experimental.stateless_split(as_seed(seed), num=3)
  center_y = tf.random.stateless_uniform(
    [], seed=seeds[0], minval=0, maxval=height, dtype=tf.int32
  )
  center_x = tf.random.stateless_uniform(
    [], seed=seeds[2], minval=0, maxval=width, dtype=tf.int32
  )
  lam = sample_beta(seeds[1], alpha)
  side_ratio = tf.sqrt(1.0 - lam)
  half_h = tf.cast(side_ratio * height, tf.int32) // 2
  half_w = tf.cast(side_ratio * width, tf.int32) // 2
  y0 = tf.clip_by_value(center_y - half_h, 0, height)
  y1 = tf.clip_by_value(center_y + half_h, 0, height)
  x0 = tf.clip_by_value(center_x - half_w, 0, width)
  x1 = tf.clip_by_value(center_x + half_w, 0, width)
  return tf.stack([y0, x0, y1, x1])


def box_mask(height: int, width: int, box: tf.Tensor) -> tf.Tensor:
  """float32 `[H, W, 1]`: 0 inside the half-open box `[y0, x0, y1, x1]`, 1 elsewhere."""
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = (rows >= box[0]) & (rows < box[2]) & (cols >= box[1]) & (cols < box[3])
  return tf.cast(tf.logical_not(inside), tf.float32)[..., None]


def _mixed_labels(
  label_a: tf.Tensor, label_b: tf.Tensor, weight_a: tf.Tensor, num_classes: int
) -> tf.Tensor:
  """`weight_a * onehot(a) + (1 - weight_a) * onehot(b)`, float32 `[K]`."""
  weight_a = tf.cast(weight_a, tf.float32)
  return weight_a * tf.one_hot(label_a, num_classes, dtype=tf.float32) + (
    1.0 - weight_a
  ) * tf.one_hot(label_b, num_classes, dtype=tf.float32)


def mixup(
  image_a: tf.Tensor,
  image_b: tf.Tensor,
  label_a: tf.Tensor,
  label_b: tf.Tensor,
  seed: tf.Tensor,
  *,
  alpha: float,
  num_classes: int,
) -> Dict[str, tf.Tensor]:
  """MixUp (Zhang et al. 2018) of two examples.

  Args:
    image_a, image_b: float32 `[S, S, 3]`.
    label_a, label_b: int class ids.
    seed: `[2]` stateless seed.
    alpha: Beta(alpha, alpha) concentration of the mixing weight.
    num_classes: K.

  Returns:
    {'images': `lam * a + (1 - lam) * b`, 'labels': float32 `[K]` with weight `lam` on
    `label_a` and `1 - lam` on `label_b`, 'mix_weight': lam}.
  """
  lam = sample_beta(seed, alpha)
  images = lam * image_a + (1.0 - lam) * image_b
  return {
    'images': images,
    'labels': _mixed_labels(label_a, label_b, lam, num_classes),
    'mix_weight': lam,
  }


def cutmix(
  image_a: tf.Tensor,
  image_b: tf.Tensor,
  label_a: tf.Tensor,
  label_b: tf.Tensor,
  seed: tf.Tensor,
  *,
  alpha: float = 1.0,
  num_classes: int,
) -> Dict[str, tf.Tensor]:
  """CutMix (Yun et al. 2019): pastes a box of `image_b` into `image_a`.

  The label weight of `label_b` is exactly the pasted fraction of the pixels, so the
  weights match the image content even when the box is clipped at the border.

  Returns:
    {'images', 'labels': float32 `[K]`, 'mix_weight': weight of `label_a`}.
  """
  height, width = image_a.shape[0], image_a.shape[1]
  if height is None or width is None:
    raise ValueError(
      f'cutmix needs statically known image sizes, got shape {image_a.shape}.'
    )
  box = cutmix_box(height, width, seed, alpha)
  mask = box_mask(height, width, box)
  images = mask * image_a + (1.0 - mask) * image_b
  pasted = tf.cast((box[2] - box[0]) * (box[3] - box[1]), tf.float32)
  weight_a = 1.0 - pasted / float(height * width)
  return {
    'images': images,
    'labels': _mixed_labels(label_a, label_b, weight_a, num_classes),
    'mix_weight': weight_a,
  }
