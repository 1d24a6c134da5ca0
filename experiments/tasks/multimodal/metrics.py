"""Losses and metrics of multimodal (video + audio + label) autoencoding.

Training minimises a weighted sum of the mean absolute error (L1) of the reconstructed
video and audio and the cross-entropy of the label logits (the label is masked at the
input, so the model must infer it from the video and audio). Evaluation reports the
peak signal-to-noise ratio of video (pixels in [0, 1], peak 1) and audio (samples in
[-1, 1], peak 1), the audio signal-to-noise ratio, label top-1 / top-5 accuracy, and
beside them three baselines that need no model and never see the clip they score:
every frame predicted by the mean frame of the training set, silence for the audio, and
the classes most frequent in training. An oracle reference is reported too: every frame
predicted by the clip's own temporal mean frame (it averages the target clip, so it is
no baseline a model could use; a static scene scores perfectly).

All functions but `majority_class_accuracy` are jittable and return per-example values
unless stated otherwise.

Shape glossary:
  B: batch; T: frames; H, W: image size; C = 3 colours.
  N: audio samples; O: decoded points of one modality; K: classes.
"""

from typing import Dict, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.training import errors
from experiments.training import losses

_MIN_MSE = 1e-10  # PSNR of a perfect reconstruction: 100 dB at peak 1.


def _per_example_mean(x: jax.Array) -> jax.Array:
  return jnp.mean(x.reshape(x.shape[0], -1).astype(jnp.float32), axis=1)


