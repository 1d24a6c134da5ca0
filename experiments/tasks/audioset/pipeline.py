"""Input pipeline: clips (generated or decoded) -> windows -> model features.

A clip gives a waveform at `data.sample_rate` and, for the video variants, frames
sampled at `data.num_frames / data.clip_seconds` frames per second. The model sees one
window of `data.clip_seconds` of each clip: training windows start at a random
offset (a pure function of seed, step and batch slot), evaluation windows are
centred. Clips longer than the window are cropped, shorter ones padded with silence
(audio) and their last frame (video); a clip shorter than `data.min_clip_seconds` is
an error (counted and skipped by the loaders).

Features (`data.audio_input`):
  'raw': the waveform `[S]`, float32.
  'mel': the log-mel spectrogram `[F, M]` (see `mel.py`; parameters `data.mel`),
    standardised per clip (zero mean, unit variance over all its bins).
  'none': no audio (the video-only variant).
Video (`data.use_video`): frames `[T, H, W, 3]` uint8 (the model scales them to
[0, 1]).

Shape glossary:
  S = sample_rate * clip_seconds samples; F, M: mel frames and bins; T = num_frames;
  H = W = frame_size; K: classes.
"""

from typing import Dict, Optional

import jax
import ml_collections
import numpy as np

from experiments.tasks.audioset import mel
from experiments.training import errors

AUDIO_INPUTS = ('raw', 'mel', 'none')
_MEL_CHUNK = 256


def check_data_config(data: ml_collections.ConfigDict) -> None:
  if data.audio_input not in AUDIO_INPUTS:
    raise errors.ConfigError(
      f'data.audio_input={data.audio_input!r} is not one of {AUDIO_INPUTS}.'
    )
  if data.audio_input == 'none' and not data.use_video:
    raise errors.ConfigError(
      'data.audio_input="none" and data.use_video=False: no input left.'
    )
  if data.clip_seconds <= 0 or data.sample_rate <= 0:
    raise errors.ConfigError(
      f'data.clip_seconds={data.clip_seconds} and data.sample_rate={data.sample_rate} '
      'must be positive.'
    )


def num_samples(data: ml_collections.ConfigDict) -> int:
  return int(round(data.sample_rate * data.clip_seconds))


def mel_params(data: ml_collections.ConfigDict) -> mel.MelParams:
  fields = dict(data.mel.to_dict(), sample_rate=data.sample_rate)
  return mel.MelParams(**fields)


def frame_times(data: ml_collections.ConfigDict, offset: float = 0.0) -> np.ndarray:
  """`[T]` times (seconds from the clip's start) of the window's frames."""
  return offset + np.arange(data.num_frames) * data.clip_seconds / data.num_frames


def audio_features(waveforms: np.ndarray, data: ml_collections.ConfigDict) -> np.ndarray:
  """`[N, S]` waveforms -> `[N, S]` (raw) or `[N, F, M]` (mel) float32 features."""
  if data.audio_input == 'raw':
    return np.asarray(waveforms, np.float32)
  params = mel_params(data)
  waveforms = np.asarray(waveforms)
  spec = np.concatenate(  # In chunks: the float64 frames of many clips are large.
    [
      mel.log_mel_spectrogram(waveforms[i : i + _MEL_CHUNK], params)
      for i in range(0, max(1, len(waveforms)), _MEL_CHUNK)
    ]
  )
  mean = spec.mean(axis=(-2, -1), keepdims=True)
  std = spec.std(axis=(-2, -1), keepdims=True)
  return ((spec - mean) / np.maximum(std, 1e-5)).astype(np.float32)


def window_offset(
  duration: float, data: ml_collections.ConfigDict, rng: Optional[np.random.Generator]
) -> float:
  """Start (seconds) of the window: random with `rng`, else centred; 0 if too short."""
  slack = max(0.0, duration - data.clip_seconds)
  if rng is None:
    return slack / 2
  return float(rng.uniform(0.0, slack))


def crop_audio(waveform: np.ndarray, offset: float, data) -> np.ndarray:
  """`[S]` samples from `offset` seconds, zero-padded at the end."""
  n = num_samples(data)
  first = int(round(offset * data.sample_rate))
  out = np.zeros(n, np.float32)
  piece = waveform[first : first + n]
  out[: len(piece)] = piece
  return out


def batch_spec(data: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of one window's `features`: float32 multi-hot `labels` `[K]`,
  `audio` `[S]` (raw) or `[F, M]` (mel), uint8 `video` `[T, H, W, 3]`, as configured."""
  spec = {'labels': jax.ShapeDtypeStruct((data.num_classes,), np.float32)}
  if data.audio_input == 'raw':
    spec['audio'] = jax.ShapeDtypeStruct((num_samples(data),), np.float32)
  elif data.audio_input == 'mel':
    params = mel_params(data)
    shape = (params.num_frames(num_samples(data)), params.num_mel_bins)
    spec['audio'] = jax.ShapeDtypeStruct(shape, np.float32)
  if data.use_video:
    size = data.frame_size
    spec['video'] = jax.ShapeDtypeStruct((data.num_frames, size, size, 3), np.uint8)
  return spec


def features(
  waveforms: Optional[np.ndarray], video: Optional[np.ndarray], labels: np.ndarray, data
) -> Dict[str, np.ndarray]:
  """The model's batch entries for N windows.

  Args:
    waveforms: `[N, S]` windows of audio (None when `audio_input='none'`).
    video: `[N, T, H, W, 3]` uint8 windows (None without video).
    labels: `[N, K]` multi-hot.
    data: `config.data`.

  Returns:
    `labels` and, as configured, `audio` and `video`.
  """
  out = {'labels': np.asarray(labels, np.float32)}
  if data.audio_input != 'none':
    out['audio'] = audio_features(waveforms, data)
  if data.use_video:
    out['video'] = np.asarray(video, np.uint8)
  return out
