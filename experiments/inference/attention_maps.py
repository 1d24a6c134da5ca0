"""Attention maps of a forward pass, and pictures of them over an image.

`apply_with_attention` runs a Haiku model once and returns its usual outputs together
with the softmax weights of its cross-attentions (the encoder's latents attending to the
inputs, the decoder's queries attending to the latents), recorded by
`perceiver._src.attention.record_attention_weights`: parameters, state and the model's
outputs are those of a plain `apply`. `latent_maps` turns the encoder's weights of chosen
latents into images over the input grid, and `save_overlay_grid` writes them as a PNG
grid of heat maps blended over the picture, as the Perceiver paper's attention figures.

Shape glossary:
  B: batch size; H: attention heads.
  T: queries (latents N for the encoder, outputs O for the decoder).
  S: keys (inputs M for the encoder, latents N for the decoder).
  L: chosen latents; h, w: the grid of the preprocessed inputs (M = h * w).
"""

import collections
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import haiku as hk
import numpy as np

from experiments.inference import plotting
from perceiver._src import attention as attention_lib

ENCODER_CROSS_ATTENTION = 'perceiver_encoder/~/cross_attention/attention'


def _name_repeats(records) -> Dict[str, Any]:
  """`{name: weights}`; a module called again (shared weights) gets `name#1`, `#2`..."""
  seen = collections.Counter()
  named = {}
  for name, weights in records:
    key = name if not seen[name] else f'{name}#{seen[name]}'
    seen[name] += 1
    named[key] = weights
  return named


def apply_with_attention(
  model,
  params,
  state,
  rng,
  *args,
  select: Optional[Callable[[str], bool]] = None,
  **kwargs,
):
  """`model.apply(params, state, rng, *args, **kwargs)` and its attention weights.

  Jit-compatible: call it inside `jax.jit` (with static keyword arguments such as
  `is_training` bound by `functools.partial`), since the recording happens while the
  function is traced.

  Args:
    model: an `hk.TransformedWithState` (or `hk.Transformed`, then `state` is ignored
      and passed as None).
    params, state, rng: as for `model.apply`.
    *args, **kwargs: the forward function's arguments.
    select: `module_name -> bool`, the attention modules to record (default: every
      cross-attention).

  Returns:
    `(outputs, weights)`: what `model.apply` returns, and `{module name: [B, H, T, S]}`
    float32 weights summing to one over S (a module applied several times, as the
    shared cross-attends of the original Perceiver, gives `name`, `name#1`, ...).
  """
  if isinstance(model, hk.TransformedWithState):
    call = lambda: model.apply(params, state, rng, *args, **kwargs)
  elif isinstance(model, hk.Transformed):
    call = lambda: model.apply(params, rng, *args, **kwargs)
  else:
    raise TypeError(f'Expected a Haiku transformed model, got {type(model).__name__}.')
  with attention_lib.record_attention_weights(select) as records:
    outputs = call()
  return outputs, _name_repeats(records)


