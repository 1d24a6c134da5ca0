"""Image and video pre- and postprocessors for the Perceiver.

Shape glossary:
  B: batch size.
  T, H, W: frames, height and width of the raw input.
  C: raw channels; D: feature channels after preprocessing.
  N: number of input positions seen by the encoder (product of the index dims).
  P: position-encoding channels.

Parameter paths (default names) match DeepMind's release:
  'conv':     image_preprocessor/~/conv2_d_downsample/~/conv/w
              image_preprocessor/~/conv2_d_downsample/~/batchnorm/... (+ state)
  'conv1x1':  image_preprocessor/~/conv2_d/{w,b}
  'patches':  image_preprocessor/patches_linear/{w,b} (with conv_after_patching)
  encodings:  image_preprocessor/~_build_network_inputs/... (position encoding,
              projector, extra MLP `linear`, `linear_1`, ...)
  postprocessor 'conv':
              image_postprocessor/~/conv2_d_upsample/~/transp_conv_{1,2}/{w,b}
              image_postprocessor/~/conv3_d_upsample/conv3d_transpose_{i}/{w,b}
  postprocessor 'conv1x1':
              image_postprocessor/~/conv2_d/{w,b}
"""

from typing import Optional, Sequence

import haiku as hk
import jax.numpy as jnp
import numpy as np

from perceiver._src import conv_resampling
from perceiver._src import patches
from perceiver._src import positional_inputs

PREP_TYPES = ('conv', 'conv1x1', 'patches', 'pixels')
POSTPROC_TYPES = ('pixels', 'conv', 'conv1x1', 'patches')


def _power_of(value, base):
  """Returns k with base**k == value, or None."""
  k = 0
  while value > 1 and value % base == 0:
    value //= base
    k += 1
  return k if value == 1 else None


