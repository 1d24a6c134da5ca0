"""Downsampled ImageNet 64x64 as a sequence with positions (the release's ImageNet setup).

Each image becomes SOS followed by its 12,288 subpixel values in raster order (row by
row, each pixel's R, G, B), as tokens `value + 3`. Each event carries three positions,
all starting at 1 (0 is padding), shifted by one more for the SOS slot:
`(x + 2, y + 2, channel + 2)` for pixel column x, row y and channel c (0-based), and
`(1, 1, 1)` for SOS; the position tables have `[66, 66, 5]` rows.

Training crops each image's sequence to a random number of inputs (at least
`data.minimum_crop_length`), as the release does; evaluation scores every subpixel of
`data.eval_images` images in blocks of `evaluation.eval_block_size` (bits per dim).

Images come from TFDS `downsampled_imagenet/64x64` (`data.tfds_data_dir`); with
`data.fake` they are generated smooth colour gradients with noise.

Shape glossary:
  R = 64: resolution; L = 3 R^2 + 1: events per image.
"""

from typing import Iterator

import numpy as np

from experiments.tasks.perceiver_ar import sequences
from experiments.training import errors

RESOLUTION = 64
INPUT_IDX_SIZE = (RESOLUTION + 2, RESOLUTION + 2, 5)
TFDS_NAME = 'downsampled_imagenet/64x64'
_SPLITS = {'train': 'train', 'validation': 'validation', 'test': 'validation'}


def sequence_length(resolution: int = RESOLUTION) -> int:
  return 3 * resolution * resolution + 1


def image_events(image: np.ndarray) -> np.ndarray:
  """`[L]` tokens of an `[R, R, 3]` uint8 image: SOS, then subpixels + 3."""
  if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
    raise errors.DataError(
      f'Expected a square RGB image [R, R, 3], got shape {image.shape}.'
    )
  values = image.reshape(-1).astype(np.int32) + sequences.NUM_RESERVED
  return np.concatenate([[sequences.SOS_ID], values]).astype(np.int32)


def image_positions(resolution: int = RESOLUTION) -> np.ndarray:
  """`[L, 3]` positions `(x, y, channel)` of the events (see the module docstring)."""
  y, x, c = np.meshgrid(
    np.arange(resolution), np.arange(resolution), np.arange(3), indexing='ij'
  )
  grid = np.stack([x.reshape(-1), y.reshape(-1), c.reshape(-1)], axis=1) + 2
  return np.concatenate([np.ones([1, 3], np.int32), grid]).astype(np.int32)


def fake_images(rng: np.random.Generator, num: int, resolution: int = RESOLUTION):
  """`[num, R, R, 3]` uint8 smooth gradients with noise (structure to learn)."""
  ramp = np.linspace(0.0, 1.0, resolution)
  images = []
  for _ in range(num):
    colour = rng.uniform(0, 255, size=(2, 3))
    t = ramp[:, None, None] * rng.uniform(0.2, 1.0) + ramp[None, :, None] * 0.3
    image = (
      colour[0] * (1 - t) + colour[1] * t + rng.normal(0, 8, (resolution,) * 2 + (3,))
    )
    images.append(np.clip(image, 0, 255).astype(np.uint8))
  return np.stack(images)


def _tfds_images(split: str, config, *, shuffle_seed=None) -> Iterator[np.ndarray]:
  """Images of a TFDS split: for training (`shuffle_seed` set) this host's share,
  shuffled, forever; else the whole split once, in order."""
  import jax  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  if split not in _SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {tuple(_SPLITS)}.')
  tf.config.set_visible_devices([], 'GPU')
  name = _SPLITS[split]
  if shuffle_seed is not None:
    name = tfds.even_splits(name, n=jax.process_count())[jax.process_index()]
  ds = tfds.load(
    TFDS_NAME,
    split=name,
    data_dir=config.data.tfds_data_dir or None,
    shuffle_files=shuffle_seed is not None,
    read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
  )
  ds = ds.map(lambda ex: ex['image'])
  if shuffle_seed is not None:
    ds = ds.repeat().shuffle(10_000, seed=shuffle_seed)
  return ds.as_numpy_iterator()


def _crop(image, rng, config):
  length = sequence_length()
  low = min(max(1, config.data.minimum_crop_length), length - 1)
  end = int(rng.integers(low, length))
  context = config.data.max_context_length
  return sequences.example(
    image_events(image),
    image_positions(),
    start=max(0, end - context),
    end=end,
    context=context,
  )


def train_batches(config, *, batch_dims, start_step: int, host: int):
  """Training batches `[*batch_dims, ...]` from step `start_step` on."""
  size = int(np.prod(batch_dims))
  if config.data.fake:

    def make(rng, num, step):
      del step  # Every step draws alike.
      return sequences.stack(_crop(im, rng, config) for im in fake_images(rng, num))

    yield from sequences.batches_forever(
      make, batch_dims=batch_dims, seed=config.seed, start_step=start_step, host=host
    )
    return
  images = _tfds_images('train', config, shuffle_seed=config.seed)
  for _ in range(start_step * size):  # Resume where an uninterrupted run would be.
    next(images)
  step = start_step
  while True:
    rng = sequences.step_rng(config.seed, step, host)
    batch = sequences.stack(_crop(next(images), rng, config) for _ in range(size))
    yield {k: v.reshape(tuple(batch_dims) + v.shape[1:]) for k, v in batch.items()}
    step += 1


def eval_images(split: str, config) -> np.ndarray:
  """`[data.eval_images, R, R, 3]`: the first images of the held-out split
  (`data.fake`: the first of `data.fake_num_examples` generated images)."""
  num = int(config.data.eval_images)
  if config.data.fake:
    return fake_images(
      np.random.default_rng(config.seed + 1), int(config.data.fake_num_examples)
    )[:num]
  images = []
  for image in _tfds_images(split, config):
    images.append(image)
    if len(images) == num:
      break
  return np.stack(images)


def eval_windows(config):
  """The block windows of one image's sequence."""
  return sequences.eval_windows(
    sequence_length() - 1,
    context=config.data.max_context_length,
    block=config.evaluation.eval_block_size,
  )


def eval_example(images: np.ndarray, index: int, config) -> sequences.Example:
  """Evaluation example `index`: window `index % W` of image `index // W` (W windows
  per image), scoring every subpixel of the images once over all windows."""
  windows = eval_windows(config)
  image, window = divmod(index, len(windows))
  start, end, score = windows[window]
  return sequences.example(
    image_events(images[image]),
    image_positions(),
    start=start,
    end=end,
    context=config.data.max_context_length,
    score=score,
  )
