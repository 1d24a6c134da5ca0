"""Task module: point-cloud classification (ModelNet40 and generated shapes), paper 1.

The model is the original Perceiver's point-cloud classifier: each point's xyz plus
3D Fourier features of its coordinates (`PointCloudPreprocessor`), a
`PerceiverEncoder`, and the mean of the latents through a linear layer
(`ProjectionDecoder`). It sees the points as a set: no order is encoded, so its
predictions do not depend on the order of the points.

Datasets (`config.data.dataset`):
  synthetic_shapes: `shapes.NUM_CLASSES` procedural shapes (see `shapes.py`),
    `data.synthetic.num_train` / `num_test` clouds, generated in memory.
  modelnet40_h5: the `modelnet40_ply_hdf5_2048` files in `data.data_dir`.
  modelnet40_off: the ModelNet40 meshes in `data.data_dir`, sampled by area once and
    cached in `data.cache_dir` ('' = `<data_dir>/.point_samples`; 'none' = no cache).

Pipeline: a cloud with more points than `data.num_points` is subsampled (training: a
random subset each time; evaluation: its first `num_points`, as PointNet does), then
normalised (`data.normalization`), then, in training only, augmented
(`data.augment`, see `augment.augment`). The random draws of a training example are a
pure function of `(config.seed, step, its slot in the global batch)`.

See `experiments/training/task.py` for the contract; `configs/modelnet40.py` for the
commands.

Shape glossary:
  B: batch; P: points per cloud (`data.num_points`); K: classes.
"""

import copy
import functools
import os
from typing import Dict, Iterator, Sequence

import haiku as hk
import jax
import ml_collections
import numpy as np

from experiments.tasks.point_clouds import augment as augment_lib
from experiments.tasks.point_clouds import metrics
from experiments.tasks.point_clouds import modelnet40
from experiments.tasks.point_clouds import shapes
from experiments.training import array_data
from experiments.training import errors
from experiments.training import losses
from perceiver import io_processors
from perceiver import perceiver

DATASETS = ('synthetic_shapes', 'modelnet40_h5', 'modelnet40_off')
SPLITS = ('train', 'test')
_AUGMENT_STREAM = 9
_FAKE_TEST_FRACTION = 4  # Fake test split: num_examples // 4 + 1 clouds.


def _check(split: str, config: ml_collections.ConfigDict) -> None:
  if split not in SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {SPLITS}.')
  if config.data.dataset not in DATASETS:
    raise errors.ConfigError(
      f'data.dataset={config.data.dataset!r} is not one of {DATASETS}.'
    )
  if config.data.dataset != 'synthetic_shapes' and not config.data.fake:
    if not config.data.data_dir:
      raise errors.ConfigError(
        f'data.dataset={config.data.dataset!r} needs data.data_dir, the folder of the '
        'dataset (see docs/point_clouds.md).'
      )


def num_classes(config: ml_collections.ConfigDict) -> int:
  """K: `shapes.NUM_CLASSES` for synthetic_shapes, `data.num_classes` otherwise."""
  if config.data.dataset == 'synthetic_shapes':
    return shapes.NUM_CLASSES
  return config.data.num_classes


@functools.lru_cache(maxsize=4)
def _synthetic(split, num_examples, num_points, seed, rotation, scale_range, jitter):
  return shapes.generate(
    split,
    num_examples,
    num_points,
    seed=seed,
    rotation=rotation,
    scale_range=scale_range,
    jitter=jitter,
  )


@functools.lru_cache(maxsize=2)
def _h5(data_dir, split):
  return modelnet40.read_h5_split(data_dir, split)


@functools.lru_cache(maxsize=2)
def _off(data_dir, split, num_points, seed, cache_dir):
  return modelnet40.sample_off_split(
    data_dir, split, num_points, seed=seed, cache_dir=cache_dir
  )


def _fake_size(split: str, config: ml_collections.ConfigDict) -> int:
  n = config.data.fake_num_examples
  return n if split == 'train' else n // _FAKE_TEST_FRACTION + 1


def split_arrays(split: str, config: ml_collections.ConfigDict) -> Dict[str, np.ndarray]:
  """The clouds of `split` before subsampling: `points` `[N, P', 3]`, `labels` `[N]`."""
  _check(split, config)
  data = config.data
  syn = data.synthetic
  if data.fake:
    # The real pipeline on a few generated clouds, labelled over the dataset's classes.
    arrays = dict(
      _synthetic(
        split, _fake_size(split, config), data.num_points, 0, 'so3', (0.75, 1.33), 0.01
      )
    )
    arrays['labels'] = np.arange(len(arrays['labels']), dtype=np.int32) % num_classes(
      config
    )
    return arrays
  if data.dataset == 'synthetic_shapes':
    size = syn.num_train if split == 'train' else syn.num_test
    return _synthetic(
      split,
      size,
      data.num_points,
      syn.seed,
      syn.rotation,
      tuple(syn.scale_range),
      syn.jitter,
    )
  if data.dataset == 'modelnet40_h5':
    names = modelnet40.read_shape_names(data.data_dir)
    if len(names) != data.num_classes:
      raise errors.DataError(
        f'{os.path.join(data.data_dir, modelnet40.SHAPE_NAMES_FILE)} lists '
        f'{len(names)} classes but data.num_classes={data.num_classes}.'
      )
    return _h5(data.data_dir, split)
  classes = modelnet40.off_classes(data.data_dir)
  if len(classes) != data.num_classes:
    raise errors.DataError(
      f'{data.data_dir} has {len(classes)} class folders but '
      f'data.num_classes={data.num_classes}.'
    )
  cache_dir = data.cache_dir or os.path.join(data.data_dir, '.point_samples')
  cache_dir = None if cache_dir == 'none' else cache_dir
  return _off(data.data_dir, split, data.num_points, syn.seed, cache_dir)


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  _check(split, config)
  if config.data.fake:
    return _fake_size(split, config)
  if config.data.dataset == 'synthetic_shapes':
    syn = config.data.synthetic
    return syn.num_train if split == 'train' else syn.num_test
  if config.data.dataset == 'modelnet40_off':
    return len(modelnet40.off_files(config.data.data_dir, split)[0])
  return len(split_arrays(split, config)['labels'])


