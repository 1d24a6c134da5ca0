"""Shared machinery of the preprocessors that attach position encodings to inputs.

Shape glossary:
  B: batch size.
  N: number of input positions (the product of the index dimensions).
  C: feature channels; P: position-encoding channels.

A preprocessor turns raw inputs into features on an index grid (`[B, *index_dims, C]`)
and then, in its `_build_network_inputs` method, builds a position encoding for that
grid, optionally deepens it with residual linear layers, and concatenates it to (or
adds it to) the features. The position encoding and the extra linear layers are
created inside `_build_network_inputs`, which puts their parameters under
`<preprocessor>/~_build_network_inputs/...` exactly as in DeepMind's release.
"""

from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver import position_encoding

CONCAT_OR_ADD_POS = ('concat', 'add')
POSITION_ENCODING_TYPES = ('trainable', 'fourier')


def check_concat_or_add_pos(concat_or_add_pos):
  if concat_or_add_pos not in CONCAT_OR_ADD_POS:
    raise ValueError(
      f'concat_or_add_pos must be one of {CONCAT_OR_ADD_POS}, got {concat_or_add_pos!r}.'
    )
  return concat_or_add_pos


def check_choice(value, arg_name, choices):
  if value not in choices:
    raise ValueError(f'Unknown {arg_name} {value!r}; expected one of {choices}.')
  return value


def check_positive_int(value, arg_name):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f'{arg_name} must be a positive int, got {value!r}.')
  return int(value)


def combine_with_position_encoding(inputs, pos_enc, concat_or_add_pos):
  """Concatenates `pos_enc` to `inputs` along the channels, or adds it."""
  if concat_or_add_pos == 'concat':
    return jnp.concatenate([inputs, pos_enc], axis=-1)
  if inputs.shape[-1] != pos_enc.shape[-1]:
    raise ValueError(
      "concat_or_add_pos='add' needs as many position-encoding channels as input "
      f'channels; got inputs of shape {tuple(inputs.shape)} and a position '
      f'encoding of shape {tuple(pos_enc.shape)}.'
    )
  return inputs + pos_enc


class PositionalPreprocessor(hk.Module):
  """Base class of preprocessors that attach a position encoding to their features.

  Args:
    position_encoding_type: 'fourier' or 'trainable' (see
      `position_encoding.build_position_encoding`).
    n_extra_pos_mlp: number of residual linear layers applied to the position
      encoding (`pos = pos + Linear(pos)`, ReLU between layers, not after the last).
    concat_or_add_pos: 'concat' to append the encoding to the channels, 'add' to sum.
    name: module name.
    **position_encoding_kwargs: passed to `build_position_encoding`
      (`fourier_position_encoding_kwargs`, `trainable_position_encoding_kwargs`,
      `project_pos_dim`, `name`).
  """

  def __init__(
    self,
    position_encoding_type: str = 'fourier',
    n_extra_pos_mlp: int = 0,
    concat_or_add_pos: str = 'concat',
    name: Optional[str] = None,
    **position_encoding_kwargs,
  ):
    super().__init__(name=name)
    check_choice(
      position_encoding_type, 'position_encoding_type', POSITION_ENCODING_TYPES
    )
    self._concat_or_add_pos = check_concat_or_add_pos(concat_or_add_pos)
    if int(n_extra_pos_mlp) < 0:
      raise ValueError(f'n_extra_pos_mlp must be >= 0, got {n_extra_pos_mlp!r}.')
    self._n_extra_pos_mlp = int(n_extra_pos_mlp)
    self._position_encoding_type = position_encoding_type
    self._position_encoding_kwargs = dict(position_encoding_kwargs)

  def _build_network_inputs(self, inputs, pos, network_input_is_1d: bool = True):
    """Attaches a position encoding to `[B, *index_dims, C]` features.

    Args:
      inputs: `[B, *index_dims, C]` features.
      pos: optional `[B, N, d]` positions for a Fourier encoding (None: a regular
        grid over `index_dims` in [-1, 1]).
      network_input_is_1d: whether to flatten the index dimensions to one axis.

    Returns:
      `(inputs_with_pos, inputs)`: `[B, N, C + P]` (or `[B, N, C]` when adding) and
      the features without position encoding, `[B, N, C]`; with
      `network_input_is_1d=False` both keep the index dimensions.
    """
    batch_size = inputs.shape[0]
    index_dims = tuple(inputs.shape[1:-1])
    if inputs.ndim > 3 and network_input_is_1d:
      inputs = jnp.reshape(inputs, (batch_size, int(np.prod(index_dims)), -1))

    pos_enc = position_encoding.build_position_encoding(
      position_encoding_type=self._position_encoding_type,
      index_dims=index_dims,
      **self._position_encoding_kwargs,
    )(batch_size=batch_size, pos=pos)
    for i in range(self._n_extra_pos_mlp):
      pos_enc = pos_enc + hk.Linear(pos_enc.shape[-1])(pos_enc)
      if i < self._n_extra_pos_mlp - 1:
        pos_enc = jax.nn.relu(pos_enc)

    if not network_input_is_1d:
      # [B, N, P] -> [B, *index_dims, P] to match the features.
      pos_enc = jnp.reshape(pos_enc, tuple(inputs.shape[:-1]) + (-1,))
    inputs_with_pos = combine_with_position_encoding(
      inputs, pos_enc, self._concat_or_add_pos
    )
    return inputs_with_pos, inputs


def check_rank(inputs, arg_name: str, ranks: Sequence[int], layout: str):
  """Raises if `inputs` does not have one of the `ranks`, or has an empty axis (a batch
  of 0, an image of 0 x 0 pixels)."""
  if inputs.ndim not in ranks:
    raise ValueError(
      f'{arg_name} must have shape {layout}, got shape {tuple(inputs.shape)}.'
    )
  if 0 in inputs.shape:
    raise ValueError(
      f'{arg_name} of shape {tuple(inputs.shape)} ({layout}) is empty: every axis '
      'needs at least one element.'
    )
