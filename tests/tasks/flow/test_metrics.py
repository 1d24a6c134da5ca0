"""EPE loss and metrics on hand-computed cases."""

import jax
import numpy as np
import pytest

from experiments.tasks.flow import metrics

# One 1x4 image. Pixel: truth, prediction, EPE, valid.
#   0: (3, 4),   (0, 0),    5.0, 1   |truth| 5:   outlier (5 > 3 and 5 > 0.25)
#   1: (0, 0),   (0, 1),    1.0, 1   px3, px5 (1 < 1 is false)
#   2: (100, 0), (96, 0),   4.0, 1   px5; 4 < 5% of 100: not an outlier
#   3: (6, 8),   (6, 8.5),  0.5, 0
TRUTH = np.array([[[3, 4], [0, 0], [100, 0], [6, 8]]], np.float32)
PREDICTION = np.array([[[0, 0], [0, 1], [96, 0], [6, 8.5]]], np.float32)
VALID = np.array([[1, 1, 1, 0]], np.float32)


def test_metrics_by_hand():
  got = metrics.flow_metrics(PREDICTION, TRUTH, VALID)
  want = {
    'epe': 10 / 3,
    'epe_all': 10.5 / 4,
    'px1': 0.0,
    'px3': 1 / 3,
    'px5': 2 / 3,
    'fl_all': 1 / 3,
    # Zero flow: EPE = |truth| = 5, 0, 100, 10.
    'zero_epe': 105 / 3,
    'zero_epe_all': 115 / 4,
    'zero_fl_all': 2 / 3,
    'valid_fraction': 3 / 4,
  }
  assert got.keys() == want.keys()
  for name, value in want.items():
    assert got[name] == pytest.approx(value, rel=1e-6), name


def test_loss_and_padding_pool_pixels():
  loss = metrics.epe_loss(PREDICTION[None], TRUTH[None], VALID[None])
  assert float(loss) == pytest.approx(10 / 3, rel=1e-6)
  # Batch of two: the second image repeats the first, but only its first two pixels
  # exist (region); pooled over pixels, 5 valid pixels with EPE 5, 1, 4, 5, 1.
  prediction = np.stack([PREDICTION, PREDICTION])
  truth = np.stack([TRUTH, TRUTH])
  valid = np.stack([VALID, VALID])
  region = np.array([[[1, 1, 1, 1]], [[1, 1, 0, 0]]], np.float32)
  sums = metrics.per_example_sums(prediction, truth, valid, region)
  np.testing.assert_allclose(sums['num_valid'], [3, 2])
  np.testing.assert_allclose(sums['epe_sum'], [10, 6])
  got = metrics.summarize({k: np.asarray(v) for k, v in sums.items()})
  assert got['epe'] == pytest.approx(16 / 5)
  assert got['epe_all'] == pytest.approx((10.5 + 6) / 6)
  assert got['fl_all'] == pytest.approx(2 / 5)
  assert float(metrics.epe_loss(prediction, truth, np.zeros_like(valid))) == 0.0


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match='differ in shape'):
    metrics.flow_metrics(PREDICTION[:, :3], TRUTH)


def test_loss_gradient_is_finite_where_prediction_is_exact():
  flow = np.zeros((1, 3, 5, 2), np.float32)
  flow[0, 1, 2] = (3.0, 4.0)
  valid = np.ones((1, 3, 5), np.float32)
  prediction = np.zeros_like(flow)  # Exact on 14 of the 15 pixels.
  loss, grad = jax.value_and_grad(metrics.epe_loss)(prediction, flow, valid)
  np.testing.assert_allclose(loss, 5.0 / 15)
  expected = np.zeros_like(flow)
  expected[0, 1, 2] = (-3.0 / 5 / 15, -4.0 / 5 / 15)  # d|p - f| / dp = (p - f) / |p - f|.
  np.testing.assert_allclose(grad, expected, rtol=1e-6)
