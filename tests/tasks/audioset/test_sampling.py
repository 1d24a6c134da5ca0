"""Class-balanced sampling weights and the training order."""

import numpy as np
import pytest

from experiments.tasks.audioset import sampling
from experiments.training import array_data


def test_class_balanced_weights_by_hand():
  # Class counts: c0 = 3, c1 = 1, c2 = 2.
  labels = np.array([[1, 0, 0], [1, 0, 1], [1, 1, 0], [0, 0, 1], [0, 0, 0]])
  w = sampling.class_balanced_weights(labels)
  raw = np.array([1 / 3, 1 / 3 + 1 / 2, 1 / 3 + 1, 1 / 2, 0])  # Sum 3 (one per class).
  np.testing.assert_allclose(w, raw / 3)
  np.testing.assert_allclose(
    sampling.class_balanced_weights(labels, power=0.0), np.array([1, 2, 2, 1, 0]) / 6
  )


def test_weighted_draws_follow_the_weights_and_are_reproducible():
  weights = np.array([0.7, 0.1, 0.2])
  draws = np.concatenate(
    [
      sampling.train_indices(s, num_examples=3, global_batch=500, seed=1, weights=weights)
      for s in range(20)
    ]
  )
  np.testing.assert_allclose(np.bincount(draws) / len(draws), weights, atol=0.02)
  a = sampling.train_indices(7, num_examples=3, global_batch=5, seed=1, weights=weights)
  b = sampling.train_indices(7, num_examples=3, global_batch=5, seed=1, weights=weights)
  np.testing.assert_array_equal(a, b)


def test_unweighted_order_is_the_epoch_permutation():
  got = np.concatenate(
    [sampling.train_indices(s, num_examples=7, global_batch=3, seed=5) for s in range(7)]
  )  # 21 draws = 3 epochs of 7.
  want = np.concatenate([array_data.epoch_permutation(5, e, 7) for e in range(3)])
  np.testing.assert_array_equal(got, want)


def test_errors():
  with pytest.raises(ValueError, match='no clip has a label'):
    sampling.class_balanced_weights(np.zeros((3, 2)))
  with pytest.raises(ValueError, match='no clips'):
    sampling.train_indices(0, num_examples=0, global_batch=2, seed=0)