def input_grid(num_inputs: int, image_hw: Tuple[int, int]) -> Tuple[int, int]:
  """`(h, w)` of the preprocessed input grid of an image of `image_hw` with M inputs.

  The preprocessors keep the aspect ratio and downsample both sides by the same factor
  (pixels: 1, conv: 4, ...), so `h * w = M` with `h / w = H / W`.

  Raises:
    ValueError: no such grid exists.
  """
  height, width = image_hw
  for factor in range(1, max(height, width) + 1):
    h, w = -(-height // factor), -(-width // factor)
    if h * w == num_inputs:
      return h, w
    if h * w < num_inputs:
      break
  raise ValueError(
    f'{num_inputs} inputs are no downsampled grid of a {height}x{width} image; '
    'attention maps over an image need image-shaped inputs (not permuted ones).'
  )


def latent_maps(
  weights,
  latents: Sequence[int],
  image_hw: Tuple[int, int],
  *,
  example: int = 0,
  head: Optional[int] = None,
) -> np.ndarray:
  """The attention of chosen latents over the input grid, `[L, h, w]`.

  Args:
    weights: encoder cross-attention weights `[B, H, N, M]`.
    latents: indices of the latents to show.
    image_hw: `(H, W)` of the image the inputs were made of.
    example: which batch element.
    head: which attention head; None: the mean over heads.

  Raises:
    ValueError: a latent, head or example index is out of range.
  """
  weights = np.asarray(weights, np.float32)
  batch, heads, num_latents, num_inputs = weights.shape
  if not 0 <= example < batch:
    raise ValueError(f'example={example} is not in [0, {batch}).')
  bad = [i for i in latents if not 0 <= i < num_latents]
  if bad or not latents:
    raise ValueError(f'latents {list(latents)} must be non-empty, in [0, {num_latents}).')
  if head is not None and not 0 <= head < heads:
    raise ValueError(f'head={head} is not in [0, {heads}).')
  chosen = weights[example][:, list(latents)]  # [H, L, M]
  maps = chosen.mean(axis=0) if head is None else chosen[head]
  h, w = input_grid(num_inputs, image_hw)
  return maps.reshape(len(latents), h, w)


def _upsample(maps: np.ndarray, image_hw: Tuple[int, int]) -> np.ndarray:
  """Nearest-neighbour upsampling of `[L, h, w]` maps to `[L, H, W]`."""
  height, width = image_hw
  rows = np.minimum(np.arange(height) * maps.shape[1] // height, maps.shape[1] - 1)
  cols = np.minimum(np.arange(width) * maps.shape[2] // width, maps.shape[2] - 1)
  return maps[:, rows][:, :, cols]


def overlays(image: np.ndarray, maps: np.ndarray, alpha: float = 0.6) -> np.ndarray:
  """Heat maps blended over an image: uint8 `[L, H, W, 3]`.

  Each map is scaled to [0, 1] by its own maximum and drawn in red-yellow over a grey
  copy of the image with opacity `alpha * value`.

  Args:
    image: `[H, W, 3]` uint8, or float in [0, 1].
    maps: `[L, h, w]` non-negative maps on a grid of the image's aspect ratio.
    alpha: opacity of the strongest attention.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'image must be [H, W, 3], got shape {image.shape}.')
  if image.dtype != np.uint8:
    image = np.clip(np.asarray(image, np.float32) * 255.0, 0, 255).astype(np.uint8)
  grey = image.astype(np.float32).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
  up = _upsample(np.asarray(maps, np.float32), image.shape[:2])
  peak = up.reshape(up.shape[0], -1).max(axis=1)[:, None, None]
  value = np.where(peak > 0, up / np.where(peak > 0, peak, 1.0), 0.0)[..., None]
  heat = np.concatenate(
    [np.full_like(value, 255.0), 255.0 * value, np.zeros_like(value)], axis=-1
  )
  blend = alpha * value
  out = grey[None] * (1.0 - blend) + heat * blend
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def save_overlay_grid(
  path: str,
  image: np.ndarray,
  maps: np.ndarray,
  *,
  titles: Optional[Sequence[str]] = None,
  columns: int = 4,
  alpha: float = 0.6,
) -> str:
  """Writes a PNG grid: the image, then one overlay per map (`overlays`).

  Needs matplotlib (`pip install -e .[plot]`).

  Args:
    path: the PNG to write (its folder is created).
    image: `[H, W, 3]` uint8 or float in [0, 1].
    maps: `[L, h, w]`.
    titles: L captions (default 'latent i').
    columns: panels per row.
    alpha: overlay opacity.

  Returns:
    `path`.
  """
  plt = plotting.require_matplotlib()
  panels = overlays(image, maps, alpha=alpha)
  titles = (
    list(titles) if titles is not None else [f'map {i}' for i in range(len(panels))]
  )
  if len(titles) != len(panels):
    raise ValueError(f'{len(titles)} titles for {len(panels)} maps.')
  count = len(panels) + 1
  rows = -(-count // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(2.5 * columns, 2.6 * rows))
  axes = np.atleast_1d(axes).ravel()
  shown = np.asarray(image)
  if shown.dtype != np.uint8:
    shown = np.clip(shown, 0.0, 1.0)
  axes[0].imshow(shown)
  axes[0].set_title('image', fontsize=9)
  for axis, panel, title in zip(axes[1:], panels, titles):
    axis.imshow(panel)
    axis.set_title(title, fontsize=9)
  for axis in axes:
    axis.axis('off')
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, format='png', dpi=100)
  plt.close(figure)
  return path
