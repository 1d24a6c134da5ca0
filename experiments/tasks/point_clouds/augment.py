"""Point-cloud normalisation and training augmentation (NumPy, batched).

Every function takes a batch of clouds and returns a new array; random ones take a
`np.random.Generator`, so a batch's augmentation is a pure function of its seed.

Shape glossary:
  B: clouds in the batch; P: points per cloud.
"""

from typing import Tuple

import ml_collections
import numpy as np

from experiments.training import errors

NORMALIZATIONS = ('unit_sphere', 'unit_cube', 'none')


def normalize(points: np.ndarray, kind: str = 'unit_sphere') -> np.ndarray:
  """Centres each cloud and scales it into the unit sphere or the unit cube.

  'unit_sphere': subtract the mean point, divide by the largest distance to it (the
  farthest point lies on the unit sphere). 'unit_cube': subtract the centre of the
  bounding box, divide by half its longest side (coordinates in [-1, 1], touching the
  bounds). 'none': unchanged. A cloud of identical points is only centred.

  Args:
    points: `[B, P, 3]`.
    kind: one of `NORMALIZATIONS`.

  Returns:
    `[B, P, 3]` float32.
  """
  points = np.asarray(points, np.float32)
  if kind == 'none':
    return points
  if kind == 'unit_sphere':
    centred = points - points.mean(axis=1, keepdims=True)
    extent = np.linalg.norm(centred, axis=-1).max(axis=1)
  elif kind == 'unit_cube':
    low, high = points.min(axis=1, keepdims=True), points.max(axis=1, keepdims=True)
    centred = points - (low + high) / 2
    extent = (high - low).max(axis=(1, 2)) / 2
  else:
    raise errors.ConfigError(f'normalization={kind!r} is not one of {NORMALIZATIONS}.')
  extent = np.where(extent > 0, extent, 1.0)
  return (centred / extent[:, None, None]).astype(np.float32)


def rotate_up(points: np.ndarray, angles: np.ndarray) -> np.ndarray:
  """Rotates cloud b by `angles[b]` radians about the up axis (z), counter-clockwise.

  Args:
    points: `[B, P, 3]`.
    angles: `[B]`.
  """
  c, s = np.cos(angles), np.sin(angles)
  x, y, z = points[..., 0], points[..., 1], points[..., 2]
  return np.stack(
    [c[:, None] * x - s[:, None] * y, s[:, None] * x + c[:, None] * y, z], axis=-1
  ).astype(np.float32)


def drop_points(points: np.ndarray, drop: np.ndarray) -> np.ndarray:
  """Replaces the points where `drop` `[B, P]` is True by the cloud's first kept point.

  The shape stays `[B, P, 3]` (PointNet++'s point dropout): a dropped point becomes a
  duplicate, so the set of distinct points shrinks. A cloud whose points would all be
  dropped keeps its first point.
  """
  drop = np.array(drop, bool)
  drop[drop.all(axis=1), 0] = False
  first_kept = np.argmax(~drop, axis=1)  # [B]
  replacement = points[np.arange(len(points)), first_kept]  # [B, 3]
  return np.where(drop[..., None], replacement[:, None, :], points).astype(np.float32)


def augment(
  points: np.ndarray, rng: np.random.Generator, config: ml_collections.ConfigDict
) -> np.ndarray:
  """The training augmentation selected by `config` (the fields of `config.data.augment`).

  In order: point dropout (each cloud drops a fraction uniform in
  `[0, dropout_max]`), rotation about the up axis (uniform angle when `rotate_up`),
  anisotropic scaling (one factor per axis uniform in `scale`), per-point scaling
  (each coordinate of each point times a factor uniform in `point_scale`, paper 1's
  augmentation), translation (uniform in `[-translate, translate]` per axis),
  then jitter (Gaussian with stddev `jitter`, clipped to `[-jitter_clip, jitter_clip]`).
  A disabled step draws no random numbers.

  Args:
    points: `[B, P, 3]` normalised clouds.
    rng: the batch's generator.
    config: `dropout_max`, `rotate_up`, `scale` (low, high), `point_scale` (low, high),
      `translate`, `jitter`, `jitter_clip`.

  Returns:
    `[B, P, 3]` float32.
  """
  points = np.asarray(points, np.float32)
  batch, num_points, _ = points.shape
  if config.dropout_max > 0:
    ratio = rng.uniform(0, config.dropout_max, size=(batch, 1))
    points = drop_points(points, rng.random((batch, num_points)) < ratio)
  if config.rotate_up:
    points = rotate_up(points, rng.uniform(0, 2 * np.pi, size=batch))
  if _active(config.scale):
    points = points * rng.uniform(*config.scale, size=(batch, 1, 3))
  if _active(config.point_scale):
    points = points * rng.uniform(*config.point_scale, size=points.shape)
  if config.translate > 0:
    points = points + rng.uniform(-config.translate, config.translate, size=(batch, 1, 3))
  if config.jitter > 0:
    noise = config.jitter * rng.normal(size=points.shape)
    points = points + np.clip(noise, -config.jitter_clip, config.jitter_clip)
  return points.astype(np.float32)


def _active(bounds: Tuple[float, float]) -> bool:
  low, high = bounds
  if not 0 < low <= high:
    raise errors.ConfigError(
      f'scale bounds must satisfy 0 < low <= high, got {tuple(bounds)}.'
    )
  return (low, high) != (1.0, 1.0)
