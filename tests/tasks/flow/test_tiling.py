"""Tiled full-resolution inference against the release colab's procedure."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.tasks.flow import tiling


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
  corners = tiling.grid_indices((436, 1024), (368, 496), 20)
  assert corners == list(itertools.product([0, 68], [0, 476, 528]))
  # The colab repeats a tile when the image is one tile high: kept, weighted twice.
  assert tiling.grid_indices((368, 496), (368, 496), 20) == [(0, 0)] * 4
  with pytest.raises(ValueError, match='smaller than the tile'):
    tiling.grid_indices((30, 30), (7, 11), 7)


def test_weights_by_hand():
  np.testing.assert_array_equal(
    tiling.tile_weights((3, 5)), [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]]
  )


@pytest.mark.parametrize('size', [(19, 29), (7, 11), (19, 23), (7, 27)])
def test_tiled_flow_equals_the_colab_procedure(size):
  rng = np.random.default_rng(size[0])
  img1, img2 = rng.uniform(-1, 1, (2,) + size + (3,)).astype(np.float32)
  tile, overlap = (7, 11), 3
  want = _colab_flow(_fake_model, img1, img2, tile, overlap)
  frames = np.stack([img1, img2])[None]
  for xp in (np, jnp):
    got = tiling.tiled_flow(_fake_model, frames, tile, overlap, xp=xp)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_small_frames_are_padded_with_edge_pixels():
  frames = np.random.default_rng(0).uniform(-1, 1, (1, 2, 5, 8, 3)).astype(np.float32)
  got = tiling.tiled_flow(_fake_model, frames, (7, 11), 3, xp=np)
  padded = np.pad(frames, ((0, 0), (0, 0), (0, 2), (0, 3), (0, 0)), mode='edge')
  np.testing.assert_allclose(got, _fake_model(padded)[:, :5, :8], rtol=1e-6)
