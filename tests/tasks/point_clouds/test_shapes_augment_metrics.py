"""The procedural shapes, surface sampling, augmentation and metrics of point clouds."""

import ml_collections
import numpy as np
import pytest

from experiments.tasks.point_clouds import augment
from experiments.tasks.point_clouds import metrics
from experiments.tasks.point_clouds import shapes


@pytest.mark.parametrize(
  'name, area, rtol',
  [
    ('cube', 6 * 1.6**2, 1e-12),
    ('tetrahedron', 8 * np.sqrt(3), 1e-12),  # Edge 2 sqrt(2).
    ('octahedron', 4 * np.sqrt(3), 1e-12),  # Edge sqrt(2).
    ('square_pyramid', 4 + 4 * np.sqrt(1 + 1.7**2), 1e-12),
    ('triangular_prism', 2 * 3 * np.sqrt(3) / 4 + 3 * np.sqrt(3) * 1.8, 1e-12),
    ('cylinder', 2 * np.pi * 0.5 * 2 + 2 * np.pi * 0.25, 0.01),  # 32-gon prism.
    ('sphere', 4 * np.pi, 0.01),
    ('torus', 4 * np.pi**2 * 1.0 * 0.35, 0.03),
  ],
)
def test_mesh_areas(name, area, rtol):
  vertices, faces = shapes.mesh(name)
  np.testing.assert_allclose(
    shapes.triangle_areas(vertices, faces).sum(), area, rtol=rtol
  )


def test_surface_samples_lie_on_the_surface():
  rng = np.random.default_rng(0)
  cube = shapes.sample_surface(*shapes.mesh('cube'), 500, rng)
  np.testing.assert_allclose(np.abs(cube).max(axis=1), 0.8, atol=1e-12)
  assert np.all(np.abs(cube) <= 0.8 + 1e-12)
  # Area weighting: each cube face gets about 1/6 of the points.
  faces = np.argmax(np.abs(cube), axis=1) * 2 + (
    cube[np.arange(500), np.argmax(np.abs(cube), 1)] > 0
  )
  counts = np.bincount(faces, minlength=6)
  assert counts.min() > 55 and counts.max() < 115  # 83 expected; 4+ sigma band.
  sphere = shapes.sample_surface(*shapes.mesh('sphere'), 500, rng)
  radius = np.linalg.norm(sphere, axis=1)
  assert radius.max() <= 1 + 1e-12 and radius.min() > 0.98  # Tessellation chords.


def test_random_rotations():
  rng = np.random.default_rng(0)
  for kind in shapes.ROTATIONS:
    r = shapes.random_rotation(rng, kind)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
  up = shapes.random_rotation(rng, 'up')
  np.testing.assert_allclose(up[2], [0, 0, 1])
  with pytest.raises(ValueError, match='rotation'):
    shapes.random_rotation(rng, 'z')


def test_resample_keeps_or_repeats_points():
  rng = np.random.default_rng(0)
  points = np.arange(21, dtype=np.float64).reshape(7, 3)
  fewer = shapes.resample(points, 5, rng)
  assert len({tuple(p) for p in fewer}) == 5 and all(p in points for p in fewer)
  more = shapes.resample(points, 11, rng)
  assert more.shape == (11, 3)
  assert {tuple(p) for p in more} == {tuple(p) for p in points}


def test_generate_is_deterministic_balanced_and_splits_differ():
  a = shapes.generate('train', 2 * shapes.NUM_CLASSES + 1, 17, seed=3)
  b = shapes.generate('train', 5, 17, seed=3)
  test = shapes.generate('test', 5, 17, seed=3)
  assert a['points'].shape == (2 * shapes.NUM_CLASSES + 1, 17, 3)
  assert a['points'].dtype == np.float32
  np.testing.assert_array_equal(
    np.bincount(a['labels']), [3] + [2] * (shapes.NUM_CLASSES - 1)
  )  # Classes cycle.
  np.testing.assert_array_equal(a['points'][:5], b['points'])  # Example i is fixed.
  assert not np.allclose(test['points'], b['points'])
  other_seed = shapes.generate('train', 5, 17, seed=4)
  assert not np.allclose(other_seed['points'], b['points'])


