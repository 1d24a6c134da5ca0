"""RandAugment (Cubuk et al. 2020) on uint8 images, in TensorFlow.

`rand_augment(image, seed, num_layers=N, magnitude=M)` applies N operations in a row,
each drawn uniformly from the 16 below, all at the shared magnitude M (on the 0-10
scale of the paper). The operation set and the mapping from magnitude to each
operation's argument follow the official Perceiver release (facts only; this is an
independent implementation):

  AutoContrast, Equalize, Invert          (no argument)
  Rotate        +-30 * M/10 degrees       (sign drawn at random)
  Posterize     keep int(4 * M/10) high bits
  Solarize      invert pixels >= int(256 * M/10)
  Color, Contrast, Brightness, Sharpness  blend factor 0.1 + 1.8 * M/10
  ShearX/Y      +-0.3 * M/10
  TranslateX/Y  +-100 * M/10 pixels
  Cutout        square of side 2 * int(40 * M/10), random centre
  SolarizeAdd   add int(110 * M/10) to pixels below 128 (clipped)

Geometric operations fill uncovered pixels with grey (128) and sample with nearest
neighbour. The enhancement operations follow PIL's definitions (`Contrast` blends with
the mean grey level of the image). All randomness is stateless (a `[2]` seed), so
results are reproducible eagerly and inside `tf.data`.

Shape glossary:
  H, W: image height and width; every op maps uint8 `[H, W, 3]` to uint8 `[H, W, 3]`.
"""

import math
from typing import Callable, List

import tensorflow as tf

from experiments.tasks.imagenet import augment
from experiments.training import errors

MAX_LEVEL = 10.0
FILL_VALUE = 128
OP_NAMES = (
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'Posterize',
  'Solarize',
  'Color',
  'Contrast',
  'Brightness',
  'Sharpness',
  'ShearX',
  'ShearY',
  'TranslateX',
  'TranslateY',
  'Cutout',
  'SolarizeAdd',
)
_TRANSLATE_CONST = 100.0
_CUTOUT_CONST = 40.0
# ITU-R 601-2 luma weights, as PIL's `convert('L')`.
_LUMA = (0.299, 0.587, 0.114)


def blend(image1: tf.Tensor, image2: tf.Tensor, factor) -> tf.Tensor:
  """`image1 + factor * (image2 - image1)`, clipped to [0, 255] and truncated to uint8.

  `factor=0` gives `image1`, `factor=1` gives `image2`; factors above 1 extrapolate.
  """
  image1 = tf.cast(image1, tf.float32)
  image2 = tf.cast(image2, tf.float32)
  mixed = image1 + tf.cast(factor, tf.float32) * (image2 - image1)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _grey(image: tf.Tensor) -> tf.Tensor:
  """float32 `[H, W, 1]` luma."""
  weights = tf.constant(_LUMA, tf.float32, shape=[1, 1, 3])
  return tf.reduce_sum(tf.cast(image, tf.float32) * weights, axis=-1, keepdims=True)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel linearly so that its minimum maps to 0 and maximum to 255."""
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
  hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
  stretchable = hi > lo
  scale = tf.where(stretchable, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
  offset = tf.where(stretchable, -lo * scale, 0.0)
  return tf.cast(tf.clip_by_value(x * scale + offset, 0.0, 255.0), tf.uint8)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL's histogram equalisation of one uint8 `[H, W]` channel."""
  values = tf.cast(channel, tf.int32)
  histogram = tf.math.bincount(
    tf.reshape(values, [-1]), minlength=256, maxlength=256, dtype=tf.int32
  )
  last_used = tf.reduce_max(tf.where(histogram > 0, tf.range(256), -1))
  step = (tf.reduce_sum(histogram) - histogram[last_used]) // 255

  def equalized():
    lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], axis=0), 0, 255)
    return tf.cast(tf.gather(lut, values), tf.uint8)

  return tf.cond(step > 0, equalized, lambda: tf.cast(channel, tf.uint8))


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Equalises the histogram of each channel independently (PIL `ImageOps.equalize`)."""
  return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def invert(image: tf.Tensor) -> tf.Tensor:
  """`255 - image`."""
  return tf.constant(255, tf.uint8) - image


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the `bits` most significant bits of every pixel (0 bits gives black)."""
  bits = max(0, min(8, int(bits)))
  mask = (0xFF << (8 - bits)) & 0xFF
  return tf.bitwise.bitwise_and(image, tf.constant(mask, tf.uint8))


def solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
  """Inverts the pixels whose value is at least `threshold`."""
  threshold = int(threshold)
  if threshold > 255:
    return image
  below = image < tf.constant(max(threshold, 0), tf.uint8)
  return tf.where(below, image, tf.constant(255, tf.uint8) - image)


def solarize_add(image: tf.Tensor, addition: int, threshold: int = 128) -> tf.Tensor:
  """Adds `addition` (clipped to [0, 255]) to the pixels below `threshold`."""
  addition = int(addition)
  if addition >= 0:  # Saturating uint8 addition: x + min(a, 255 - x).
    amount = tf.constant(min(addition, 255), tf.uint8)
    added = tf.minimum(image, tf.constant(255, tf.uint8) - amount) + amount
  else:
    amount = tf.constant(min(-addition, 255), tf.uint8)
    added = tf.maximum(image, amount) - amount
  below = image < tf.constant(min(max(int(threshold), 0), 255), tf.uint8)
  if threshold > 255:
    below = tf.ones_like(below)
  return tf.where(below, added, image)


def color(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL `ImageEnhance.Color`: blends from the greyscale image (0) to the image (1)."""
  grey = tf.tile(_grey(image), [1, 1, 3])
  return blend(grey, image, factor)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL `ImageEnhance.Contrast`: blends from the image's mean grey level to the image."""
  mean = tf.floor(tf.reduce_mean(_grey(image)) + 0.5)
  return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL `ImageEnhance.Brightness`: blends from black (0) to the image (1)."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL `ImageEnhance.Sharpness`: blends from a smoothed image to the image.

  The smoothed image is the 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on the
  interior; border pixels keep their values, as in PIL.
  """
  x = tf.cast(image, tf.float32)
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])  # [3, 3, 3, 1]
  padded = tf.pad(x, [[1, 1], [1, 1], [0, 0]], mode='SYMMETRIC')[None]
  smooth = tf.nn.depthwise_conv2d(padded, kernel, strides=[1, 1, 1, 1], padding='VALID')[
    0
  ]
  smooth = tf.round(tf.clip_by_value(smooth, 0.0, 255.0))
  height, width = tf.shape(x)[0], tf.shape(x)[1]
  rows = tf.range(height)[:, None, None]
  cols = tf.range(width)[None, :, None]
  interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
  degenerate = tf.where(interior, smooth, x)
  return blend(degenerate, image, factor)


def _projective_transform(image: tf.Tensor, transform: List) -> tf.Tensor:
  """Resamples `image` at `transform(output point)` (nearest; grey outside the image).

  `transform` is `[a0, a1, a2, b0, b1, b2, c0, c1]`: output pixel (x, y) reads input
  ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1.
  """
  transform = tf.cast(tf.stack(transform), tf.float32)[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
    images=image[None],
    transforms=transform,
    output_shape=tf.shape(image)[:2],
    fill_value=tf.constant(FILL_VALUE, tf.float32),
    interpolation='NEAREST',
    fill_mode='CONSTANT',
  )[0]
  return tf.ensure_shape(out, image.shape)


def rotate(image: tf.Tensor, degrees) -> tf.Tensor:
  """Rotates about the image centre by `degrees`."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  center_x, center_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
  cos, sin = tf.cos(radians), tf.sin(radians)
  # input = R (output - centre) + centre.
  offset_x = center_x - cos * center_x + sin * center_y
  offset_y = center_y - sin * center_x - cos * center_y
  return _projective_transform(image, [cos, -sin, offset_x, sin, cos, offset_y, 0.0, 0.0])


def shear_x(image: tf.Tensor, level) -> tf.Tensor:
  """Output pixel (x, y) reads input (x + level * y, y)."""
  return _projective_transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, level) -> tf.Tensor:
  """Output pixel (x, y) reads input (x, level * x + y)."""
  return _projective_transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels) -> tf.Tensor:
  """Moves the content right by `pixels` (left when negative)."""
  return _projective_transform(image, [1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels) -> tf.Tensor:
  """Moves the content down by `pixels` (up when negative)."""
  return _projective_transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0])


