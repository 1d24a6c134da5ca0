"""Procedural 3D shapes as triangle meshes, area-weighted surface sampling, and the
`synthetic_shapes` point-cloud dataset generated from them.

Every shape is a closed triangle mesh centred near the origin with a size of about 1.
A cloud of class c is made by: choosing a raw point count uniformly in
`[raw_min_factor * P, raw_max_factor * P]`; sampling that many points on the mesh's
surface with probability proportional to area; an anisotropic scale (one factor per
axis, uniform in `scale_range`); a random rotation (uniform over SO(3), about the up
axis z, or none); Gaussian jitter; and resampling to exactly P points (a random subset
when there are more, random repeats when fewer). Each cloud is a pure function of
`(seed, split, index)`, and the two splits use distinct random streams, so train and
test clouds are disjoint draws.

Shape glossary:
  V: vertices of a mesh; F: triangles.
  N: clouds; P: points per cloud.
"""

import functools
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from experiments.training import errors

Mesh = Tuple[np.ndarray, np.ndarray]  # vertices [V, 3] float64, faces [F, 3] int64.

SPLIT_STREAMS = {'train': 1, 'test': 2}
ROTATIONS = ('so3', 'up', 'none')


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
  """`[F]` areas of the triangles `faces` (indices into `vertices` `[V, 3]`)."""
  a, b, c = (vertices[faces[:, i]] for i in range(3))
  return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=-1)


def sample_surface(
  vertices: np.ndarray, faces: np.ndarray, num_points: int, rng: np.random.Generator
) -> np.ndarray:
  """Points uniformly distributed over the surface of a triangle mesh.

  A triangle is drawn with probability proportional to its area, then a point
  uniformly inside it: with `u, v ~ U[0, 1)` reflected into the lower triangle when
  `u + v > 1`, the point is `a + u (b - a) + v (c - a)`.

  Args:
    vertices: `[V, 3]` coordinates.
    faces: `[F, 3]` vertex indices of the triangles.
    num_points: P.
    rng: the random generator.

  Returns:
    `[P, 3]` float64 points.
  """
  areas = triangle_areas(vertices, faces)
  total = areas.sum()
  if not np.isfinite(total) or total <= 0:
    raise ValueError(f'the mesh has zero total area ({len(faces)} faces).')
  chosen = rng.choice(len(faces), size=num_points, p=areas / total)
  u, v = rng.random((2, num_points))
  flip = u + v > 1
  u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
  a, b, c = (vertices[faces[chosen, i]] for i in range(3))
  return a + u[:, None] * (b - a) + v[:, None] * (c - a)


def _grid_faces(rows: int, cols: int, wrap_cols: bool) -> np.ndarray:
  """Two triangles per cell of a `rows x cols` vertex grid (row-major indices)."""
  faces = []
  last_col = cols if wrap_cols else cols - 1
  for r in range(rows - 1):
    for c in range(last_col):
      c1 = (c + 1) % cols
      a, b = r * cols + c, r * cols + c1
      d, e = (r + 1) * cols + c, (r + 1) * cols + c1
      faces += [(a, b, e), (a, e, d)]
  return np.asarray(faces, np.int64)


def _revolve(profile: Sequence[Tuple[float, float]], segments: int = 32) -> Mesh:
  """The surface swept by a `(radius, z)` profile about the z axis.

  Profile points with radius 0 are poles; a profile that starts and ends on the axis
  gives a closed surface.
  """
  angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
  verts = [
    (r * np.cos(t), r * np.sin(t), z) for r, z in profile for t in angles
  ]  # Repeated pole vertices give zero-area triangles, which are never sampled.
  faces = _grid_faces(len(profile), segments, wrap_cols=True)
  return np.asarray(verts, np.float64), faces


def _polyhedron(vertices, polygons) -> Mesh:
  """A mesh from convex polygons (vertex index lists), each fanned into triangles."""
  faces = [
    (poly[0], poly[m], poly[m + 1]) for poly in polygons for m in range(1, len(poly) - 1)
  ]
  return np.asarray(vertices, np.float64), np.asarray(faces, np.int64)


