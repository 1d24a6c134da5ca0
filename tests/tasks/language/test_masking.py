"""Tests of whole-word masking (experiments/tasks/language/masking.py), eagerly and in tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from experiments.tasks.language import corpora as text_input
from experiments.tasks.language import masking as text_masking

MASK = text_masking.MASK_ID
R = text_masking.NUM_RESERVED


def _ids(text: bytes) -> np.ndarray:
  return np.frombuffer(text, np.uint8).astype(np.int32) + R


def _packed_fake_text(num_sequences=96, seq_len=257):
  documents = text_input.fake_documents(seed=3, count=400)
  sequences = list(text_input.pack_documents(documents, seq_len, packing='pack'))
  ids = np.stack([s[0] for s in sequences[:num_sequences]])
  return ids


def test_word_units_by_hand():
  # "ab cd\n e" EOS PAD PAD: units "ab", " cd", "\n e"; then nothing.
  ids = np.concatenate([_ids(b'ab cd\n e'), [2, 0, 0]]).astype(np.int32)
  units = text_masking.word_units(ids)
  np.testing.assert_array_equal(
    units['unit_start'].numpy().astype(int), [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
  )
  np.testing.assert_array_equal(units['unit_id'].numpy()[:8], [0, 0, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(units['is_text'].numpy().astype(int), [1] * 8 + [0] * 3)


def test_units_restart_after_special_tokens():
  # "ab" EOS "cd": "cd" starts a new unit although no space precedes it.
  ids = np.concatenate([_ids(b'ab'), [2], _ids(b'cd')]).astype(np.int32)
  starts = text_masking.word_units(ids)['unit_start'].numpy().astype(int)
  np.testing.assert_array_equal(starts, [1, 0, 0, 1, 0])


def _unit_spans(ids_row):
  """[start, end) of every unit, computed independently of the module."""
  spans, start = [], None
  space = set(b + R for b in text_masking.WHITESPACE_BYTES)
  for i, t in enumerate(ids_row):
    is_text = t >= R
    prev = ids_row[i - 1] if i else 0
    begins = is_text and (i == 0 or prev < R or (t in space and prev not in space))
    if (begins or not is_text) and start is not None:
      spans.append((start, i))
      start = None
    if begins:
      start = i
  if start is not None:
    spans.append((start, len(ids_row)))
  return spans


def test_masking_statistics_on_values():
  ids = _packed_fake_text()
  out = text_masking.whole_word_mask(ids, tf.constant([7, 11]), mask_rate=0.15)
  inputs, weights = out['inputs'].numpy(), out['weights'].numpy()
  selected = mask_units = random_units = kept_units = 0
  total_units = 0
  for row in range(ids.shape[0]):
    for a, b in _unit_spans(ids[row]):
      total_units += 1
      w = weights[row, a:b]
      assert w.min() == w.max(), 'a unit is masked only partly'
      if w[0] == 0:
        np.testing.assert_array_equal(inputs[row, a:b], ids[row, a:b])
        continue
      selected += 1
      got = inputs[row, a:b]
      if np.all(got == MASK):
        mask_units += 1
      elif np.array_equal(got, ids[row, a:b]):
        kept_units += 1
      else:
        random_units += 1
        assert got.min() >= R and got.max() < text_masking.VOCAB_SIZE
  # Nothing outside units (EOS, PAD) is ever weighted or changed.
  special = ids < R
  assert weights[special].sum() == 0
  np.testing.assert_array_equal(inputs[special], ids[special])
  assert total_units > 3000
  assert abs(selected / total_units - 0.15) < 0.02
  assert abs(mask_units / selected - 0.8) < 0.05
  assert abs(random_units / selected - 0.1) < 0.04
  assert abs(kept_units / selected - 0.1) < 0.04
  # The fraction of masked bytes follows the unit rate.
  assert abs(weights.sum() / (ids >= R).sum() - 0.15) < 0.03


def test_masked_runs_are_whole_words():
  ids = _packed_fake_text(num_sequences=8)
  weights = text_masking.whole_word_mask(ids, tf.constant([1, 2]), mask_rate=0.3)[
    'weights'
  ].numpy()
  for row in range(ids.shape[0]):
    starts = {a for a, _ in _unit_spans(ids[row])}
    ends = {b for _, b in _unit_spans(ids[row])}
    masked = np.concatenate([[0], weights[row], [0]])
    run_starts = np.flatnonzero(np.diff(masked) == 1)
    run_ends = np.flatnonzero(np.diff(masked) == -1)
    assert set(run_starts) <= starts
    assert set(run_ends) <= ends


def test_mask_rate_extremes_and_padding():
  ids = np.concatenate([_ids(b'one two three'), [2], [0] * 6]).astype(np.int32)
  none = text_masking.whole_word_mask(ids, tf.constant([0, 1]), mask_rate=0.0)
  assert none['weights'].numpy().sum() == 0
  np.testing.assert_array_equal(none['inputs'].numpy(), ids)
  every = text_masking.whole_word_mask(
    ids, tf.constant([0, 1]), mask_rate=1.0, mask_token_prob=1.0, random_token_prob=0.0
  )
  np.testing.assert_array_equal(every['weights'].numpy(), (ids >= R).astype(float))
  np.testing.assert_array_equal(every['inputs'].numpy(), np.where(ids >= R, MASK, ids))


def test_deterministic_and_same_in_tf_data():
  ids = _packed_fake_text(num_sequences=5, seq_len=64)
  seeds = [text_masking.example_seed(9, i) for i in range(5)]
  eager = [text_masking.whole_word_mask(ids[i], seeds[i]) for i in range(5)]
  again = text_masking.whole_word_mask(ids[2], text_masking.example_seed(9, 2))
  np.testing.assert_array_equal(again['inputs'].numpy(), eager[2]['inputs'].numpy())
  ds = (
    tf.data.Dataset.from_tensor_slices(ids)
    .enumerate()
    .map(lambda i, x: text_masking.whole_word_mask(x, text_masking.example_seed(9, i)))
  )
  for i, out in enumerate(ds.as_numpy_iterator()):
    np.testing.assert_array_equal(out['inputs'], eager[i]['inputs'].numpy())
    np.testing.assert_array_equal(out['weights'], eager[i]['weights'].numpy())
  others = [
    text_masking.whole_word_mask(ids[i], text_masking.example_seed(10, i))
    for i in range(5)
  ]
  assert not np.array_equal(
    np.stack([o['weights'].numpy() for o in others]),
    np.stack([e['weights'].numpy() for e in eager]),
  )


@pytest.mark.parametrize(
  'kwargs',
  [
    dict(mask_rate=1.5),
    dict(mask_token_prob=0.95, random_token_prob=0.1),
    dict(random_token_prob=-0.1),
  ],
)
def test_bad_probabilities_raise(kwargs):
  with pytest.raises(ValueError, match='mask_rate|mask_token_prob'):
    text_masking.whole_word_mask(
      np.array([7, 8], np.int32), tf.constant([0, 0]), **kwargs
    )
