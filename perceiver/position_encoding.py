"""Position encodings: Fourier features, trainable embeddings and projections.

Shape glossary:
  B: batch size.
  N: number of positions (the product of `index_dims`).
  d: number of spatial dimensions (`len(index_dims)`).
  C: channels of the encoding.

Every encoding is a callable `encoding(batch_size, pos=None)` returning `[B, N, C]`
(or `[N, C]` when `batch_size` is None).
"""

import abc
from typing import Tuple

import haiku as hk
import jax.numpy as jnp
import numpy as np


def _as_index_dims(index_dims, arg_name='index_dims') -> Tuple[int, ...]:
  if isinstance(index_dims, (int, np.integer)):
    index_dims = (int(index_dims),)
  try:
    dims = tuple(int(d) for d in index_dims)
  except TypeError as e:
    raise ValueError(
      f'{arg_name} must be a sequence of positive ints, got {index_dims!r}.'
    ) from e
  if not dims or any(d <= 0 for d in dims):
    raise ValueError(
      f'{arg_name} must be a non-empty sequence of positive ints, got {index_dims!r}.'
    )
  return dims


def _bands(resolution, num_bands):
  """`[K]` frequencies spaced linearly from 1 to `resolution / 2`."""
  return jnp.linspace(1.0, resolution / 2, num=num_bands, endpoint=True)


def generate_fourier_features(
  pos, num_bands, max_resolution=(224, 224), concat_pos=True, sine_only=False
):
  """Fourier features of positions in [-1, 1].

  For each of the d dimensions, `num_bands` frequencies are spaced linearly from 1 to
  `max_resolution[i] / 2`. The features are, in order: the raw positions (when
  `concat_pos`), `sin(pi * f * pos)` for every (dimension, band) pair, dimension-major,
  then the matching cosines (omitted when `sine_only`).

  Args:
    pos: `[N, d]` positions, nominally in [-1, 1].
    num_bands: K, the number of frequency bands per dimension.
    max_resolution: d maximum resolutions; the top frequency is `max_resolution / 2`.
    concat_pos: whether to prepend the raw positions.
    sine_only: whether to omit the cosine features.

  Returns:
    `[N, C]` features with `C = d * (2K + 1)` (fewer with `sine_only` or without
    `concat_pos`).
  """
  if pos.ndim != 2:
    raise ValueError(f'pos must have shape [N, d], got shape {tuple(pos.shape)}.')
  if len(max_resolution) != pos.shape[-1]:
    raise ValueError(
      f'max_resolution={tuple(max_resolution)} must have one entry per position '
      f'dimension ({pos.shape[-1]}).'
    )
  if int(num_bands) < 1:
    raise ValueError(f'num_bands must be >= 1, got {num_bands!r}.')
  freq_bands = jnp.stack([_bands(res, num_bands) for res in max_resolution])  # [d, K]
  per_pos_features = pos[:, :, None] * freq_bands[None, :, :]  # [N, d, K]
  per_pos_features = jnp.reshape(
    per_pos_features, [-1, int(np.prod(per_pos_features.shape[1:]))]
  )
  if sine_only:
    per_pos_features = jnp.sin(jnp.pi * per_pos_features)
  else:
    per_pos_features = jnp.concatenate(
      [jnp.sin(jnp.pi * per_pos_features), jnp.cos(jnp.pi * per_pos_features)], axis=-1
    )
  if concat_pos:
    per_pos_features = jnp.concatenate([pos, per_pos_features], axis=-1)
  return per_pos_features


