"""Rearranging images and videos into patches (space-to-depth and patch extraction).

Shape glossary:
  B: batch size.
  T, H, W: frames, height and width of the input.
  C: input channels.
  dt, dh, dw: temporal and spatial block sizes (`space_to_depth`).
  ph, pw: patch height and width (`extract_patches`).

All functions are pure array functions (no parameters) that work on NumPy or JAX
arrays of any dtype, inside or outside `jax.jit`.
"""

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def _check_block_size(value, arg_name):
  """Returns `value` as an int, or raises if it is not a positive integer."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f'{arg_name} must be a positive int, got {value!r}.')
  return int(value)


def _check_divides(size, block, axis_name, arg_name, shape):
  if size % block:
    raise ValueError(
      f'{axis_name} ({size}) of input shape {tuple(shape)} is not divisible by '
      f'{arg_name}={block}.'
    )


def space_to_depth(frames, temporal_block_size: int = 1, spatial_block_size: int = 1):
  """Moves non-overlapping blocks of pixels (and frames) into the channel axis.

  Images `[B, H, W, C]` become `[B, H/dh, W/dw, dh*dw*C]`; videos `[B, T, H, W, C]`
  become `[B, T/dt, H/dh, W/dw, dt*dh*dw*C]`. The new channel axis is ordered
  `(dt dh dw c)`: the input channel varies fastest, then the column inside the
  block, then the row, then the frame.

  Args:
    frames: `[B, H, W, C]` images or `[B, T, H, W, C]` videos.
    temporal_block_size: dt, frames per block (videos only; must be 1 for images).
    spatial_block_size: dh = dw, rows and columns per block.

  Returns:
    The rearranged array, same dtype.
  """
  dt = _check_block_size(temporal_block_size, 'temporal_block_size')
  ds = _check_block_size(spatial_block_size, 'spatial_block_size')
  shape = tuple(frames.shape)
  if len(shape) == 4:
    if dt != 1:
      raise ValueError(
        f'temporal_block_size={dt} needs rank-5 videos [B, T, H, W, C]; got '
        f'rank-4 input of shape {shape}.'
      )
    b, h, w, c = shape
    _check_divides(h, ds, 'height', 'spatial_block_size', shape)
    _check_divides(w, ds, 'width', 'spatial_block_size', shape)
    x = jnp.reshape(frames, (b, h // ds, ds, w // ds, ds, c))
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, H/dh, W/dw, dh, dw, C]
    return jnp.reshape(x, (b, h // ds, w // ds, ds * ds * c))
  if len(shape) == 5:
    b, t, h, w, c = shape
    _check_divides(t, dt, 'time', 'temporal_block_size', shape)
    _check_divides(h, ds, 'height', 'spatial_block_size', shape)
    _check_divides(w, ds, 'width', 'spatial_block_size', shape)
    x = jnp.reshape(frames, (b, t // dt, dt, h // ds, ds, w // ds, ds, c))
    # [B, T/dt, H/dh, W/dw, dt, dh, dw, C]
    x = jnp.transpose(x, (0, 1, 3, 5, 2, 4, 6, 7))
    return jnp.reshape(x, (b, t // dt, h // ds, w // ds, dt * ds * ds * c))
  raise ValueError(
    f'frames must have rank 4 [B, H, W, C] or rank 5 [B, T, H, W, C], got shape {shape}.'
  )


def reverse_space_to_depth(
  frames, temporal_block_size: int = 1, spatial_block_size: int = 1
):
  """Inverse of `space_to_depth`: moves channel blocks back into space (and time).

  `[B, h, w, dh*dw*C]` becomes `[B, h*dh, w*dw, C]`; `[B, t, h, w, dt*dh*dw*C]`
  becomes `[B, t*dt, h*dh, w*dw, C]`. Channels are read in `(dt dh dw c)` order.

  Args:
    frames: rank-4 or rank-5 array whose channels divide by the block volume.
    temporal_block_size: dt (videos only; must be 1 for images).
    spatial_block_size: dh = dw.

  Returns:
    The rearranged array, same dtype.
  """
  dt = _check_block_size(temporal_block_size, 'temporal_block_size')
  ds = _check_block_size(spatial_block_size, 'spatial_block_size')
  shape = tuple(frames.shape)
  if len(shape) == 4:
    if dt != 1:
      raise ValueError(
        f'temporal_block_size={dt} needs rank-5 videos [B, T, H, W, C]; got '
        f'rank-4 input of shape {shape}.'
      )
    b, h, w, cc = shape
    if cc % (ds * ds):
      raise ValueError(
        f'channels ({cc}) of input shape {shape} are not divisible by '
        f'spatial_block_size**2={ds * ds}.'
      )
    c = cc // (ds * ds)
    x = jnp.reshape(frames, (b, h, w, ds, ds, c))
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, h, dh, w, dw, C]
    return jnp.reshape(x, (b, h * ds, w * ds, c))
  if len(shape) == 5:
    b, t, h, w, cc = shape
    block = dt * ds * ds
    if cc % block:
      raise ValueError(
        f'channels ({cc}) of input shape {shape} are not divisible by '
        f'temporal_block_size*spatial_block_size**2={block}.'
      )
    c = cc // block
    x = jnp.reshape(frames, (b, t, h, w, dt, ds, ds, c))
    # [B, t, dt, h, dh, w, dw, C]
    x = jnp.transpose(x, (0, 1, 4, 2, 5, 3, 6, 7))
    return jnp.reshape(x, (b, t * dt, h * ds, w * ds, c))
  raise ValueError(
    f'frames must have rank 4 [B, H, W, C] or rank 5 [B, T, H, W, C], got shape {shape}.'
  )


def _check_window_arg(value, arg_name):
  """Checks a `[1, rows, cols, 1]` argument and returns `(rows, cols)`."""
  try:
    vals = [int(v) for v in value]
  except TypeError as e:
    raise ValueError(
      f'{arg_name} must be a sequence [1, rows, cols, 1], got {value!r}.'
    ) from e
  if len(vals) != 4 or vals[0] != 1 or vals[3] != 1:
    raise ValueError(f'{arg_name} must be [1, rows, cols, 1], got {value!r}.')
  if vals[1] < 1 or vals[2] < 1:
    raise ValueError(f'{arg_name} must have positive rows and cols, got {value!r}.')
  return vals[1], vals[2]


def _output_size_and_padding(size, window, stride, rate, padding):
  """Output length and (before, after) zero padding along one axis, TF rules."""
  effective = (window - 1) * rate + 1
  if padding == 'VALID':
    if size < effective:
      return 0, (0, 0)
    return (size - effective) // stride + 1, (0, 0)
  out = -(-size // stride)  # ceil(size / stride)
  total = max((out - 1) * stride + effective - size, 0)
  return out, (total // 2, total - total // 2)


def extract_patches(
  images,
  sizes: Sequence[int],
  strides: Sequence[int],
  rates: Sequence[int],
  padding: str = 'VALID',
):
  """Extracts image patches with the contract of `tf.image.extract_patches`.

  Patches are taken where a convolution with a `ph x pw` kernel dilated by `rates`
  and moved by `strides` would look, and stacked in the channel axis in
  `(ph pw c)` order (input channel fastest). 'SAME' padding pads with zeros as
  TensorFlow does (the extra pixel, if any, goes after). The patches are gathered by
  slicing, so values are copied exactly, for every dtype.

  Args:
    images: `[B, H, W, C]` images.
    sizes: `[1, ph, pw, 1]` patch size.
    strides: `[1, stride_rows, stride_cols, 1]` distance between patch centres.
    rates: `[1, rate_rows, rate_cols, 1]` dilation inside a patch.
    padding: 'VALID' or 'SAME' (case-insensitive).

  Returns:
    `[B, out_rows, out_cols, ph * pw * C]` patches.
  """
  ph, pw = _check_window_arg(sizes, 'sizes')
  sh, sw = _check_window_arg(strides, 'strides')
  rh, rw = _check_window_arg(rates, 'rates')
  if not isinstance(padding, str) or padding.upper() not in ('VALID', 'SAME'):
    raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}.")
  padding = padding.upper()
  if images.ndim != 4:
    raise ValueError(
      f'images must have rank 4 [B, H, W, C], got shape {tuple(images.shape)}.'
    )
  b, h, w, c = images.shape
  out_h, pad_h = _output_size_and_padding(h, ph, sh, rh, padding)
  out_w, pad_w = _output_size_and_padding(w, pw, sw, rw, padding)
  if out_h == 0 or out_w == 0:
    raise ValueError(
      f"With padding='VALID', dilated patches of {(ph - 1) * rh + 1}x"
      f'{(pw - 1) * rw + 1} (sizes={list(sizes)}, rates={list(rates)}) do not '
      f'fit in images of shape {tuple(images.shape)}.'
    )
  x = jnp.asarray(images)
  if padding == 'SAME':
    x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  patches = []
  for i in range(ph):
    for j in range(pw):
      top, left = i * rh, j * rw
      patches.append(
        x[
          :,
          top : top + (out_h - 1) * sh + 1 : sh,
          left : left + (out_w - 1) * sw + 1 : sw,
          :,
        ]
      )  # [B, oh, ow, C]
  patches = jnp.stack(patches, axis=3)  # [B, oh, ow, ph*pw, C]
  return jnp.reshape(patches, (b, out_h, out_w, ph * pw * c))


def patches_for_flow(inputs):
  """3x3 patches around every pixel of every frame, as used for optical flow.

  Each frame is zero-padded by one pixel on every side and each pixel is replaced by
  its 3x3 neighbourhood (`(ph pw c)` channel order), so the spatial size is kept.

  Args:
    inputs: `[B, T, H, W, C]` frames (T = 2 for a frame pair).

  Returns:
    `[B, T, H, W, 9 * C]` patches.
  """
  if inputs.ndim != 5:
    raise ValueError(
      'inputs must have rank 5 [B, T, H, W, C] (e.g. a pair of frames), got '
      f'shape {tuple(inputs.shape)}.'
    )
  b, t, h, w, c = inputs.shape
  frames = jnp.reshape(jnp.asarray(inputs), (b * t, h, w, c))
  frames = jnp.pad(frames, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = extract_patches(
    frames, sizes=[1, 3, 3, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding='VALID'
  )
  return jnp.reshape(patches, (b, t, h, w, 9 * c))
