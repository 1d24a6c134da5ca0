"""Raw-audio pre- and postprocessors for the Perceiver.

Shape glossary:
  B: batch size.
  S: audio samples per example.
  K: samples per patch (`samples_per_patch`); N = S / K patches.
  P: position-encoding channels.

Parameter paths (default names) match DeepMind's release:
  audio_preprocessor/~_build_network_inputs/...   (position encoding, extra MLP)
  audio_postprocessor/linear/{w,b}
"""

from typing import Optional

import haiku as hk
import jax.numpy as jnp

from perceiver._src import positional_inputs


class AudioPreprocessor(positional_inputs.PositionalPreprocessor):
  """Cuts raw audio into patches of consecutive samples and adds a 1D position encoding.

  `[B, S]` (or `[B, S, 1]`) samples become `[B, N, K]` patches; the position encoding
  is over the N patches (see `PositionalPreprocessor`).

  Args:
    prep_type: only 'patches'.
    samples_per_patch: K.
    position_encoding_type: 'fourier' or 'trainable'.
    n_extra_pos_mlp: residual linear layers applied to the position encoding.
    concat_or_add_pos: 'concat' or 'add'.
    name: module name.
    **position_encoding_kwargs: passed to `build_position_encoding`.
  """

  def __init__(
    self,
    prep_type: str = 'patches',
    samples_per_patch: int = 96,
    position_encoding_type: str = 'fourier',
    n_extra_pos_mlp: int = 0,
    concat_or_add_pos: str = 'concat',
    name: Optional[str] = None,
    **position_encoding_kwargs,
  ):
    super().__init__(
      position_encoding_type=position_encoding_type,
      n_extra_pos_mlp=n_extra_pos_mlp,
      concat_or_add_pos=concat_or_add_pos,
      name=name,
      **position_encoding_kwargs,
    )
    positional_inputs.check_choice(prep_type, 'prep_type', ('patches',))
    self._samples_per_patch = positional_inputs.check_positive_int(
      samples_per_patch, 'samples_per_patch'
    )

  def __call__(
    self, inputs, *, is_training: bool, pos=None, network_input_is_1d: bool = True
  ):
    """Preprocesses raw audio.

    Args:
      inputs: `[B, S]` or `[B, S, 1]` samples.
      is_training: unused; part of the preprocessor interface.
      pos: optional `[B, N, 1]` positions for a Fourier encoding.
      network_input_is_1d: unused (audio patches are always a 1D sequence).

    Returns:
      `(inputs_with_pos, modality_sizes, inputs_without_pos)`: `[B, N, K + P]`
      (`[B, N, K]` when adding), None, `[B, N, K]`.
    """
    del is_training, network_input_is_1d  # Unused: a uniform interface.
    shape = tuple(inputs.shape)
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)):
      raise ValueError(
        f'inputs must have shape [B, S] or [B, S, 1] (mono samples), got {shape}.'
      )
    if shape[1] % self._samples_per_patch:
      raise ValueError(
        f'The number of samples ({shape[1]}) in inputs of shape {shape} is not '
        f'divisible by samples_per_patch={self._samples_per_patch}.'
      )
    x = jnp.reshape(inputs, (shape[0], -1, self._samples_per_patch))  # [B, N, K]
    inputs_with_pos, inputs_without_pos = self._build_network_inputs(x, pos)
    return inputs_with_pos, None, inputs_without_pos


class AudioPostprocessor(hk.Module):
  """Projects each decoded patch to K samples and flattens them to a waveform.

  `[B, N, D]` -> linear (`linear`) to `[B, N, K]` -> `[B, N * K]`.

  Args:
    postproc_type: only 'patches'.
    samples_per_patch: K.
    name: module name.
  """

  def __init__(
    self,
    postproc_type: str = 'patches',
    samples_per_patch: int = 96,
    name: Optional[str] = None,
  ):
    super().__init__(name=name)
    positional_inputs.check_choice(postproc_type, 'postproc_type', ('patches',))
    self._postproc_type = postproc_type
    self._samples_per_patch = positional_inputs.check_positive_int(
      samples_per_patch, 'samples_per_patch'
    )

  def __call__(self, inputs, *, is_training: bool, pos=None, modality_sizes=None):
    """Maps `[B, N, D]` decoder outputs to `[B, N * K]` samples."""
    del is_training, pos, modality_sizes  # Unused: a uniform interface.
    if inputs.ndim != 3:
      raise ValueError(f'inputs must have shape [B, N, D], got {tuple(inputs.shape)}.')
    out = hk.Linear(self._samples_per_patch)(inputs)
    return jnp.reshape(out, (inputs.shape[0], -1))