def grid_fourier_features(
  index_dims, num_bands, max_resolution, concat_pos=True, sine_only=False
):
  """`generate_fourier_features` of the grid `build_linear_positions(index_dims)`.

  The same `[N, C]` array (N = prod(index_dims), rows in the grid's row-major order),
  computed per axis: a grid feature depends on one coordinate only, so each axis's
  `sin` and `cos` are taken of its n_i positions (`[n_i, K]`) instead of all N
  positions (for a 224 x 224 image, 224 values per band instead of 50,176), and the
  axes' tables, each zero in the other axes' columns, are summed over the grid in one
  pass. The products and their arguments are those of `generate_fourier_features`,
  so the values are its values.

  Args:
    index_dims: the d sizes of the grid.
    num_bands: K, frequency bands per dimension.
    max_resolution: d maximum resolutions; the top frequency is `max_resolution / 2`.
    concat_pos: whether to prepend the raw positions.
    sine_only: whether to omit the cosine features.

  Returns:
    `[N, C]` features, `C = d * (2K + 1)` (fewer with `sine_only` or without
    `concat_pos`).
  """
  index_dims = _as_index_dims(index_dims)
  if len(max_resolution) != len(index_dims):
    raise ValueError(
      f'max_resolution={tuple(max_resolution)} must have one entry per dimension of '
      f'index_dims={index_dims}.'
    )
  if int(num_bands) < 1:
    raise ValueError(f'num_bands must be >= 1, got {num_bands!r}.')
  num_bands = int(num_bands)
  num_dims = len(index_dims)

  def in_place(block, axis, width):
    """`[n, width]` values of one axis in its columns of a `[n, num_dims * width]`
    block, zeros in the other axes' columns."""
    n = block.shape[0]
    before = jnp.zeros((n, axis * width), block.dtype)
    after = jnp.zeros((n, (num_dims - axis - 1) * width), block.dtype)
    return jnp.concatenate([before, block, after], axis=-1)

  features = None
  for axis, (size, res) in enumerate(zip(index_dims, max_resolution)):
    coords = build_linear_positions((size,))  # [n, 1], as the grid's own axis.
    scaled = jnp.pi * (coords * _bands(res, num_bands)[None, :])  # [n, K]
    blocks = [in_place(jnp.sin(scaled), axis, num_bands)]
    if not sine_only:
      blocks.append(in_place(jnp.cos(scaled), axis, num_bands))
    if concat_pos:
      blocks.insert(0, in_place(coords, axis, 1))
    table = jnp.concatenate(blocks, axis=-1)  # [n, C]: this axis's columns only.
    shape = [1] * num_dims + [table.shape[-1]]
    shape[axis] = size
    # Every column is nonzero on one axis only: the sum over axes places each value
    # exactly, in one pass over the grid.
    table = jnp.reshape(table, shape)
    features = table if features is None else features + table
  # The sum of one [1, .., n_i, .., 1, C] table per axis spans the whole grid.
  return jnp.reshape(features, (-1, features.shape[-1]))


def num_fourier_channels(num_dims, num_bands, concat_pos=True, sine_only=False):
  """Channels produced by `generate_fourier_features` for `num_dims` dimensions."""
  per_dim = num_bands * (1 if sine_only else 2) + (1 if concat_pos else 0)
  return num_dims * per_dim


def build_linear_positions(index_dims, output_range=(-1.0, 1.0)):
  """A grid of positions spanning `output_range` (endpoints included) per dimension.

  Args:
    index_dims: the d sizes of the grid.
    output_range: (low, high) of the positions in every dimension.

  Returns:
    `[*index_dims, d]` float32 positions, `ij` indexing.
  """
  index_dims = _as_index_dims(index_dims)

  def _linspace(n_xels_per_dim):
    return jnp.linspace(
      output_range[0],
      output_range[1],
      num=n_xels_per_dim,
      endpoint=True,
      dtype=jnp.float32,
    )

  dim_ranges = [_linspace(n) for n in index_dims]
  array_index_grid = jnp.meshgrid(*dim_ranges, indexing='ij')
  return jnp.stack(array_index_grid, axis=-1)


