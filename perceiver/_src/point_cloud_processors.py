"""Point-cloud preprocessor (Perceiver, ModelNet40): coordinates + Fourier features.

Shape glossary:
  B: batch size.
  N: points per example (the encoder's input positions; their order is irrelevant).
  d: coordinate dimensions (3 for xyz).
  P: Fourier-feature channels, `d * (2 * num_bands + 1)` with the defaults.
"""

from typing import Optional, Sequence, Tuple, Union

import haiku as hk
import jax.numpy as jnp
import numpy as np

from perceiver import position_encoding
from perceiver._src import positional_inputs


class PointCloudPreprocessor(hk.Module):
  """Attaches Fourier features of each point's own coordinates to the point.

  The coordinates of every point are mapped linearly from `coord_range` to [-1, 1]
  per dimension (`2 * (x - low) / (high - low) - 1`) and encoded with
  `generate_fourier_features`. Nothing is clipped: coordinates outside `coord_range`
  map outside [-1, 1] and are still encoded faithfully (the features are defined
  for any position). Every point is processed independently, so the output is
  permutation-equivariant in N. The module has no parameters.

  Args:
    num_bands: frequency bands per dimension.
    max_resolution: one int for every dimension, or d ints; the top frequency of
      dimension i is `max_resolution[i] / 2`.
    coord_range: d pairs `(low, high)` with `low < high`, the range of each
      coordinate mapped to [-1, 1].
    concat_pos: whether the features include the normalised coordinates.
    sine_only: whether to omit the cosine features.
    concat_or_add_pos: 'concat' (`[B, N, d + P]`) or 'add' (needs P == d).
    name: module name.
  """

  def __init__(
    self,
    num_bands: int,
    max_resolution: Union[int, Sequence[int]],
    coord_range: Sequence[Tuple[float, float]] = ((-1.0, 1.0),) * 3,
    concat_pos: bool = True,
    sine_only: bool = False,
    concat_or_add_pos: str = 'concat',
    name: Optional[str] = None,
  ):
    super().__init__(name=name)
    self._num_bands = positional_inputs.check_positive_int(num_bands, 'num_bands')
    try:
      ranges = tuple((float(lo), float(hi)) for lo, hi in coord_range)
    except (TypeError, ValueError) as e:
      raise ValueError(
        f'coord_range must be a sequence of (low, high) pairs, got {coord_range!r}.'
      ) from e
    if not ranges or any(not lo < hi for lo, hi in ranges):
      raise ValueError(
        'coord_range must be a non-empty sequence of (low, high) pairs with '
        f'low < high, got {coord_range!r}.'
      )
    self._coord_range = ranges
    num_dims = len(ranges)
    if np.ndim(max_resolution) == 0:
      max_resolution = (max_resolution,) * num_dims
    max_resolution = tuple(float(r) for r in np.ravel(max_resolution))
    if len(max_resolution) != num_dims or any(r <= 0 for r in max_resolution):
      raise ValueError(
        f'max_resolution must be a positive number or {num_dims} positive numbers '
        f'(one per coordinate of coord_range), got {max_resolution!r}.'
      )
    self._max_resolution = max_resolution
    self._concat_pos = concat_pos
    self._sine_only = sine_only
    self._concat_or_add_pos = positional_inputs.check_concat_or_add_pos(concat_or_add_pos)

  def normalize(self, points):
    """Maps `[..., d]` coordinates from `coord_range` to [-1, 1] (no clipping)."""
    low = jnp.asarray([lo for lo, _ in self._coord_range], jnp.float32)
    high = jnp.asarray([hi for _, hi in self._coord_range], jnp.float32)
    return 2.0 * (points - low) / (high - low) - 1.0

  def __call__(
    self, inputs, *, is_training: bool, pos=None, network_input_is_1d: bool = True
  ):
    """Preprocesses point clouds.

    Args:
      inputs: `[B, N, d]` point coordinates.
      is_training: unused; part of the preprocessor interface.
      pos: must be None (the coordinates are the positions).
      network_input_is_1d: unused (points are always a 1D set).

    Returns:
      `(inputs_with_pos, modality_sizes, inputs_without_pos)`: `[B, N, d + P]`
      (`[B, N, d]` when adding), None, the raw `[B, N, d]` coordinates.
    """
    del is_training, network_input_is_1d  # Unused: a uniform interface.
    if pos is not None:
      raise ValueError(
        'PointCloudPreprocessor encodes the point coordinates themselves; pos '
        f'must be None, got an array of shape {tuple(jnp.shape(pos))}.'
      )
    num_dims = len(self._coord_range)
    if inputs.ndim != 3 or inputs.shape[-1] != num_dims:
      raise ValueError(
        f'inputs must have shape [B, N, {num_dims}] (one coordinate per entry of '
        f'coord_range), got {tuple(inputs.shape)}.'
      )
    batch_size, num_points, _ = inputs.shape
    coords = self.normalize(jnp.asarray(inputs, jnp.float32))
    features = position_encoding.generate_fourier_features(
      jnp.reshape(coords, (-1, num_dims)),
      num_bands=self._num_bands,
      max_resolution=self._max_resolution,
      concat_pos=self._concat_pos,
      sine_only=self._sine_only,
    )
    features = jnp.reshape(features, (batch_size, num_points, -1))  # [B, N, P]
    inputs_with_pos = positional_inputs.combine_with_position_encoding(
      inputs, features, self._concat_or_add_pos
    )
    return inputs_with_pos, None, inputs
