"""Losses and metrics against hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.training import losses


def _log_softmax(row):
  row = np.asarray(row, np.float64)
  return row - math.log(np.sum(np.exp(row)))


LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], np.float32)


def test_cross_entropy_hard_labels():
  labels = np.array([0, 2], np.int32)
  got = losses.softmax_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(labels))
  want = [-_log_softmax(LOGITS[0])[0], -_log_softmax(LOGITS[1])[2]]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_label_smoothing_hand_computed():
  # s = 0.3, K = 3: the true class gets 0.7 + 0.1 = 0.8, the others 0.1 each.
  labels = np.array([0, 2], np.int32)
  got = losses.softmax_cross_entropy(
    jnp.asarray(LOGITS), jnp.asarray(labels), label_smoothing=0.3
  )
  targets = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
  want = [-(targets[i] * _log_softmax(LOGITS[i])).sum() for i in range(2)]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mixed_labels_hand_computed():
  # MixUp of class 0 (weight 0.75) and class 1 (weight 0.25), then smoothing 0.3.
  mixed = np.array([[0.75, 0.25, 0.0], [0.0, 0.5, 0.5]], np.float32)
  got = losses.softmax_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(mixed))
  want = [-(mixed[i] * _log_softmax(LOGITS[i])).sum() for i in range(2)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  got = losses.softmax_cross_entropy(
    jnp.asarray(LOGITS), jnp.asarray(mixed), label_smoothing=0.3
  )
  targets = 0.7 * mixed + 0.1
  want = [-(targets[i] * _log_softmax(LOGITS[i])).sum() for i in range(2)]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mixed_labels_equal_the_mixture_of_losses():
  # Cross-entropy is linear in the targets: loss(0.6 a + 0.4 b) = 0.6 l(a) + 0.4 l(b).
  a, b = np.array([1, 0], np.int32), np.array([2, 1], np.int32)
  mixed = 0.6 * np.eye(3)[a] + 0.4 * np.eye(3)[b]
  got = losses.softmax_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(mixed, np.float32))
  want = 0.6 * losses.softmax_cross_entropy(
    jnp.asarray(LOGITS), jnp.asarray(a)
  ) + 0.4 * losses.softmax_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(b))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_topk_correct():
  logits = np.array(
    [
      [0.1, 0.5, 0.3, 0.2, 0.0, -1.0],
      [3.0, 2.0, 1.0, 0.0, -1.0, -2.0],
      [0.0, 0.0, 0.0, 0.0, 0.0, 9.0],
    ],
    np.float32,
  )
  labels = np.array([2, 5, 5], np.int32)
  got = losses.topk_correct(jnp.asarray(logits), jnp.asarray(labels), ks=(1, 2, 5))
  np.testing.assert_array_equal(got['top_1_acc'], [0, 0, 1])
  np.testing.assert_array_equal(got['top_2_acc'], [1, 0, 1])
  np.testing.assert_array_equal(got['top_5_acc'], [1, 0, 1])
  # Mixed labels count their dominant class.
  soft = np.eye(6, dtype=np.float32)[labels] * 0.7 + 0.3 / 6
  got_soft = losses.topk_correct(jnp.asarray(logits), jnp.asarray(soft), ks=(1,))
  np.testing.assert_array_equal(got_soft['top_1_acc'], got['top_1_acc'])


def test_classification_loss_and_eval_outputs():
  labels = np.array([0, 1], np.int32)
  loss, metrics = losses.classification_loss(
    jnp.asarray(LOGITS), jnp.asarray(labels), label_smoothing=0.0
  )
  want = np.mean([-_log_softmax(LOGITS[0])[0], -_log_softmax(LOGITS[1])[1]])
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(metrics['top_1_acc'], 1.0)
  assert 'top_5_acc' not in metrics  # Only 3 classes.
  outputs = losses.classification_eval_outputs(jnp.asarray(LOGITS), jnp.asarray(labels))
  assert outputs['loss'].shape == (2,)
  np.testing.assert_allclose(np.mean(outputs['loss']), want, rtol=1e-6)


def test_masked_mean():
  values = jnp.array([1.0, 2.0, 3.0, 100.0])
  np.testing.assert_allclose(losses.masked_mean(values, jnp.array([1, 1, 1, 0])), 2.0)
  np.testing.assert_allclose(losses.masked_mean(values), 26.5)


@pytest.mark.parametrize('smoothing', [-0.1, 1.0])
def test_bad_label_smoothing(smoothing):
  with pytest.raises(ValueError, match='label_smoothing'):
    losses.softmax_cross_entropy(
      jnp.asarray(LOGITS), jnp.array([0, 1]), label_smoothing=smoothing
    )


def test_soft_labels_with_wrong_class_count():
  with pytest.raises(ValueError, match='num_classes=3'):
    losses.softmax_cross_entropy(jnp.asarray(LOGITS), jnp.ones((2, 4)) / 4)
