"""Losses and metrics of multimodal autoencoding on hand-computed cases."""

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.tasks.multimodal import metrics


def test_psnr_snr_and_l1_by_hand():
  target = jnp.zeros((2, 3, 5))
  pred = jnp.full((2, 3, 5), 0.5).at[1].set(0.1)
  # MSE 0.25 -> 10 log10(4); MSE 0.01 -> 20 dB.
  np.testing.assert_allclose(metrics.psnr(pred, target), [6.0206, 20.0], atol=1e-4)
  np.testing.assert_allclose(
    metrics.mean_absolute_error(pred, target), [0.5, 0.1], rtol=1e-6
  )
  signal = jnp.array([[1.0, -1.0], [2.0, 0.0]])
  # Errors: 0.5^2 * 2 = 0.5 against signal 2 -> 10 log10(4); 1 against 4 -> 10 log10(4).
  guess = jnp.array([[0.5, -0.5], [1.0, 0.0]])
  np.testing.assert_allclose(metrics.snr(guess, signal), [6.0206, 6.0206], atol=1e-4)
  np.testing.assert_allclose(metrics.snr(jnp.zeros_like(signal), signal), [0.0, 0.0])
  np.testing.assert_allclose(metrics.psnr(target, target), [100.0, 100.0])


def test_mean_frame_baseline_and_oracle():
  video = jnp.array([0.0, 1.0, 2.0, 5.0]).reshape(1, 4, 1, 1, 1) / 5
  np.testing.assert_allclose(metrics.mean_frame(video)[0, :, 0, 0, 0], [0.4] * 4)
  out = metrics.evaluation_metrics(
    {'image': video, 'audio': jnp.zeros((1, 6)), 'label': jnp.zeros((1, 3))},
    {'video': video, 'audio': jnp.full((1, 6), 0.5), 'label': jnp.array([2])},
    train_mean_frame=np.full((1, 1, 1), 0.5, np.float32),
  )
  # Oracle (the clip's own mean 0.4): errors -0.4, -0.2, 0, 0.6 -> MSE 0.14.
  np.testing.assert_allclose(
    out['oracle_clip_mean_frame_video_psnr'], [10 * np.log10(1 / 0.14)], rtol=1e-5
  )
  # Training-set mean frame 0.5: errors -0.5, -0.3, -0.1, 0.5 -> MSE 0.15.
  np.testing.assert_allclose(
    out['baseline_mean_frame_video_psnr'], [10 * np.log10(1 / 0.15)], rtol=1e-5
  )
  np.testing.assert_allclose(out['baseline_silence_audio_psnr'], [6.0206], atol=1e-4)
  np.testing.assert_allclose(out['audio_snr'], [0.0], atol=1e-6)
  np.testing.assert_allclose(out['video_psnr'], [100.0])
  np.testing.assert_allclose(out['label_xent'], [np.log(3)], rtol=1e-6)
  assert 'top_5_acc' not in out and out['top_1_acc'].shape == (1,)
  with pytest.raises(ValueError, match='train_mean_frame has shape'):
    metrics.evaluation_metrics(
      {'image': video, 'audio': jnp.zeros((1, 6)), 'label': jnp.zeros((1, 3))},
      {'video': video, 'audio': jnp.zeros((1, 6)), 'label': jnp.array([2])},
      train_mean_frame=np.zeros((1, 3), np.float32),
    )


def test_dataset_mean_frame_averages_clips_and_frames():
  first = np.zeros((2, 3, 1, 2, 3), np.float32)  # 2 clips of 3 frames.
  second = np.ones((1, 3, 1, 2, 3), np.float32)
  second[0, 0] = 4.0  # Frames 4, 1, 1: 9 frames in all sum to 6.
  np.testing.assert_allclose(
    metrics.dataset_mean_frame(iter([first, second])), np.full((1, 2, 3), 6 / 9)
  )
  with pytest.raises(ValueError, match='at least one clip'):
    metrics.dataset_mean_frame(iter([]))


def test_reconstruction_loss_weights_each_term():
  outputs = {
    'image': jnp.full((2, 4, 3), 0.25),
    'audio': jnp.array([[0.0, 1.0], [0.0, -1.0]]),
    'label': jnp.array([[0.0, 0.0], [np.log(3.0), 0.0]]),
  }
  targets = {
    'image': jnp.zeros((2, 4, 3)),
    'audio': jnp.zeros((2, 2)),
    'label': jnp.array([0, 1]),
  }
  loss, aux = metrics.reconstruction_loss(
    outputs, targets, {'video': 2.0, 'audio': 3.0, 'label': 0.5}
  )
  xent = (np.log(2.0) + np.log(4.0)) / 2  # p(label) = 1/2 and 1/4.
  np.testing.assert_allclose(aux['video_l1'], 0.25)
  np.testing.assert_allclose(aux['audio_l1'], 0.5)
  np.testing.assert_allclose(aux['label_xent'], xent, rtol=1e-6)
  np.testing.assert_allclose(loss, 2 * 0.25 + 3 * 0.5 + 0.5 * xent, rtol=1e-6)
  np.testing.assert_allclose(aux['top_1_acc'], 0.5)  # Ties go to class 0.
  l2, aux = metrics.reconstruction_loss(
    outputs, targets, {'video': 2.0, 'audio': 3.0, 'label': 0.5}, kind='l2'
  )
  np.testing.assert_allclose(aux['video_mse'], 0.0625)
  np.testing.assert_allclose(aux['audio_mse'], 0.5)
  np.testing.assert_allclose(l2, 2 * 0.0625 + 3 * 0.5 + 0.5 * xent, rtol=1e-6)
  with pytest.raises(ValueError, match="reconstruction_loss='l3'"):
    metrics.reconstruction_loss(outputs, targets, {}, kind='l3')


def test_majority_class_baseline():
  train = np.array([1, 1, 2, 0, 2, 2, 4])
  got = metrics.majority_class_accuracy(
    train, np.array([2, 1, 3, 0]), num_classes=5, ks=(1, 2, 5)
  )
  # Ranking: 2 (3x), 1 (2x), then 0 and 4 (1x, lower id first), then 3.
  assert got == {
    'baseline_majority_top_1_acc': 0.25,
    'baseline_majority_top_2_acc': 0.5,
    'baseline_majority_top_5_acc': 1.0,
  }