def mean_absolute_error(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """`[B]`: mean of `|prediction - target|` over all but the batch axis."""
  return _per_example_mean(jnp.abs(prediction - target))


def mean_squared_error(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """`[B]`: mean of `(prediction - target)^2` over all but the batch axis."""
  return _per_example_mean(jnp.square(prediction - target))


def psnr(prediction: jax.Array, target: jax.Array, peak: float = 1.0) -> jax.Array:
  """`[B]` peak signal-to-noise ratio in dB: `10 log10(peak^2 / MSE)`."""
  mse = jnp.maximum(mean_squared_error(prediction, target), _MIN_MSE)
  return 10.0 * jnp.log10(peak**2 / mse)


def snr(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """`[B]` signal-to-noise ratio in dB: `10 log10(sum target^2 / sum error^2)`.

  Silence (`prediction = 0`) scores exactly 0 dB.
  """
  signal = jnp.sum(jnp.square(target.reshape(target.shape[0], -1)), axis=1)
  noise = jnp.sum(jnp.square((prediction - target).reshape(target.shape[0], -1)), axis=1)
  return 10.0 * jnp.log10(jnp.maximum(signal, _MIN_MSE) / jnp.maximum(noise, _MIN_MSE))


def mean_frame(video: jax.Array) -> jax.Array:
  """`[B, T, H, W, C]`: every frame replaced by the clip's mean frame."""
  return jnp.broadcast_to(jnp.mean(video, axis=1, keepdims=True), video.shape)


def dataset_mean_frame(videos) -> np.ndarray:
  """`[H, W, C]` float32: the mean over clips and frames of `videos`.

  Args:
    videos: an iterable of `[N, T, H, W, C]` arrays (blocks of clips), at least one clip.
  """
  total, count = None, 0
  for block in videos:
    block = np.asarray(block, np.float64)
    block_sum = block.sum(axis=(0, 1))
    total = block_sum if total is None else total + block_sum
    count += block.shape[0] * block.shape[1]
  if not count:
    raise ValueError('dataset_mean_frame needs at least one clip.')
  return (total / count).astype(np.float32)


RECONSTRUCTION_LOSSES = ('l1', 'l2')


def reconstruction_loss(
  outputs: Mapping[str, jax.Array],
  targets: Mapping[str, jax.Array],
  weights: Mapping[str, float],
  kind: str = 'l1',
) -> tuple:
  """The training loss: `w_v R(video) + w_a R(audio) + w_l CE(label)`.

  `R` is the mean absolute error (`kind='l1'`) or the mean squared error (`'l2'`, the
  quantity PSNR measures) over the decoded points.

  Args:
    outputs: `image` `[B, O_v, C]` (decoded pixels), `audio` `[B, O_a]` (decoded samples),
      `label` `[B, K]` logits.
    targets: the same keys: pixels and samples at the decoded points, integer labels `[B]`.
    weights: `video`, `audio`, `label`.
    kind: 'l1' or 'l2'.

  Returns:
    `(loss, metrics)`: the scalar loss and scalar `loss`, `video_l1`, `audio_l1`,
    `video_mse`, `audio_mse`, `label_xent`, `top_1_acc`.
  """
  if kind not in RECONSTRUCTION_LOSSES:
    raise errors.ConfigError(
      f'training.reconstruction_loss={kind!r} is not one of {RECONSTRUCTION_LOSSES}.'
    )
  terms = {}
  for name, key in (('video', 'image'), ('audio', 'audio')):
    terms[f'{name}_l1'] = jnp.mean(mean_absolute_error(outputs[key], targets[key]))
    terms[f'{name}_mse'] = jnp.mean(mean_squared_error(outputs[key], targets[key]))
  suffix = 'l1' if kind == 'l1' else 'mse'
  xent = jnp.mean(losses.softmax_cross_entropy(outputs['label'], targets['label']))
  loss = (
    weights['video'] * terms[f'video_{suffix}']
    + weights['audio'] * terms[f'audio_{suffix}']
    + weights['label'] * xent
  )
  top1 = losses.topk_correct(outputs['label'], targets['label'], ks=(1,))['top_1_acc']
  return loss, {
    'loss': loss,
    **terms,
    'label_xent': xent,
    'top_1_acc': jnp.mean(top1),
  }


def evaluation_metrics(
  reconstruction: Mapping[str, jax.Array],
  batch: Mapping[str, jax.Array],
  ks: Sequence[int] = (1, 5),
  train_mean_frame: Optional[np.ndarray] = None,
) -> Dict[str, jax.Array]:
  """Per-example metrics of full reconstructions, the model-free baselines and the
  clip-mean-frame oracle.

  Args:
    reconstruction: `image` `[B, T, H, W, C]`, `audio` `[B, N]`, `label` `[B, K]` logits.
    batch: `video` `[B, T, H, W, C]` in [0, 1], `audio` `[B, N]` in [-1, 1], `label` `[B]`.
    ks: top-k accuracies to report (those <= K).
    train_mean_frame: `[H, W, C]`, the mean frame of the training set (see
      `dataset_mean_frame`); None leaves its baseline out.

  Returns:
    `{name: [B]}`: `video_psnr`, `audio_psnr`, `audio_snr`, `video_l1`, `audio_l1`,
    `label_xent`, `top_{k}_acc`, `baseline_mean_frame_video_psnr` (with
    `train_mean_frame`), `baseline_silence_audio_psnr`, `baseline_silence_audio_snr`,
    `oracle_clip_mean_frame_video_psnr`.
  """
  video, audio = batch['video'], batch['audio']
  image = reconstruction['image'].reshape(video.shape)
  sound = reconstruction['audio'].reshape(audio.shape)
  logits = reconstruction['label']
  out = {
    'video_psnr': psnr(image, video),
    'audio_psnr': psnr(sound, audio),
    'audio_snr': snr(sound, audio),
    'video_l1': mean_absolute_error(image, video),
    'audio_l1': mean_absolute_error(sound, audio),
    'label_xent': losses.softmax_cross_entropy(logits, batch['label']),
    'baseline_silence_audio_psnr': psnr(jnp.zeros_like(audio), audio),
    'baseline_silence_audio_snr': snr(jnp.zeros_like(audio), audio),
    'oracle_clip_mean_frame_video_psnr': psnr(mean_frame(video), video),
  }
  if train_mean_frame is not None:
    frame = jnp.asarray(train_mean_frame, video.dtype)
    if frame.shape != video.shape[2:]:
      raise ValueError(
        f'train_mean_frame has shape {tuple(frame.shape)}; the frames are '
        f'{tuple(video.shape[2:])}.'
      )
    out['baseline_mean_frame_video_psnr'] = psnr(
      jnp.broadcast_to(frame, video.shape), video
    )
  out.update(
    losses.topk_correct(logits, batch['label'], [k for k in ks if k <= logits.shape[-1]])
  )
  return out


def majority_class_accuracy(
  train_labels: np.ndarray,
  labels: np.ndarray,
  num_classes: int,
  ks: Sequence[int] = (1, 5),
) -> Dict[str, float]:
  """Top-k accuracy on `labels` of always predicting the k most frequent training classes.

  Ties between equally frequent classes go to the lower class id.

  Args:
    train_labels: `[N_train]` integer classes seen in training.
    labels: `[N]` integer classes to score.
    num_classes: K.
    ks: the k of each accuracy.

  Returns:
    `{f'baseline_majority_top_{k}_acc': float}` for each k <= K.
  """
  counts = np.bincount(np.asarray(train_labels), minlength=num_classes)
  ranking = np.lexsort((np.arange(num_classes), -counts))  # Most frequent first.
  labels = np.asarray(labels)
  return {
    f'baseline_majority_top_{k}_acc': float(np.mean(np.isin(labels, ranking[:k])))
    for k in ks
    if k <= num_classes
  }
