"""Task module: scikit-learn's handwritten digits with a Perceiver on raw pixels.

The 1,797 8x8 grey-level digit images that ship inside scikit-learn (no download),
split once and for all into 1,437 training and 360 test images by a permutation with
seed 0. The model sees the 64 pixels with 2D Fourier position features (the Perceiver's
image setup at toy scale): `ImagePreprocessor(prep_type='pixels')`, a
`PerceiverEncoder` and a `ClassificationDecoder`. With `model.permute_pixels`, one fixed
permutation of the 64 inputs is applied after the position features are attached
(paper 1, Table 2): the architecture cannot tell, so accuracy is unchanged.

See `experiments/training/task.py` for the contract; `configs/digits.py` for the run command.

Shape glossary:
  B: batch.
  H = W = 8: image size; M = 64 inputs.
"""

import functools
from typing import Dict, Iterator, Sequence

import haiku as hk
import jax
import ml_collections
import numpy as np

from experiments.training import array_data
from experiments.training import errors
from experiments.training import losses
from perceiver import io_processors
from perceiver import perceiver

NUM_EXAMPLES = 1797
IMAGE_SIZE = 8
NUM_CLASSES = 10
NUM_TEST = 360
SPLITS = ('train', 'test')
_SPLIT_SEED = 0
_PERMUTATION_SEED = 1234
_AUGMENT_STREAM = 1


@functools.cache
def _digits() -> Dict[str, np.ndarray]:
  # Imported lazily: only this task needs scikit-learn.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  bunch = datasets.load_digits()
  if bunch.images.shape != (NUM_EXAMPLES, IMAGE_SIZE, IMAGE_SIZE):
    raise errors.DataError(
      f'scikit-learn digits have shape {bunch.images.shape}; expected '
      f'{(NUM_EXAMPLES, IMAGE_SIZE, IMAGE_SIZE)}.'
    )
  return {
    'images': bunch.images.astype(np.float32),  # [1797, 8, 8], values 0..16
    'labels': bunch.target.astype(np.int32),
  }


def _fake_digits() -> Dict[str, np.ndarray]:
  """Random images and labels with the real dataset's size, shapes and value range."""
  rng = np.random.default_rng(0)
  shape = (NUM_EXAMPLES, IMAGE_SIZE, IMAGE_SIZE)
  return {
    'images': rng.integers(0, 17, size=shape).astype(np.float32),
    'labels': rng.integers(0, NUM_CLASSES, size=(NUM_EXAMPLES,)).astype(np.int32),
  }


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {SPLITS}.')


def split_arrays(split: str, config: ml_collections.ConfigDict) -> Dict[str, np.ndarray]:
  """The examples of `split`: `images` `[N, 8, 8, 1]` in [0, 1], `labels` `[N]`."""
  _check_split(split)
  data = _fake_digits() if config.data.fake else _digits()
  order = np.random.default_rng(_SPLIT_SEED).permutation(NUM_EXAMPLES)
  indices = order[:NUM_TEST] if split == 'test' else order[NUM_TEST:]
  return {
    'images': data['images'][indices][..., None] / 16.0,
    'labels': data['labels'][indices],
  }


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  del config
  _check_split(split)
  return NUM_TEST if split == 'test' else NUM_EXAMPLES - NUM_TEST


def translate(images: np.ndarray, shifts: np.ndarray, max_shift: int) -> np.ndarray:
  """Moves each image by whole pixels, filling with zeros (the background).

  Args:
    images: `[N, H, W, C]`.
    shifts: `[N, 2]` integer (down, right) shifts in `[-max_shift, max_shift]`.
    max_shift: bound on the shifts.

  Returns:
    `[N, H, W, C]`: `out[n, y, x] = images[n, y - dy, x - dx]` (zero outside).
  """
  if np.abs(shifts).max(initial=0) > max_shift:
    raise ValueError(f'shifts exceed max_shift={max_shift}.')
  _, height, width, _ = images.shape
  m = max_shift
  padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)))
  out = np.empty_like(images)
  for n, (dy, dx) in enumerate(shifts):
    out[n] = padded[n, m - dy : m - dy + height, m - dx : m - dx + width]
  return out