def test_normalize_by_hand():
  points = np.array([[[0, 0, 0], [2, 0, 0]]], np.float32)
  np.testing.assert_allclose(
    augment.normalize(points, 'unit_sphere'), [[[-1, 0, 0], [1, 0, 0]]]
  )
  points = np.array([[[0, 0, 0], [4, 2, 0], [1, 1, 1]]], np.float32)
  np.testing.assert_allclose(
    augment.normalize(points, 'unit_cube'),
    [[[-1, -0.5, -0.25], [1, 0.5, -0.25], [-0.5, 0, 0.25]]],
  )
  same = np.ones((1, 3, 3), np.float32)
  np.testing.assert_array_equal(augment.normalize(same, 'unit_sphere'), 0)
  with pytest.raises(ValueError, match='normalization'):
    augment.normalize(points, 'sphere')


def test_rotate_up_and_drop_points_by_hand():
  points = np.array([[[1, 0, 5], [0, 2, -1]]], np.float32)
  np.testing.assert_allclose(
    augment.rotate_up(points, np.array([np.pi / 2])),
    [[[0, 1, 5], [-2, 0, -1]]],
    atol=1e-6,
  )
  points = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
  drop = np.array([[True, False, True, False], [True, True, True, True]])
  out = augment.drop_points(points, drop)
  np.testing.assert_array_equal(out[0], points[0][[1, 1, 1, 3]])
  np.testing.assert_array_equal(out[1], points[1][[0, 0, 0, 0]])  # Keeps its first.


def _augment_config(**overrides):
  config = ml_collections.ConfigDict(
    dict(
      dropout_max=0.0,
      rotate_up=False,
      scale=(1.0, 1.0),
      point_scale=(1.0, 1.0),
      translate=0.0,
      jitter=0.0,
      jitter_clip=0.05,
    )
  )
  config.update(overrides)
  return config


def test_augment_steps():
  points = np.random.default_rng(0).normal(size=(3, 9, 3)).astype(np.float32)
  rng = np.random.default_rng(1)
  np.testing.assert_array_equal(augment.augment(points, rng, _augment_config()), points)
  assert rng.random() == np.random.default_rng(1).random()  # Drew nothing.
  moved = augment.augment(points, rng, _augment_config(translate=0.2))
  shift = moved - points
  np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1], shift.shape), atol=1e-6)
  assert np.abs(shift).max() <= 0.2
  scaled = augment.augment(points, rng, _augment_config(point_scale=(0.99, 1.01)))
  ratio = scaled / points
  assert ratio.min() >= 0.99 - 1e-6 and ratio.max() <= 1.01 + 1e-6
  assert len(np.unique(np.round(ratio, 6))) > 20  # Per coordinate, not per cloud.
  stretched = augment.augment(points, rng, _augment_config(scale=(0.5, 2.0)))
  ratio = stretched / points
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-5)
  jittered = augment.augment(points, rng, _augment_config(jitter=1.0, jitter_clip=0.05))
  assert np.abs(jittered - points).max() <= 0.05 + 1e-6
  rotated = augment.augment(points, rng, _augment_config(rotate_up=True))
  np.testing.assert_allclose(rotated[..., 2], points[..., 2])
  np.testing.assert_allclose(
    np.linalg.norm(rotated[..., :2], axis=-1),
    np.linalg.norm(points[..., :2], axis=-1),
    rtol=1e-5,
  )
  with pytest.raises(ValueError, match='scale bounds'):
    augment.augment(points, rng, _augment_config(scale=(0.0, 1.0)))


def test_metrics_by_hand():
  labels = np.array([0, 0, 0, 1, 2, 2])
  predictions = np.array([0, 1, 0, 1, 2, 0])
  np.testing.assert_array_equal(
    metrics.confusion_matrix(labels, predictions, 4)[:3, :3],
    [[2, 1, 0], [0, 1, 0], [1, 0, 1]],
  )
  recall = metrics.per_class_accuracy(labels, predictions, 4)
  np.testing.assert_allclose(recall[:3], [2 / 3, 1, 0.5])
  assert np.isnan(recall[3])  # No examples of class 3.
  summary = metrics.classification_summary(labels, predictions, 4)
  assert summary['overall_accuracy'] == pytest.approx(4 / 6)
  assert summary['mean_class_accuracy'] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
  assert summary['classes_present'] == 3
  with pytest.raises(ValueError, match=r'predictions must lie in \[0, 4\)'):
    metrics.confusion_matrix(labels, predictions + 2, 4)


def test_input_benchmark_reports_rates():
  from experiments.benchmarks import point_cloud_input  # pylint: disable=g-import-not-at-top

  report = point_cloud_input.benchmark('debug', clouds=8, batch_size=4, mesh_faces=20)
  for name in ('generate', 'train_pipeline', 'eval_pipeline', 'off_sampling'):
    assert report[name]['per_s'] > 0 and report[name]['cpu_ms_per_item'] >= 0
  assert report['num_points'] == 33
