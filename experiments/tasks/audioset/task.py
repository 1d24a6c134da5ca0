"""Task module: multi-label audio / video / audio+video classification (AudioSet).

The Perceiver of paper 1 on AudioSet's inputs: audio as raw-sample patches or
log-mel spectrogram inputs with 1D Fourier features (`AudioPreprocessor`), video as
space-time patches with 3D Fourier features (`ImagePreprocessor(prep_type='patches')`),
both fused by `MultimodalPreprocessor` (trainable per-modality channel padding);
a `PerceiverEncoder` and a projection (mean of latents + linear) or classification
(query) decoder give one logit per class, trained with per-class sigmoid
cross-entropy. Evaluation reports mAP, mean AUC and d-prime over the whole split
(`metrics.py`) beside the label-frequency baseline.

Data (`config.data.dataset`): 'synthetic_events' (`events.py`, generated in memory)
or 'audioset' (the published CSVs + local clips, `local_clips.py`); `pipeline.py`
turns clips into model inputs. See `configs/audioset.py` and docs/audioset.md.

Batch entries:
  `audio`: `[B, S]` raw samples or `[B, F, M]` standardised log-mel (audio variants).
  `video`: `[B, T, H, W, 3]` uint8 (video variants).
  `labels`: `[B, K]` float32 multi-hot; `mask` `[B]` in evaluation.
"""

import copy
import functools
import json
from typing import Dict, Iterator, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.tasks.audioset import events
from experiments.tasks.audioset import local_clips
from experiments.tasks.audioset import metrics
from experiments.tasks.audioset import pipeline
from experiments.training import array_data
from experiments.training import errors
from perceiver import io_processors
from perceiver import perceiver

SPLITS = ('train', 'test')
DATASETS = ('synthetic_events', 'audioset')
DECODER_TYPES = ('projection', 'classification')
_FAKE_STREAM = 17


def _check(split: str, config: ml_collections.ConfigDict) -> None:
  if split not in SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {SPLITS}.')
  if config.data.dataset not in DATASETS:
    raise errors.ConfigError(
      f'data.dataset={config.data.dataset!r} is not one of {DATASETS}.'
    )
  pipeline.check_data_config(config.data)


def _data_key(data: ml_collections.ConfigDict) -> str:
  return json.dumps(data.to_dict(), sort_keys=True, default=str)


@functools.lru_cache(maxsize=4)
def _clips(split: str, data_key: str) -> local_clips.LocalClips:
  return local_clips.LocalClips(split, ml_collections.ConfigDict(json.loads(data_key)))


def _synthetic_size(split: str, data) -> int:
  if data.fake:
    return int(data.fake_num_examples)
  return int(data.synthetic.num_train if split == 'train' else data.synthetic.num_test)


@functools.lru_cache(maxsize=4)
def _synthetic_arrays(split: str, data_key: str) -> Dict[str, np.ndarray]:
  data = ml_collections.ConfigDict(json.loads(data_key))
  raw = events.generate(
    split,
    _synthetic_size(split, data),
    seed=data.synthetic.seed,
    num_classes=data.num_classes,
    sample_rate=data.sample_rate,
    clip_seconds=data.clip_seconds,
    num_frames=data.num_frames,
    frame_size=data.frame_size,
    max_events=data.synthetic.max_events,
    noise_level=data.synthetic.noise_level,
    with_video=data.use_video,
  )
  return pipeline.features(raw['audio'], raw.get('video'), raw['labels'], data)


@functools.lru_cache(maxsize=4)
def _fake_audioset_arrays(split: str, data_key: str) -> Dict[str, np.ndarray]:
  """Random clips 1.5 windows long, windowed and featurised like decoded ones."""
  data = ml_collections.ConfigDict(json.loads(data_key))
  n = int(data.fake_num_examples)
  rng = np.random.default_rng([_FAKE_STREAM, SPLITS.index(split)])
  long_clip = rng.normal(scale=0.1, size=(n, int(1.5 * pipeline.num_samples(data))))
  duration = long_clip.shape[1] / data.sample_rate
  offsets = [pipeline.window_offset(duration, data, rng) for _ in range(n)]
  audio = np.stack([pipeline.crop_audio(x, o, data) for x, o in zip(long_clip, offsets)])
  video = rng.integers(
    0, 256, size=(n, data.num_frames, data.frame_size, data.frame_size, 3), dtype=np.uint8
  )
  labels = (rng.random((n, data.num_classes)) < 0.01).astype(np.float32)
  labels[np.arange(n), rng.integers(0, data.num_classes, n)] = 1.0
  return pipeline.features(audio, video, labels, data)


def _in_memory(split: str, config) -> bool:
  return config.data.dataset == 'synthetic_events' or config.data.fake


