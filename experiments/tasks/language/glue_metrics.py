"""GLUE evaluation metrics in pure NumPy.

Each GLUE task is scored with the metrics of the benchmark's leaderboard:

| task | metrics |
|---|---|
| CoLA | Matthews correlation |
| SST-2, MNLI (matched / mismatched), QNLI, RTE, WNLI | accuracy |
| MRPC, QQP | accuracy and F1 of the positive class (label 1) |
| STS-B | Pearson and Spearman correlation of the regression output |

All functions take 1-D arrays (predictions first, references second) and
return Python floats. Degenerate cases follow scikit-learn's conventions:
Matthews correlation is 0 when any marginal is empty, F1 is 0 when there are
no true positives, and a correlation with a constant input is 0.
"""

from typing import Dict, Mapping

import numpy as np

# Metrics reported per task; the first one is the task's headline score.
TASK_METRICS: Mapping[str, tuple] = {
  'cola': ('matthews_corr',),
  'sst2': ('accuracy',),
  'mrpc': ('f1', 'accuracy'),
  'qqp': ('f1', 'accuracy'),
  'stsb': ('pearson', 'spearman'),
  'mnli': ('accuracy',),
  'qnli': ('accuracy',),
  'rte': ('accuracy',),
  'wnli': ('accuracy',),
}


def _as_1d(name: str, x) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f'{name} must be a 1-D array, got shape {x.shape}.')
  return x


def _check_pair(predictions, references):
  predictions = _as_1d('predictions', predictions)
  references = _as_1d('references', references)
  if predictions.shape != references.shape:
    raise ValueError(
      f'predictions and references differ in length: {predictions.shape[0]}'
      f' vs {references.shape[0]}.'
    )
  if predictions.shape[0] == 0:
    raise ValueError('GLUE metrics need at least one example, got 0.')
  return predictions, references


def accuracy(predictions, references) -> float:
  """Fraction of predictions equal to the reference labels."""
  predictions, references = _check_pair(predictions, references)
  return float(np.mean(predictions == references))


def _confusion(predictions, references):
  predictions, references = _check_pair(predictions, references)
  pred = predictions.astype(np.int64) == 1
  ref = references.astype(np.int64) == 1
  tp = float(np.sum(pred & ref))
  tn = float(np.sum(~pred & ~ref))
  fp = float(np.sum(pred & ~ref))
  fn = float(np.sum(~pred & ref))
  return tp, tn, fp, fn


def f1(predictions, references) -> float:
  """F1 of the positive class (label 1) for binary labels."""
  tp, _, fp, fn = _confusion(predictions, references)
  if tp == 0:
    return 0.0
  return float(2 * tp / (2 * tp + fp + fn))


def matthews_corr(predictions, references) -> float:
  """Matthews correlation coefficient for binary labels (0 / 1)."""
  tp, tn, fp, fn = _confusion(predictions, references)
  denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
  if denominator == 0:
    return 0.0
  return float((tp * tn - fp * fn) / np.sqrt(denominator))


def pearson(predictions, references) -> float:
  """Pearson correlation coefficient of two real-valued arrays."""
  predictions, references = _check_pair(predictions, references)
  x = predictions.astype(np.float64) - np.mean(predictions, dtype=np.float64)
  y = references.astype(np.float64) - np.mean(references, dtype=np.float64)
  denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
  if denominator == 0:
    return 0.0
  return float(np.sum(x * y) / denominator)


def rankdata(x) -> np.ndarray:
  """1-based ranks of `x`, ties receiving the average of their ranks."""
  x = _as_1d('x', x)
  order = np.argsort(x, kind='stable')
  sorted_x = x[order]
  # Boundaries of runs of equal values in the sorted array.
  new_run = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
  run_id = np.cumsum(new_run) - 1  # [N]
  run_start = np.flatnonzero(new_run)  # [R]
  run_end = np.concatenate([run_start[1:], [x.shape[0]]])
  average_rank = (run_start + run_end + 1) / 2.0  # mean of start+1..end
  ranks = np.empty(x.shape[0], np.float64)
  ranks[order] = average_rank[run_id]
  return ranks


def spearman(predictions, references) -> float:
  """Spearman rank correlation (Pearson correlation of average ranks)."""
  predictions, references = _check_pair(predictions, references)
  return pearson(rankdata(predictions), rankdata(references))


_METRIC_FNS = {
  'accuracy': accuracy,
  'f1': f1,
  'matthews_corr': matthews_corr,
  'pearson': pearson,
  'spearman': spearman,
}


def task_metrics(task: str, predictions, references) -> Dict[str, float]:
  """All of a GLUE task's metrics, plus `score`, their mean (in [-1, 1]).

  Args:
    task: GLUE task name without the `glue/` prefix (`cola`, `mrpc`, ...).
    predictions: predicted class ids, or real values for `stsb`.
    references: reference labels.

  Returns:
    Mapping from metric name to value.
  """
  if task not in TASK_METRICS:
    raise ValueError(
      f'Unknown GLUE task {task!r}; expected one of {sorted(TASK_METRICS)}.'
    )
  results = {
    name: _METRIC_FNS[name](predictions, references) for name in TASK_METRICS[task]
  }
  results['score'] = float(np.mean(list(results.values())))
  return results
