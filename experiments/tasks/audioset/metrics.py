"""Multi-label metrics of AudioSet: mean average precision, mean ROC AUC and d-prime.

All metrics are computed exactly on the whole split (no binning, no sampling): per
class from the sorted scores, with tied scores treated as one threshold (as
scikit-learn's `average_precision_score` and `roc_auc_score`), then averaged over the
classes for which they are defined.

Shape glossary:
  N: examples of the split.
  K: classes.
"""

from typing import Dict, Tuple

import numpy as np
from scipy import special


def _check(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels)
  if scores.ndim != 2 or scores.shape != labels.shape:
    raise ValueError(
      f'scores and labels must both have shape [N, K]; got {scores.shape} and '
      f'{labels.shape}.'
    )
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError('labels must hold only 0 and 1 (multi-hot targets).')
  if not np.all(np.isfinite(scores)):
    raise ValueError('scores contain NaN or infinite values.')
  return scores, labels.astype(np.float64)


def _tied_curve(scores: np.ndarray, labels: np.ndarray):
  """True and false positives at each distinct threshold, from the highest down.

  Args:
    scores: `[N]` scores of one class.
    labels: `[N]` 0/1 labels of that class.

  Returns:
    `(tp, fp)`: `[T]` cumulative counts of positives and negatives scored >= each of
    the T distinct score values, in decreasing order of the value.
  """
  order = np.argsort(-scores, kind='stable')
  s, y = scores[order], labels[order]
  last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
  tp = np.cumsum(y)[last_of_tie]
  fp = (last_of_tie + 1) - tp
  return tp, fp


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """Average precision of one class: `sum_t (R_t - R_{t-1}) P_t` over thresholds.

  Args:
    scores: `[N]` scores.
    labels: `[N]` 0/1 labels with at least one positive.

  Returns:
    The step-wise area under the precision-recall curve (NaN without positives).
  """
  num_pos = float(np.sum(labels))
  if num_pos == 0:
    return float('nan')
  tp, fp = _tied_curve(np.asarray(scores, np.float64), np.asarray(labels, np.float64))
  precision = tp / (tp + fp)
  recall_steps = np.diff(np.r_[0.0, tp]) / num_pos
  return float(np.sum(recall_steps * precision))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve of one class (ties count one half).

  Equals the probability that a random positive scores above a random negative,
  plus half the probability that they tie. NaN unless both classes of label occur.
  """
  labels = np.asarray(labels, np.float64)
  num_pos = float(np.sum(labels))
  num_neg = float(len(labels) - num_pos)
  if num_pos == 0 or num_neg == 0:
    return float('nan')
  tp, fp = _tied_curve(np.asarray(scores, np.float64), labels)
  tpr = np.r_[0.0, tp] / num_pos
  fpr = np.r_[0.0, fp] / num_neg
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def d_prime(auc: float) -> float:
  """AudioSet's d-prime: `sqrt(2) * Phi^{-1}(AUC)` (Phi the standard normal CDF)."""
  return float(np.sqrt(2.0) * special.ndtri(auc))


def multilabel_metrics(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """mAP, mean AUC, d-prime and the label-frequency baseline over a whole split.

  A class with no positive example has no average precision and no AUC; a class
  with no negative example has no AUC. Such classes are excluded from the means,
  and their numbers are reported.

  Args:
    scores: `[N, K]` scores (logits or probabilities: only their order matters).
    labels: `[N, K]` 0/1 multi-hot labels.

  Returns:
    `mAP`: mean over classes with positives of the average precision.
    `mAP_label_frequency_baseline`: the mAP of scores that ignore the input (the
      same score for every example, e.g. the training label frequency): the average
      precision of a constant score is the class's positive rate.
    `mean_auc`, `d_prime`: mean ROC AUC over classes with positives and negatives,
      and `sqrt(2) * Phi^{-1}(mean_auc)`.
    `num_classes_scored`: classes in the mAP;
    `num_classes_without_positives`, `num_classes_without_negatives`: excluded.
  """
  scores, labels = _check(scores, labels)
  num_examples, num_classes = labels.shape
  positives = labels.sum(axis=0)
  aps, aucs = [], []
  for k in range(num_classes):
    if positives[k] > 0:
      aps.append(average_precision(scores[:, k], labels[:, k]))
      if positives[k] < num_examples:
        aucs.append(roc_auc(scores[:, k], labels[:, k]))
  with_pos = positives > 0
  mean_auc = float(np.mean(aucs)) if aucs else float('nan')
  return {
    'mAP': float(np.mean(aps)) if aps else float('nan'),
    'mAP_label_frequency_baseline': (
      float(np.mean(positives[with_pos] / num_examples)) if aps else float('nan')
    ),
    'mean_auc': mean_auc,
    'd_prime': d_prime(mean_auc) if aucs else float('nan'),
    'num_classes_scored': float(len(aps)),
    'num_classes_without_positives': float(np.sum(~with_pos)),
    'num_classes_without_negatives': float(np.sum(positives == num_examples)),
  }