def _check_or_build_spatial_positions(pos, index_dims, batch_size):
  """Returns `[B, N, d]` positions (or `[N, d]` when `batch_size` is None)."""
  if pos is None:
    pos = build_linear_positions(index_dims)
    pos = jnp.reshape(pos, [-1, len(index_dims)])  # [N, d]
    if batch_size is not None:
      pos = jnp.broadcast_to(pos[None], (batch_size,) + pos.shape)
    return pos
  if pos.shape[-1] != len(index_dims):
    raise ValueError(
      f'pos must have {len(index_dims)} coordinates in its last axis to match '
      f'index_dims={tuple(index_dims)}, got shape {tuple(pos.shape)}.'
    )
  return pos


class AbstractPositionEncoding(hk.Module, metaclass=abc.ABCMeta):
  """Abstract position encoding: `__call__(batch_size, pos)` -> `[B, N, C]`."""

  @abc.abstractmethod
  def __call__(self, batch_size, pos):
    raise NotImplementedError


class TrainablePositionEncoding(AbstractPositionEncoding):
  """A learned `[index_dim, num_channels]` embedding, `pos_embs`.

  Args:
    index_dim: N, the number of positions.
    num_channels: C, channels per position.
    init_scale: stddev of the truncated-normal initialiser.
    name: module name.
  """

  def __init__(self, index_dim, num_channels=128, init_scale=0.02, name=None):
    super().__init__(name=name)
    if index_dim is not None and int(index_dim) < 1:
      raise ValueError(f'index_dim must be >= 1, got {index_dim!r}.')
    if int(num_channels) < 1:
      raise ValueError(f'num_channels must be >= 1, got {num_channels!r}.')
    self._index_dim = None if index_dim is None else int(index_dim)
    self._num_channels = int(num_channels)
    self._init_scale = init_scale

  def __call__(self, batch_size, pos=None):
    del pos  # Unused: the embedding is indexed by position, not by coordinates.
    if self._index_dim is None:
      raise ValueError(
        'TrainablePositionEncoding was built with index_dim=None and '
        'cannot create its embedding.'
      )
    pos_embs = hk.get_parameter(
      'pos_embs',
      [self._index_dim, self._num_channels],
      init=hk.initializers.TruncatedNormal(stddev=self._init_scale),
    )
    if batch_size is not None:
      pos_embs = jnp.broadcast_to(pos_embs[None], (batch_size,) + pos_embs.shape)
    return pos_embs


class FourierPositionEncoding(AbstractPositionEncoding):
  """Fourier features of a grid of positions (see `generate_fourier_features`).

  Args:
    index_dims: the d sizes of the grid the positions live on.
    num_bands: K, frequency bands per dimension.
    concat_pos: whether to include the raw positions.
    max_resolution: d maximum resolutions; defaults to `index_dims`.
    sine_only: whether to omit the cosine features.
    name: module name.
  """

  def __init__(
    self,
    index_dims,
    num_bands,
    concat_pos=True,
    max_resolution=None,
    sine_only=False,
    name=None,
  ):
    super().__init__(name=name)
    # index_dims may be None for an encoding that is only ever given explicit `pos`
    # (or never called, as in the official optical-flow decoder).
    self._index_dims = None if index_dims is None else _as_index_dims(index_dims)
    if int(num_bands) < 1:
      raise ValueError(f'num_bands must be >= 1, got {num_bands!r}.')
    self._num_bands = int(num_bands)
    self._concat_pos = concat_pos
    self._sine_only = sine_only
    max_resolution = max_resolution or self._index_dims
    if max_resolution is None:
      raise ValueError(
        'FourierPositionEncoding needs index_dims or max_resolution, got neither.'
      )
    self._max_resolution = tuple(max_resolution)
    if self._index_dims is not None and len(self._max_resolution) != len(
      self._index_dims
    ):
      raise ValueError(
        f'max_resolution={self._max_resolution} must have one entry per dimension '
        f'of index_dims={self._index_dims}.'
      )
    # The grid's dimensions (those of max_resolution when index_dims is None).
    self._grid_dims = self._index_dims or self._max_resolution

  @property
  def num_channels(self):
    return num_fourier_channels(
      len(self._max_resolution), self._num_bands, self._concat_pos, self._sine_only
    )

  def _features(self, pos):
    return generate_fourier_features(
      pos,
      num_bands=self._num_bands,
      max_resolution=self._max_resolution,
      concat_pos=self._concat_pos,
      sine_only=self._sine_only,
    )

  def __call__(self, batch_size, pos=None):
    if pos is None:
      if self._index_dims is None:
        raise ValueError(
          'FourierPositionEncoding built with index_dims=None needs explicit pos.'
        )
      # The grid is identical for every example: compute it once (per axis) and
      # broadcast, instead of recomputing the same features per example.
      feats = grid_fourier_features(
        self._index_dims,
        num_bands=self._num_bands,
        max_resolution=self._max_resolution,
        concat_pos=self._concat_pos,
        sine_only=self._sine_only,
      )  # [N, C]
      if batch_size is not None:
        feats = jnp.broadcast_to(feats[None], (batch_size,) + feats.shape)
      return feats
    pos = _check_or_build_spatial_positions(pos, self._grid_dims, batch_size)
    if pos.ndim == 2:
      return self._features(pos)
    lead = pos.shape[:-2]
    flat = jnp.reshape(pos, (-1, pos.shape[-1]))
    feats = self._features(flat)
    return jnp.reshape(feats, lead + (pos.shape[-2], feats.shape[-1]))


