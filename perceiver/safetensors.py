"""Reading and writing the safetensors format with NumPy (no extra dependency).

A safetensors file (https://github.com/huggingface/safetensors) is:

  * 8 bytes: N, the length of the header, an unsigned little-endian 64-bit integer;
  * N bytes: a UTF-8 JSON object mapping each tensor name to
    `{"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}`, and
    optionally `"__metadata__"` to a string -> string mapping (transformers writes
    `{"format": "pt"}`); writers pad it with spaces to a multiple of 8 bytes;
  * the data: each tensor's bytes, C order, little-endian, at `[begin, end)` counted from
    the end of the header. Tensors must neither overlap nor leave gaps.

Nothing in the file is executed: unlike `pytorch_model.bin` (a pickle), reading one is
safe. Every inconsistency (a header longer than the file, an unknown dtype, a size that
does not match the shape, overlapping or missing bytes) raises a `SafetensorsError`
naming the file and the tensor.
"""

import json
import os
import struct
import tempfile
from typing import Dict, Mapping, Optional

import ml_dtypes
import numpy as np

# safetensors dtype names <-> NumPy dtypes (little-endian).
DTYPES = {
  'F64': np.dtype('<f8'),
  'F32': np.dtype('<f4'),
  'F16': np.dtype('<f2'),
  'BF16': np.dtype(ml_dtypes.bfloat16),
  'I64': np.dtype('<i8'),
  'I32': np.dtype('<i4'),
  'I16': np.dtype('<i2'),
  'I8': np.dtype('i1'),
  'U64': np.dtype('<u8'),
  'U32': np.dtype('<u4'),
  'U16': np.dtype('<u2'),
  'U8': np.dtype('u1'),
  'BOOL': np.dtype('?'),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# The safetensors library refuses headers larger than this; so do we.
MAX_HEADER_BYTES = 100_000_000
_METADATA_KEY = '__metadata__'


class SafetensorsError(ValueError):
  """A file is not a valid safetensors file (the message names file and tensor)."""


def _dtype_name(array: np.ndarray, name: str) -> str:
  dtype = array.dtype.newbyteorder('<') if array.dtype.byteorder == '>' else array.dtype
  if dtype not in _NAMES:
    raise SafetensorsError(
      f'tensor {name!r} has dtype {array.dtype}, which safetensors cannot store; '
      f'supported: {sorted(DTYPES)}.'
    )
  return _NAMES[dtype]


def read_header(path: str) -> Dict:
  """The parsed JSON header of the safetensors file `path` (no tensor data is read).

  Raises:
    SafetensorsError: a truncated file or a header that is not a JSON object.
  """
  return _read_header(path)[0]


def _read_header(path: str):
  """`(header, offset of the data)` of the safetensors file `path`."""
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    prefix = f.read(8)
    if len(prefix) < 8:
      raise SafetensorsError(f'{path}: {size} bytes, too short for a safetensors file.')
    (length,) = struct.unpack('<Q', prefix)
    if length > min(MAX_HEADER_BYTES, size - 8):
      raise SafetensorsError(
        f'{path}: the header claims {length} bytes, but the file has {size - 8} after '
        'the length prefix (not a safetensors file, or truncated).'
      )
    raw = f.read(length)
  try:
    header = json.loads(raw.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise SafetensorsError(f'{path}: the header is not UTF-8 JSON ({e}).') from e
  if not isinstance(header, dict):
    raise SafetensorsError(f'{path}: the header is not a JSON object.')
  return header, 8 + length


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
  """All tensors of the safetensors file `path`, as NumPy arrays (own copies).

  Raises:
    SafetensorsError: see the module docstring.
  """
  header, data_start = _read_header(path)
  data_size = os.path.getsize(path) - data_start
  entries = []
  for name, info in header.items():
    if name == _METADATA_KEY:
      continue
    try:
      dtype = DTYPES[info['dtype']]
      shape = tuple(int(d) for d in info['shape'])
      begin, end = (int(o) for o in info['data_offsets'])
    except (KeyError, TypeError, ValueError) as e:
      raise SafetensorsError(
        f'{path}: tensor {name!r} has a malformed header entry {info!r} '
        f'(dtype one of {sorted(DTYPES)}, shape, data_offsets).'
      ) from e
    if any(d < 0 for d in shape):
      raise SafetensorsError(f'{path}: tensor {name!r} has a negative dimension {shape}.')
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not 0 <= begin <= end or end - begin != expected:
      raise SafetensorsError(
        f'{path}: tensor {name!r} ({info["dtype"]}, shape {list(shape)}) needs '
        f'{expected} bytes but its data_offsets are [{begin}, {end}].'
      )
    entries.append((begin, end, name, dtype, shape))
  entries.sort()
  position = 0
  for begin, end, name, _, _ in entries:
    if begin != position:
      kind = 'overlaps the previous tensor' if begin < position else 'leaves a gap'
      raise SafetensorsError(f'{path}: tensor {name!r} at byte {begin} {kind}.')
    position = end
  if position != data_size:
    raise SafetensorsError(
      f'{path}: the tensors cover {position} bytes of data but the file holds '
      f'{data_size} (truncated, or trailing bytes).'
    )
  tensors = {}
  if not entries:
    return tensors
  data = np.memmap(path, dtype=np.uint8, mode='r', offset=data_start, shape=(data_size,))
  try:
    for begin, end, name, dtype, shape in entries:
      tensors[name] = np.array(data[begin:end].view(dtype).reshape(shape))
  finally:
    del data
  return tensors


def write_safetensors(
  path: str,
  tensors: Mapping[str, np.ndarray],
  metadata: Optional[Mapping[str, str]] = None,
) -> None:
  """Writes `tensors` to the safetensors file `path` (atomically: a temporary file in
  the same folder is renamed into place once complete).

  Tensors are stored in name order, each in C order and little-endian; the header is
  padded with spaces to a multiple of 8 bytes, as the safetensors library does.

  Args:
    path: the file to write.
    tensors: name -> array (any dtype of `DTYPES`).
    metadata: string -> string pairs stored as `__metadata__` (transformers expects
      `{'format': 'pt'}`).

  Raises:
    SafetensorsError: a dtype safetensors cannot store, or a name `__metadata__`.
  """
  header = {}
  arrays = []
  offset = 0
  for name in sorted(tensors):
    if name == _METADATA_KEY:
      raise SafetensorsError(f'{path}: {_METADATA_KEY!r} cannot name a tensor.')
    array = np.asarray(tensors[name])
    dtype_name = _dtype_name(array, name)
    array = np.asarray(array, dtype=DTYPES[dtype_name], order='C')
    header[name] = {
      'dtype': dtype_name,
      'shape': list(array.shape),
      'data_offsets': [offset, offset + array.nbytes],
    }
    offset += array.nbytes
    arrays.append(array)
  if metadata:
    bad = {k: v for k, v in metadata.items() if not isinstance(v, str)}
    if bad or not all(isinstance(k, str) for k in metadata):
      raise SafetensorsError(f'{path}: metadata must map strings to strings, got {bad}.')
    header = {_METADATA_KEY: dict(metadata), **header}
  raw = json.dumps(header, separators=(',', ':')).encode('utf-8')
  raw += b' ' * (-len(raw) % 8)
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp_', suffix='.safetensors')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(struct.pack('<Q', len(raw)))
      f.write(raw)
      for array in arrays:
        f.write(array.tobytes(order='C'))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
