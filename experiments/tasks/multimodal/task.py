"""Task module: multimodal autoencoding of video + audio + label (Perceiver IO, Kinetics).

The model (`model.py`, the release's video autoencoding architecture) reconstructs a
clip's frames, its audio samples and its class label from one latent array, with the
label masked at the input. Training decodes a random subset of the video and audio
output points per example (`model.train_image_points`, `model.train_audio_points`) and
minimises the weighted reconstruction + classification loss of `metrics.py`; evaluation
decodes every point, in `model.eval_num_chunks` groups with the encoder run once, and
reports video / audio PSNR, audio SNR and label top-1 / top-5 beside model-free
baselines (mean frame, silence, majority class).

Data (`config.data.dataset`):
  moving_digits: generated clips of moving scikit-learn digits with a tone per digit
    (`moving_digits.py`); splits 'train', 'validation', 'test'.
  video_folder: a Kinetics-layout folder of video files decoded with PyAV
    (`video_folder.py`); splits are the annotation CSV's ('train', 'validate', 'test').

See `experiments/training/task.py` for the contract; `configs/multimodal.py` for the
commands.

Shape glossary:
  B: batch; T: frames; H = W: image size; C = 3; N = T * S audio samples; K: classes.
"""

import copy
import functools
from typing import Dict, Iterator, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.multimodal import metrics
from experiments.tasks.multimodal import model as model_lib
from experiments.tasks.multimodal import moving_digits
from experiments.training import array_data
from experiments.training import errors

DATASETS = ('moving_digits', 'video_folder')


def _check_dataset(config) -> str:
  name = config.data.dataset
  if name not in DATASETS:
    raise errors.ConfigError(f'config.data.dataset={name!r} is not one of {DATASETS}.')
  return name


def clip_spec(config: ml_collections.ConfigDict) -> moving_digits.ClipSpec:
  """The moving-digits clip sizes of `config.data`."""
  d = config.data
  return moving_digits.ClipSpec(
    num_frames=d.num_frames,
    image_size=d.image_size,
    samples_per_frame=d.samples_per_frame,
    num_digits=d.moving_digits.num_digits,
    digit_scale=d.moving_digits.digit_scale,
    noise_std=d.moving_digits.noise_std,
  )


def _moving_digits_size(split: str, config) -> int:
  if split not in moving_digits.SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {moving_digits.SPLITS}.')
  md = config.data.moving_digits
  return md.num_train if split == 'train' else md.num_eval


@functools.lru_cache(maxsize=8)
def _folder(root, annotations, split, class_names):
  from experiments.tasks.multimodal import video_folder  # pylint: disable=g-import-not-at-top

  return video_folder.VideoFolder(
    root, split, annotations=annotations or None, class_names=class_names
  )


def folder(split: str, config: ml_collections.ConfigDict):
  """The `video_folder.VideoFolder` of `split` (a generated one when `data.fake`)."""
  from experiments.tasks.multimodal import video_folder  # pylint: disable=g-import-not-at-top

  vf = config.data.video_folder
  root = video_folder.fake_folder() if config.data.fake else vf.root
  if not root:
    raise errors.ConfigError(
      'config.data.video_folder.root is empty; set it to a Kinetics-layout folder '
      '(see docs/multimodal.md) or use config.data.dataset=moving_digits.'
    )
  annotations = '' if config.data.fake else vf.annotations
  return _folder(root, annotations, split, vf.class_names)


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  if _check_dataset(config) == 'moving_digits':
    return _moving_digits_size(split, config)
  return len(folder(split, config))


def train_labels(config: ml_collections.ConfigDict) -> np.ndarray:
  """The labels of every training clip (for the majority-class baseline)."""
  if _check_dataset(config) == 'moving_digits':
    n = _moving_digits_size('train', config)
    return moving_digits.labels(
      clip_spec(config), 'train', range(n), seed=config.seed, fake=config.data.fake
    )
  return folder('train', config).labels


_MEAN_FRAMES = {}  # Cache of train_mean_frame, keyed by what the frame depends on.


def train_mean_frame(config: ml_collections.ConfigDict) -> np.ndarray:
  """`[H, W, 3]`: the mean frame of the training set (the mean-frame baseline).

  The mean over every frame of the first `evaluation.mean_frame_clips` training clips
  (all of them when larger), read as evaluation reads clips (centre crops for video
  folders; training clips that cannot be decoded are left out). Cached per process.
  """
  dataset = _check_dataset(config)
  limit = config.evaluation.mean_frame_clips
  if limit < 1:
    raise errors.ConfigError(f'config.evaluation.mean_frame_clips={limit} must be >= 1.')
  n = min(num_examples('train', config), limit)
  d = config.data
  key = (
    dataset,
    config.seed,
    d.fake,
    n,
    d.num_frames,
    d.image_size,
    d.samples_per_frame,
    d.fps,
    repr(sorted(d.moving_digits.items())),
    d.video_folder.root,
    d.video_folder.annotations,
  )
  if key not in _MEAN_FRAMES:
    if dataset == 'moving_digits':
      spec = clip_spec(config)
      blocks = (
        moving_digits.make_clips(
          spec, 'train', range(i, min(i + 128, n)), seed=config.seed, fake=d.fake
        )['video']
        for i in range(0, n, 128)
      )
    else:
      from experiments.tasks.multimodal import video_folder  # pylint: disable=g-import-not-at-top

      blocks = video_folder.eval_videos(
        folder('train', config).paths[:n],
        video_folder.options_from_config(config, is_training=False),
      )
    _MEAN_FRAMES[key] = metrics.dataset_mean_frame(blocks)
  return _MEAN_FRAMES[key]


