"""The generated copy task."""

import numpy as np
import pytest

from configs import perceiver_ar as perceiver_ar_config
from experiments.tasks.perceiver_ar import copy_task
from experiments.tasks.perceiver_ar import sequences


def test_sequences_are_mirrored():
  events = copy_task.mirrored_sequences(np.random.default_rng(0), 3, 10)
  assert events.shape == (3, 10)
  np.testing.assert_array_equal(events[:, 0], sequences.SOS_ID)
  np.testing.assert_array_equal(events[:, -1], sequences.EOS_ID)
  np.testing.assert_array_equal(events[:, 1:5], events[:, 5:9][:, ::-1])
  assert events[:, 1:9].min() >= 3 and events[:, 1:9].max() < 259
  # Target j predicts event j + 1: the mirrored half is targets [4, 8).
  assert copy_task.scored_targets(10) == (4, 8)
  with pytest.raises(ValueError, match='must be even'):
    copy_task.half_length(9)


def _config():
  config = perceiver_ar_config.get_config('copy_32')
  config.data.eval_sequences = 3
  return config


def test_training_crops_start_at_sos_and_keep_the_minimum():
  config = _config()
  batch = copy_task.train_batch(np.random.default_rng(1), 50, config=config)
  lengths = (batch['inputs'] > 0).sum(axis=1)
  assert lengths.min() >= config.data.minimum_crop_length and lengths.max() <= 31
  np.testing.assert_array_equal(batch['inputs'][:, 0], sequences.SOS_ID)
  for row, n in enumerate(lengths):
    np.testing.assert_array_equal(
      batch['targets'][row, : n - 1], batch['inputs'][row, 1:n]
    )
    np.testing.assert_array_equal(batch['input_idxs'][row, :n, 0], np.arange(1, n + 1))
    assert batch['weights'][row, :n].all() and not batch['weights'][row, n:].any()


def test_evaluation_scores_each_mirrored_target_once():
  config = _config()
  num, example = copy_task.eval_source('validation', config)
  assert num == 3  # One window of 16 targets per sequence covers the 15 mirrored ones.
  ex = example(1)
  n = int((ex['inputs'] > 0).sum())
  assert n == 30 and ex['weights'].sum() == 15
  scored = ex['weights'] > 0
  # Each scored target equals the input mirrored about the middle of the sequence.
  positions = np.nonzero(scored)[0]
  np.testing.assert_array_equal(ex['targets'][positions], ex['inputs'][30 - positions])
  test_num, test_example = copy_task.eval_source('test', config)
  assert not np.array_equal(test_example(1)['inputs'], ex['inputs'])
  config.evaluation.eval_block_size = 4
  num, example = copy_task.eval_source('validation', config)
  assert num == 3 * 4
  assert sum(example(i)['weights'].sum() for i in range(4)) == 15


def _curriculum_config():
  config = perceiver_ar_config.get_config('copy_32')
  config.data.update(
    sequence_length=66,
    max_context_length=66,
    minimum_crop_length=40,
    curriculum_contexts=(10, 16, 30),
    curriculum_stage_steps=3,
  )
  config.model.perceiver_ar.z_index_dim = 5
  return config


def test_curriculum_windows_hold_every_latents_source():
  config = _curriculum_config()
  h = copy_task.half_length(66)  # 32 random tokens, mirrored targets [32, 64).
  contexts = [copy_task.curriculum_context(config, step) for step in range(11)]
  assert contexts == [10, 10, 10, 16, 16, 16, 30, 30, 30, 0, 0]
  ends = set()
  for step, context in enumerate(contexts[:9]):
    batch = copy_task.train_batch(np.random.default_rng(step), 40, step, config=config)
    assert batch['inputs'].shape == (40, context)
    assert batch['input_idxs'].shape == (40, context, 1)
    for row in range(40):
      assert batch['inputs'][row].all() and batch['weights'][row].all()
      events = batch['input_idxs'][row, :, 0] - 1  # Positions count from 1.
      end = events[-1] + 1
      ends.add((context, int(end)))
      assert h + 5 <= end <= h + context // 2
      np.testing.assert_array_equal(events, np.arange(end - context, end))
      for i in range(context - 5, context):  # The 5 latents.
        # Input event e predicts event e + 1, a copy of event 2h - e: in the window.
        source = 2 * h - events[i]
        assert events[0] <= source <= events[i]
        assert batch['targets'][row, i] == batch['inputs'][row, source - events[0]]
  # Every allowed end occurs: [h + 5, h + C / 2] for each context.
  assert ends == {(c, e) for c in (10, 16, 30) for e in range(h + 5, h + c // 2 + 1)}
  after = copy_task.train_batch(np.random.default_rng(0), 40, 9, config=config)
  assert after['inputs'].shape == (40, 66)
  lengths = (after['inputs'] > 0).sum(axis=1)
  assert lengths.min() >= 40 and lengths.max() <= 65


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('curriculum_contexts', (10, 8), r'holds 8; each context must be an int in \[2 \* '),
    ('curriculum_contexts', (10, 66), r'holds 66; each context must be an int in'),
    ('curriculum_stage_steps', 0, 'curriculum_stage_steps=0 must be a positive int'),
  ],
)
def test_bad_curricula_are_named(field, value, message):
  config = _curriculum_config()
  config.data[field] = value
  with pytest.raises(ValueError, match=message):
    copy_task.check_curriculum(config)
  config = _curriculum_config()
  config.data.max_context_length = 20
  with pytest.raises(ValueError, match='holds 30, more than data.max_context_length=20'):
    copy_task.check_curriculum(config)
