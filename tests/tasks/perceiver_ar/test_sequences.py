"""Token layout, windows and batching of the Perceiver AR family."""

import numpy as np
import pytest

from experiments.tasks.perceiver_ar import sequences


def test_bytes_round_trip_and_reserved_ids():
  tokens = sequences.encode_bytes('aé'.encode())
  np.testing.assert_array_equal(tokens, [97 + 3, 0xC3 + 3, 0xA9 + 3])
  with_reserved = np.concatenate([[sequences.SOS_ID], tokens, [sequences.EOS_ID, 0]])
  assert sequences.decode_tokens(with_reserved) == 'aé'.encode()


def test_example_by_hand():
  events = np.array([2, 10, 11, 12, 13, 1], np.int32)
  positions = sequences.linear_positions(6)
  ex = sequences.example(events, positions, start=1, end=4, context=5, score=(2, 9))
  np.testing.assert_array_equal(ex['inputs'], [10, 11, 12, 0, 0])
  np.testing.assert_array_equal(ex['targets'], [11, 12, 13, 0, 0])
  np.testing.assert_array_equal(ex['input_idxs'][:, 0], [2, 3, 4, 0, 0])
  # Targets 2 and 3 (of the whole sequence) are scored: window slots 1 and 2.
  np.testing.assert_array_equal(ex['weights'], [0, 1, 1, 0, 0])
  with pytest.raises(ValueError, match=r'Window \[0, 6\) of 6 events'):
    sequences.example(events, positions, start=0, end=6, context=8)
  with pytest.raises(ValueError, match='does not fit a context of 3'):
    sequences.example(events, positions, start=0, end=4, context=3)


def test_eval_windows_score_each_target_once_with_full_context():
  windows = sequences.eval_windows(10, context=6, block=4, first=1)
  assert windows == [(0, 5, (1, 5)), (3, 9, (5, 9)), (4, 10, (9, 10))]
  scored = [t for _, _, (a, b) in windows for t in range(a, b)]
  assert scored == list(range(1, 10))
  for start, end, (first, last) in windows:
    assert end == last and end - start == min(6, end)
  with pytest.raises(ValueError, match='eval_block_size=7'):
    sequences.eval_windows(10, context=6, block=7)


def test_eval_batches_pad_and_split_hosts():
  def example(i):
    return {'x': np.array([i, i], np.int32)}

  one = list(
    sequences.eval_batches(
      5, example, batch_dims=[1, 2], process_index=0, process_count=1
    )
  )
  assert len(one) == 3
  np.testing.assert_array_equal(
    np.concatenate([b['x'][0, :, 0] for b in one]), [0, 1, 2, 3, 4, 0]
  )
  np.testing.assert_array_equal(
    np.concatenate([b['mask'].ravel() for b in one]), [1, 1, 1, 1, 1, 0]
  )
  # Two hosts: global batches of 4, host 1 takes the second half of each.
  two = list(
    sequences.eval_batches(5, example, batch_dims=[2], process_index=1, process_count=2)
  )
  assert len(two) == 2
  np.testing.assert_array_equal(two[0]['x'][:, 0], [2, 3])
  np.testing.assert_array_equal(two[1]['mask'], [0, 0])


def test_training_batches_are_a_function_of_the_step():
  def make(rng, num, step):
    return {'x': rng.integers(0, 1000, size=(num, 3)), 'step': np.full([num], step)}

  fresh = sequences.batches_forever(make, batch_dims=[1, 2], seed=3, start_step=0, host=0)
  first, second = next(fresh), next(fresh)
  resumed = next(
    sequences.batches_forever(make, batch_dims=[1, 2], seed=3, start_step=1, host=0)
  )
  np.testing.assert_array_equal(resumed['x'], second['x'])
  np.testing.assert_array_equal(resumed['step'], [[1, 1]])
  assert first['x'].shape == (1, 2, 3)
  other_host = next(
    sequences.batches_forever(make, batch_dims=[1, 2], seed=3, start_step=0, host=1)
  )
  assert not np.array_equal(other_host['x'], first['x'])