def cutout(image: tf.Tensor, pad_size, center_y, center_x) -> tf.Tensor:
  """Fills rows `[cy - pad, cy + pad)` x columns `[cx - pad, cx + pad)` with grey."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  rows = tf.range(height)[:, None, None]
  cols = tf.range(width)[None, :, None]
  inside = (
    (rows >= center_y - pad_size)
    & (rows < center_y + pad_size)
    & (cols >= center_x - pad_size)
    & (cols < center_x + pad_size)
  )
  return tf.where(inside, tf.constant(FILL_VALUE, tf.uint8), image)


def _signed(value: float, negate: tf.Tensor) -> tf.Tensor:
  return tf.where(negate, -value, value)


def _op_branches(
  image: tf.Tensor, magnitude: float, uniforms: tf.Tensor
) -> List[Callable[[], tf.Tensor]]:
  """One zero-argument function per entry of `OP_NAMES`, at `magnitude`.

  `uniforms` holds 3 draws from U[0, 1): the sign of signed arguments and the cutout
  centre (row, column).
  """
  level = magnitude / MAX_LEVEL
  negate = uniforms[0] < 0.5
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  center_y = tf.cast(uniforms[1] * tf.cast(height, tf.float32), tf.int32)
  center_x = tf.cast(uniforms[2] * tf.cast(width, tf.float32), tf.int32)
  enhance = level * 1.8 + 0.1
  branches = {
    'AutoContrast': lambda: autocontrast(image),
    'Equalize': lambda: equalize(image),
    'Invert': lambda: invert(image),
    'Rotate': lambda: rotate(image, _signed(level * 30.0, negate)),
    'Posterize': lambda: posterize(image, int(level * 4)),
    'Solarize': lambda: solarize(image, int(level * 256)),
    'Color': lambda: color(image, enhance),
    'Contrast': lambda: contrast(image, enhance),
    'Brightness': lambda: brightness(image, enhance),
    'Sharpness': lambda: sharpness(image, enhance),
    'ShearX': lambda: shear_x(image, _signed(level * 0.3, negate)),
    'ShearY': lambda: shear_y(image, _signed(level * 0.3, negate)),
    'TranslateX': lambda: translate_x(image, _signed(level * _TRANSLATE_CONST, negate)),
    'TranslateY': lambda: translate_y(image, _signed(level * _TRANSLATE_CONST, negate)),
    'Cutout': lambda: cutout(image, int(level * _CUTOUT_CONST), center_y, center_x),
    'SolarizeAdd': lambda: solarize_add(image, int(level * 110)),
  }
  return [branches[name] for name in OP_NAMES]


def _apply(image: tf.Tensor, op_index, magnitude: float, uniforms: tf.Tensor):
  out = tf.switch_case(
    tf.cast(op_index, tf.int32), branch_fns=_op_branches(image, magnitude, uniforms)
  )
  return tf.ensure_shape(out, image.shape)


def apply_op(image: tf.Tensor, op_index, magnitude: float, seed: tf.Tensor) -> tf.Tensor:
  """Applies `OP_NAMES[op_index]` at `magnitude` (random signs / positions from `seed`)."""
  uniforms = tf.random.stateless_uniform([3], seed=augment.as_seed(seed))
  return _apply(image, op_index, magnitude, uniforms)


def rand_augment(
  image: tf.Tensor, seed: tf.Tensor, *, num_layers: int, magnitude: float
) -> tf.Tensor:
  """Applies `num_layers` operations drawn uniformly from `OP_NAMES`, one after another.

  Args:
    image: uint8 `[H, W, 3]`.
    seed: `[2]` stateless seed.
    num_layers: N, the number of operations (0 returns the image unchanged).
    magnitude: M, the shared strength on the 0-10 scale (larger values extrapolate).

  Returns:
    uint8 `[H, W, 3]`.
  """
  if num_layers < 0:
    raise errors.ConfigError(f'RandAugment num_layers must be >= 0, got {num_layers!r}.')
  if magnitude < 0:
    raise errors.ConfigError(f'RandAugment magnitude must be >= 0, got {magnitude!r}.')
  image = tf.convert_to_tensor(image)
  if image.dtype != tf.uint8:
    raise ValueError(f'RandAugment expects a uint8 image, got {image.dtype.name}.')
  if num_layers == 0:
    return image
  # Per layer: the operation, then the arguments of `_op_branches`.
  uniforms = tf.random.stateless_uniform([num_layers, 4], seed=augment.as_seed(seed))
  op_indices = tf.minimum(
    tf.cast(uniforms[:, 0] * len(OP_NAMES), tf.int32), len(OP_NAMES) - 1
  )
  for layer in range(num_layers):
    image = _apply(image, op_indices[layer], float(magnitude), uniforms[layer, 1:])
  return image
