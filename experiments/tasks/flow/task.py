"""Task module: optical flow with Perceiver IO (the release's architecture).

Two frames `[B, 2, H, W, 3]` (pixels in [-1, 1]) -> `patches_for_flow` (3x3 patches of
each frame) -> `ImagePreprocessor(prep_type='patches', conv_after_patching=True,
temporal_downsample=2)` with 2D Fourier features -> `PerceiverEncoder` -> `FlowDecoder`
queried by the preprocessed inputs; the output is multiplied by
`model.flow_scale_factor` (20 in the release). Frames larger than the model's
`image_size` (evaluation on real datasets) are processed in overlapping tiles blended as
the release's colab does (`tiling.tiled_flow`).

Data (`config.data.dataset`): 'synthetic' (flying objects generated here, see
`synthetic.py`), or the folders 'flying_chairs', 'sintel', 'kitti', 'autoflow' under
`config.data.data_dir` (see `datasets.py`). Training examples are augmented
(`augment.py`) and cropped to `image_size`; evaluation examples keep their full size,
padded at the bottom/right (edge pixels, `region` 0 there) to the largest example of the
split and to at least a tile.

Batches: `frames` `[*batch_dims, 2, H, W, 3]` float32 in [-1, 1], `flow`
`[*batch_dims, H, W, 2]`, `valid` and `region` `[*batch_dims, H, W]`.

See `experiments/training/task.py` for the contract; `configs/flow.py` for the commands.
"""

import copy
import functools
from typing import Dict, Iterator, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.flow import augment as augment_lib
from experiments.tasks.flow import datasets
from experiments.tasks.flow import formats
from experiments.tasks.flow import metrics
from experiments.tasks.flow import synthetic
from experiments.tasks.flow import tiling
from experiments.training import array_data
from experiments.training import errors
from perceiver import io_processors
from perceiver import perceiver

SYNTHETIC_SPLITS = ('train', 'validation', 'test')
_AUGMENT_STREAM = 7
_FAKE_EXAMPLES = 4
# With data.fake, generated examples this small (pipeline scales / pads them).
_FAKE_SIZE = (11, 17)


# --------------------------------------------------------------------------- model


def flow_model(m: ml_collections.ConfigDict):
  """`f(frames [B, 2, h, w, 3]) -> flow [B, h, w, 2]` for one tile (call in a transform)."""
  decoder_kwargs = dict(m.decoder.to_dict())
  decoder_kwargs['output_w_init'] = jnp.zeros if m.zero_init_output else None
  model = perceiver.Perceiver(
    input_preprocessor=io_processors.ImagePreprocessor(**m.input_preprocessor.to_dict()),
    encoder=perceiver.PerceiverEncoder(name='perceiver_encoder', **m.encoder.to_dict()),
    decoder=perceiver.FlowDecoder(tuple(m.image_size), **decoder_kwargs),
    output_postprocessor=None,
  )

  def apply(frames, *, is_training):
    outputs = model(io_processors.patches_for_flow(frames), is_training=is_training)
    return outputs * m.flow_scale_factor

  return apply