def _box(center, size) -> Mesh:
  corners = np.array([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
  vertices = np.asarray(center) + 0.5 * corners * np.asarray(size)
  # Corner index = 4 * (x > 0) + 2 * (y > 0) + (z > 0).
  quads = [
    (0, 1, 3, 2),
    (4, 5, 7, 6),
    (0, 1, 5, 4),
    (2, 3, 7, 6),
    (0, 2, 6, 4),
    (1, 3, 7, 5),
  ]
  return _polyhedron(vertices, quads)


def _merge(*meshes: Mesh) -> Mesh:
  vertices, faces, offset = [], [], 0
  for v, f in meshes:
    vertices.append(v)
    faces.append(f + offset)
    offset += len(v)
  return np.concatenate(vertices), np.concatenate(faces)


def _sphere() -> Mesh:
  theta = np.linspace(0, np.pi, 17)
  return _revolve([(np.sin(t), -np.cos(t)) for t in theta])


def _hemisphere() -> Mesh:
  theta = np.linspace(0, np.pi / 2, 9)
  return _revolve([(0.0, 0.0)] + [(np.cos(t), np.sin(t)) for t in theta])


def _torus() -> Mesh:
  phi = np.linspace(0, 2 * np.pi, 17)
  return _revolve([(1.0 + 0.35 * np.cos(p), 0.35 * np.sin(p)) for p in phi])


SHAPES: Dict[str, Callable[[], Mesh]] = {
  'sphere': _sphere,
  'cube': lambda: _box((0, 0, 0), (1.6, 1.6, 1.6)),
  'cylinder': lambda: _revolve([(0, -1), (0.5, -1), (0.5, 1), (0, 1)]),
  'cone': lambda: _revolve([(0, -0.8), (0.9, -0.8), (0, 1)]),
  'torus': _torus,
  'square_pyramid': lambda: _polyhedron(
    [(-1, -1, -0.7), (1, -1, -0.7), (1, 1, -0.7), (-1, 1, -0.7), (0, 0, 1)],
    [(0, 1, 2, 3), (0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 0, 4)],
  ),
  'tetrahedron': lambda: _polyhedron(
    [(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)],
    [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)],
  ),
  'octahedron': lambda: _polyhedron(
    [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)],
    [(a, b, c) for a in (0, 1) for b in (2, 3) for c in (4, 5)],
  ),
  'triangular_prism': lambda: _polyhedron(
    [
      (np.cos(a), np.sin(a), z)
      for z in (-0.9, 0.9)
      for a in (0, 2 * np.pi / 3, 4 * np.pi / 3)
    ],
    [(0, 1, 2), (3, 4, 5), (0, 1, 4, 3), (1, 2, 5, 4), (2, 0, 3, 5)],
  ),
  'hemisphere': _hemisphere,
  'disk': lambda: _revolve([(0, -0.12), (1, -0.12), (1, 0.12), (0, 0.12)]),
  'cross': lambda: _merge(
    _box((0, 0, 0), (2, 0.5, 0.5)),
    _box((0, 0, 0), (0.5, 2, 0.5)),
    _box((0, 0, 0), (0.5, 0.5, 2)),
  ),
}
CLASS_NAMES = tuple(SHAPES)
NUM_CLASSES = len(CLASS_NAMES)


@functools.cache
def mesh(name: str) -> Mesh:
  """The triangle mesh of shape `name` (one of `CLASS_NAMES`)."""
  if name not in SHAPES:
    raise ValueError(f'unknown shape {name!r}; expected one of {CLASS_NAMES}.')
  vertices, faces = SHAPES[name]()
  vertices.setflags(write=False)
  faces.setflags(write=False)
  return vertices, faces


def random_rotation(rng: np.random.Generator, kind: str) -> np.ndarray:
  """A `[3, 3]` rotation: uniform over SO(3) ('so3'), about z ('up') or identity."""
  if kind == 'none':
    return np.eye(3)
  if kind == 'up':
    t = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
  if kind != 'so3':
    raise errors.ConfigError(f'rotation={kind!r} is not one of {ROTATIONS}.')
  # QR of a Gaussian matrix with the signs fixed is Haar-distributed.
  q, r = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  if np.linalg.det(q) < 0:
    q[:, 0] = -q[:, 0]
  return q


def resample(points: np.ndarray, num_points: int, rng: np.random.Generator) -> np.ndarray:
  """Exactly `num_points` of `points` `[P', 3]`: a random subset if P' >= P, else all
  of them plus random repeats, in a random order."""
  count = len(points)
  if count == 0:
    raise ValueError('cannot resample an empty point cloud.')
  if count >= num_points:
    return points[rng.choice(count, size=num_points, replace=False)]
  extra = rng.choice(count, size=num_points - count, replace=True)
  return points[rng.permutation(np.concatenate([np.arange(count), extra]))]


def generate_cloud(
  label: int,
  num_points: int,
  rng: np.random.Generator,
  *,
  rotation: str = 'so3',
  scale_range: Tuple[float, float] = (0.75, 1.33),
  jitter: float = 0.01,
  raw_min_factor: float = 0.5,
  raw_max_factor: float = 2.0,
) -> np.ndarray:
  """One `[P, 3]` float32 cloud of class `label` (see the module docstring)."""
  vertices, faces = mesh(CLASS_NAMES[label])
  low = max(1, int(raw_min_factor * num_points))
  high = max(low, int(raw_max_factor * num_points))
  raw_count = int(rng.integers(low, high + 1))
  points = sample_surface(vertices, faces, raw_count, rng)
  points = points * rng.uniform(*scale_range, size=3)
  points = points @ random_rotation(rng, rotation).T
  points = points + jitter * rng.normal(size=points.shape)
  return resample(points, num_points, rng).astype(np.float32)


def generate(
  split: str,
  num_examples: int,
  num_points: int,
  *,
  seed: int = 0,
  **cloud_kwargs,
) -> Dict[str, np.ndarray]:
  """The `synthetic_shapes` split: `points` `[N, P, 3]` float32, `labels` `[N]` int32.

  Labels cycle through the classes (balanced splits); example i is a pure function of
  `(seed, split, i)`.

  Args:
    split: 'train' or 'test' (distinct random streams).
    num_examples: N.
    num_points: P.
    seed: the dataset seed.
    **cloud_kwargs: passed to `generate_cloud` (rotation, scale_range, jitter, ...).
  """
  if split not in SPLIT_STREAMS:
    raise errors.ConfigError(f'split={split!r} is not one of {tuple(SPLIT_STREAMS)}.')
  labels = np.arange(num_examples, dtype=np.int32) % NUM_CLASSES
  points = np.empty((num_examples, num_points, 3), np.float32)
  for i in range(num_examples):
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], i])
    points[i] = generate_cloud(int(labels[i]), num_points, rng, **cloud_kwargs)
  return {'points': points, 'labels': labels}