def _augmented(
  batches: Iterator[Dict[str, np.ndarray]],
  *,
  batch_dims: Sequence[int],
  seed: int,
  start_step: int,
  max_shift: int,
) -> Iterator[Dict[str, np.ndarray]]:
  """Random translations, a pure function of (seed, step, global example slot)."""
  host_batch = int(np.prod(batch_dims))
  first = jax.process_index() * host_batch
  for step, batch in enumerate(batches, start=start_step):
    rng = np.random.default_rng([seed, _AUGMENT_STREAM, step])
    shifts = rng.integers(
      -max_shift, max_shift + 1, size=(host_batch * jax.process_count(), 2)
    )
    images = batch['images'].reshape((host_batch,) + batch['images'].shape[-3:])
    images = translate(images, shifts[first : first + host_batch], max_shift)
    batch['images'] = images.reshape(batch['images'].shape)
    yield batch


def load(
  split: str,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  config: ml_collections.ConfigDict,
  start_step: int = 0,
) -> Iterator[Dict[str, np.ndarray]]:
  """Batches of `images` `[*batch_dims, 8, 8, 1]` and `labels` `[*batch_dims]`.

  Training batches are shuffled (order fixed by `config.seed`) and, with
  `data.max_shift > 0`, translated by up to that many pixels.
  """
  arrays = split_arrays(split, config)
  if not is_training:
    return array_data.eval_batches(arrays, batch_dims=batch_dims)
  batches = array_data.train_batches(
    arrays, batch_dims=batch_dims, seed=config.seed, start_step=start_step
  )
  if config.data.max_shift > 0:
    batches = _augmented(
      batches,
      batch_dims=batch_dims,
      seed=config.seed,
      start_step=start_step,
      max_shift=config.data.max_shift,
    )
  return batches


def pixel_permutation(num_inputs: int = IMAGE_SIZE * IMAGE_SIZE) -> np.ndarray:
  """The fixed permutation of the input elements used by `model.permute_pixels`."""
  return np.random.default_rng(_PERMUTATION_SEED).permutation(num_inputs)


def batch_spec(config: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """A training example: `images` `[8, 8, 1]` float32 and its int32 label."""
  del config
  return {
    'images': jax.ShapeDtypeStruct((8, 8, 1), np.float32),
    'labels': jax.ShapeDtypeStruct((), np.int32),
  }


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """The Perceiver classifier; forward `f(batch, *, is_training) -> logits [B, 10]`."""
  # Read now: later edits of `config` do not change the built model.
  preprocessor_kwargs = config.model.input_preprocessor.to_dict()
  encoder_kwargs = config.model.encoder.to_dict()
  decoder_kwargs = config.model.decoder.to_dict()
  permutation = pixel_permutation() if config.model.permute_pixels else None

  def forward(batch, *, is_training):
    model = perceiver.Perceiver(
      encoder=perceiver.PerceiverEncoder(**encoder_kwargs),
      decoder=perceiver.ClassificationDecoder(NUM_CLASSES, **decoder_kwargs),
      input_preprocessor=io_processors.ImagePreprocessor(**preprocessor_kwargs),
      input_permutation=permutation,
    )
    return model(batch['images'], is_training=is_training)

  return hk.transform_with_state(forward)


def train_loss(logits, batch, config):
  return losses.classification_loss(
    logits, batch['labels'], label_smoothing=config.training.label_smoothing
  )


def eval_outputs(logits, batch, config):
  del config
  return losses.classification_eval_outputs(logits, batch['labels'])


def summarize_eval(
  per_example: Dict[str, np.ndarray], config: ml_collections.ConfigDict
) -> Dict[str, float]:
  del config
  return {name: float(np.mean(values)) for name, values in per_example.items()}
