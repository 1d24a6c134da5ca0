"""ImageNet classification with Perceiver and Perceiver IO (task `experiments.tasks.imagenet.task`).

The model is built exactly as the official release builds its ImageNet classifiers:
`ImagePreprocessor` -> `PerceiverEncoder` -> `ClassificationDecoder` (Perceiver IO) or
`ProjectionDecoder` (mean of the latents, then a linear layer: the original Perceiver),
inside `perceiver.Perceiver`, so parameter paths match the release's checkpoints.

`config.model` fields:
  input_preprocessor: keyword arguments of `io_processors.ImagePreprocessor`.
  encoder: keyword arguments of `perceiver.PerceiverEncoder`.
  decoder_type: 'classification' (`ClassificationDecoder`) or 'projection'
    (`ProjectionDecoder`).
  decoder: keyword arguments of that decoder (besides `num_classes`).
  permute_inputs: apply one fixed random permutation (seeded by `permutation_seed`) to
    the preprocessed inputs, after their position features are attached: the permuted
    ImageNet experiment of the Perceiver paper.

The input pipeline is `experiments/tasks/imagenet/input_pipeline.py`; batches hold 'images'
`[B, S, S, 3]`, 'labels' `[B]` (int) or `[B, K]` (MixUp / CutMix label distributions)
and, for evaluation, 'mask' `[B]`.
"""

import math
from typing import Dict, Sequence, Tuple

import haiku as hk
import jax
import ml_collections
import numpy as np

from experiments.training import errors
from experiments.training import losses
from perceiver import io_processors
from perceiver import perceiver

DECODER_TYPES = ('classification', 'projection')


def load(split, *, is_training, batch_dims, config, start_step=0):
  """The input pipeline's batches (`input_pipeline.load`; TensorFlow is imported only
  here, so building the model and the loss does not need it)."""
  from experiments.tasks.imagenet import input_pipeline  # noqa: PLC0415

  return input_pipeline.load(
    split,
    is_training=is_training,
    batch_dims=batch_dims,
    config=config,
    start_step=start_step,
  )


def num_examples(split, config):
  """Examples in `split` (`input_pipeline.num_examples`)."""
  from experiments.tasks.imagenet import input_pipeline  # noqa: PLC0415

  return input_pipeline.num_examples(split, config)


def num_preprocessed_inputs(image_hw: Tuple[int, int], preprocessor: Dict) -> int:
  """M, the number of input elements the `ImagePreprocessor` makes of an image.

  Args:
    image_hw: `(H, W)` of the images.
    preprocessor: `ImagePreprocessor` keyword arguments (`prep_type` and
      `spatial_downsample` at least, as a config's `model.input_preprocessor` holds).
  """
  prep_type = preprocessor['prep_type']
  downsample = preprocessor['spatial_downsample']
  if prep_type in ('pixels', 'conv1x1'):
    # Strided slicing / stride-`downsample` 1x1 convolution.
    return math.prod(math.ceil(d / downsample) for d in image_hw)
  if prep_type == 'patches':
    return math.prod(d // downsample for d in image_hw)
  if prep_type == 'conv':
    # Each layer: stride-2 SAME convolution then stride-2 SAME max pooling.
    num_layers = round(math.log(downsample, 4))
    sizes = list(image_hw)
    for _ in range(num_layers):
      sizes = [math.ceil(math.ceil(d / 2) / 2) for d in sizes]
    return math.prod(sizes)
  raise errors.ConfigError(f'Unknown input_preprocessor.prep_type {prep_type!r}.')


def input_permutation(num_inputs: int, seed: int) -> np.ndarray:
  """The fixed permutation of `num_inputs` elements used for permuted ImageNet."""
  return np.random.RandomState(seed).permutation(num_inputs)


def batch_spec(config: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """A training example: `images` `[S, S, 3]` float32 and `labels`, an int32 class or,
  with MixUp or CutMix, a float32 distribution over the `K` classes."""
  d = config.data
  mixed = d.mixup_alpha > 0 or d.cutmix
  return {
    'images': jax.ShapeDtypeStruct((d.image_size, d.image_size, 3), np.float32),
    'labels': (
      jax.ShapeDtypeStruct((d.num_classes,), np.float32)
      if mixed
      else jax.ShapeDtypeStruct((), np.int32)
    ),
  }


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """The classifier: `f(batch, *, is_training)` -> logits `[B, K]`."""
  # Read every field now: later edits of `config` do not change the built model.
  model_config = config.model
  num_classes = config.data.num_classes
  decoder_type = model_config.decoder_type
  if decoder_type not in DECODER_TYPES:
    raise errors.ConfigError(
      f'model.decoder_type={decoder_type!r}; expected one of {DECODER_TYPES}.'
    )
  preprocessor_kwargs = model_config.input_preprocessor.to_dict()
  encoder_kwargs = model_config.encoder.to_dict()
  decoder_kwargs = model_config.decoder.to_dict()
  permute_inputs = bool(model_config.permute_inputs)
  permutation_seed = int(model_config.permutation_seed)

  def forward(batch, *, is_training):
    images = batch['images']
    permutation = None
    if permute_inputs:
      permutation = input_permutation(
        num_preprocessed_inputs(images.shape[-3:-1], preprocessor_kwargs),
        permutation_seed,
      )
    preprocessor = io_processors.ImagePreprocessor(**preprocessor_kwargs)
    encoder = perceiver.PerceiverEncoder(**encoder_kwargs)
    if decoder_type == 'classification':
      decoder = perceiver.ClassificationDecoder(num_classes, **decoder_kwargs)
    else:
      decoder = perceiver.ProjectionDecoder(num_classes, **decoder_kwargs)
    model = perceiver.Perceiver(
      encoder=encoder,
      decoder=decoder,
      input_preprocessor=preprocessor,
      input_permutation=permutation,
    )
    return model(images, is_training=is_training)

  return hk.transform_with_state(forward)


def count_parameters(
  config: ml_collections.ConfigDict, batch_shape: Sequence[int] = (1,)
) -> Tuple[int, int]:
  """`(parameters, state entries)` of the model, from shapes only (no allocation)."""
  size = config.data.image_size
  batch = {'images': jax.ShapeDtypeStruct((*batch_shape, size, size, 3), np.float32)}
  model = build_model(config)
  params, state = jax.eval_shape(
    lambda rng, b: model.init(rng, b, is_training=True), jax.random.PRNGKey(0), batch
  )
  count = lambda tree: int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))
  return count(params), count(state)


def train_loss(outputs, batch, config):
  """Smoothed softmax cross-entropy (hard or MixUp/CutMix labels) and top-1/5 accuracy."""
  return losses.classification_loss(
    outputs, batch['labels'], label_smoothing=config.training.label_smoothing
  )


def eval_outputs(outputs, batch, config):
  """Per-example unsmoothed cross-entropy, `top_1_acc` and `top_5_acc`."""
  del config
  return losses.classification_eval_outputs(outputs, batch['labels'])


def summarize_eval(per_example, config):
  """Means over the split of the per-example `loss`, `top_1_acc` and `top_5_acc`."""
  del config
  return {name: float(np.mean(values)) for name, values in per_example.items()}
