"""mAP, AUC and d-prime on hand-computed cases and against scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from experiments.tasks.audioset import metrics


def test_average_precision_and_auc_by_hand():
  scores = np.array([0.9, 0.8, 0.7, 0.6])
  labels = np.array([1, 0, 1, 0])
  # Positives at ranks 1 and 3: AP = (1/2) * 1/1 + (1/2) * 2/3 = 5/6.
  assert metrics.average_precision(scores, labels) == pytest.approx(5 / 6)
  # Positive 0.9 beats both negatives, 0.7 beats only 0.6: 3 of 4 pairs.
  assert metrics.roc_auc(scores, labels) == pytest.approx(3 / 4)


def test_ties_form_one_threshold():
  scores = np.array([0.5, 0.5, 0.2])
  labels = np.array([1, 0, 1])
  # Threshold 0.5: P = 1/2, R = 1/2; threshold 0.2: P = 2/3, R = 1.
  assert metrics.average_precision(scores, labels) == pytest.approx(
    0.5 * 0.5 + 0.5 * 2 / 3
  )
  # Pairs (0.5 vs 0.5): tie = 1/2; (0.2 vs 0.5): 0.
  assert metrics.roc_auc(scores, labels) == pytest.approx(0.25)


def test_d_prime_of_known_auc():
  # Phi^{-1}(0.75) = 0.6744897501960817; Phi^{-1}(0.5) = 0.
  assert metrics.d_prime(0.75) == pytest.approx(np.sqrt(2) * 0.6744897501960817)
  assert metrics.d_prime(0.5) == pytest.approx(0.0)


def test_classes_without_positives_are_excluded_and_reported():
  scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.2, 0.1], [0.7, 0.3, 0.2], [0.6, 0.4, 0.4]])
  labels = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
  got = metrics.multilabel_metrics(scores, labels)
  # Class 0: AP 5/6, AUC 3/4. Class 1: no positives (excluded). Class 2: all
  # positive: AP 1, no AUC.
  assert got['mAP'] == pytest.approx((5 / 6 + 1) / 2)
  assert got['mean_auc'] == pytest.approx(0.75)
  assert got['d_prime'] == pytest.approx(np.sqrt(2) * 0.6744897501960817)
  assert got['mAP_label_frequency_baseline'] == pytest.approx((0.5 + 1.0) / 2)
  assert got['num_classes_scored'] == 2
  assert got['num_classes_without_positives'] == 1
  assert got['num_classes_without_negatives'] == 1


def test_constant_scores_give_the_label_frequency_baseline():
  labels = np.array([[1, 0], [0, 1], [0, 1], [0, 0], [1, 1]])
  got = metrics.multilabel_metrics(np.zeros(labels.shape), labels)
  assert got['mAP'] == pytest.approx(got['mAP_label_frequency_baseline'])
  assert got['mAP'] == pytest.approx((2 / 5 + 3 / 5) / 2)
  assert got['mean_auc'] == pytest.approx(0.5)


def test_matches_scikit_learn_with_ties():
  rng = np.random.default_rng(3)
  scores = rng.integers(0, 7, size=(53, 5)).astype(np.float64)  # Many ties.
  labels = (rng.random((53, 5)) < 0.3).astype(np.int64)
  for k in range(5):
    assert metrics.average_precision(scores[:, k], labels[:, k]) == pytest.approx(
      sk_metrics.average_precision_score(labels[:, k], scores[:, k])
    )
    assert metrics.roc_auc(scores[:, k], labels[:, k]) == pytest.approx(
      sk_metrics.roc_auc_score(labels[:, k], scores[:, k])
    )


def test_bad_inputs_name_the_problem():
  with pytest.raises(ValueError, match='shape'):
    metrics.multilabel_metrics(np.zeros((3, 2)), np.zeros((3, 5)))
  with pytest.raises(ValueError, match='0 and 1'):
    metrics.multilabel_metrics(np.zeros((3, 2)), np.full((3, 2), 2))
