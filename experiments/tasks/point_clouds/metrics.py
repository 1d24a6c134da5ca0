"""Classification metrics reported on ModelNet40: overall and mean per-class accuracy.

Shape glossary:
  N: evaluated examples; K: classes.
"""

from typing import Dict

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int):
  """`[K, K]` int64 counts, row = true class, column = predicted class."""
  labels = np.asarray(labels, np.int64).ravel()
  predictions = np.asarray(predictions, np.int64).ravel()
  if labels.shape != predictions.shape:
    raise ValueError(
      f'labels {labels.shape} and predictions {predictions.shape} differ in length.'
    )
  for name, values in (('labels', labels), ('predictions', predictions)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(
        f'{name} must lie in [0, {num_classes}), got values in '
        f'[{values.min()}, {values.max()}].'
      )
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels, predictions), 1)
  return matrix


def overall_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
  """Fraction of the N examples predicted correctly."""
  labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
  if labels.size == 0:
    raise ValueError('overall_accuracy of an empty set of examples.')
  return float(np.mean(labels == predictions))


def per_class_accuracy(
  labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> np.ndarray:
  """`[K]` recall of each class; NaN for a class with no examples."""
  matrix = confusion_matrix(labels, predictions, num_classes)
  support = matrix.sum(axis=1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(support > 0, np.diag(matrix) / support, np.nan)


def classification_summary(
  labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> Dict[str, float]:
  """`overall_accuracy`, `mean_class_accuracy` (mean recall over the classes present
  in `labels`) and `classes_present` (how many classes that mean is over)."""
  recall = per_class_accuracy(labels, predictions, num_classes)
  present = ~np.isnan(recall)
  return {
    'overall_accuracy': overall_accuracy(labels, predictions),
    'mean_class_accuracy': float(np.mean(recall[present])),
    'classes_present': float(present.sum()),
  }
