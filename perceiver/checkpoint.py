"""Reading official checkpoints safely, and a pickle-free parameter format.

Official checkpoint files (spec section 4) are Python pickles of nested mappings of NumPy
arrays (Haiku `FlatMapping`s or dicts). Unpickling can run arbitrary code, so
`load_official_checkpoint` uses a restricted unpickler that admits only the container
and array types those files need and refuses anything else, naming the type.

This project's own format is an `.npz` file with one entry per array, keyed
`params/<module path>/<name>` and `state/<module path>/<name>`, e.g.
`params/perceiver_encoder/~/cross_attention/attention/linear/w`. It round-trips exactly,
including bfloat16 arrays, and needs no pickle to read (`np.load(allow_pickle=False)`).
"""

import collections
import io
import json
import os
import pickle
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple
import zipfile
import zlib

import numpy as np

Params = Dict[str, Dict[str, np.ndarray]]

_FORMAT_KEY = '__perceiver_npz__'
_FORMAT_VERSION = 1
_COLLECTIONS = ('params', 'state')


class UnsafeCheckpointError(pickle.UnpicklingError):
  """Raised when a checkpoint file references a type that is not allowed."""


def _mapping_to_dict(data=None):
  """Stand-in for Haiku's `FlatMapping(data)` / `frozendict(data)`: a plain dict."""
  if data is None:
    return {}
  if not isinstance(data, Mapping):
    raise UnsafeCheckpointError(
      f'Expected a mapping inside a Haiku FlatMapping, got {type(data).__name__}.'
    )
  return dict(data)


def _numpy_global(name):
  import numpy  # pylint: disable=import-outside-toplevel,reimported

  if name == '_reconstruct':
    try:
      from numpy._core.multiarray import _reconstruct  # pylint: disable=g-import-not-at-top
    except ImportError:
      from numpy.core.multiarray import _reconstruct  # pylint: disable=g-import-not-at-top
    return _reconstruct
  if name == 'scalar':
    try:
      from numpy._core.multiarray import scalar  # pylint: disable=g-import-not-at-top
    except ImportError:
      from numpy.core.multiarray import scalar  # pylint: disable=g-import-not-at-top
    return scalar
  return {'ndarray': numpy.ndarray, 'dtype': numpy.dtype}[name]


def _latin1_encode(text, encoding='latin1', errors='strict'):
  """Stand-in for `_codecs.encode`, which protocol-2 pickles use to store bytes."""
  if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
    raise UnsafeCheckpointError(
      f'Refusing _codecs.encode with encoding {encoding!r}: only latin1 is allowed.'
    )
  return text.encode('latin1', errors)


