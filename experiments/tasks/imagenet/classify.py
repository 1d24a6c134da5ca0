"""ImageNet classification of image files: the logic of `python -m experiments.classify`.

Images are prepared exactly as the evaluation pipeline of this family prepares the
validation set, which follows the release: decode to RGB uint8, take the centred square
of side `int(224 / 256 * min(H, W))`, resize it bicubically to 224 x 224 (float32,
`tf.image.resize`, no clamping), and normalise with the ImageNet mean and standard
deviation (in [0, 255] units).

The release's colab does the same crop but resizes with OpenCV
(`cv2.resize(..., interpolation=cv2.INTER_CUBIC)`) on the uint8 crop. That differs in
three ways: OpenCV's cubic kernel uses a = -0.75 where TensorFlow's uses a = -0.5 (a
slightly sharper image), OpenCV rounds and clips its result to uint8, and neither
antialiases when shrinking. Pixel values differ by a few grey levels, which can reorder
classes whose probabilities are close; the training and evaluation pipeline of this
project uses TensorFlow's resize, so classification here uses it too.

An image's size is read from its header before it is decoded, and one of more than
`max_pixels` pixels is refused: a small file can hold a picture whose decoded form
takes gigabytes.

Shape glossary:
  H, W: image height and width; S: the model's image side; K: classes.
"""

import functools
import json
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from experiments.tasks.imagenet import class_names
from experiments.tasks.imagenet import task as imagenet_task
from experiments.training import errors
from experiments.training import host_tensorflow
from experiments.training import task as task_lib

# Decoded pixels an image may have (50 megapixels: 150 MB as RGB uint8).
MAX_PIXELS = 50_000_000


class BadImageError(errors.DataError):
  """An image file that cannot be read or decoded, or is too large."""


def _tf():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  host_tensorflow.keep_on_host(tf)
  return tf


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
  """`(width, height)` from a JPEG's start-of-frame segment, or None."""
  position = 2
  while position + 4 <= len(data):
    if data[position] != 0xFF:
      return None
    marker = data[position + 1]
    if marker == 0xFF:  # Fill bytes.
      position += 1
      continue
    if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # No length field.
      position += 2
      continue
    (length,) = struct.unpack('>H', data[position + 2 : position + 4])
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      if position + 9 > len(data):
        return None
      height, width = struct.unpack('>HH', data[position + 5 : position + 9])
      return width, height
    position += 2 + length
  return None


def header_size(data: bytes) -> Optional[Tuple[int, int]]:
  """`(width, height)` of a PNG, JPEG, GIF or BMP image from its header, or None."""
  if data.startswith(b'\x89PNG\r\n\x1a\n') and len(data) >= 24:
    return struct.unpack('>II', data[16:24])
  if data.startswith(b'\xff\xd8'):
    return _jpeg_size(data)
  if data[:6] in (b'GIF87a', b'GIF89a') and len(data) >= 10:
    return struct.unpack('<HH', data[6:10])
  if data.startswith(b'BM') and len(data) >= 26:
    width, height = struct.unpack('<ii', data[18:26])
    return abs(width), abs(height)
  return None


