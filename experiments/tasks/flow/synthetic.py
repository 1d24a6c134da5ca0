"""Flying objects: frame pairs with exact ground-truth optical flow (FlyingChairs recipe).

A scene is a stack of layers: a textured background covering the frame and
`num_objects` textured foreground objects (ellipses, convex polygons or digit sprites
from scikit-learn's 8x8 digits), drawn back to front. Each layer has its own affine
motion (translation, rotation, scale) between the two frames. Layer `l` maps its own
coordinates `o` (pixels, centred on the layer) to image coordinates in frame `t` by

  x = p_t + s_t R(theta_t) o,

so the forward flow of a frame-1 pixel `x` whose top-most layer is `l` is exactly

  flow(x) = p_2 + s_2 R(theta_2) [R(-theta_1) (x - p_1) / s_1] - x.

A pixel is valid when the point it moves to lies inside frame 2 and the same layer is
on top there (not occluded, not uncovered). Textures are scikit-learn's sample
photographs (smoothed, tinted per layer; `textures='photos'`) or smooth random noise
(`textures='noise'`, no file reading), sampled bilinearly in layer coordinates, so both
frames are renderings of the same continuous scene.

Example `i` of a seed is a pure function of `(seed, i)`: `example(i)` of the training,
validation and test splits use disjoint index ranges (`SPLIT_OFFSETS`).

Shape glossary:
  H, W: frame height and width.
  K: layers (background + objects).
"""

import dataclasses
import functools
from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage

from experiments.training import errors

SPLIT_OFFSETS = {'train': 0, 'validation': 2**40, 'test': 2**41}


@dataclasses.dataclass(frozen=True)
class SceneOptions:
  """Distribution of scenes.

  Attributes:
    size: `(H, W)` of the frames.
    num_objects: inclusive range of the number of foreground objects.
    object_radius: range of object radii, as a fraction of `min(H, W)`.
    background_translation: maximum background shift per axis (pixels).
    object_translation: maximum object shift per axis (pixels).
    background_rotation, object_rotation: maximum rotation (degrees).
    background_scale, object_scale: maximum relative scale change (e.g. 0.05).
    textures: 'photos' or 'noise'.
    texture_scale: range of texture pixels per frame pixel.
  """

  size: Tuple[int, int] = (32, 48)
  num_objects: Tuple[int, int] = (1, 3)
  object_radius: Tuple[float, float] = (0.15, 0.35)
  background_translation: float = 2.0
  object_translation: float = 3.0
  background_rotation: float = 2.0
  object_rotation: float = 10.0
  background_scale: float = 0.03
  object_scale: float = 0.08
  textures: str = 'photos'
  texture_scale: Tuple[float, float] = (0.75, 1.5)


