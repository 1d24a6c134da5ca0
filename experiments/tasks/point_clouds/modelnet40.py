"""Readers for ModelNet40: the `modelnet40_ply_hdf5_2048` files and the original meshes.

`modelnet40_h5` (the widely used PointNet release): a folder with
  `ply_data_train0.h5, ply_data_train1.h5, ...`, `ply_data_test0.h5, ...`: HDF5 files
  with datasets `data` `[N, 2048, 3]` float32 (clouds already centred and scaled into
  the unit sphere) and `label` `[N, 1]` integer class ids (other datasets, e.g.
  `normal` or `faceId`, are ignored);
  `shape_names.txt`: the class names, one a line, in class-id order.

`modelnet40_off` (the original Princeton meshes): a folder with one sub-folder per
  class, `<class>/train/<class>_NNNN.off` and `<class>/test/<class>_NNNN.off`; class
  ids follow the sorted class names (the order of `shape_names.txt`). Each mesh is
  read from the OFF format (polygons fanned into triangles) and sampled on its surface
  by area (`shapes.sample_surface`), P points per mesh with a generator seeded by
  `(seed, crc32(relative path))`. The samples of a split are cached in one `.npz` file
  and reused while the mesh files (names, sizes, modification times) are unchanged.

Shape glossary:
  N: clouds; P: points per cloud; V: vertices; F: triangles.
"""

import glob
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple
import zlib

import numpy as np

from experiments.tasks.point_clouds import shapes
from experiments.training import errors

SPLITS = ('train', 'test')
SHAPE_NAMES_FILE = 'shape_names.txt'
NUM_CLASSES = 40


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {SPLITS}.')


def read_shape_names(data_dir: str) -> List[str]:
  """The class names of `<data_dir>/shape_names.txt`, one a line (blank lines skipped)."""
  path = os.path.join(data_dir, SHAPE_NAMES_FILE)
  if not os.path.isfile(path):
    raise errors.DataError(
      f'{path} not found: data.data_dir={data_dir!r} must hold the class names file '
      f'{SHAPE_NAMES_FILE} of modelnet40_ply_hdf5_2048.'
    )
  with open(path, encoding='utf-8') as f:
    names = [line.strip() for line in f if line.strip()]
  if not names or len(set(names)) != len(names):
    raise errors.DataError(
      f'{path}: expected distinct class names, one a line, got {names}.'
    )
  return names


def h5_files(data_dir: str, split: str) -> List[str]:
  """`<data_dir>/ply_data_<split>*.h5`, ordered by their number (train0, train1, ...)."""
  _check_split(split)
  pattern = os.path.join(data_dir, f'ply_data_{split}*.h5')
  paths = glob.glob(pattern)
  if not paths:
    raise errors.DataError(
      f'no file matches {pattern}: data.data_dir={data_dir!r} must hold the '
      'modelnet40_ply_hdf5_2048 files.'
    )

  def number(path):
    digits = re.findall(r'(\d+)\.h5$', os.path.basename(path))
    return (int(digits[0]) if digits else -1, path)

  return sorted(paths, key=number)


def read_h5(path: str, num_classes: int) -> Dict[str, np.ndarray]:
  """One HDF5 file: `points` `[N, P, 3]` float32 and `labels` `[N]` int32.

  Raises:
    ValueError, naming the file: not an HDF5 file, no `data` or `label` dataset,
    wrong shapes, different lengths, or a label outside `[0, num_classes)`.
  """
  h5py = errors.import_optional(
    'h5py', extra='pointclouds', purpose='Reading ModelNet40 HDF5 files'
  )

  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise errors.DataError(f'{path}: cannot be read as an HDF5 file ({e}).') from e
  with f:
    missing = [key for key in ('data', 'label') if key not in f]
    if missing:
      raise errors.DataError(
        f'{path}: no dataset {missing} (it has {sorted(f.keys())}); expected `data` '
        '[N, P, 3] and `label` [N, 1].'
      )
    points = np.asarray(f['data'][()])
    labels = np.asarray(f['label'][()])
  if (
    points.ndim != 3
    or points.shape[-1] != 3
    or not np.issubdtype(points.dtype, np.floating)
  ):
    raise errors.DataError(
      f'{path}: dataset `data` must be floating point [N, P, 3], got '
      f'{points.dtype} {points.shape}.'
    )
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise errors.DataError(
      f'{path}: dataset `label` must be integer [N, 1] or [N], got '
      f'{labels.dtype} {labels.shape}.'
    )
  if len(labels) != len(points):
    raise errors.DataError(
      f'{path}: `data` holds {len(points)} clouds but `label` {len(labels)} labels.'
    )
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    raise errors.DataError(
      f'{path}: label {int(labels[bad[0]])} of cloud {int(bad[0])} is not a class id '
      f'in [0, {num_classes}) ({num_classes} names in {SHAPE_NAMES_FILE}); '
      f'{bad.size} such labels.'
    )
  if not np.all(np.isfinite(points)):
    raise errors.DataError(f'{path}: `data` contains NaN or infinite coordinates.')
  return {'points': points.astype(np.float32), 'labels': labels.astype(np.int32)}


