"""The NumPy safetensors reader and writer, against a file the `safetensors` package wrote.

`data/safetensors/reference.safetensors` was written by `safetensors.torch.save_file`
(data/safetensors/generate.py); the transformers checkpoints of
tests/inference/test_huggingface.py are read with the same reader. Malformed files must
be refused with a message naming the file and the tensor.
"""

import importlib.util
import json
import os
import struct

import ml_dtypes
import numpy as np
import pytest

from perceiver import safetensors

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'safetensors')
REFERENCE = os.path.join(DATA_DIR, 'reference.safetensors')


def _expected():
  spec = importlib.util.spec_from_file_location(
    'safetensors_generate', os.path.join(DATA_DIR, 'generate.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.expected_tensors(ml_dtypes.bfloat16), module.METADATA


def _assert_same(got, want):
  """Same names, dtypes, shapes and bytes."""
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].dtype == want[name].dtype, name
    assert got[name].shape == want[name].shape, name
    assert got[name].tobytes() == np.ascontiguousarray(want[name]).tobytes(), name


def test_reads_the_reference_writers_file():
  want, metadata = _expected()
  _assert_same(safetensors.read_safetensors(REFERENCE), want)
  assert safetensors.read_header(REFERENCE)['__metadata__'] == metadata


def test_round_trip_is_exact(tmp_path):
  want, _ = _expected()
  want['zero_dim'] = np.array(-3.25, np.float32)
  want['big_endian'] = np.arange(3, dtype='>f4')  # Stored little-endian.
  path = str(tmp_path / 'a.safetensors')
  safetensors.write_safetensors(path, want, metadata={'format': 'pt'})
  got = safetensors.read_safetensors(path)
  assert got['big_endian'].dtype == np.dtype('<f4')
  np.testing.assert_array_equal(got.pop('big_endian'), np.arange(3))
  want.pop('big_endian')
  _assert_same(got, want)
  assert safetensors.read_header(path)['__metadata__'] == {'format': 'pt'}
  # The header is padded to 8 bytes and the file holds nothing else.
  with open(path, 'rb') as f:
    (length,) = struct.unpack('<Q', f.read(8))
  assert length % 8 == 0
  nbytes = sum(np.asarray(v).nbytes for v in want.values()) + 3 * 4
  assert os.path.getsize(path) == 8 + length + nbytes
  assert os.listdir(tmp_path) == ['a.safetensors']  # No temporary file left.


def _write_raw(path, header, data=b'', length=None):
  raw = json.dumps(header).encode()
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(raw) if length is None else length))
    f.write(raw)
    f.write(data)
  return str(path)


@pytest.mark.parametrize(
  'header, data, length, match',
  [
    (
      {'w': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}},
      b'\0' * 4,
      None,
      r'cover 8 bytes of data but the file holds 4',
    ),
    (
      {'w': {'dtype': 'F32', 'shape': [3], 'data_offsets': [0, 8]}},
      b'\0' * 8,
      None,
      r"tensor 'w' \(F32, shape \[3\]\) needs 12 bytes but its data_offsets are \[0, 8\]",
    ),
    (
      {'w': {'dtype': 'C64', 'shape': [1], 'data_offsets': [0, 8]}},
      b'\0' * 8,
      None,
      r"tensor 'w' has a malformed header entry",
    ),
    (
      {
        'a': {'dtype': 'U8', 'shape': [4], 'data_offsets': [0, 4]},
        'b': {'dtype': 'U8', 'shape': [4], 'data_offsets': [2, 6]},
      },
      b'\0' * 6,
      None,
      r"tensor 'b' at byte 2 overlaps the previous tensor",
    ),
    (
      {'a': {'dtype': 'U8', 'shape': [2], 'data_offsets': [2, 4]}},
      b'\0' * 4,
      None,
      r"tensor 'a' at byte 2 leaves a gap",
    ),
    (
      {'a': {'dtype': 'U8', 'shape': [2], 'data_offsets': [0, 2]}},
      b'\0' * 5,
      None,
      r'cover 2 bytes of data but the file holds 5',
    ),
    ({}, b'', 10_000, r'the header claims 10000 bytes'),
  ],
)
def test_malformed_files_are_refused(tmp_path, header, data, length, match):
  path = _write_raw(tmp_path / 'bad.safetensors', header, data, length)
  with pytest.raises(safetensors.SafetensorsError, match=match) as info:
    safetensors.read_safetensors(path)
  assert path in str(info.value)


def test_not_json_and_too_short(tmp_path):
  path = tmp_path / 'short.safetensors'
  path.write_bytes(b'\1\2')
  with pytest.raises(safetensors.SafetensorsError, match='too short'):
    safetensors.read_safetensors(str(path))
  path.write_bytes(struct.pack('<Q', 4) + b'[1,2')
  with pytest.raises(safetensors.SafetensorsError, match='not UTF-8 JSON'):
    safetensors.read_safetensors(str(path))
  path.write_bytes(struct.pack('<Q', 2) + b'[]')
  with pytest.raises(safetensors.SafetensorsError, match='not a JSON object'):
    safetensors.read_safetensors(str(path))


def test_writer_refuses_what_safetensors_cannot_store(tmp_path):
  path = str(tmp_path / 'x.safetensors')
  with pytest.raises(safetensors.SafetensorsError, match=r"'c' has dtype complex64"):
    safetensors.write_safetensors(path, {'c': np.zeros(2, np.complex64)})
  with pytest.raises(safetensors.SafetensorsError, match='cannot name a tensor'):
    safetensors.write_safetensors(path, {'__metadata__': np.zeros(2)})
  with pytest.raises(safetensors.SafetensorsError, match='metadata must map strings'):
    safetensors.write_safetensors(path, {'a': np.zeros(2)}, metadata={'n': 1})
  assert os.listdir(tmp_path) == []
