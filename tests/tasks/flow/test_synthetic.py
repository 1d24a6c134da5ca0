"""The flying-objects generator: its ground-truth flow and validity are exact."""

import numpy as np
from scipy import ndimage

from experiments.tasks.flow import synthetic

OPTIONS = synthetic.SceneOptions(size=(21, 27), textures='noise')


def _warp(frame2, flow):
  """Frame 2 sampled at x + flow(x), bilinearly: `[H, W, 3]`."""
  points = synthetic.pixel_grid(flow.shape[:2]) + flow
  return np.stack(
    [
      ndimage.map_coordinates(frame2[..., c], [points[..., 1], points[..., 0]], order=1)
      for c in range(3)
    ],
    axis=-1,
  )


def test_integer_motions_warp_exactly():
  rng = np.random.default_rng(3)
  layers = synthetic._sample_layers(rng, OPTIONS)
  shifts = []
  for layer in layers:  # Whole-pixel translations only.
    layer.angles[1] = layer.angles[0]
    layer.scales[1] = layer.scales[0]
    shift = rng.integers(-3, 4, 2).astype(float)
    layer.positions[1] = layer.positions[0] + shift
    shifts.append(shift)
  grid = synthetic.pixel_grid(OPTIONS.size)
  frame1, frame2 = (synthetic.render(layers, grid, t) for t in (0, 1))
  truth = synthetic.scene_flow(layers, OPTIONS.size)
  flow, valid = truth['flow'], truth['valid']
  for index, shift in enumerate(shifts):
    np.testing.assert_allclose(
      flow[truth['layer1'] == index],
      shift[None].repeat((truth['layer1'] == index).sum(), 0),
      atol=1e-9,
    )
  assert 0.3 < valid.mean() < 1.0
  np.testing.assert_allclose(_warp(frame2, flow)[valid], frame1[valid], atol=1e-6)
  # Invalid pixels move out of the frame or are hidden in frame 2.
  target = truth['target']
  outside = (target < 0).any(-1) | (target[..., 0] > 26) | (target[..., 1] > 20)
  hidden = synthetic.top_layer(layers, target, 1) != truth['layer1']
  np.testing.assert_array_equal(~valid, outside | hidden)


def test_affine_motions_warp_frame2_onto_frame1():
  options = synthetic.SceneOptions(size=(23, 29))  # Photographs.
  residual, baseline = [], []
  for index in range(4):
    example = synthetic.generate(index, seed=7, options=options)
    frames = example['frames'].astype(np.float64)
    valid = example['valid'] > 0
    assert example['frames'].dtype == np.uint8 and example['frames'].shape == (
      2,
      23,
      29,
      3,
    )
    assert example['flow'].shape == (23, 29, 2) and valid.mean() > 0.5
    residual.append(np.abs(_warp(frames[1], example['flow']) - frames[0])[valid].mean())
    baseline.append(np.abs(frames[1] - frames[0])[valid].mean())
  # Bilinear resampling of a smooth texture and uint8 rounding leave a small residual.
  assert np.mean(residual) < 0.25 * np.mean(baseline), (residual, baseline)


def test_rotation_flow_is_analytic():
  rng = np.random.default_rng(0)
  (background,) = synthetic._sample_layers(
    rng, synthetic.SceneOptions(size=(9, 11), num_objects=(0, 0), textures='noise')
  )
  background.positions[:] = [[5.0, 4.0], [6.0, 4.0]]
  background.angles[:] = [0.0, 90.0]
  background.scales[:] = [1.0, 2.0]
  flow = synthetic.scene_flow([background], (9, 11))['flow']
  # x = (7, 4): o = (2, 0) -> 2 * R(90) o + (6, 4) = (6, 8): flow (-1, 4).
  np.testing.assert_allclose(flow[4, 7], [-1.0, 4.0], atol=1e-9)


def test_examples_are_deterministic_and_splits_disjoint():
  a = synthetic.generate_split('validation', 2, 2, seed=1, options=OPTIONS)
  b = synthetic.generate_split('validation', 3, 1, seed=1, options=OPTIONS)
  np.testing.assert_array_equal(a['frames'][1], b['frames'][0])
  c = synthetic.generate_split('test', 3, 1, seed=1, options=OPTIONS)
  assert not np.array_equal(b['frames'], c['frames'])
  assert a['frames'].shape == (2, 2, 21, 27, 3)


def test_lucas_kanade_recovers_a_subpixel_translation():
  from experiments.tasks.flow import local_evidence

  # A smooth pattern moved by (u, v) = (0.4, -0.3): frame 2 at x + flow = frame 1 at x.
  y, x = np.mgrid[:21, :27].astype(np.float64)

  def pattern(x, y):
    return 128 + 60 * np.sin(0.5 * x + 0.2 * y) + 50 * np.cos(0.3 * x - 0.45 * y)

  frames = np.stack([pattern(x, y), pattern(x - 0.4, y + 0.3)])
  frames = np.repeat(frames[None, :, :, :, None], 3, axis=-1)
  flow = local_evidence.lucas_kanade(frames, window=5, eps=0.0)
  inner = flow[0, 3:-3, 3:-3].reshape(-1, 2)
  np.testing.assert_allclose(np.median(inner, axis=0), [0.4, -0.3], atol=0.03)
