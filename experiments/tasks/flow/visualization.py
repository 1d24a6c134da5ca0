"""Pictures of optical flow on the standard colour wheel of the Middlebury benchmark.

`flow_to_colour` draws a flow field as Baker et al. (2011) do: hue gives the
direction, saturation the magnitude relative to the largest one in the image (or a
given radius), and vectors beyond that radius are drawn darker.

Shape glossary:
  H, W: image size.
"""

from typing import Optional

import numpy as np

# Colour wheel segments: red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta,
# magenta-red, in numbers of hues.
_SEGMENTS = (15, 6, 4, 11, 13, 6)


def colour_wheel() -> np.ndarray:
  """`[55, 3]` float RGB hues in [0, 255] around the wheel (starting at red)."""
  ry, yg, gc, cb, bm, mr = _SEGMENTS
  rows = []

  def ramp(n):
    return np.floor(255 * np.arange(n) / n)

  rows.append(np.stack([np.full(ry, 255.0), ramp(ry), np.zeros(ry)], -1))
  rows.append(np.stack([255 - ramp(yg), np.full(yg, 255.0), np.zeros(yg)], -1))
  rows.append(np.stack([np.zeros(gc), np.full(gc, 255.0), ramp(gc)], -1))
  rows.append(np.stack([np.zeros(cb), 255 - ramp(cb), np.full(cb, 255.0)], -1))
  rows.append(np.stack([ramp(bm), np.zeros(bm), np.full(bm, 255.0)], -1))
  rows.append(np.stack([np.full(mr, 255.0), np.zeros(mr), 255 - ramp(mr)], -1))
  return np.concatenate(rows)


def flow_to_colour(flow: np.ndarray, max_radius: Optional[float] = None) -> np.ndarray:
  """`[H, W, 3]` uint8 picture of `flow` `[H, W, 2]` on the Middlebury colour wheel.

  Args:
    flow: `(u, v)` per pixel.
    max_radius: the magnitude drawn fully saturated (default: the largest in `flow`);
      larger vectors are drawn darker.
  """
  flow = np.asarray(flow, np.float64)
  u, v = flow[..., 0], flow[..., 1]
  radius = np.sqrt(u**2 + v**2)
  scale = max_radius if max_radius else max(float(radius.max(initial=0.0)), 1e-9)
  u, v, radius = u / scale, v / scale, radius / scale
  wheel = colour_wheel() / 255.0
  n = len(wheel)
  angle = np.arctan2(-v, -u) / np.pi  # In [-1, 1].
  position = (angle + 1) / 2 * (n - 1)
  k0 = np.floor(position).astype(int)
  k1 = (k0 + 1) % n
  f = (position - k0)[..., None]
  colour = (1 - f) * wheel[k0] + f * wheel[k1]
  inside = (radius <= 1)[..., None]
  colour = np.where(inside, 1 - radius[..., None] * (1 - colour), colour * 0.75)
  return np.floor(255 * colour).astype(np.uint8)
