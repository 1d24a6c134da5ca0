"""Flow augmentation on values: flips negate a flow component, scaling rescales it."""

import numpy as np

from experiments.tasks.flow import augment


def _example(seed=0, size=(5, 7)):
  rng = np.random.default_rng(seed)
  return (
    rng.uniform(0, 255, (2,) + size + (3,)).astype(np.float32),
    rng.normal(size=size + (2,)).astype(np.float32),
    (rng.uniform(size=size) > 0.3).astype(np.float32),
  )


def test_horizontal_flip_mirrors_and_negates_u():
  frames, flow, valid = _example()
  f, fl, v = augment.flip_horizontal(frames, flow, valid)
  # Pixel (y, x) of the flipped pair is (y, W - 1 - x) of the original, u negated.
  assert f[1, 2, 0].tolist() == frames[1, 2, 6].tolist()
  assert fl[3, 1].tolist() == [-flow[3, 5, 0], flow[3, 5, 1]]
  assert v[4, 6] == valid[4, 0]
  # A pixel at x moving by u lands at x + u; mirrored, W-1-x moves to W-1-x-u.
  f, fl, v = augment.flip_vertical(frames, flow, valid)
  assert fl[0, 3].tolist() == [flow[4, 3, 0], -flow[4, 3, 1]]


def test_scale_multiplies_flow_and_resamples_linear_images_exactly():
  height, width = 6, 8
  ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  ramp = (3 * xs + 5 * ys).astype(np.float32)
  frames = np.stack([np.stack([ramp] * 3, -1)] * 2)
  flow = np.stack([np.full((height, width), 1.5), np.full((height, width), -0.5)], -1)
  valid = np.ones((height, width), np.float32)
  valid[0, 0] = 0
  f, fl, v = augment.scale_example(frames, flow.astype(np.float32), valid, 1.5)
  assert f.shape == (2, 9, 12, 3) and fl.shape == (9, 12, 2)
  # Output pixel x' samples input (x' + 0.5) / 1.5 - 0.5, exactly for a ramp inside.
  y_in = (np.arange(9) + 0.5) / 1.5 - 0.5
  x_in = (np.arange(12) + 0.5) / 1.5 - 0.5
  want = 3 * x_in[None, :] + 5 * y_in[:, None]
  np.testing.assert_allclose(f[0, 1:-1, 1:-1, 0], want[1:-1, 1:-1], rtol=1e-5)
  # Flow scales with the image; the invalid pixel spoils only its neighbours.
  np.testing.assert_allclose(
    fl[v > 0], np.tile([2.25, -0.75], ((v > 0).sum(), 1)), rtol=1e-6
  )
  assert v[0, 0] == 0 and v[-1, -1] == 1 and v.mean() > 0.9
  assert fl[0, 0].tolist() == [0, 0]  # Only the invalid pixel is near: no flow.


def test_photometric_is_the_same_on_both_frames():
  frames, _, _ = _example(1)
  same = np.stack([frames[0], frames[0]])
  out = augment.photometric(same, 1.2, 0.8, 1.1)
  np.testing.assert_array_equal(out[0], out[1])
  grey = np.full((2, 1, 1, 3), 100.0, np.float32)
  # Brightness 1.2 -> 120; saturation leaves grey; contrast about the mean does too.
  np.testing.assert_allclose(augment.photometric(grey, 1.2, 0.5, 2.0), 120.0, rtol=1e-5)


def test_augment_crops_to_size_and_is_deterministic():
  frames, flow, valid = _example(2, size=(9, 13))
  options = augment.AugmentOptions(
    crop_size=(5, 7),
    min_log2_scale=-0.5,
    max_log2_scale=0.5,
    brightness=0.2,
    horizontal_flip=0.5,
    vertical_flip=0.5,
  )
  example = dict(frames=frames, flow=flow, valid=valid)
  a = augment.augment(example, np.random.default_rng(5), options)
  b = augment.augment(example, np.random.default_rng(5), options)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert a['frames'].shape == (2, 5, 7, 3) and a['flow'].shape == (5, 7, 2)
  # Without scaling or flips, the crop is a window of the input.
  plain = augment.augment(
    example, np.random.default_rng(0), augment.AugmentOptions((5, 7))
  )
  windows = [
    (top, left)
    for top in range(5)
    for left in range(7)
    if np.array_equal(plain['flow'], flow[top : top + 5, left : left + 7])
  ]
  assert len(windows) == 1
  # Too small an example is scaled up to the crop size first.
  small = augment.augment(
    dict(frames=frames[:, :3], flow=flow[:3], valid=valid[:3]),
    np.random.default_rng(0),
    augment.AugmentOptions((5, 7)),
  )
  assert small['flow'].shape == (5, 7, 2)