@functools.cache
def _photos() -> Tuple[np.ndarray, ...]:
  """scikit-learn's sample photographs, smoothed, float32 `[h, w, 3]` in [0, 255]."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  return tuple(
    ndimage.gaussian_filter(image.astype(np.float32), sigma=(2.0, 2.0, 0.0))
    for image in datasets.load_sample_images().images
  )


@functools.cache
def _digits() -> np.ndarray:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  return datasets.load_digits().images.astype(np.float32) / 16.0  # [1797, 8, 8]


def _noise_texture(rng: np.random.Generator) -> np.ndarray:
  coarse = rng.uniform(0, 255, size=(24, 24, 3)).astype(np.float32)
  # Channel by channel: the same values as zooming (8, 8, 1) at once, 6x faster.
  channels = [ndimage.zoom(coarse[..., c], 8, order=3) for c in range(3)]
  return np.stack(channels, axis=-1).clip(0, 255)


def _rotation(degrees: float) -> np.ndarray:
  t = np.deg2rad(degrees)
  return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@dataclasses.dataclass
class Layer:
  """One layer: its motion, shape and texture (see the module docstring)."""

  positions: np.ndarray  # [2 frames, 2] (x, y) of the layer centre.
  scales: np.ndarray  # [2]
  angles: np.ndarray  # [2] degrees.
  shape: str  # 'full', 'ellipse', 'polygon' or 'digit'.
  shape_params: dict
  texture: np.ndarray  # [h, w, 3] float32.
  texture_origin: np.ndarray  # (x, y) texture coordinate of o = 0.
  texture_scale: float
  tint: np.ndarray  # [3]

  def to_layer(self, points: np.ndarray, t: int) -> np.ndarray:
    """Image points `[..., 2]` (x, y) of frame `t` -> layer coordinates `o`."""
    matrix = self.scales[t] * _rotation(self.angles[t])
    return (points - self.positions[t]) @ np.linalg.inv(matrix).T

  def to_image(self, o: np.ndarray, t: int) -> np.ndarray:
    matrix = self.scales[t] * _rotation(self.angles[t])
    return o @ matrix.T + self.positions[t]

  def covers(self, o: np.ndarray) -> np.ndarray:
    """Boolean `[...]`: whether the layer is present at layer coordinates `o`."""
    x, y = o[..., 0], o[..., 1]
    if self.shape == 'full':
      return np.ones(x.shape, bool)
    if self.shape == 'ellipse':
      a, b = self.shape_params['radii']
      return (x / a) ** 2 + (y / b) ** 2 <= 1.0
    if self.shape == 'polygon':
      inside = np.ones(x.shape, bool)
      vertices = self.shape_params['vertices']  # Counter-clockwise, convex.
      for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        inside &= (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) >= 0
      return inside
    if self.shape == 'digit':
      radius = self.shape_params['radius']
      # The 8x8 sprite spans [-radius, radius]^2; pixel centres at -radius + (i+0.5)*step.
      step = 2 * radius / 8
      rows = (y + radius) / step - 0.5
      cols = (x + radius) / step - 0.5
      value = ndimage.map_coordinates(
        self.shape_params['sprite'], [rows.ravel(), cols.ravel()], order=1, cval=0.0
      ).reshape(x.shape)
      return value > 0.4
    raise ValueError(f'unknown shape {self.shape!r}')

  def colour(self, o: np.ndarray) -> np.ndarray:
    """`[..., 3]` colour at layer coordinates `o` (bilinear texture lookup)."""
    u = self.texture_origin + self.texture_scale * o
    flat = u.reshape(-1, 2)
    channels = [
      ndimage.map_coordinates(
        self.texture[..., c], [flat[:, 1], flat[:, 0]], order=1, mode='mirror'
      )
      for c in range(3)
    ]
    colour = np.stack(channels, axis=-1) * self.tint
    return colour.reshape(o.shape[:-1] + (3,))


def _sample_layers(rng: np.random.Generator, options: SceneOptions) -> List[Layer]:
  height, width = options.size
  centre = np.array([(width - 1) / 2, (height - 1) / 2])
  if options.textures == 'photos':
    photos = _photos()
  elif options.textures == 'noise':
    photos = None
  else:
    raise errors.ConfigError(f"textures={options.textures!r} is not 'photos' or 'noise'.")

  def texture():
    image = photos[rng.integers(len(photos))] if photos else _noise_texture(rng)
    scale = rng.uniform(*options.texture_scale)
    h, w = image.shape[:2]
    origin = np.array([rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h])
    return dict(texture=image, texture_origin=origin, texture_scale=scale)

  def motion(position, translation, rotation, scale):
    angle = rng.uniform(-180, 180) if rotation > 20 else rng.uniform(-30, 30)
    return dict(
      positions=np.stack([position, position + rng.uniform(-1, 1, 2) * translation]),
      scales=np.array([1.0, 1.0 + rng.uniform(-1, 1) * scale]),
      angles=np.array([angle, angle + rng.uniform(-1, 1) * rotation]),
    )

  layers = [
    Layer(
      shape='full',
      shape_params={},
      tint=rng.uniform(0.7, 1.3, 3),
      **motion(
        centre,
        options.background_translation,
        options.background_rotation,
        options.background_scale,
      ),
      **texture(),
    )
  ]
  low, high = options.num_objects
  for _ in range(rng.integers(low, high + 1)):
    radius = rng.uniform(*options.object_radius) * min(height, width)
    kind = ('ellipse', 'polygon', 'digit')[rng.integers(3)]
    if kind == 'ellipse':
      params = dict(radii=radius * rng.uniform(0.5, 1.0, 2))
    elif kind == 'polygon':
      angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
      params = dict(vertices=radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1))
      if (
        len(angles) < 3 or np.diff(np.append(angles, angles[0] + 2 * np.pi)).max() > np.pi
      ):
        kind, params = 'ellipse', dict(radii=np.array([radius, radius * 0.7]))
    else:
      digits = _digits()
      params = dict(radius=radius, sprite=digits[rng.integers(len(digits))])
    position = np.array([rng.uniform(0, width - 1), rng.uniform(0, height - 1)])
    layers.append(
      Layer(
        shape=kind,
        shape_params=params,
        tint=rng.uniform(0.5, 1.5, 3),
        **motion(
          position,
          options.object_translation,
          options.object_rotation,
          options.object_scale,
        ),
        **texture(),
      )
    )
  return layers


def top_layer(layers: List[Layer], points: np.ndarray, t: int) -> np.ndarray:
  """`[...]` int: index of the top-most layer covering each image point in frame `t`."""
  top = np.zeros(points.shape[:-1], np.int64)
  for index, layer in enumerate(layers[1:], start=1):
    top = np.where(layer.covers(layer.to_layer(points, t)), index, top)
  return top


def render(layers: List[Layer], points: np.ndarray, t: int) -> np.ndarray:
  """`[..., 3]` float colours of frame `t` at image points `[..., 2]`."""
  top = top_layer(layers, points, t)
  out = np.zeros(points.shape[:-1] + (3,))
  for index, layer in enumerate(layers):
    where = top == index
    if where.any():
      out[where] = layer.colour(layer.to_layer(points[where], t))
  return out


def pixel_grid(size: Tuple[int, int]) -> np.ndarray:
  """`[H, W, 2]` (x, y) pixel centres."""
  ys, xs = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing='ij')
  return np.stack([xs, ys], axis=-1).astype(np.float64)


def scene_flow(layers: List[Layer], size: Tuple[int, int]) -> Dict[str, np.ndarray]:
  """Exact forward flow, validity and top layers of a scene.

  Returns:
    `flow` `[H, W, 2]`, `valid` `[H, W]` (bool), `layer1` `[H, W]` (top layer of each
    frame-1 pixel), `target` `[H, W, 2]` (where each frame-1 pixel moves to).
  """
  grid = pixel_grid(size)
  layer1 = top_layer(layers, grid, 0)
  target = np.zeros_like(grid)
  for index, layer in enumerate(layers):
    where = layer1 == index
    target[where] = layer.to_image(layer.to_layer(grid[where], 0), 1)
  height, width = size
  inside = (
    (target[..., 0] >= 0)
    & (target[..., 0] <= width - 1)
    & (target[..., 1] >= 0)
    & (target[..., 1] <= height - 1)
  )
  valid = inside & (top_layer(layers, target, 1) == layer1)
  return dict(flow=target - grid, valid=valid, layer1=layer1, target=target)


def generate(index: int, *, seed: int, options: SceneOptions) -> Dict[str, np.ndarray]:
  """Example `index` of the stream seeded by `seed`.

  Returns:
    `frames` `[2, H, W, 3]` uint8, `flow` `[H, W, 2]` float32, `valid` `[H, W]` float32.
  """
  rng = np.random.default_rng([seed, index])
  layers = _sample_layers(rng, options)
  grid = pixel_grid(options.size)
  frames = np.stack([render(layers, grid, t) for t in (0, 1)])
  truth = scene_flow(layers, options.size)
  return {
    'frames': np.round(frames).clip(0, 255).astype(np.uint8),
    'flow': truth['flow'].astype(np.float32),
    'valid': truth['valid'].astype(np.float32),
  }


def generate_split(
  split: str, start: int, count: int, *, seed: int, options: SceneOptions
) -> Dict[str, np.ndarray]:
  """Examples `[start, start + count)` of `split`, stacked: `frames` `[N, 2, H, W, 3]`..."""
  if split not in SPLIT_OFFSETS:
    raise errors.ConfigError(f'split={split!r} is not one of {tuple(SPLIT_OFFSETS)}.')
  examples = [
    generate(SPLIT_OFFSETS[split] + i, seed=seed, options=options)
    for i in range(start, start + count)
  ]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