class ImagePreprocessor(positional_inputs.PositionalPreprocessor):
  """Featurises images or videos and attaches a position encoding.

  `prep_type` selects the featurisation of `[B, H, W, C]` images or
  `[B, T, H, W, C]` videos:
    'conv': `Conv2DDownsample` (7x7 conv, BatchNorm, ReLU, max pool) applied per frame,
      downsampling space by `spatial_downsample` (a power of 4; 1 is the identity).
    'conv1x1': a 1x1 convolution with stride `spatial_downsample` to `num_channels`.
    'patches': `space_to_depth` with blocks of `temporal_downsample` frames and
      `spatial_downsample` pixels; a video left with one frame becomes an image (used
      for optical flow); `conv_after_patching` adds a linear layer `patches_linear`
      to `num_channels`.
    'pixels': strided subsampling of the raw pixels.
  The features `[B, *index_dims, D]` then get a position encoding over `index_dims`
  (see `PositionalPreprocessor`).

  Args:
    prep_type: 'conv', 'conv1x1', 'patches' or 'pixels'.
    spatial_downsample: spatial downsampling factor.
    temporal_downsample: temporal downsampling factor (must be 1 for 'conv' and
      'conv1x1').
    position_encoding_type: 'fourier' or 'trainable'.
    n_extra_pos_mlp: residual linear layers applied to the position encoding.
    num_channels: D for 'conv', 'conv1x1' and 'patches' with `conv_after_patching`.
    conv_after_patching: whether 'patches' applies `patches_linear`.
    conv2d_use_batchnorm: whether 'conv' uses BatchNorm.
    concat_or_add_pos: 'concat' or 'add'.
    name: module name.
    conv2d_padding: 'conv' padding, 'same' (the release) or 'transformers' (as
      transformers' `PerceiverImagePreprocessor`: a different grid, see
      `Conv2DDownsample`).
    **position_encoding_kwargs: passed to `build_position_encoding`.
  """

  def __init__(
    self,
    prep_type='conv',
    spatial_downsample: int = 4,
    temporal_downsample: int = 1,
    position_encoding_type: str = 'fourier',
    n_extra_pos_mlp: int = 0,
    num_channels: int = 64,
    conv_after_patching: bool = False,
    conv2d_use_batchnorm: bool = True,
    concat_or_add_pos: str = 'concat',
    name: Optional[str] = None,
    *,
    conv2d_padding: str = 'same',
    **position_encoding_kwargs,
  ):
    super().__init__(
      position_encoding_type=position_encoding_type,
      n_extra_pos_mlp=n_extra_pos_mlp,
      concat_or_add_pos=concat_or_add_pos,
      name=name,
      **position_encoding_kwargs,
    )
    positional_inputs.check_choice(prep_type, 'prep_type', PREP_TYPES)
    positional_inputs.check_choice(
      conv2d_padding, 'conv2d_padding', conv_resampling.DOWNSAMPLE_PADDINGS
    )
    self._prep_type = prep_type
    self._spatial_downsample = positional_inputs.check_positive_int(
      spatial_downsample, 'spatial_downsample'
    )
    self._temporal_downsample = positional_inputs.check_positive_int(
      temporal_downsample, 'temporal_downsample'
    )
    self._conv_after_patching = conv_after_patching
    self._num_channels = num_channels

    if prep_type == 'conv':
      num_layers = _power_of(self._spatial_downsample, 4)
      if num_layers is None:
        raise ValueError(
          "prep_type='conv' downsamples by 4 per layer: spatial_downsample must be "
          f'a power of 4 (1, 4, 16, ...), got {spatial_downsample!r}.'
        )
      if self._temporal_downsample != 1:
        raise ValueError(
          "prep_type='conv' does not downsample in time: temporal_downsample must "
          f'be 1, got {temporal_downsample!r}.'
        )
      self.convnet = conv_resampling.Conv2DDownsample(
        num_layers=num_layers,
        num_channels=num_channels,
        use_batchnorm=conv2d_use_batchnorm,
        padding=conv2d_padding,
      )
    elif prep_type == 'conv1x1':
      if self._temporal_downsample != 1:
        raise ValueError(
          "prep_type='conv1x1' does not downsample in time: temporal_downsample "
          f'must be 1, got {temporal_downsample!r}.'
        )
      # Any stride works for a 1x1 kernel.
      self.convnet_1x1 = hk.Conv2D(
        num_channels,
        kernel_shape=[1, 1],
        stride=[self._spatial_downsample, self._spatial_downsample],
      )

  def __call__(
    self, inputs, *, is_training: bool, pos=None, network_input_is_1d: bool = True
  ):
    """Preprocesses images or videos.

    Args:
      inputs: `[B, H, W, C]` images or `[B, T, H, W, C]` videos.
      is_training: whether BatchNorm ('conv') runs in training mode.
      pos: optional `[B, N, d]` positions for a Fourier encoding.
      network_input_is_1d: whether to flatten the index dims to one axis of size N.

    Returns:
      `(inputs_with_pos, modality_sizes, inputs_without_pos)`: `[B, N, D + P]`
      (`[B, N, D]` when adding), None, `[B, N, D]`.
    """
    positional_inputs.check_rank(
      inputs, 'inputs', (4, 5), '[B, H, W, C] or [B, T, H, W, C]'
    )
    # Featurisation stays inline in __call__: a submodule created in a helper method
    # would get a `~helper/` path and break checkpoint compatibility.
    if self._prep_type in ('conv', 'conv1x1'):
      if self._prep_type == 'conv':
        fn = lambda x: self.convnet(x, is_training=is_training)
      else:
        fn = self.convnet_1x1
      x = fn(inputs) if inputs.ndim == 4 else conv_resampling.apply_per_frame(fn, inputs)
    elif self._prep_type == 'patches':
      x = patches.space_to_depth(
        inputs,
        temporal_block_size=self._temporal_downsample,
        spatial_block_size=self._spatial_downsample,
      )
      if x.ndim == 5 and x.shape[1] == 1:
        x = jnp.squeeze(x, axis=1)  # One block of frames left (optical flow).
      if self._conv_after_patching:
        x = hk.Linear(self._num_channels, name='patches_linear')(x)
    else:  # 'pixels': the crudest downsampling.
      s, t = self._spatial_downsample, self._temporal_downsample
      x = inputs[:, ::s, ::s] if inputs.ndim == 4 else inputs[:, ::t, ::s, ::s]
    inputs_with_pos, inputs_without_pos = self._build_network_inputs(
      x, pos, network_input_is_1d
    )
    return inputs_with_pos, None, inputs_without_pos