def _arrays(split: str, config) -> Dict[str, np.ndarray]:
  key = _data_key(config.data)
  if config.data.dataset == 'synthetic_events':
    return _synthetic_arrays(split, key)
  return _fake_audioset_arrays(split, key)


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  _check(split, config)
  if _in_memory(split, config):
    if config.data.dataset == 'synthetic_events':
      return _synthetic_size(split, config.data)
    return int(config.data.fake_num_examples)
  return len(_clips(split, _data_key(config.data)))


def load(
  split: str,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  config: ml_collections.ConfigDict,
  start_step: int = 0,
) -> Iterator[Dict[str, np.ndarray]]:
  """Batches of `labels` `[*batch_dims, K]` and `audio` and/or `video` (see above)."""
  _check(split, config)
  if _in_memory(split, config):
    arrays = _arrays(split, config)
    if not is_training:
      return array_data.eval_batches(arrays, batch_dims=batch_dims)
    return array_data.train_batches(
      arrays, batch_dims=batch_dims, seed=config.seed, start_step=start_step
    )
  clips = _clips(split, _data_key(config.data))
  if not is_training:
    return local_clips.eval_batches(clips, batch_dims=batch_dims)
  return local_clips.train_batches(
    clips, batch_dims=batch_dims, seed=config.seed, start_step=start_step
  )


def model_inputs(batch: Dict[str, jax.Array], data_config) -> Dict[str, jax.Array]:
  """`{'audio': [B, S'], 'video': [B, T, H, W, 3] float in [0, 1]}` as configured.

  A mel spectrogram `[B, F, M]` is flattened time-major to `[B, F * M]`, so that
  `samples_per_patch = M` makes one input per frame and 1 one input per bin.
  """
  inputs = {}
  if data_config['audio_input'] != 'none':
    audio = batch['audio']
    inputs['audio'] = jnp.reshape(audio, (audio.shape[0], -1))
  if data_config['use_video']:
    inputs['video'] = batch['video'].astype(jnp.float32) / 255.0
  return inputs


def batch_spec(config: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """A training window (see `pipeline.batch_spec`)."""
  return pipeline.batch_spec(config.data)


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """The classifier: `f(batch, *, is_training)` -> logits `[B, K]`."""
  m = copy.deepcopy(config.model).to_dict()  # Later edits of `config` do not matter.
  data_config = {k: config.data[k] for k in ('audio_input', 'use_video')}
  num_classes = int(config.data.num_classes)
  if m['decoder_type'] not in DECODER_TYPES:
    raise errors.ConfigError(
      f'model.decoder_type={m["decoder_type"]!r}; expected one of {DECODER_TYPES}.'
    )

  def forward(batch, *, is_training):
    inputs = model_inputs(batch, data_config)
    preprocessors = {}
    if 'audio' in inputs:
      preprocessors['audio'] = io_processors.AudioPreprocessor(**m['audio_preprocessor'])
    if 'video' in inputs:
      preprocessors['video'] = io_processors.ImagePreprocessor(**m['video_preprocessor'])
    if len(preprocessors) == 1:
      ((name, preprocessor),) = preprocessors.items()
      inputs = inputs[name]
    else:
      preprocessor = io_processors.MultimodalPreprocessor(
        modalities=preprocessors, **m['input_preprocessor']
      )
    if m['decoder_type'] == 'projection':
      decoder = perceiver.ProjectionDecoder(num_classes, **m['decoder'])
    else:
      decoder = perceiver.ClassificationDecoder(num_classes, **m['decoder'])
    model = perceiver.Perceiver(
      encoder=perceiver.PerceiverEncoder(**m['encoder']),
      decoder=decoder,
      input_preprocessor=preprocessor,
    )
    return model(inputs, is_training=is_training)

  return hk.transform_with_state(forward)


def sigmoid_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example mean over classes of the binary cross-entropy, `[B]`."""
  return jnp.mean(
    optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels), axis=-1
  )


def train_loss(logits, batch, config):
  del config
  loss = jnp.mean(sigmoid_cross_entropy(logits, batch['labels']))
  return loss, {'loss': loss}


def eval_outputs(logits, batch, config):
  del config
  return {
    'logits': logits.astype(jnp.float32),
    'labels': batch['labels'],
    'sigmoid_xent': sigmoid_cross_entropy(logits, batch['labels']),
  }


def summarize_eval(
  per_example: Dict[str, np.ndarray], config: ml_collections.ConfigDict
) -> Dict[str, float]:
  """mAP, mean AUC, d-prime, the baseline and excluded classes over the whole split."""
  del config
  summary = metrics.multilabel_metrics(per_example['logits'], per_example['labels'])
  summary['sigmoid_xent'] = float(np.mean(per_example['sigmoid_xent']))
  return summary