def _source_points(arrays, num_points: int) -> int:
  available = arrays['points'].shape[1]
  if available < num_points:
    raise errors.ConfigError(
      f'the clouds have {available} points, fewer than data.num_points={num_points}.'
    )
  return available


def _train_stream(
  batches: Iterator[Dict[str, np.ndarray]],
  *,
  config: ml_collections.ConfigDict,
  batch_dims: Sequence[int],
  start_step: int,
) -> Iterator[Dict[str, np.ndarray]]:
  """Subsamples, normalises and augments each training batch."""
  data = config.data
  host_batch = int(np.prod(batch_dims))
  for step, batch in enumerate(batches, start=start_step):
    rngs = array_data.example_rngs(config.seed, _AUGMENT_STREAM, step, host_batch)
    points = batch['points'].reshape((host_batch,) + batch['points'].shape[-2:])
    out = np.empty((host_batch, data.num_points, 3), np.float32)
    for i, rng in enumerate(rngs):
      cloud = points[i]
      if len(cloud) > data.num_points:
        cloud = cloud[rng.choice(len(cloud), data.num_points, replace=False)]
      cloud = augment_lib.normalize(cloud[None], data.normalization)
      out[i] = augment_lib.augment(cloud, rng, data.augment)[0]
    yield {
      'points': out.reshape(tuple(batch_dims) + out.shape[1:]),
      'labels': batch['labels'],
    }


def load(
  split: str,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  config: ml_collections.ConfigDict,
  start_step: int = 0,
) -> Iterator[Dict[str, np.ndarray]]:
  """Batches of `points` `[*batch_dims, P, 3]` float32 and `labels` `[*batch_dims]`.

  Evaluation batches also hold `mask` (1 real, 0 padding) and cover `split` once.
  """
  arrays = split_arrays(split, config)
  _source_points(arrays, config.data.num_points)
  if not is_training:
    points = arrays['points'][:, : config.data.num_points]
    points = augment_lib.normalize(points, config.data.normalization)
    return array_data.eval_batches(
      {'points': points, 'labels': arrays['labels']}, batch_dims=batch_dims
    )
  batches = array_data.train_batches(
    arrays, batch_dims=batch_dims, seed=config.seed, start_step=start_step
  )
  return _train_stream(
    batches, config=config, batch_dims=batch_dims, start_step=start_step
  )


def batch_spec(config: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """A training cloud: `points` `[P, 3]` float32 and its int32 label."""
  return {
    'points': jax.ShapeDtypeStruct((config.data.num_points, 3), np.float32),
    'labels': jax.ShapeDtypeStruct((), np.int32),
  }


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """The Perceiver classifier; forward `f(batch, *, is_training) -> logits [B, K]`."""
  m = copy.deepcopy(config.model)  # Later edits of `config` do not change the model.
  k = num_classes(config)

  def forward(batch, *, is_training):
    model = perceiver.Perceiver(
      input_preprocessor=io_processors.PointCloudPreprocessor(
        **m.input_preprocessor.to_dict()
      ),
      encoder=perceiver.PerceiverEncoder(**m.encoder.to_dict()),
      decoder=perceiver.ProjectionDecoder(k, **m.decoder.to_dict()),
    )
    return model(batch['points'], is_training=is_training)

  return hk.transform_with_state(forward)


def train_loss(logits, batch, config):
  return losses.classification_loss(
    logits, batch['labels'], label_smoothing=config.training.label_smoothing
  )


def eval_outputs(logits, batch, config):
  del config
  outputs = losses.classification_eval_outputs(logits, batch['labels'], ks=(1,))
  outputs['labels'] = batch['labels']
  outputs['predictions'] = logits.argmax(axis=-1)
  return outputs


def summarize_eval(
  per_example: Dict[str, np.ndarray], config: ml_collections.ConfigDict
) -> Dict[str, float]:
  """`loss`, `top_1_acc`, `overall_accuracy`, `mean_class_accuracy`, `classes_present`."""
  summary = metrics.classification_summary(
    per_example['labels'], per_example['predictions'], num_classes(config)
  )
  summary['loss'] = float(np.mean(per_example['loss']))
  summary['top_1_acc'] = float(np.mean(per_example['top_1_acc']))
  return summary