def read_h5_split(data_dir: str, split: str) -> Dict[str, np.ndarray]:
  """All clouds of `split`, the files concatenated in order (see `h5_files`)."""
  num_classes = len(read_shape_names(data_dir))
  parts = [read_h5(path, num_classes) for path in h5_files(data_dir, split)]
  sizes = {p['points'].shape[1] for p in parts}
  if len(sizes) != 1:
    raise errors.DataError(
      f'the {split} files of {data_dir} hold clouds of different sizes {sorted(sizes)}.'
    )
  return {k: np.concatenate([p[k] for p in parts]) for k in ('points', 'labels')}


def read_off(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """A mesh in the OFF format: vertices `[V, 3]` float64 and triangles `[F, 3]` int64.

  The header is `OFF`, then `V F E`; ModelNet40's files where the counts follow `OFF`
  on the same line (`OFF490 518 0`) are accepted. `#` starts a comment. Each face
  line is `n i_1 ... i_n [colour]`; polygons are fanned into `n - 2` triangles.

  Raises:
    ValueError, naming the file: no `OFF` header, bad counts, missing lines, a face
    with fewer than 3 vertices or an index out of range, or no faces.
  """
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = [line.split('#', 1)[0].strip() for line in f]
  lines = [line for line in lines if line]
  if not lines or not lines[0].startswith('OFF'):
    first = lines[0][:40] if lines else '(empty file)'
    raise errors.DataError(f'{path}: not an OFF file (first line {first!r}).')
  header = lines[0][3:].split()
  body = lines[1:]
  if not header:
    if not body:
      raise errors.DataError(f'{path}: OFF header has no vertex/face counts.')
    header, body = body[0].split(), body[1:]
  try:
    num_vertices, num_faces = int(header[0]), int(header[1])
  except (IndexError, ValueError) as e:
    raise errors.DataError(
      f'{path}: bad OFF counts {header!r} (expected "V F E").'
    ) from e
  if num_vertices < 3 or num_faces < 0:
    raise errors.DataError(
      f'{path}: OFF counts V={num_vertices}, F={num_faces} are invalid.'
    )
  if num_faces == 0:
    raise errors.DataError(
      f'{path}: the mesh has no faces (F=0); cannot sample its surface.'
    )
  if len(body) < num_vertices + num_faces:
    raise errors.DataError(
      f'{path}: the header announces {num_vertices} vertices and {num_faces} faces but '
      f'the file has only {len(body)} data lines.'
    )
  try:
    vertices = np.array(
      [line.split()[:3] for line in body[:num_vertices]], dtype=np.float64
    )
  except ValueError as e:
    raise errors.DataError(f'{path}: bad vertex line ({e}).') from e
  if vertices.shape != (num_vertices, 3):
    raise errors.DataError(f'{path}: every vertex line needs 3 coordinates.')
  triangles = []
  for number, line in enumerate(body[num_vertices : num_vertices + num_faces]):
    values = line.split()
    try:
      count = int(values[0])
      polygon = [int(v) for v in values[1 : 1 + count]]
    except ValueError as e:
      raise errors.DataError(f'{path}: bad face line {number}: {line!r}.') from e
    if count < 3 or len(polygon) != count:
      raise errors.DataError(
        f'{path}: face {number} ({line!r}) is not a polygon of >= 3 vertices.'
      )
    if min(polygon) < 0 or max(polygon) >= num_vertices:
      raise errors.DataError(
        f'{path}: face {number} refers to vertex {max(polygon)} or {min(polygon)} '
        f'outside [0, {num_vertices}).'
      )
    triangles += [(polygon[0], polygon[m], polygon[m + 1]) for m in range(1, count - 1)]
  return vertices, np.asarray(triangles, np.int64)


def off_classes(data_dir: str) -> List[str]:
  """The class folders of `data_dir` (those with a `train` or `test` sub-folder), sorted."""
  if not os.path.isdir(data_dir):
    raise errors.DataError(f'data.data_dir={data_dir!r} is not a folder.')
  classes = sorted(
    name
    for name in os.listdir(data_dir)
    if any(os.path.isdir(os.path.join(data_dir, name, s)) for s in SPLITS)
  )
  if not classes:
    raise errors.DataError(
      f'{data_dir} holds no class folders <class>/train or <class>/test (ModelNet40 '
      'meshes expected).'
    )
  return classes


def off_files(data_dir: str, split: str) -> Tuple[List[str], np.ndarray]:
  """Relative paths `<class>/<split>/*.off` (sorted) and their `[N]` class ids."""
  _check_split(split)
  files, labels = [], []
  for label, name in enumerate(off_classes(data_dir)):
    found = sorted(glob.glob(os.path.join(data_dir, name, split, '*.off')))
    files += [os.path.relpath(p, data_dir) for p in found]
    labels += [label] * len(found)
  if not files:
    raise errors.DataError(f'no {data_dir}/<class>/{split}/*.off files.')
  return files, np.asarray(labels, np.int32)


def sample_mesh_file(path: str, num_points: int, rng: np.random.Generator) -> np.ndarray:
  """`[P, 3]` float32 points sampled by area on the mesh of an OFF file."""
  vertices, faces = read_off(path)
  try:
    return shapes.sample_surface(vertices, faces, num_points, rng).astype(np.float32)
  except ValueError as e:
    raise errors.DataError(f'{path}: {e}') from e


def _stamps(data_dir: str, files: Sequence[str]) -> np.ndarray:
  stats = [os.stat(os.path.join(data_dir, f)) for f in files]
  return np.array([(s.st_size, s.st_mtime_ns) for s in stats], np.int64)


def sample_off_split(
  data_dir: str,
  split: str,
  num_points: int,
  *,
  seed: int = 0,
  cache_dir: Optional[str] = None,
) -> Dict[str, np.ndarray]:
  """`points` `[N, P, 3]` float32 sampled on the meshes of `split`, `labels` `[N]`.

  Args:
    data_dir: the ModelNet40 folder (`<class>/<split>/*.off`).
    split: 'train' or 'test'.
    num_points: P.
    seed: sampling seed (with each file's path).
    cache_dir: folder of the sample cache; None or '' disables caching.
  """
  files, labels = off_files(data_dir, split)
  stamps = _stamps(data_dir, files)
  cache = None
  if cache_dir:
    cache = os.path.join(cache_dir, f'modelnet40_off_{split}_p{num_points}_s{seed}.npz')
    if os.path.isfile(cache):
      with np.load(cache, allow_pickle=False) as saved:
        if list(saved['files']) == files and np.array_equal(saved['stamps'], stamps):
          return {'points': saved['points'], 'labels': saved['labels']}
  points = np.empty((len(files), num_points, 3), np.float32)
  for i, rel in enumerate(files):
    rng = np.random.default_rng([seed, zlib.crc32(rel.encode('utf-8'))])
    points[i] = sample_mesh_file(os.path.join(data_dir, rel), num_points, rng)
  if cache:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f'{cache}.tmp{os.getpid()}.npz'
    np.savez(
      tmp, points=points, labels=labels, files=np.array(files, dtype=str), stamps=stamps
    )
    os.replace(tmp, cache)
  return {'points': points, 'labels': labels}
