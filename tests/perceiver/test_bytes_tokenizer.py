"""Tests for perceiver.bytes_tokenizer."""

import numpy as np
import pytest

from perceiver import bytes_tokenizer


def test_ids_are_bytes_shifted_by_six():
  tok = bytes_tokenizer.BytesTokenizer()
  ids = tok.to_int('Hé!')
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, [72 + 6, 0xC3 + 6, 0xA9 + 6, 33 + 6])
  np.testing.assert_array_equal(tok.to_int(b'\x00\xff'), [6, 261])
  assert tok.vocab_size == 262
  assert (
    tok.pad_token,
    tok.bos_token,
    tok.eos_token,
    tok.mask_token,
    tok.cls_token,
    tok.sep_token,
  ) == (0, 1, 2, 3, 4, 5)


def test_round_trip_and_reserved_ids_dropped():
  tok = bytes_tokenizer.BytesTokenizer()
  text = 'Perceiver IO reads bytes: 日本語 ✓'
  ids = tok.to_int(text)
  assert tok.to_string(ids) == text
  with_special = np.concatenate([[1, 4], ids[:5], [3, 3, 5], ids[5:], [2, 0, 0]])
  assert tok.to_string(with_special) == text
  # A split multi-byte character decodes with the replacement character.
  assert tok.to_string(tok.to_int('日')[:2]) == '\ufffd'


def test_errors():
  tok = bytes_tokenizer.BytesTokenizer()
  with pytest.raises(ValueError, match='str or bytes'):
    tok.to_int(123)
  with pytest.raises(ValueError, match=r'id 300 outside \[0, 262\)'):
    tok.to_string(np.array([300]))
  # Negative ids are never read as bytes (NumPy would wrap -3 to the byte 0xFF).
  with pytest.raises(ValueError, match=r'id -3 outside \[0, 262\) \(1 such id'):
    tok.to_string([70, -3, 71])
