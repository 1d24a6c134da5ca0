"""Full-resolution optical flow from a model that sees fixed-size tiles.

The procedure of the release's optical-flow colab:

  * pixels are normalised to [-1, 1] (`value / 255 * 2 - 1`);
  * tile corners: along each axis, `range(0, size, tile - min_overlap)`, and the last
    corner is moved to `size - tile` so the last tile is flush with the border (this can
    leave that tile overlapping its neighbour by more than `min_overlap`, or repeat a
    tile, which is then computed and weighted twice, as in the colab; along an axis
    exactly one tile long every tile is repeated alike, so there the repeats, which do
    not change the blend, are skipped). For sizes where a
    middle corner would put a tile past the border (e.g. 960 pixels for tiles of 496,
    where the colab's slicing yields a short tile and the model fails), that corner is
    clamped to `size - tile`;
  * every tile of both frames goes through the model; its flow is weighted by
    `min(d_y, d_x)` where `d` is the 1-based distance to the nearest tile border
    (`min(i + 1, tile - i)` along each axis), and the weighted flows are summed and
    divided by the summed weights.

The colab requires frames at least as large as a tile. Here smaller frames are padded at
the bottom and right by repeating their last row / column up to the tile size, and the
flow of the padded frame is cropped back to the original size.

Shape glossary:
  B: batch.
  H, W: frame size; h, w: tile size.
"""

import itertools
from typing import Callable, List, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from experiments.training import errors

MIN_OVERLAP = 20


def normalize(frames):
  """uint8-range pixels -> [-1, 1]."""
  return frames / 255.0 * 2 - 1


def grid_indices(
  image_size: Sequence[int], tile_size: Sequence[int], min_overlap: int = MIN_OVERLAP
) -> List[Tuple[int, int]]:
  """Top-left corners `(y, x)` of the tiles covering an image of `image_size`."""
  if min_overlap >= tile_size[0] or min_overlap >= tile_size[1]:
    raise errors.ConfigError(
      f'min_overlap={min_overlap} must be smaller than the tile size {tuple(tile_size)}.'
    )
  if image_size[0] < tile_size[0] or image_size[1] < tile_size[1]:
    raise ValueError(
      f'image of size {tuple(image_size)} is smaller than a tile {tuple(tile_size)}; '
      'pad it first (pad_to_tile).'
    )
  corners = [_axis_starts(s, t, min_overlap) for s, t in zip(image_size[:2], tile_size)]
  return list(itertools.product(*corners))


def _axis_starts(size: int, tile: int, min_overlap: int) -> List[int]:
  starts = list(range(0, size, tile - min_overlap))
  starts[-1] = size - tile
  # Where the colab's slice would run past the border (it then fails), clamp.
  return [min(start, size - tile) for start in starts]


def tile_weights(tile_size: Sequence[int]) -> np.ndarray:
  """`[h, w]` float32: `min` over both axes of the 1-based distance to the tile border."""
  h, w = tile_size
  ys = np.minimum(np.arange(h) + 1, h - np.arange(h))
  xs = np.minimum(np.arange(w) + 1, w - np.arange(w))
  return np.minimum(ys[:, None], xs[None, :]).astype(np.float32)


def pad_to_tile(frames, tile_size: Sequence[int]):
  """Pads `[..., H, W, C]` at the bottom/right by edge repetition to at least a tile."""
  height, width = frames.shape[-3:-1]
  pad_h = max(0, tile_size[0] - height)
  pad_w = max(0, tile_size[1] - width)
  if not pad_h and not pad_w:
    return frames
  widths = [(0, 0)] * (frames.ndim - 3) + [(0, pad_h), (0, pad_w), (0, 0)]
  xp = jnp if isinstance(frames, jnp.ndarray) else np
  return xp.pad(frames, widths, mode='edge')


def tiled_flow(
  apply_tile: Callable,
  frames,
  tile_size: Sequence[int],
  min_overlap: int = MIN_OVERLAP,
  *,
  xp=jnp,
  progress: Optional[Callable[[int, int], None]] = None,
):
  """Blends the model's flow over overlapping tiles (see the module docstring).

  Args:
    apply_tile: `[B, 2, h, w, 3]` frames -> `[B, h, w, 2]` flow.
    frames: `[B, 2, H, W, 3]` normalised frames, any `H, W` (padded when smaller than
      a tile).
    tile_size: `(h, w)`.
    min_overlap: the minimum overlap of neighbouring tiles (pixels).
    xp: `jax.numpy` (inside a traced function) or `numpy` (a host loop calling a
      jitted `apply_tile`).
    progress: optional `progress(done, total)` called after each tile.

  Returns:
    `[B, H, W, 2]` flow.
  """
  height, width = frames.shape[-3:-1]
  padded = pad_to_tile(frames, tile_size)
  full_h, full_w = padded.shape[-3:-1]
  h, w = tile_size
  weights = tile_weights(tile_size)[None, :, :, None]
  grid_indices((full_h, full_w), tile_size, min_overlap)  # Checks the arguments.
  # Along an axis one tile long the colab repeats every tile the same number of times,
  # which leaves the blend unchanged: those repeats are skipped.
  ys = [0] if full_h == h else _axis_starts(full_h, h, min_overlap)
  xs = [0] if full_w == w else _axis_starts(full_w, w, min_overlap)
  corners = list(itertools.product(ys, xs))
  if len(corners) == 1:
    flow = apply_tile(padded)
    if progress:
      progress(1, 1)
    return flow[:, :height, :width]
  flows = xp.zeros(padded.shape[:1] + (full_h, full_w, 2), np.float32)
  counts = xp.zeros((1, full_h, full_w, 1), np.float32)
  for done, (y, x) in enumerate(corners, start=1):
    piece = apply_tile(padded[..., y : y + h, x : x + w, :])
    if xp is np:
      flows[:, y : y + h, x : x + w] += np.asarray(piece) * weights
      counts[:, y : y + h, x : x + w] += weights
    else:
      flows = flows.at[:, y : y + h, x : x + w].add(piece * weights)
      counts = counts.at[:, y : y + h, x : x + w].add(weights)
    if progress:
      progress(done, len(corners))
  return (flows / counts)[:, :height, :width]
