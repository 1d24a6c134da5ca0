"""Tiled full-resolution inference against the release colab's procedure, the command."""

import itertools
import json
import os
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import flow as flow_config
from experiments.tasks.flow import compute
from experiments.tasks.flow import formats
from experiments.tasks.flow import inference
from experiments.tasks.flow import task
from perceiver import checkpoint
from tests import helpers


def _colab_flow(apply_tile, img1, img2, tile, min_overlap):
  """An independent rendering of the colab's procedure, from its description: corners
  `range(0, size, tile - overlap)` with the last one flush, weights
  `min(min(i + 1, tile - i) over y, same over x)`, flows and weights padded to the
  image and summed, then divided."""
  ys = list(range(0, img1.shape[0], tile[0] - min_overlap))
  xs = list(range(0, img1.shape[1], tile[1] - min_overlap))
  ys[-1] = img1.shape[0] - tile[0]
  xs[-1] = img1.shape[1] - tile[1]
  imgs = jnp.stack([img1, img2], axis=0)[None]
  height, width = imgs.shape[-3], imgs.shape[-2]
  flows, count = 0, 0
  wx, wy = jnp.meshgrid(jnp.arange(tile[1]), jnp.arange(tile[0]))
  weights = jnp.minimum(
    jnp.minimum(wx + 1, tile[1] - wx), jnp.minimum(wy + 1, tile[0] - wy)
  )
  weights = weights[None, :, :, None]
  for y, x in itertools.product(ys, xs):
    piece = apply_tile(imgs[..., y : y + tile[0], x : x + tile[1], :])
    padding = [(0, 0), (y, height - y - tile[0]), (x, width - x - tile[1]), (0, 0)]
    flows += jnp.pad(piece * weights, padding)
    count += jnp.pad(weights, padding)
  return flows / count


def _fake_model(frames):
  """A tile 'model' whose output depends on content and on position in the tile."""
  h, w = frames.shape[2:4]
  ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing='ij')
  difference = frames[:, 1] - frames[:, 0]
  u = difference[..., 0] + 0.1 * xs
  v = difference[..., 1] * difference[..., 2] - 0.05 * ys
  return jnp.stack([u, v], axis=-1)


def test_grid_of_a_sintel_frame():
  corners = inference.grid_indices((436, 1024), (368, 496), 20)
  assert corners == list(itertools.product([0, 68], [0, 476, 528]))
  # The colab repeats a tile when the image is one tile high: kept, weighted twice.
  assert inference.grid_indices((368, 496), (368, 496), 20) == [(0, 0)] * 4
  with pytest.raises(ValueError, match='smaller than the tile'):
    inference.grid_indices((30, 30), (7, 11), 7)


def test_weights_by_hand():
  np.testing.assert_array_equal(
    inference.tile_weights((3, 5)), [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]]
  )


@pytest.mark.parametrize('size', [(19, 29), (7, 11), (19, 23), (7, 27)])
def test_tiled_flow_equals_the_colab_procedure(size):
  rng = np.random.default_rng(size[0])
  img1, img2 = rng.uniform(-1, 1, (2,) + size + (3,)).astype(np.float32)
  tile, overlap = (7, 11), 3
  want = _colab_flow(_fake_model, img1, img2, tile, overlap)
  frames = np.stack([img1, img2])[None]
  for xp in (np, jnp):
    got = inference.tiled_flow(_fake_model, frames, tile, overlap, xp=xp)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_small_frames_are_padded_with_edge_pixels():
  frames = np.random.default_rng(0).uniform(-1, 1, (1, 2, 5, 8, 3)).astype(np.float32)
  got = inference.tiled_flow(_fake_model, frames, (7, 11), 3, xp=np)
  padded = np.pad(frames, ((0, 0), (0, 0), (0, 2), (0, 3), (0, 0)), mode='edge')
  np.testing.assert_allclose(got, _fake_model(padded)[:, :5, :8], rtol=1e-6)


def test_colour_wheel():
  flow = np.array([[[0.0, 0.0], [2.0, 0.0], [0.0, -2.0], [-2.0, 0.0]]])
  colour = compute.flow_to_colour(flow)
  assert colour[0, 0].tolist() == [255, 255, 255]  # No motion: white.
  # Right: angle atan2(-0, -2) = -pi, the wheel's first hue, red.
  assert colour[0, 1].tolist() == [255, 0, 0]
  # Left: position 27 of 55 = cyan-blue i=2: (0, 255 - floor(255*2/11), 255).
  assert colour[0, 3].tolist() == [0, 255 - 46, 255]
  # Up (v < 0): position 40.5 of 55, between blue-magenta i=4 and i=5 (red
  # floor(255*4/13) = 78 and floor(255*5/13) = 98) -> (88, 0, 255).
  assert colour[0, 2].tolist() == [88, 0, 255]
  half = compute.flow_to_colour(flow, max_radius=4.0)
  assert half[0, 1].tolist() == [255, 127, 127]  # Half way to white.


