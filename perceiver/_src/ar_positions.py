"""Position information for Perceiver AR: fixed embedding tables and rotary encodings.

Perceiver AR (Hawthorne et al. 2022) either adds a position embedding to each input
token (`position_encoding_type='absolute'`: a table of sinusoidal, linear, Fourier or
learned rows, one table per position dimension) or rotates part of every query and key
by angles proportional to its position (`'rotary'`, RoFormer; Su et al. 2021).

Shape glossary:
  B: batch size.
  T: number of positions (queries or keys).
  H: attention heads; D: channels per head.
  P: number of rows of a position table (`max_len`); C: embedding channels.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from perceiver import position_encoding

POSITION_TABLES = ('sinusoidal', 'linear', 'fourier', 'random')


def sinusoidal_features(size, max_len, min_scale=1.0, max_scale=10000.0):
  """The fixed sinusoidal table `[P, C]` of the release (NumPy, float32).

  Column `k < C // 2` holds `sin(p * f_k)` and column `C // 2 + k` holds
  `cos(p * f_k)`, for positions `p = 0 .. P - 1` and frequencies spaced geometrically
  from `min_scale` down to `min_scale / (max_scale / min_scale)`:
  `f_k = min_scale * (max_scale / min_scale) ** (-k / (C // 2 - 1))`. An odd C leaves
  the last column zero.

  Args:
    size: C, the embedding channels (>= 4).
    max_len: P, the number of positions.
    min_scale, max_scale: the frequency range.

  Returns:
    `[P, C]` float32 table.
  """
  half = size // 2
  if half < 2:
    raise ValueError(f'sinusoidal_features needs size >= 4, got size={size!r}.')
  table = np.zeros((max_len, size), dtype=np.float32)
  position = np.arange(0, max_len)[:, None]
  log_step = -np.log(max_scale / min_scale) / (half - 1)
  frequencies = min_scale * np.exp(np.arange(0, half) * log_step)
  table[:, :half] = np.sin(position * frequencies)
  table[:, half : 2 * half] = np.cos(position * frequencies)
  return table


def linear_features(size, max_len):
  """`[P, C]` with every column equal to the position `p` (a debugging encoding)."""
  position = np.arange(0, max_len, dtype=np.float32)[:, None]
  return np.broadcast_to(position, (max_len, size)).astype(np.float32)


def fourier_features(size, max_len):
  """`[P, 2 * (C // 2)]` Fourier features of `P` positions spread over [-1, 1].

  `C // 2` bands spaced linearly from 1 to `P / 2`: sines then cosines of
  `pi * f * x` (`perceiver.position_encoding.generate_fourier_features`).
  """
  pos = position_encoding.build_linear_positions([max_len])
  return np.asarray(
    position_encoding.generate_fourier_features(
      pos, num_bands=size // 2, max_resolution=(max_len,), concat_pos=False
    ),
    dtype=np.float32,
  )


def position_table(kind, size, max_len):
  """The initial table `[P, C]` for `position_encoding=kind`, or None for 'random'
  (a learned table with `hk.Embed`'s default initialisation)."""
  if kind == 'sinusoidal':
    return sinusoidal_features(size, max_len)
  if kind == 'linear':
    return linear_features(size, max_len)
  if kind == 'fourier':
    table = fourier_features(size, max_len)
    if table.shape[1] != size:
      raise ValueError(
        f"position_encoding='fourier' needs an even input_embed_dim, got {size}."
      )
    return table
  if kind == 'random':
    return None
  raise ValueError(
    f'Unknown position_encoding {kind!r}; expected one of {POSITION_TABLES}.'
  )


def rotation_angles(positions, head_dim, max_wavelength):
  """Rotary angles `[B, 1, T, D]` (float32) of integer or float positions `[B, T]`.

  Channel pair `(2i, 2i + 1)` turns by `position / max_wavelength ** (2 e_i / D)`,
  where the exponents `e_i` are `D // 2` values spaced evenly over `[0, D // 2]`
  (both ends included, as in the release), so wavelengths run from 1 to
  `max_wavelength`.
  """
  if head_dim % 2:
    raise ValueError(f'Rotary encoding needs an even number of channels, got {head_dim}.')
  num_bands = head_dim // 2
  exponents = (2.0 / head_dim) * jnp.linspace(0, num_bands, num_bands)
  inv_freq = 1.0 / (max_wavelength**exponents)
  inv_freq = jnp.repeat(inv_freq, 2, axis=0)  # [D]: one frequency per channel pair.
  radians = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
  return radians[:, None, :, :]


def _pair_swap(x):
  """`[..., (a, b), ...]` -> `[..., (-b, a), ...]` over consecutive channel pairs."""
  even, odd = x[..., ::2], x[..., 1::2]
  return jnp.stack((-odd, even), axis=-1).reshape(x.shape)


def apply_rotary(x, positions, max_wavelength):
  """Rotates every channel pair of `x` `[B, T, H, D]` by its position's angle.

  Args:
    x: `[B, T, H, D]` queries or keys (D even).
    positions: `[B, T]` positions.
    max_wavelength: the longest wavelength of the angles.

  Returns:
    `[B, T, H, D]`, in the dtype of `x`.
  """
  angles = rotation_angles(positions, x.shape[-1], max_wavelength)  # [B, 1, T, D]
  heads_first = jnp.swapaxes(x, 1, 2).astype(jnp.float32)  # [B, H, T, D]
  rotated = heads_first * jnp.cos(angles) + _pair_swap(heads_first) * jnp.sin(angles)
  return jnp.swapaxes(rotated, 1, 2).astype(x.dtype)


def rotated_channels(head_dim, fraction_to_rotate):
  """The even number of channels per head that a rotary encoding turns."""
  if not 0.0 < fraction_to_rotate <= 1.0:
    raise ValueError(f'fraction_to_rotate must be in (0, 1], got {fraction_to_rotate!r}.')
  return math.floor(head_dim * fraction_to_rotate / 2.0) * 2


def apply_rotary_to_subset(
  x, positions, *, fraction_to_rotate, fraction_heads_to_rotate, max_wavelength
):
  """Rotary encoding of the first channels of the first heads of `x` `[B, T, H, D]`.

  The first `floor(fraction_heads_to_rotate * H)` heads are encoded, in each of them
  the first `rotated_channels(D, fraction_to_rotate)` channels; the rest pass
  unchanged.
  """
  num_heads, head_dim = x.shape[-2:]
  num_channels = rotated_channels(head_dim, fraction_to_rotate)
  if num_channels == 0:
    raise ValueError(
      f'fraction_to_rotate={fraction_to_rotate} of {head_dim} channels per head rotates '
      'no channel pair: use more channels per head or a larger fraction.'
    )
  num_heads_rotated = math.floor(fraction_heads_to_rotate * num_heads)
  if num_heads_rotated == 0:
    return x
  turned, kept_heads = x[..., :num_heads_rotated, :], x[..., num_heads_rotated:, :]
  if num_channels == head_dim:
    turned = apply_rotary(turned, positions, max_wavelength)
  else:
    turned = jnp.concatenate(
      [
        apply_rotary(turned[..., :num_channels], positions, max_wavelength),
        turned[..., num_channels:],
      ],
      axis=-1,
    )
  if num_heads_rotated == num_heads:
    return turned
  return jnp.concatenate([turned, kept_heads], axis=-2)


def table_initializer(kind, size, max_len):
  """The initialiser of a fixed position table, or None (`hk.Embed`'s default) for
  'random'. The table is computed on the host when the parameter is created
  (`jax.pure_callback`), so a jitted `init` does not embed it as a constant and
  `jax.eval_shape` does not compute it."""
  if kind not in POSITION_TABLES:
    raise ValueError(
      f'Unknown position_encoding {kind!r}; expected one of {POSITION_TABLES}.'
    )
  if kind == 'random':
    return None
  if kind == 'fourier' and size % 2:
    raise ValueError(
      f"position_encoding='fourier' needs an even input_embed_dim, got {size}."
    )

  def init(shape, dtype):
    def table():
      return np.asarray(position_table(kind, size, max_len), dtype=dtype)

    return jax.pure_callback(table, jax.ShapeDtypeStruct(tuple(shape), dtype))

  return init