def batch_spec(config: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """A training example at the model's tile size `(H, W) = model.image_size`: two
  `frames` `[2, H, W, 3]`, the `flow` `[H, W, 2]`, and `valid` and `region` `[H, W]`."""
  height, width = config.model.image_size
  return {
    'frames': jax.ShapeDtypeStruct((2, height, width, 3), np.float32),
    'flow': jax.ShapeDtypeStruct((height, width, 2), np.float32),
    'valid': jax.ShapeDtypeStruct((height, width), np.float32),
    'region': jax.ShapeDtypeStruct((height, width), np.float32),
  }


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """Forward `f(batch, *, is_training) -> flow [B, H, W, 2]` (tiled when larger)."""
  m = copy.deepcopy(config.model)  # Later edits of `config` do not change the model.
  tile = tuple(m.image_size)

  def forward(batch, *, is_training):
    apply = flow_model(m)
    frames = batch['frames']
    if tuple(frames.shape[-3:-1]) == tile:
      return apply(frames, is_training=is_training)
    if is_training:
      raise ValueError(
        f'training frames {tuple(frames.shape[-3:-1])} must have the model size {tile}.'
      )
    return tiling.tiled_flow(
      functools.partial(apply, is_training=False), frames, tile, m.tile_min_overlap
    )

  return hk.transform_with_state(forward)


# --------------------------------------------------------------------------- data


def scene_options(config, fake=None) -> synthetic.SceneOptions:
  d = config.data
  fake = d.fake if fake is None else fake
  size = tuple(d.synthetic_size or config.model.image_size)
  if fake:
    size = tuple(min(a, b) for a, b in zip(size, _FAKE_SIZE))
  return synthetic.SceneOptions(
    size=size,
    num_objects=tuple(d.num_objects),
    object_radius=tuple(d.object_radius),
    background_translation=d.background_translation,
    object_translation=d.object_translation,
    background_rotation=d.background_rotation,
    object_rotation=d.object_rotation,
    background_scale=d.background_scale,
    object_scale=d.object_scale,
    textures='noise' if fake else d.textures,
    texture_scale=tuple(d.texture_scale),
  )


def augment_options(config) -> augment_lib.AugmentOptions:
  a = config.data.augment
  return augment_lib.AugmentOptions(
    crop_size=tuple(config.model.image_size),
    min_log2_scale=a.min_log2_scale,
    max_log2_scale=a.max_log2_scale,
    brightness=a.brightness,
    contrast=a.contrast,
    saturation=a.saturation,
    horizontal_flip=a.horizontal_flip,
    vertical_flip=a.vertical_flip,
  )


@functools.lru_cache(maxsize=4)
def _synthetic_arrays(split, count, seed, options):
  return synthetic.generate_split(split, 0, count, seed=seed, options=options)


def _check_split(split, config):
  splits = SYNTHETIC_SPLITS if config.data.dataset == 'synthetic' else datasets.SPLITS
  if split not in splits:
    raise errors.ConfigError(
      f'split={split!r} is not one of {splits} (dataset {config.data.dataset!r}).'
    )


def _examples(split, config):
  d = config.data
  if d.fake:
    return list(range(_FAKE_EXAMPLES))
  return datasets.list_examples(d.dataset, d.data_dir, split, d.sintel_passes)


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  _check_split(split, config)
  d = config.data
  if d.dataset == 'synthetic':
    count = d.num_train_examples if split == 'train' else d.num_eval_examples
    return min(count, _FAKE_EXAMPLES * 4) if d.fake else count
  return len(_examples(split, config))


def _read(example, config, index):
  """One example as arrays; with `data.fake`, a generated stand-in."""
  if config.data.fake:
    options = synthetic.SceneOptions(
      size=_FAKE_SIZE, num_objects=(0, 1), textures='noise'
    )
    return synthetic.generate(index, seed=config.seed, options=options)
  return datasets.load_example(example)


def _finish(examples, batch_dims):
  """Stacks per-example dicts into a batch with normalised frames."""
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  batch['frames'] = tiling.normalize(batch['frames'].astype(np.float32))
  batch = {k: v.astype(np.float32) for k, v in batch.items()}
  return {k: v.reshape(tuple(batch_dims) + v.shape[1:]) for k, v in batch.items()}


def _augmented(index_batches, source, *, batch_dims, config, start_step):
  """Augments each example of each batch; randomness from (seed, step, global slot)."""
  options = augment_options(config)
  host_batch = int(np.prod(batch_dims))
  for step, batch in enumerate(index_batches, start=start_step):
    indices = batch['index'].reshape(-1)
    rngs = array_data.example_rngs(config.seed, _AUGMENT_STREAM, step, host_batch)
    out = []
    for rng, index in zip(rngs, indices):
      example = augment_lib.augment(source(int(index)), rng, options)
      example['region'] = np.ones_like(example['valid'])
      out.append(example)
    yield _finish(out, batch_dims)


def _padded(example, size):
  """Pads an example to `size` at the bottom/right (edge pixels; region/valid 0)."""
  height, width = example['flow'].shape[:2]
  pad = ((0, size[0] - height), (0, size[1] - width))
  return {
    'frames': np.pad(example['frames'], ((0, 0),) + pad + ((0, 0),), mode='edge'),
    'flow': np.pad(example['flow'], pad + ((0, 0),)),
    'valid': np.pad(example['valid'], pad),
    'region': np.pad(np.ones((height, width), np.float32), pad),
  }


def load(
  split: str,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  config: ml_collections.ConfigDict,
  start_step: int = 0,
) -> Iterator[Dict[str, np.ndarray]]:
  """Batches of `frames`, `flow`, `valid`, `region` (and `mask` in evaluation)."""
  _check_split(split, config)
  d = config.data
  if d.dataset == 'synthetic':
    count = num_examples(split, config)
    arrays = _synthetic_arrays(split, count, d.synthetic_seed, scene_options(config))

    def source(i):
      return {k: arrays[k][i] for k in arrays}

    size = arrays['flow'].shape[1:3]
  else:
    examples = _examples(split, config)
    count = len(examples)

    def source(i):
      return _read(examples[i], config, i)

    size = None
  indices = {'index': np.arange(count)}
  if is_training:
    batches = array_data.train_batches(
      indices, batch_dims=batch_dims, seed=config.seed, start_step=start_step
    )
    return _augmented(
      batches, source, batch_dims=batch_dims, config=config, start_step=start_step
    )
  if size is None:
    size = source(0)['flow'].shape[:2] if d.fake else _largest(examples)
  tile = tuple(config.model.image_size)
  size = (max(size[0], tile[0]), max(size[1], tile[1]))
  return _eval_batches(indices, source, batch_dims=batch_dims, size=size)


def _largest(examples):
  """The largest height and width among the first frames of `examples`."""
  sizes = np.array([formats.image_size(e.frame1) for e in examples])
  return tuple(int(v) for v in sizes.max(axis=0))


def _eval_batches(indices, source, *, batch_dims, size):
  for batch in array_data.eval_batches(indices, batch_dims=batch_dims):
    out = [_padded(source(int(i)), size) for i in batch['index'].reshape(-1)]
    finished = _finish(out, batch_dims)
    finished['mask'] = batch['mask']
    yield finished


# --------------------------------------------------------------------------- loss


def train_loss(outputs, batch, config):
  del config
  loss = metrics.epe_loss(outputs, batch['flow'], batch['valid'])
  zero = metrics.epe_loss(jnp.zeros_like(outputs), batch['flow'], batch['valid'])
  return loss, {'epe': loss, 'zero_epe': zero}


def eval_outputs(outputs, batch, config):
  del config
  return metrics.per_example_sums(outputs, batch['flow'], batch['valid'], batch['region'])


def summarize_eval(
  per_example: Dict[str, np.ndarray], config: ml_collections.ConfigDict
) -> Dict[str, float]:
  del config
  return metrics.summarize(per_example)
