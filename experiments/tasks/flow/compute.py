"""Flow between two images of any size with a trained model, and its visualisation.

`FlowModel.from_checkpoint(config, path)` checks that the parameters in `path` (the
release's `.pystate` or this project's `.npz`) fit the architecture of `config`; its
`__call__(frame1, frame2)` returns the full-resolution flow, computed tile by tile as the
release's colab does (`inference.tiled_flow`). `flow_to_colour` draws a flow field with
the standard colour wheel of the Middlebury benchmark (Baker et al., 2011): hue gives the
direction, saturation the magnitude relative to the largest one in the image.

Shape glossary:
  H, W: image size.
"""

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.flow import inference
from experiments.tasks.flow import task
from perceiver import checkpoint as checkpoint_lib

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


class FlowModel:
  """A flow model with parameters, applied to whole images tile by tile."""

  def __init__(self, config: ml_collections.ConfigDict, params, state=None):
    self.config = config
    self.tile = tuple(config.model.image_size)
    self.min_overlap = config.model.tile_min_overlap
    model = task.build_model(_without_init(config))
    self._params, self._state = params, state or {}
    self._apply = jax.jit(functools.partial(model.apply, is_training=False))

  @classmethod
  def from_checkpoint(
    cls, config: ml_collections.ConfigDict, name_or_path: str
  ) -> 'FlowModel':
    """Loads a checkpoint and checks that it fits `config`'s architecture.

    Args:
      config: the flow config naming the architecture.
      name_or_path: a checkpoint file (release `.pystate`, this project's `.npz`) or a
        registry name of `experiments.inference.pretrained` ('optical_flow'), which is
        downloaded once into the cache and verified.
    """
    from experiments.inference import pretrained  # pylint: disable=import-outside-toplevel

    path = pretrained.checkpoint_path(name_or_path)
    params, state = checkpoint_lib.load_params(path)
    model = task.build_model(_without_init(config))
    frames = jax.ShapeDtypeStruct(
      (1, 2) + tuple(config.model.image_size) + (3,), jnp.float32
    )
    want, _ = jax.eval_shape(
      lambda f: model.init(jax.random.PRNGKey(0), {'frames': f}, is_training=True), frames
    )
    task.check_params_fit(want, params, path)
    return cls(config, params, state)

  @classmethod
  def from_pretrained(cls, model) -> 'FlowModel':
    """From `experiments.inference.pretrained.load('optical_flow')` or `smoke_model`."""
    return cls(model.config, model.params, model.state)

  def apply_tile(self, frames):
    """`[B, 2, h, w, 3]` normalised frames -> `[B, h, w, 2]`."""
    out, _ = self._apply(
      self._params, self._state, jax.random.PRNGKey(0), {'frames': frames}
    )
    return out

  def __call__(
    self,
    frame1: np.ndarray,
    frame2: np.ndarray,
    progress: Optional[Callable[[int, int], None]] = None,
  ) -> np.ndarray:
    """Flow `[H, W, 2]` from uint8 frames `[H, W, 3]` of equal size."""
    if frame1.shape != frame2.shape:
      raise ValueError(f'frames differ in size: {frame1.shape} vs {frame2.shape}.')
    frames = inference.normalize(np.stack([frame1, frame2])[None].astype(np.float32))
    flow = inference.tiled_flow(
      self.apply_tile, frames, self.tile, self.min_overlap, xp=np, progress=progress
    )
    return np.asarray(flow[0], np.float32)


def _without_init(config):
  """`config` without `model.init_checkpoint` (parameters are passed explicitly)."""
  if not config.model.init_checkpoint:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.init_checkpoint = ''
  return config
