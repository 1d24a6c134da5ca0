"""ModelNet40 readers on files written here in the real formats (HDF5 and OFF)."""

import os

import h5py
import numpy as np
import pytest

from experiments.tasks.point_clouds import modelnet40
from experiments.training import errors

# A unit square in the z = 0 plane as one quad, and the triangle (2, 0), (5, 0), (2, 1)
# of area 1.5 beside it.
_OFF = """OFF
# a comment line
7 2 0
0 0 0
1 0 0
1 1 0
0 1 0
2 0 0
5 0 0   # a trailing comment
2 1 0
4 0 1 2 3
3 4 5 6
"""


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)
  return path


def _write_h5(path, data, label, **extra):
  with h5py.File(path, 'w') as f:
    if data is not None:
      f['data'] = data
    if label is not None:
      f['label'] = label
    for key, value in extra.items():
      f[key] = value
  return path


def _h5_dir(tmp_path, names=('airplane', 'bathtub', 'bed')):
  _write(str(tmp_path / 'shape_names.txt'), '\n'.join(names) + '\n')
  return tmp_path


def test_read_off_fans_polygons_into_triangles(tmp_path):
  vertices, faces = modelnet40.read_off(_write(str(tmp_path / 'a.off'), _OFF))
  np.testing.assert_array_equal(vertices[4], [2, 0, 0])
  np.testing.assert_array_equal(vertices[5], [5, 0, 0])
  np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [4, 5, 6]])


def test_read_off_accepts_modelnet_header_without_newline(tmp_path):
  text = 'OFF3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n'
  vertices, faces = modelnet40.read_off(_write(str(tmp_path / 'b.off'), text))
  assert vertices.shape == (3, 3)
  np.testing.assert_array_equal(faces, [[0, 1, 2]])


@pytest.mark.parametrize(
  'text, message',
  [
    ('PLY\n3 1 0\n', 'not an OFF file'),
    ('OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n', 'no faces'),
    ('OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n', 'outside'),
    ('OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n', 'only 4 data lines'),
    ('OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n', '>= 3 vertices'),
  ],
)
def test_read_off_errors_name_the_file(tmp_path, text, message):
  path = _write(str(tmp_path / 'bad.off'), text)
  with pytest.raises(ValueError, match=message) as info:
    modelnet40.read_off(path)
  assert path in str(info.value)


def test_degenerate_mesh_error_names_the_file(tmp_path):
  path = _write(str(tmp_path / 'flat.off'), 'OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n')
  with pytest.raises(ValueError, match='zero total area') as info:
    modelnet40.sample_mesh_file(path, 5, np.random.default_rng(0))
  assert path in str(info.value)


def test_off_split_labels_sampling_and_cache(tmp_path):
  data = tmp_path / 'ModelNet40'
  for name in ('chair', 'bed'):  # Class ids follow sorted names: bed 0, chair 1.
    _write(str(data / name / 'train' / f'{name}_0001.off'), _OFF)
    _write(str(data / name / 'test' / f'{name}_0002.off'), _OFF)
  _write(str(data / 'bed' / 'train' / 'bed_0003.off'), _OFF)
  cache = tmp_path / 'cache'
  split = modelnet40.sample_off_split(str(data), 'train', 7, seed=3, cache_dir=str(cache))
  files, labels = modelnet40.off_files(str(data), 'train')
  assert files == [
    os.path.join('bed', 'train', 'bed_0001.off'),
    os.path.join('bed', 'train', 'bed_0003.off'),
    os.path.join('chair', 'train', 'chair_0001.off'),
  ]
  np.testing.assert_array_equal(labels, [0, 0, 1])
  np.testing.assert_array_equal(split['labels'], [0, 0, 1])
  points = split['points']
  assert points.shape == (3, 7, 3) and points.dtype == np.float32
  # All samples lie on the mesh: z = 0, inside the square or the triangle.
  np.testing.assert_array_equal(points[..., 2], 0)
  x, y = points[..., 0], points[..., 1]
  in_square = (x <= 1) & (y <= 1)
  in_triangle = (x >= 2) & (y <= 1 - (x - 2) / 3 + 1e-6)
  assert np.all(in_square | in_triangle)
  # Different files get different samples; the cache returns the same values.
  assert not np.array_equal(points[0], points[1])
  assert len(os.listdir(cache)) == 1
  again = modelnet40.sample_off_split(str(data), 'train', 7, seed=3, cache_dir=str(cache))
  np.testing.assert_array_equal(again['points'], points)
  # A changed mesh invalidates the cache.
  path = data / 'bed' / 'train' / 'bed_0003.off'
  _write(str(path), _OFF.replace('5 0 0   #', '8 0 0   #'))
  os.utime(path, ns=(1, 1))
  changed = modelnet40.sample_off_split(
    str(data), 'train', 7, seed=3, cache_dir=str(cache)
  )
  np.testing.assert_array_equal(changed['points'][[0, 2]], points[[0, 2]])
  assert not np.array_equal(changed['points'][1], points[1])  # Resampled.


