"""Inputs of the released models: ImageNet images and class names, marked text.

ImageNet images are prepared exactly as the evaluation pipeline of
`experiments/tasks/imagenet/` prepares the validation set, which follows the release:
decode to RGB uint8, take the centred square of side `int(224 / 256 * min(H, W))`,
resize it bicubically to 224 x 224 (float32, `tf.image.resize`, no clamping), and
normalise with the ImageNet mean and standard deviation (in [0, 255] units).

The release's colab does the same crop but resizes with OpenCV
(`cv2.resize(..., interpolation=cv2.INTER_CUBIC)`) on the uint8 crop. That differs in
three ways: OpenCV's cubic kernel uses a = -0.75 where TensorFlow's uses a = -0.5 (a
slightly sharper image), OpenCV rounds and clips its result to uint8, and neither
antialiases when shrinking. Pixel values differ by a few grey levels, which can reorder
classes whose probabilities are close; the training and evaluation pipeline of this
project uses TensorFlow's resize, so classification here uses it too.

ImageNet class names: `data/imagenet_classes.tsv`, the 1000 ILSVRC-2012 classes in
label order (the sorted WordNet ids, as TFDS `imagenet2012` labels them) with their
WordNet lemmas, taken from timm 1.0.31 on PyPI (Apache-2.0):
`timm/data/_info/imagenet_synsets.txt` (order) and `imagenet_synset_to_lemma.txt`
(names); `write_class_file` regenerates it from the wheel.
"""

import functools
import os
from typing import Dict, List, Optional, Sequence, Tuple
import zipfile

import numpy as np

from experiments.training import host_tensorflow

CLASS_FILE = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'data', 'imagenet_classes.tsv'
)
_TIMM_SYNSETS = 'timm/data/_info/imagenet_synsets.txt'
_TIMM_LEMMAS = 'timm/data/_info/imagenet_synset_to_lemma.txt'


class BadImageError(ValueError):
  """An image file that cannot be read or decoded."""


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> Tuple[Tuple[str, str], ...]:
  """`((synset, lemmas), ...)` of the 1000 classes, indexed by label."""
  rows = []
  with open(CLASS_FILE, encoding='utf-8') as f:
    for line in f:
      if line.startswith('#') or not line.strip():
        continue
      index, synset, lemmas = line.rstrip('\n').split('\t')
      if int(index) != len(rows):
        raise ValueError(f'{CLASS_FILE}: label {index} out of order.')
      rows.append((synset, lemmas))
  if len(rows) != 1000:
    raise ValueError(f'{CLASS_FILE} holds {len(rows)} classes, expected 1000.')
  return tuple(rows)


def class_name(label: int) -> str:
  """The first lemma of class `label` (e.g. 207 -> 'golden retriever')."""
  return imagenet_classes()[label][1].split(',')[0].strip()


def write_class_file(timm_wheel: str, path: str = CLASS_FILE) -> None:
  """Writes the class file from a timm wheel (`pip download --no-deps timm`)."""
  with zipfile.ZipFile(timm_wheel) as wheel:
    synsets = wheel.read(_TIMM_SYNSETS).decode().split()
    lemmas = dict(
      line.split('\t', 1)
      for line in wheel.read(_TIMM_LEMMAS).decode().splitlines()
      if line
    )
  version = os.path.basename(timm_wheel).split('-')[1]
  with open(path, 'w', encoding='utf-8') as f:
    f.write(
      '# ImageNet-1k (ILSVRC 2012) classes in label order: index, WordNet synset, lemmas.\n'
    )
    f.write(f'# Source: timm {version} (PyPI, Apache-2.0), {_TIMM_SYNSETS} and\n')
    f.write(
      '# imagenet_synset_to_lemma.txt; regenerate with experiments.inference.preprocessing.write_class_file(wheel).\n'
    )
    for i, synset in enumerate(synsets):
      f.write(f'{i}\t{synset}\t{lemmas[synset]}\n')


def _tf():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  host_tensorflow.keep_on_host(tf)
  return tf


def decode_image(path: str) -> np.ndarray:
  """RGB uint8 `[H, W, 3]` of a JPEG, PNG, GIF (first frame) or BMP file.

  Raises:
    BadImageError: the file is missing, empty or not a decodable image (the message
      names the file).
  """
  tf = _tf()
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise BadImageError(f'Cannot read image {path!r}: {e.strerror or e}.') from e
  if not data:
    raise BadImageError(f'Image {path!r} is empty.')
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as e:
    message = str(getattr(e, 'message', e)).strip().splitlines()[0]
    raise BadImageError(
      f'Cannot decode image {path!r} (JPEG, PNG, GIF or BMP expected): {message}'
    ) from e
  return image.numpy()


def imagenet_eval_image(image: np.ndarray, image_size: int = 224) -> np.ndarray:
  """The evaluation preprocessing of an RGB uint8 image: float32 `[S, S, 3]`."""
  from experiments.tasks.imagenet import augment  # pylint: disable=import-outside-toplevel

  tf = _tf()
  image = tf.convert_to_tensor(np.asarray(image, np.uint8))
  window = augment.center_crop_window(augment.image_shape(image))
  crop = augment.decode_and_crop(image, window)
  return augment.normalize(augment.resize(crop, image_size)).numpy()


def imagenet_batch(paths: Sequence[str], image_size: int = 224) -> Dict[str, np.ndarray]:
  """`{'images': [N, S, S, 3]}` of image files, preprocessed for ImageNet evaluation."""
  images = [imagenet_eval_image(decode_image(p), image_size) for p in paths]
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


def for_config(config) -> Optional[callable]:
  """The input preparation of a config's task, or None if there is none here."""
  if config.task == 'experiments.tasks.imagenet.task':
    return functools.partial(imagenet_batch, image_size=config.data.image_size)
  if config.task == 'experiments.tasks.language.mlm':
    from experiments.tasks.language import fill_mask  # pylint: disable=import-outside-toplevel

    return fill_mask.parse_masked_text
  return None
