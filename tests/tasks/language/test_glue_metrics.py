"""Tests of the GLUE metrics (experiments/tasks/language/glue_metrics.py) on hand-computed cases."""

import math

import numpy as np
import pytest

from experiments.tasks.language import glue_metrics as gm

# 7 binary examples: tp = 2 (0, 3), fp = 2 (1, 5), fn = 1 (2), tn = 2 (4, 6).
PRED = np.array([1, 1, 0, 1, 0, 1, 0])
GOLD = np.array([1, 0, 1, 1, 0, 0, 0])


def test_accuracy_f1_matthews_by_hand():
  assert gm.accuracy(PRED, GOLD) == pytest.approx(4 / 7)
  assert gm.f1(PRED, GOLD) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
  expected_mcc = (2 * 2 - 2 * 1) / math.sqrt((2 + 2) * (2 + 1) * (2 + 2) * (2 + 1))
  assert gm.matthews_corr(PRED, GOLD) == pytest.approx(expected_mcc)
  assert expected_mcc == pytest.approx(1 / 6)


def test_degenerate_cases_follow_sklearn_conventions():
  assert gm.matthews_corr([1, 1, 1], [1, 0, 1]) == 0.0  # a constant prediction
  assert gm.f1([0, 0, 0], [1, 0, 1]) == 0.0  # no true positive
  assert gm.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0
  assert gm.matthews_corr([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
  assert gm.matthews_corr([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)


def test_correlations_by_hand():
  x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  assert gm.pearson(x, 2 * x + 3) == pytest.approx(1.0)
  assert gm.pearson(x, -x) == pytest.approx(-1.0)
  # x = [1, 2, 3], y = [1, 3, 2]: covariance 0.5 / (1 * 1) = 0.5.
  assert gm.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
  # Monotone but non-linear: Spearman 1, Pearson below 1.
  assert gm.spearman(x, x**3) == pytest.approx(1.0)
  assert gm.pearson(x, x**3) < 0.99
  np.testing.assert_allclose(gm.rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])


def test_against_scipy_and_sklearn():
  scipy_stats = pytest.importorskip('scipy.stats')
  metrics = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(0)
  pred = rng.integers(0, 2, 101)
  gold = rng.integers(0, 2, 101)
  assert gm.f1(pred, gold) == pytest.approx(metrics.f1_score(gold, pred))
  assert gm.matthews_corr(pred, gold) == pytest.approx(
    metrics.matthews_corrcoef(gold, pred)
  )
  assert gm.accuracy(pred, gold) == pytest.approx(metrics.accuracy_score(gold, pred))
  a = np.round(rng.normal(size=53), 1)  # rounding creates ties
  b = a + rng.normal(size=53)
  assert gm.pearson(a, b) == pytest.approx(scipy_stats.pearsonr(a, b)[0])
  assert gm.spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b)[0])


def test_task_metrics_and_errors():
  mrpc = gm.task_metrics('mrpc', PRED, GOLD)
  assert set(mrpc) == {'f1', 'accuracy', 'score'}
  assert mrpc['score'] == pytest.approx((4 / 7 + 4 / 7) / 2)
  assert set(gm.task_metrics('cola', PRED, GOLD)) == {'matthews_corr', 'score'}
  stsb = gm.task_metrics('stsb', [0.1, 2.0, 4.5], [0.0, 2.5, 5.0])
  assert set(stsb) == {'pearson', 'spearman', 'score'} and stsb['spearman'] == 1.0
  with pytest.raises(ValueError, match='Unknown GLUE task'):
    gm.task_metrics('squad', PRED, GOLD)
  with pytest.raises(ValueError, match='differ in length'):
    gm.accuracy([1, 0], [1])
  with pytest.raises(ValueError, match='1-D'):
    gm.accuracy([[1]], [[1]])
  with pytest.raises(ValueError, match='at least one'):
    gm.f1([], [])