def test_area_weighting_of_the_samples(tmp_path):
  # Square of area 1 and triangle of area 1.5: 40% / 60% of the points.
  path = _write(str(tmp_path / 'c.off'), _OFF)
  points = modelnet40.sample_mesh_file(path, 20000, np.random.default_rng(0))
  fraction = np.mean(points[:, 0] >= 2)
  assert abs(fraction - 0.6) < 0.015


def test_read_h5_split_concatenates_files_in_numeric_order(tmp_path):
  root = _h5_dir(tmp_path)
  a = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
  b = -np.ones((1, 5, 3), np.float32)
  c = np.full((3, 5, 3), 7, np.float32)
  # Files 0, 1, 10: numeric order 0, 1, 10 (not 0, 10, 1).
  _write_h5(str(root / 'ply_data_train0.h5'), a, np.array([[2], [0]], np.uint8))
  _write_h5(str(root / 'ply_data_train10.h5'), c, np.array([[1], [1], [1]], np.int64))
  _write_h5(
    str(root / 'ply_data_train1.h5'),
    b,
    np.array([[1]], np.uint8),
    normal=np.zeros((1, 5, 3), np.float32),
  )
  split = modelnet40.read_h5_split(str(root), 'train')
  np.testing.assert_array_equal(split['points'], np.concatenate([a, b, c]))
  np.testing.assert_array_equal(split['labels'], [2, 0, 1, 1, 1, 1])
  assert split['labels'].dtype == np.int32 and split['points'].dtype == np.float32


@pytest.mark.parametrize(
  'data, label, message',
  [
    (np.zeros((2, 5, 3), np.float32), None, r"no dataset \['label'\]"),
    (None, np.zeros((2, 1), np.uint8), r"no dataset \['data'\]"),
    (
      np.zeros((2, 5, 3), np.float32),
      np.array([[0], [3]], np.uint8),
      'label 3 of cloud 1',
    ),
    (np.zeros((2, 5, 2), np.float32), np.zeros((2, 1), np.uint8), r'\[N, P, 3\]'),
    (np.zeros((2, 5, 3), np.float32), np.zeros((3, 1), np.uint8), '3 labels'),
  ],
)
def test_read_h5_errors_name_the_file(tmp_path, data, label, message):
  root = _h5_dir(tmp_path)
  path = _write_h5(str(root / 'ply_data_test0.h5'), data, label)
  with pytest.raises(ValueError, match=message) as info:
    modelnet40.read_h5_split(str(root), 'test')
  assert path in str(info.value)


def test_read_h5_rejects_a_file_that_is_not_hdf5(tmp_path):
  root = _h5_dir(tmp_path)
  path = _write(str(root / 'ply_data_test0.h5'), 'solid ascii\n')
  with pytest.raises(ValueError, match='cannot be read as an HDF5 file') as info:
    modelnet40.read_h5_split(str(root), 'test')
  assert path in str(info.value)


def test_missing_files_are_reported(tmp_path):
  with pytest.raises(errors.DataError, match='shape_names.txt'):
    modelnet40.read_h5_split(str(tmp_path), 'train')
  _h5_dir(tmp_path)
  with pytest.raises(errors.DataError, match='ply_data_train'):
    modelnet40.read_h5_split(str(tmp_path), 'train')
  with pytest.raises(errors.DataError, match='no class folders'):
    modelnet40.off_files(str(tmp_path), 'train')