def _debug_checkpoint(tmp_path):
  config = flow_config.get_config('debug')
  model = task.build_model(config)
  frames = np.zeros((1, 2, 13, 19, 3), np.float32)
  params, _ = model.init(jax.random.PRNGKey(0), {'frames': frames}, is_training=True)
  params = jax.tree.map(
    lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params
  )
  path = str(tmp_path / 'params.npz')
  checkpoint.save_npz(path, params)
  return config, path


@pytest.mark.slow
def test_command_end_to_end(tmp_path, capsys):
  from experiments import optical_flow

  config, path = _debug_checkpoint(tmp_path)
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
  formats.write_image(str(tmp_path / 'a.png'), frames[0])
  formats.write_image(str(tmp_path / 'b.png'), frames[1])
  truth = rng.normal(size=(20, 30, 2)).astype(np.float32)
  formats.write_flo(str(tmp_path / 'gt.flo'), truth)
  flags = _flags(
    config=config,
    checkpoint=path,
    frame1=str(tmp_path / 'a.png'),
    frame2=str(tmp_path / 'b.png'),
    output=str(tmp_path / 'out.flo'),
    visualization=str(tmp_path / 'out.png'),
    ground_truth=str(tmp_path / 'gt.flo'),
  )
  optical_flow.main(['optical_flow'], flag_values=flags)  # No SystemExit: status 0.
  captured = capsys.readouterr()
  assert 'tile 4/4' in captured.err
  flow = formats.read_flo(str(tmp_path / 'out.flo'))
  assert flow.shape == (20, 30, 2) and np.isfinite(flow).all() and flow.std() > 0
  scores = json.loads(captured.out.strip().splitlines()[-1])
  assert scores['epe'] == pytest.approx(
    np.linalg.norm(flow - truth, axis=-1).mean(), rel=1e-5
  )
  assert formats.read_image(str(tmp_path / 'out.png')).shape == (20, 30, 3)


def test_command_exits_with_status_1(tmp_path):
  (tmp_path / 'a.png').write_text('not an image')
  command = [
    sys.executable,
    '-m',
    'experiments.optical_flow',
    f'--config={helpers.REPO_ROOT}/configs/flow.py:debug',
    f'--checkpoint={tmp_path / "none.npz"}',
    f'--frame1={tmp_path / "a.png"}',
    f'--frame2={tmp_path / "a.png"}',
    f'--output={tmp_path / "out.flo"}',
  ]
  env = dict(os.environ, PYTHONPATH=helpers.REPO_ROOT, JAX_PLATFORMS='cpu')
  result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('optical_flow: error:') and 'a.png' in last


def _flags(**values):
  names = ('config', 'checkpoint', 'frame1', 'frame2', 'output', 'visualization')
  flags = {n: types.SimpleNamespace(value=None) for n in names + ('ground_truth',)}
  for name, value in values.items():
    flags[name].value = value
  return flags


def test_command_errors_name_the_input(tmp_path):
  from experiments import optical_flow

  config = flow_config.get_config('debug')
  rng = np.random.default_rng(2)
  frames = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
  formats.write_image(str(tmp_path / 'a.png'), frames[0])
  formats.write_image(str(tmp_path / 'small.png'), frames[1, :10])
  from PIL import Image

  Image.fromarray(frames[1, ..., 0]).save(tmp_path / 'grey.png')
  (tmp_path / 'text.flo').write_text('this is not a flow file')
  formats.write_image(str(tmp_path / 'b.png'), frames[1])
  other = flow_config.get_config('synthetic')
  shapes = jax.eval_shape(
    lambda: task.build_model(other).init(
      jax.random.PRNGKey(0),
      {'frames': jnp.zeros((1, 2, 24, 32, 3), jnp.float32)},
      is_training=True,
    )[0]
  )
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  checkpoint.save_npz(str(tmp_path / 'other.npz'), params)
  base = dict(
    config=config,
    checkpoint=str(tmp_path / 'other.npz'),
    frame1=str(tmp_path / 'a.png'),
    frame2=str(tmp_path / 'b.png'),
    output=str(tmp_path / 'out.flo'),
  )
  cases = [
    (dict(frame2=str(tmp_path / 'small.png')), r"small.png' is 30x10"),
    (dict(frame2=str(tmp_path / 'grey.png')), r'grey.png.*grey'),
    (dict(ground_truth=str(tmp_path / 'text.flo')), r'text.flo.*magic'),
    (dict(output=str(tmp_path / 'out.png')), r'out.png.*must end in .flo'),
    ({}, r'other.npz.*does not fit'),
    (dict(checkpoint=str(tmp_path / 'missing.npz')), r'missing.npz'),
  ]
  for overrides, message in cases:
    with pytest.raises(SystemExit) as info:
      optical_flow.main(['optical_flow'], flag_values=_flags(**{**base, **overrides}))
    text = str(info.value.code)
    assert text.startswith('optical_flow: error:') and re.search(message, text), text