class ImagePostprocessor(hk.Module):
  """Turns decoder outputs back into images or videos.

  `postproc_type`:
    'pixels': no change (after the optional reshape).
    'conv': `Conv2DUpsample` (always 4x in space) applied per frame when
      `temporal_upsample == 1`, else `Conv3DUpsample` with
      `log2(temporal_upsample)` temporal and `log2(spatial_upsample)` spatial 2x
      upsamplings; `n_outputs` output channels.
    'conv1x1': a 1x1 convolution to `n_outputs` channels with stride
      `spatial_upsample` (as in the release, a stride > 1 subsamples).
    'patches': `reverse_space_to_depth` with blocks of `temporal_upsample` frames and
      `spatial_upsample` pixels.
  The release also lists 'raft', but builds no network for it (calling it fails);
  here it is rejected with an error when the module is built.

  Args:
    postproc_type: 'pixels', 'conv', 'conv1x1' or 'patches'.
    spatial_upsample: spatial factor (see above).
    temporal_upsample: temporal factor (see above).
    n_outputs: output channels for 'conv' and 'conv1x1'.
    input_reshape_size: if given, decoder outputs `[B, N, D]` are first reshaped to
      `[B, *input_reshape_size, D]`.
    name: module name.
  """

  def __init__(
    self,
    postproc_type: str = 'pixels',
    spatial_upsample: int = 1,
    temporal_upsample: int = 1,
    n_outputs: int = -1,
    input_reshape_size: Optional[Sequence[int]] = None,
    name: Optional[str] = None,
  ):
    super().__init__(name=name)
    if postproc_type == 'raft':
      raise ValueError(
        "postproc_type='raft' is not available: DeepMind's release accepts the "
        'name but builds no network for it. Use one of '
        f'{POSTPROC_TYPES}.'
      )
    positional_inputs.check_choice(postproc_type, 'postproc_type', POSTPROC_TYPES)
    self._postproc_type = postproc_type
    self._spatial_upsample = positional_inputs.check_positive_int(
      spatial_upsample, 'spatial_upsample'
    )
    self._temporal_upsample = positional_inputs.check_positive_int(
      temporal_upsample, 'temporal_upsample'
    )
    self._input_reshape_size = (
      None if input_reshape_size is None else tuple(int(d) for d in input_reshape_size)
    )

    if postproc_type in ('conv', 'conv1x1') and n_outputs == -1:
      raise ValueError(
        f'postproc_type={postproc_type!r} needs n_outputs (output channels), got '
        'n_outputs=-1.'
      )
    if postproc_type == 'pixels':
      if self._temporal_upsample != 1 or self._spatial_upsample != 1:
        raise ValueError(
          "postproc_type='pixels' does not upsample: spatial_upsample and "
          f'temporal_upsample must be 1, got {spatial_upsample!r} and '
          f'{temporal_upsample!r}.'
        )
    elif postproc_type == 'conv1x1':
      if self._temporal_upsample != 1:
        raise ValueError(
          "postproc_type='conv1x1' does not upsample in time: temporal_upsample "
          f'must be 1, got {temporal_upsample!r}.'
        )
      self.conv1x1 = hk.Conv2D(
        n_outputs,
        kernel_shape=[1, 1],
        stride=[self._spatial_upsample, self._spatial_upsample],
      )
    elif postproc_type == 'conv':
      if self._temporal_upsample != 1:
        n_time = _power_of(self._temporal_upsample, 2)
        n_space = _power_of(self._spatial_upsample, 2)
        if n_time is None or n_space is None:
          raise ValueError(
            "postproc_type='conv' with temporal upsampling needs powers of 2: got "
            f'temporal_upsample={temporal_upsample!r}, '
            f'spatial_upsample={spatial_upsample!r}.'
          )
        self.convnet = conv_resampling.Conv3DUpsample(n_outputs, n_time, n_space)
      else:
        self.convnet = conv_resampling.Conv2DUpsample(n_outputs)

  def __call__(self, inputs, *, is_training: bool, pos=None, modality_sizes=None):
    """Postprocesses decoder outputs.

    Args:
      inputs: `[B, N, D]` with `input_reshape_size`, else `[B, H, W, D]` or
        `[B, T, H, W, D]` (any array for 'pixels').
      is_training: unused by these layers; passed on for a uniform interface.
      pos: unused.
      modality_sizes: unused.

    Returns:
      The postprocessed images or videos.
    """
    del pos, modality_sizes  # Unused: a uniform postprocessor interface.
    if self._input_reshape_size is not None:
      target = (inputs.shape[0],) + self._input_reshape_size + (inputs.shape[-1],)
      if int(np.prod(inputs.shape)) != int(np.prod(target)):
        raise ValueError(
          f'Cannot reshape inputs of shape {tuple(inputs.shape)} to '
          f'input_reshape_size={list(self._input_reshape_size)} (target shape '
          f'{target}).'
        )
      inputs = jnp.reshape(inputs, target)

    if self._postproc_type == 'conv':
      fn = lambda x: self.convnet(x, is_training=is_training)
      if self._temporal_upsample == 1:
        positional_inputs.check_rank(
          inputs, 'inputs', (4, 5), '[B, H, W, D] or [B, T, H, W, D]'
        )
        if inputs.ndim == 5:
          return conv_resampling.apply_per_frame(fn, inputs)
      return fn(inputs)
    if self._postproc_type == 'conv1x1':
      positional_inputs.check_rank(
        inputs, 'inputs', (4, 5), '[B, H, W, D] or [B, T, H, W, D]'
      )
      if inputs.ndim == 5:
        return conv_resampling.apply_per_frame(self.conv1x1, inputs)
      return self.conv1x1(inputs)
    if self._postproc_type == 'patches':
      return patches.reverse_space_to_depth(
        inputs, self._temporal_upsample, self._spatial_upsample
      )
    return inputs