# (module, name) -> factory returning the object to use. Nothing else is importable.
_ALLOWED_GLOBALS = {
  ('numpy.core.multiarray', '_reconstruct'): lambda: _numpy_global('_reconstruct'),
  ('numpy._core.multiarray', '_reconstruct'): lambda: _numpy_global('_reconstruct'),
  ('numpy.core.multiarray', 'scalar'): lambda: _numpy_global('scalar'),
  ('numpy._core.multiarray', 'scalar'): lambda: _numpy_global('scalar'),
  ('numpy', 'ndarray'): lambda: np.ndarray,
  ('numpy', 'dtype'): lambda: np.dtype,
  ('collections', 'OrderedDict'): lambda: collections.OrderedDict,
  ('_codecs', 'encode'): lambda: _latin1_encode,
  ('haiku._src.data_structures', 'FlatMapping'): lambda: _mapping_to_dict,
  ('haiku._src.data_structures', 'FlatMap'): lambda: _mapping_to_dict,
  ('haiku._src.data_structures', 'frozendict'): lambda: _mapping_to_dict,
  ('haiku.data_structures', 'FlatMapping'): lambda: _mapping_to_dict,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only the globals in `_ALLOWED_GLOBALS`."""

  def find_class(self, module, name):
    factory = _ALLOWED_GLOBALS.get((module, name))
    if factory is None:
      raise UnsafeCheckpointError(
        f'Refusing to load {module}.{name}: checkpoint files may contain only nested '
        'mappings of NumPy arrays. The file is not an official Perceiver checkpoint, '
        'or it contains code; nothing from it was run.'
      )
    return factory()

  def persistent_load(self, pid):
    raise UnsafeCheckpointError(
      f'Refusing persistent id {pid!r}: not allowed in checkpoint files.'
    )


# Official checkpoints nest mappings 2-3 levels deep; anything far deeper is not one
# (and would exhaust Python's recursion limit).
_MAX_DEPTH = 32


def _to_plain(obj, path='<root>', depth=0):
  """Converts loaded containers to dicts of NumPy arrays, checking every leaf."""
  if depth > _MAX_DEPTH:
    raise UnsafeCheckpointError(
      f'Mappings nested more than {_MAX_DEPTH} levels deep (at {path[:200]}...): '
      'not a checkpoint of parameters.'
    )
  if isinstance(obj, Mapping):
    return {str(k): _to_plain(v, f'{path}/{k}', depth + 1) for k, v in obj.items()}
  if isinstance(obj, np.ndarray):
    if obj.dtype == object:
      raise UnsafeCheckpointError(f'Array at {path} has dtype object; refused.')
    return obj
  if isinstance(obj, (np.generic, int, float, bool)):
    return np.asarray(obj)
  raise UnsafeCheckpointError(
    f'Unexpected {type(obj).__name__} at {path}: checkpoint files may contain only '
    'nested mappings of NumPy arrays.'
  )


def safe_unpickle(data: bytes) -> Any:
  """Unpickles `data` allowing only mappings and NumPy arrays (see module docstring)."""
  return _RestrictedUnpickler(io.BytesIO(data)).load()


def load_official_checkpoint(path: str) -> Dict[str, Any]:
  """Loads an official Perceiver checkpoint (`.pystate` / `.pickle`) without running code.

  Args:
    path: the checkpoint file.

  Returns:
    The file's nested mapping as plain dicts of NumPy arrays: for the ImageNet
    classifiers `{'params': ..., 'state': ...}`, for the other models the params mapping
    `{module path: {name: array}}`.

  Raises:
    UnsafeCheckpointError: if the file references any type other than mappings and
      NumPy arrays (the offending type is named; nothing from the file is executed).
    ValueError: if the file is not a pickle of a mapping.
  """
  with open(path, 'rb') as f:
    data = f.read()
  try:
    obj = safe_unpickle(data)
  except UnsafeCheckpointError as e:
    raise UnsafeCheckpointError(f'{path!r}: {e}') from None
  except Exception as e:  # pylint: disable=broad-except  # Truncated or not a pickle.
    raise ValueError(
      f'{path!r} is not a readable checkpoint pickle: {type(e).__name__}: {e}'
    ) from None
  if not isinstance(obj, Mapping):
    raise ValueError(
      f'{path!r} holds a {type(obj).__name__}, expected a mapping of parameters.'
    )
  try:
    return _to_plain(obj)
  except UnsafeCheckpointError as e:
    raise UnsafeCheckpointError(f'{path!r}: {e}') from None


def split_params_and_state(checkpoint: Mapping[str, Any]) -> Tuple[Params, Params]:
  """`{'params': p, 'state': s}` -> `(p, s)`; a bare params mapping -> `(it, {})`."""
  if set(checkpoint.keys()) <= {'params', 'state'} and 'params' in checkpoint:
    return dict(checkpoint['params']), dict(checkpoint.get('state', {}))
  return dict(checkpoint), {}


def _flatten(collection: str, tree: Optional[Mapping[str, Mapping[str, Any]]]):
  flat = {}
  for module, entries in (tree or {}).items():
    if not isinstance(entries, Mapping):
      raise ValueError(
        f'{collection} must map module names to mappings of arrays; '
        f'{module!r} maps to a {type(entries).__name__}.'
      )
    for name, value in entries.items():
      flat[f'{collection}/{module}/{name}'] = np.asarray(value)
  return flat


def save_npz(path: str, params, state=None) -> None:
  """Saves Haiku params (and state) to `path` as `.npz`, atomically.

  Args:
    path: destination file (conventionally ending in `.npz`).
    params: `{module path: {name: array}}` (a Haiku params mapping).
    state: optional Haiku state mapping of the same form.
  """
  flat = {**_flatten('params', params), **_flatten('state', state)}
  dtypes = {}
  arrays = {}
  for key, value in flat.items():
    dtypes[key] = value.dtype.name
    if value.dtype.kind == 'V' or value.dtype.name == 'bfloat16':
      # np.savez cannot describe extension dtypes such as bfloat16: store the raw bits.
      value = value.view(np.dtype(f'u{value.dtype.itemsize}'))
    arrays[key] = value
  arrays[_FORMAT_KEY] = np.frombuffer(
    json.dumps({'version': _FORMAT_VERSION, 'dtypes': dtypes}).encode(), np.uint8
  )
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp.npz')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _npz_dtype(path: str, key: str, name: Any, stored: np.dtype) -> np.dtype:
  """The dtype `name` recorded for entry `key`, checked against the stored bits."""
  if not isinstance(name, str):
    raise ValueError(f'{path!r}: entry {key!r} has dtype {name!r}, not a dtype name.')
  if name == stored.name:
    return stored
  import ml_dtypes  # pylint: disable=import-outside-toplevel

  dtype = getattr(ml_dtypes, name, None)
  if not isinstance(dtype, type) or np.dtype(dtype).itemsize != stored.itemsize:
    raise ValueError(
      f'{path!r}: entry {key!r} records dtype {name!r}, which cannot be read from '
      f'its stored {stored.name} values.'
    )
  return np.dtype(dtype)


def load_npz(path: str) -> Tuple[Params, Params]:
  """Loads `(params, state)` saved by `save_npz` (nested dicts of NumPy arrays).

  Raises:
    ValueError: naming `path`, for any file that is not a complete parameter file of
      this format (not a zip, truncated, malformed metadata or entry names).
  """
  try:
    return _load_npz(path)
  except ValueError:
    raise
  except (OSError, EOFError, KeyError, TypeError, AttributeError, zlib.error) as e:
    raise ValueError(
      f'{path!r} is not a readable .npz parameter file: {type(e).__name__}: {e}'
    ) from None
  except zipfile.BadZipFile as e:
    raise ValueError(
      f'{path!r} is not a readable .npz parameter file (truncated or not a zip '
      f'archive): {e}'
    ) from None


def _load_npz(path: str) -> Tuple[Params, Params]:
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path!r} is not a readable .npz parameter file: {e}') from None
  with archive:
    if _FORMAT_KEY not in archive.files:
      raise ValueError(
        f'{path!r} is not a Perceiver parameter file (no {_FORMAT_KEY} entry).'
      )
    try:
      meta = json.loads(archive[_FORMAT_KEY].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f'{path!r} has unreadable {_FORMAT_KEY} metadata: {e}') from None
    dtypes = meta.get('dtypes', {}) if isinstance(meta, dict) else None
    if not isinstance(dtypes, dict):
      raise ValueError(f'{path!r} has malformed {_FORMAT_KEY} metadata: {meta!r:.200}')
    trees = {c: {} for c in _COLLECTIONS}
    for key in archive.files:
      if key == _FORMAT_KEY:
        continue
      parts = key.split('/')
      if len(parts) < 3 or parts[0] not in trees:
        raise ValueError(
          f'{path!r} has an entry {key!r}; entries are named '
          f'<{"|".join(_COLLECTIONS)}>/<module path>/<name>.'
        )
      collection, rest = key.split('/', 1)
      module, name = rest.rsplit('/', 1)
      try:
        value = archive[key]
      except ValueError as e:  # E.g. an object array, which would need a pickle.
        raise ValueError(
          f'{path!r}: entry {key!r} cannot be read without unpickling ({e}); '
          'parameter files hold numeric arrays only.'
        ) from None
      dtype = _npz_dtype(path, key, dtypes.get(key, value.dtype.name), value.dtype)
      if dtype != value.dtype:
        value = value.view(dtype)
      trees[collection].setdefault(module, {})[name] = value
  return trees['params'], trees['state']


def _array_from_jax(fun, args, array_state, aval_state):
  """Stand-in for JAX's array unpicklers: the NumPy array, without a device."""
  del aval_state
  value = fun(*args)
  if not isinstance(value, np.ndarray):
    raise UnsafeCheckpointError(f'A JAX array pickle built a {type(value).__name__}.')
  value.__setstate__(array_state)
  return value


class _OpaqueState(tuple):
  """Stand-in for the optimizer-state classes of a training snapshot (unused here)."""

  def __new__(cls, *args):
    return tuple.__new__(cls, args)


# Extra globals of the Perceiver AR release's training snapshots (jaxline + dill):
# JAX arrays (DeviceArray in JAX 0.3, Array later) and optax optimizer states.
_SNAPSHOT_GLOBALS = {
  ('jax._src.device_array', 'reconstruct_device_array'): lambda: _array_from_jax,
  ('jax._src.array', '_reconstruct_array'): lambda: _array_from_jax,
}
_SNAPSHOT_STATE_MODULES = ('optax._src.', 'optax.')


class _SnapshotUnpickler(_RestrictedUnpickler):
  def find_class(self, module, name):
    factory = _SNAPSHOT_GLOBALS.get((module, name))
    if factory is not None:
      return factory()
    if module.startswith(_SNAPSHOT_STATE_MODULES) and name.endswith('State'):
      return _OpaqueState
    return super().find_class(module, name)


PERCEIVER_AR_SNAPSHOT = 'checkpoint.dill'


def _snapshot_step(member: str) -> int:
  """The step of `.../step_<N>_<date>/checkpoint.dill` (-1 if not named so)."""
  folder = member.rsplit('/', 2)[-2] if member.count('/') else ''
  parts = folder.split('_')
  return (
    int(parts[1]) if len(parts) > 1 and parts[0] == 'step' and parts[1].isdigit() else -1
  )


def load_perceiver_ar_release(path: str) -> Tuple[Params, Params]:
  """Loads `(params, state)` from a checkpoint of the Perceiver AR release.

  The release (google-research/perceiver-ar) saves training snapshots as
  `<run>/models/<name>/step_<N>_<date>/checkpoint.dill`, dill pickles of
  `{'global_step', 'params', 'state', 'opt_state'}`, and publishes them zipped. This
  reads the snapshot with the highest step from the zip without running code from
  it: besides mappings and NumPy arrays, only JAX's array reconstructors (read as
  NumPy arrays) and optax state classes (skipped) are admitted.

  Raises:
    ValueError: no snapshot in the archive, or one without `params`.
    UnsafeCheckpointError: any other type in the snapshot (named).
  """
  with zipfile.ZipFile(path) as archive:
    members = [m for m in archive.namelist() if m.endswith(PERCEIVER_AR_SNAPSHOT)]
    if not members:
      raise ValueError(f'{path!r} holds no {PERCEIVER_AR_SNAPSHOT} snapshot.')
    member = max(members, key=lambda m: (_snapshot_step(m), m))
    data = archive.read(member)
  try:
    snapshot = _SnapshotUnpickler(io.BytesIO(data)).load()
  except UnsafeCheckpointError as e:
    raise UnsafeCheckpointError(f'{path!r} ({member}): {e}') from None
  except Exception as e:  # pylint: disable=broad-except  # Truncated or not a pickle.
    raise ValueError(
      f'{path!r} ({member}) is not a readable snapshot: {type(e).__name__}: {e}'
    ) from None
  if not isinstance(snapshot, Mapping) or 'params' not in snapshot:
    raise ValueError(f'{path!r} ({member}) holds no params.')
  try:
    params = _to_plain(snapshot['params'], 'params')
    state = _to_plain(snapshot.get('state') or {}, 'state')
  except UnsafeCheckpointError as e:
    raise UnsafeCheckpointError(f'{path!r} ({member}): {e}') from None
  return params, state


def load_params(path: str) -> Tuple[Params, Params]:
  """Loads `(params, state)` from this project's `.npz`, an official pickle file or
  a zipped Perceiver AR release snapshot."""
  with open(path, 'rb') as f:
    magic = f.read(4)
  if magic.startswith(b'PK'):  # .npz files and the Perceiver AR release are zips.
    try:
      with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    except zipfile.BadZipFile:
      names = []
    if any(n.endswith(PERCEIVER_AR_SNAPSHOT) for n in names):
      return load_perceiver_ar_release(path)
    return load_npz(path)
  return split_params_and_state(load_official_checkpoint(path))