class PositionEncodingProjector(AbstractPositionEncoding):
  """Projects a base position encoding with a linear layer to `output_size` channels."""

  def __init__(self, output_size, base_position_encoding, name=None):
    super().__init__(name=name)
    self._output_size = output_size
    self._base_position_encoding = base_position_encoding

  def __call__(self, batch_size, pos=None):
    base_pos = self._base_position_encoding(batch_size, pos)
    return hk.Linear(output_size=self._output_size)(base_pos)


POSITION_ENCODING_TYPES = ('trainable', 'fourier')


def build_position_encoding(
  position_encoding_type,
  index_dims,
  project_pos_dim=-1,
  trainable_position_encoding_kwargs=None,
  fourier_position_encoding_kwargs=None,
  name=None,
):
  """Builds a position encoding module.

  Args:
    position_encoding_type: 'trainable' or 'fourier'.
    index_dims: the sizes of the index dimensions being encoded.
    project_pos_dim: if > 0, wraps the encoding in a `PositionEncodingProjector` to this
      many channels.
    trainable_position_encoding_kwargs: kwargs of `TrainablePositionEncoding` (required
      for 'trainable').
    fourier_position_encoding_kwargs: kwargs of `FourierPositionEncoding` (required for
      'fourier').
    name: name of the base encoding module.

  Returns:
    An `AbstractPositionEncoding`.
  """
  if position_encoding_type == 'trainable':
    if trainable_position_encoding_kwargs is None:
      raise ValueError(
        "position_encoding_type='trainable' needs "
        'trainable_position_encoding_kwargs, got None.'
      )
    index_dim = None if index_dims is None else int(np.prod(_as_index_dims(index_dims)))
    output_pos_enc = TrainablePositionEncoding(
      index_dim=index_dim, name=name, **trainable_position_encoding_kwargs
    )
  elif position_encoding_type == 'fourier':
    if fourier_position_encoding_kwargs is None:
      raise ValueError(
        "position_encoding_type='fourier' needs "
        'fourier_position_encoding_kwargs, got None.'
      )
    output_pos_enc = FourierPositionEncoding(
      index_dims=index_dims, name=name, **fourier_position_encoding_kwargs
    )
  else:
    raise ValueError(
      f'Unknown position_encoding_type {position_encoding_type!r}; expected one of '
      f'{POSITION_ENCODING_TYPES}.'
    )

  if project_pos_dim > 0:
    output_pos_enc = PositionEncodingProjector(
      output_size=project_pos_dim, base_position_encoding=output_pos_enc
    )
  return output_pos_enc