def decode_image(path: str, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
  """RGB uint8 `[H, W, 3]` of a JPEG, PNG, GIF (first frame) or BMP file.

  Raises:
    BadImageError: the file is missing, empty, not a decodable image, or has more than
      `max_pixels` pixels (the message names the file).
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise BadImageError(f'Cannot read image {path!r}: {e.strerror or e}.') from e
  if not data:
    raise BadImageError(f'Image {path!r} is empty.')
  size = header_size(data)
  if size is not None and size[0] * size[1] > max_pixels:
    raise BadImageError(
      f'Image {path!r} is {size[0]} x {size[1]} = {size[0] * size[1]:,} pixels, more '
      f'than the {max_pixels:,} allowed (--max_image_pixels); shrink it first.'
    )
  tf = _tf()
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as e:
    message = str(getattr(e, 'message', e)).strip().splitlines()[0]
    raise BadImageError(
      f'Cannot decode image {path!r} (JPEG, PNG, GIF or BMP expected): {message}'
    ) from e
  return image.numpy()


def eval_image(image: np.ndarray, image_size: int = 224) -> np.ndarray:
  """The evaluation preprocessing of an RGB uint8 image: float32 `[S, S, 3]`."""
  from experiments.tasks.imagenet import augment  # pylint: disable=import-outside-toplevel

  tf = _tf()
  image = tf.convert_to_tensor(np.asarray(image, np.uint8))
  window = augment.center_crop_window(augment.image_shape(image))
  crop = augment.decode_and_crop(image, window)
  return augment.normalize(augment.resize(crop, image_size)).numpy()


def image_batch(
  paths: Sequence[str], image_size: int = 224, *, max_pixels: int = MAX_PIXELS
) -> Dict[str, np.ndarray]:
  """`{'images': [N, S, S, 3]}` of image files, preprocessed for ImageNet evaluation."""
  images = [eval_image(decode_image(p, max_pixels=max_pixels), image_size) for p in paths]
  return {'images': np.stack(images)}


def top_k(logits: np.ndarray, k: int) -> List[List[Tuple[int, float]]]:
  """Per example, the `k` most likely `(label, probability)` pairs (softmax of logits).

  Ties keep the lower label first.
  """
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
  order = np.argsort(-probs, axis=-1, kind='stable')[:, :k]
  return [[(int(i), float(p[i])) for i in row] for p, row in zip(probs, order)]


def check_classifier(config, name: str) -> None:
  """Raises unless `config` builds an ImageNet classifier of the 1000 classes.

  Raises:
    errors.ConfigError: naming `name` (the checkpoint) and what the config builds.
  """
  if task_lib.load_task(config.task) is not imagenet_task:
    raise errors.ConfigError(
      f'{name!r} is not an ImageNet classifier: its config builds {config.task}.'
    )
  if config.data.num_classes != class_names.NUM_CLASSES:
    raise errors.ConfigError(
      f'{name!r} has {config.data.num_classes} classes, not the 1000 ImageNet classes.'
    )


@functools.lru_cache(maxsize=4)
def _logits_fn(model):
  return jax.jit(
    lambda params, state, batch: model.apply(
      params, state, None, batch, is_training=False
    )[0]
  )


def classify(
  model, image_paths: Sequence[str], top_k_classes: int = 5, *, max_pixels=MAX_PIXELS
) -> List[Dict]:
  """The top-k classes of each image.

  Args:
    model: a loaded ImageNet classifier (`experiments.training.weights.Model`, e.g. from
      `weights.load_model` or `experiments.inference.pretrained.load`).
    image_paths: image files (JPEG, PNG, GIF or BMP).
    top_k_classes: classes per image, 1..K.
    max_pixels: the largest image accepted (decoded pixels).

  Returns:
    One dict per image: `{'image': path, 'top_k': [{'label', 'synset', 'name',
    'probability'}, ...]}`, most likely first.

  Raises:
    BadImageError: an image cannot be read or decoded, or is too large.
    errors.ConfigError: `top_k_classes` out of range, or the model does not output
      the 1000 ImageNet classes.
  """
  check_classifier(model.config, model.name)
  num_classes = model.config.data.num_classes
  if not 1 <= top_k_classes <= num_classes:
    raise errors.ConfigError(f'--top_k={top_k_classes} must be in [1, {num_classes}].')
  batch = image_batch(image_paths, model.config.data.image_size, max_pixels=max_pixels)
  logits = _logits_fn(model.model)(model.params, model.state, batch)
  classes = class_names.imagenet_classes()
  results = []
  for path, best in zip(image_paths, top_k(logits, top_k_classes)):
    entries = [
      dict(
        label=label,
        synset=classes[label][0],
        name=class_names.class_name(label),
        probability=round(prob, 6),
      )
      for label, prob in best
    ]
    results.append(dict(image=path, top_k=entries))
  return results


def format_text(results: Sequence[Dict]) -> str:
  """Human-readable lines: the image, then `rank. probability name (synset)`."""
  lines = []
  for result in results:
    lines.append(f'{result["image"]}:')
    for rank, entry in enumerate(result['top_k'], start=1):
      lines.append(
        f'  {rank}. {entry["probability"]:.4f}  {entry["name"]} ({entry["synset"]}, '
        f'label {entry["label"]})'
      )
  return '\n'.join(lines)


def format_json(results: Sequence[Dict]) -> str:
  """One JSON object per line and image."""
  return '\n'.join(json.dumps(result, sort_keys=True) for result in results)