def _render(split, config, indices: np.ndarray, batch_dims) -> Dict[str, np.ndarray]:
  clips = moving_digits.make_clips(
    clip_spec(config), split, indices.reshape(-1), seed=config.seed, fake=config.data.fake
  )
  return {
    'video': clips['video'].reshape(tuple(batch_dims) + clips['video'].shape[1:]),
    'audio': clips['audio'].reshape(tuple(batch_dims) + clips['audio'].shape[1:]),
    'label': clips['label'].reshape(tuple(batch_dims)),
  }


def load(
  split: str,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  config: ml_collections.ConfigDict,
  start_step: int = 0,
) -> Iterator[Dict[str, np.ndarray]]:
  """Batches of `video` `[*batch_dims, T, H, W, 3]` in [0, 1], `audio` `[*batch_dims, N]`
  in [-1, 1] and `label` `[*batch_dims]` (plus `mask` in evaluation).

  Training order is fixed by `config.seed`; evaluation covers the split once, padded.
  """
  if _check_dataset(config) == 'video_folder':
    from experiments.tasks.multimodal import video_folder  # pylint: disable=g-import-not-at-top

    return video_folder.batches(
      folder(split, config),
      config,
      is_training=is_training,
      batch_dims=batch_dims,
      start_step=start_step,
    )
  indices = {'index': np.arange(_moving_digits_size(split, config))}
  if is_training:
    batches = array_data.train_batches(
      indices, batch_dims=batch_dims, seed=config.seed, start_step=start_step
    )
    return (_render(split, config, b['index'], batch_dims) for b in batches)

  def eval_batches():
    for b in array_data.eval_batches(indices, batch_dims=batch_dims):
      out = _render(split, config, b['index'], batch_dims)
      for value in out.values():  # Padding holds zeros.
        value[b['mask'] == 0] = 0
      out['mask'] = b['mask']
      yield out

  return eval_batches()


def batch_spec(config: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """A training clip: `video` `[T, H, W, 3]`, `audio` `[T * samples_per_frame]`
  (float32) and its int32 `label`."""
  d = config.data
  return {
    'video': jax.ShapeDtypeStruct(
      (d.num_frames, d.image_size, d.image_size, 3), np.float32
    ),
    'audio': jax.ShapeDtypeStruct((d.num_frames * d.samples_per_frame,), np.float32),
    'label': jax.ShapeDtypeStruct((), np.int32),
  }


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """The autoencoder; forward `f(batch, *, is_training)`.

  Training returns the outputs at random points (`image` `[B, O_v, 3]`, `audio`
  `[B, O_a * P]`, `label` `[B, K]`) and the points themselves (`image_points`,
  `audio_points`); evaluation returns the full reconstruction (`image` `[B, T, H, W, 3]`,
  `audio` `[B, N]`, `label`).
  """
  m = copy.deepcopy(config.model)  # Later edits of `config` do not change the model.
  num_classes = config.data.num_classes

  def forward(batch, *, is_training):
    shapes = model_lib.batch_shapes(batch, num_classes)
    modules = model_lib.build_modules(m, shapes)
    if not is_training:
      return model_lib.reconstruct_in_graph(
        modules, batch, shapes, m.eval_num_chunks, is_training=False
      )
    z, sizes = model_lib.encode(modules, batch, num_classes, is_training=True)
    points = model_lib.random_points(
      hk.next_rng_key(),
      shapes,
      modules.samples_per_patch,
      m.train_image_points,
      m.train_audio_points,
    )
    outputs = model_lib.decode(modules, z, sizes, points, is_training=True)
    outputs['image_points'] = points['image']
    outputs['audio_points'] = points['audio']
    return outputs

  return hk.transform_with_state(forward)


def train_targets(outputs, batch, samples_per_patch: int) -> Dict[str, jax.Array]:
  """The pixels, audio samples and labels at the points that `outputs` decoded."""
  video = batch['video']
  pixels = video.reshape(video.shape[0], -1, video.shape[-1])
  audio = batch['audio'].reshape(batch['audio'].shape[0], -1, samples_per_patch)
  return {
    'image': jnp.take(pixels, outputs['image_points'], axis=1),
    'audio': jnp.take(audio, outputs['audio_points'], axis=1).reshape(audio.shape[0], -1),
    'label': batch['label'],
  }


def train_loss(outputs, batch, config):
  targets = train_targets(
    outputs, batch, config.model.audio_preprocessor.samples_per_patch
  )
  return metrics.reconstruction_loss(
    outputs,
    targets,
    config.training.loss_weights,
    config.training.reconstruction_loss,
  )


def eval_outputs(outputs, batch, config):
  per_example = metrics.evaluation_metrics(
    outputs, batch, train_mean_frame=train_mean_frame(config)
  )
  per_example['label'] = batch['label']  # For the majority-class baseline.
  return per_example


def summarize_eval(
  per_example: Dict[str, np.ndarray], config: ml_collections.ConfigDict
) -> Dict[str, float]:
  per_example = dict(per_example)
  labels = np.asarray(per_example.pop('label')).astype(np.int64)
  summary = {name: float(np.mean(values)) for name, values in per_example.items()}
  summary.update(
    metrics.majority_class_accuracy(train_labels(config), labels, config.data.num_classes)
  )
  return summary
