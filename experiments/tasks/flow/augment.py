"""Training augmentation for optical flow, as flow training does it.

Applied to one example at a time, in this order, with a NumPy generator:

  photometric: brightness, contrast and saturation factors drawn once and applied to
    both frames alike (so brightness constancy still holds);
  scale: both frames resized by one factor `s` (bilinear, pixel centres aligned:
    output pixel `x'` samples input `(x' + 0.5) / s - 0.5`); the flow is resampled the
    same way and multiplied by `s`; sparse ground truth is resampled from valid pixels
    only, and a pixel stays valid where its neighbours all were;
  crop: the same random window of the crop size from frames, flow and validity;
  flips: left-right with `u` negated, up-down with `v` negated.

Shape glossary:
  H, W: input size; h, w: crop size.
"""

import dataclasses
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

from experiments.training import errors


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
  """Attributes:
  crop_size: `(h, w)` of the output.
  min_log2_scale, max_log2_scale: `s = 2 ** uniform(min, max)`, raised where needed
    so that the scaled frames are at least the crop size.
  brightness, contrast, saturation: factors drawn from `[1 - a, 1 + a]`.
  horizontal_flip, vertical_flip: flip probabilities.
  """

  crop_size: Tuple[int, int]
  min_log2_scale: float = 0.0
  max_log2_scale: float = 0.0
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  horizontal_flip: float = 0.0
  vertical_flip: float = 0.0


def photometric(frames: np.ndarray, brightness, contrast, saturation) -> np.ndarray:
  """The same colour jitter on both frames.

  Args:
    frames: `[2, H, W, 3]` in [0, 255].
    brightness: multiplies every value.
    contrast: scales the distance from the mean grey level of the pair.
    saturation: scales each pixel's distance from its own grey level.

  Returns:
    `[2, H, W, 3]` float32 clipped to [0, 255].
  """
  x = frames.astype(np.float32) * brightness
  grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
  x = grey[..., None] + saturation * (x - grey[..., None])
  mean = grey.mean()
  x = mean + contrast * (x - mean)
  return np.clip(x, 0, 255).astype(np.float32)


def _resize_coordinates(size, scale):
  """Input coordinates `[2, h', w']` of the output pixels for a resize by `scale`."""
  out = (int(np.floor(size[0] * scale)), int(np.floor(size[1] * scale)))
  ys = (np.arange(out[0]) + 0.5) / scale - 0.5
  xs = (np.arange(out[1]) + 0.5) / scale - 0.5
  return np.stack(np.meshgrid(ys, xs, indexing='ij'))


def scale_example(frames, flow, valid, scale: float):
  """Resizes an example by `scale` (see the module docstring).

  Args:
    frames: `[2, H, W, 3]`.
    flow: `[H, W, 2]`.
    valid: `[H, W]` in {0, 1}.
    scale: the factor.

  Returns:
    `(frames [2, H', W', 3], flow [H', W', 2], valid [H', W'])`, `H' = floor(H s)`.
  """
  coords = _resize_coordinates(flow.shape[:2], scale)

  def sample(image):
    return ndimage.map_coordinates(image, coords, order=1, mode='nearest')

  frames = np.stack(
    [np.stack([sample(f[..., c]) for c in range(f.shape[-1])], -1) for f in frames]
  ).astype(np.float32)
  valid = valid.astype(np.float32)
  weight = sample(valid)
  flow = np.stack([sample(flow[..., c] * valid) for c in range(2)], -1)
  flow = np.where(weight[..., None] > 0, flow / np.maximum(weight, 1e-6)[..., None], 0.0)
  return frames, (flow * scale).astype(np.float32), (weight > 1 - 1e-6).astype(np.float32)


def crop(frames, flow, valid, top: int, left: int, size):
  h, w = size
  window = (slice(top, top + h), slice(left, left + w))
  return frames[:, window[0], window[1]], flow[window], valid[window]


def flip_horizontal(frames, flow, valid):
  """Mirror left-right: the flow is mirrored and its `u` negated."""
  flow = flow[:, ::-1] * np.array([-1.0, 1.0], np.float32)
  return frames[:, :, ::-1], flow, valid[:, ::-1]


def flip_vertical(frames, flow, valid):
  """Mirror up-down: the flow is mirrored and its `v` negated."""
  flow = flow[::-1] * np.array([1.0, -1.0], np.float32)
  return frames[:, ::-1], flow, valid[::-1]


def augment(
  example: Dict[str, np.ndarray], rng: np.random.Generator, options: AugmentOptions
) -> Dict[str, np.ndarray]:
  """One augmented example: `frames` `[2, h, w, 3]` float32 in [0, 255], `flow`, `valid`."""
  frames, flow, valid = example['frames'], example['flow'], example['valid']
  height, width = flow.shape[:2]
  h, w = options.crop_size

  def factor(a):
    return rng.uniform(1 - a, 1 + a) if a > 0 else 1.0

  frames = photometric(
    frames,
    factor(options.brightness),
    factor(options.contrast),
    factor(options.saturation),
  )
  log2_scale = rng.uniform(options.min_log2_scale, options.max_log2_scale)
  scale = 2.0**log2_scale
  if np.floor(height * scale) < h or np.floor(width * scale) < w:
    scale = max(h / height, w / width) * (1 + 1e-6)
  if scale != 1.0:
    frames, flow, valid = scale_example(frames, flow, valid, scale)
  if flow.shape[0] < h or flow.shape[1] < w:
    raise errors.DataError(
      f'example of size {flow.shape[:2]} is smaller than the crop {h}x{w}.'
    )
  top = rng.integers(0, flow.shape[0] - h + 1)
  left = rng.integers(0, flow.shape[1] - w + 1)
  frames, flow, valid = crop(frames, flow, valid, top, left, (h, w))
  if rng.uniform() < options.horizontal_flip:
    frames, flow, valid = flip_horizontal(frames, flow, valid)
  if rng.uniform() < options.vertical_flip:
    frames, flow, valid = flip_vertical(frames, flow, valid)
  return {
    'frames': np.ascontiguousarray(frames, np.float32),
    'flow': np.ascontiguousarray(flow, np.float32),
    'valid': np.ascontiguousarray(valid, np.float32),
  }
