"""Small convolutional networks that down- or upsample images and videos.

Shape glossary:
  B: batch size.
  T, H, W: frames, height and width.
  C: input channels; D: output channels.

Parameter paths (relative to the enclosing module) match DeepMind's release:
`Conv2DDownsample` creates `~/conv`, `~/batchnorm` (then `conv_1`, `batchnorm_1`, ...)
in its constructor; `Conv2DUpsample` creates `~/transp_conv_1`, `~/transp_conv_2` in its
constructor; `Conv3DUpsample` creates `conv3d_transpose_{i}` when called.
"""

from typing import Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp


def _check_rank(inputs, rank, layout, module):
  if inputs.ndim != rank:
    raise ValueError(
      f'{module} expects inputs of rank {rank} {layout}, got shape {tuple(inputs.shape)}.'
    )


DOWNSAMPLE_PADDINGS = ('same', 'transformers')


class Conv2DDownsample(hk.Module):
  """Downsamples images by 4 per layer with a strided convolution and max pooling.

  Each layer is: 7x7 stride-2 convolution without bias (`conv`), optional BatchNorm
  (`batchnorm`), ReLU, 3x3 stride-2 max pooling. With `padding='same'` (the release)
  both pad as TensorFlow's 'SAME': `[B, H, W, C]` becomes
  `[B, ceil(H / 4**L), ceil(W / 4**L), num_channels]` after L layers. With
  `padding='transformers'` they pad as transformers' Perceiver does: the convolution
  pads 3 zeros on every side and the pooling none ('VALID'), so an `H`-pixel side
  becomes `floor((ceil(H / 2) - 3) / 2) + 1` (224 -> 55 where 'same' gives 56); same
  parameters, a different function.

  Args:
    num_layers: L, the number of conv -> max-pool layers (0 is the identity).
    num_channels: D, output channels of every convolution.
    use_batchnorm: whether to apply BatchNorm after each convolution.
    bn_config: keyword arguments of `hk.BatchNorm`; defaults are
      `decay_rate=0.9`, `eps=1e-5`, `create_scale=True`, `create_offset=True`.
    name: module name.
    padding: 'same' or 'transformers' (see above).
  """

  def __init__(
    self,
    num_layers: int = 1,
    num_channels: int = 64,
    use_batchnorm: bool = True,
    bn_config: Optional[Mapping[str, float]] = None,
    name: Optional[str] = None,
    *,
    padding: str = 'same',
  ):
    super().__init__(name=name)
    if int(num_layers) < 0:
      raise ValueError(f'num_layers must be >= 0, got {num_layers!r}.')
    if padding not in DOWNSAMPLE_PADDINGS:
      raise ValueError(
        f'Unknown padding {padding!r}; expected one of {DOWNSAMPLE_PADDINGS}.'
      )
    self._pool_padding = 'SAME' if padding == 'same' else 'VALID'
    self._num_layers = int(num_layers)
    self._use_batchnorm = use_batchnorm
    bn_config = dict(bn_config or {})
    bn_config.setdefault('decay_rate', 0.9)
    bn_config.setdefault('eps', 1e-5)
    bn_config.setdefault('create_scale', True)
    bn_config.setdefault('create_offset', True)
    # Created here (not in __call__): their paths are `<this module>/~/conv...`.
    self.layers = []
    for _ in range(self._num_layers):
      conv = hk.Conv2D(
        output_channels=num_channels,
        kernel_shape=7,
        stride=2,
        with_bias=False,
        padding='SAME' if padding == 'same' else [(3, 3), (3, 3)],
        name='conv',
      )
      batchnorm = hk.BatchNorm(name='batchnorm', **bn_config) if use_batchnorm else None
      self.layers.append(dict(conv=conv, batchnorm=batchnorm))

  def __call__(self, inputs, *, is_training: bool, test_local_stats: bool = False):
    """Applies the layers to `[B, H, W, C]` images (BatchNorm in training mode
    when `is_training`, using batch statistics at test time if
    `test_local_stats`)."""
    _check_rank(inputs, 4, '[B, H, W, C]', type(self).__name__)
    out = inputs
    for layer in self.layers:
      out = layer['conv'](out)
      if layer['batchnorm'] is not None:
        out = layer['batchnorm'](out, is_training, test_local_stats)
      out = jax.nn.relu(out)
      out = hk.max_pool(
        out,
        window_shape=(1, 3, 3, 1),
        strides=(1, 2, 2, 1),
        padding=self._pool_padding,
      )
    return out


class Conv2DUpsample(hk.Module):
  """Upsamples images 4x with two 4x4 stride-2 'SAME' transposed convolutions.

  `[B, H, W, C]` -> `transp_conv_1` (2 * n_outputs channels) -> ReLU ->
  `transp_conv_2` (n_outputs channels) -> `[B, 4H, 4W, n_outputs]`. Both have biases.

  Args:
    n_outputs: D, output channels.
    name: module name.
  """

  def __init__(self, n_outputs: int, name: Optional[str] = None):
    super().__init__(name=name)
    if int(n_outputs) < 1:
      raise ValueError(f'n_outputs must be >= 1, got {n_outputs!r}.')
    self.transp_conv1 = hk.Conv2DTranspose(
      output_channels=n_outputs * 2,
      kernel_shape=4,
      stride=2,
      with_bias=True,
      padding='SAME',
      name='transp_conv_1',
    )
    self.transp_conv2 = hk.Conv2DTranspose(
      output_channels=n_outputs,
      kernel_shape=4,
      stride=2,
      with_bias=True,
      padding='SAME',
      name='transp_conv_2',
    )

  def __call__(self, inputs, *, is_training: bool, test_local_stats: bool = False):
    """Upsamples `[B, H, W, C]` to `[B, 4H, 4W, D]` (`is_training` is unused)."""
    del is_training, test_local_stats  # No batch statistics or dropout here.
    _check_rank(inputs, 4, '[B, H, W, C]', type(self).__name__)
    out = self.transp_conv1(inputs)
    out = jax.nn.relu(out)
    return self.transp_conv2(out)


class Conv3DUpsample(hk.Module):
  """Upsamples videos with a stack of 4x4x4 transposed 3D convolutions.

  There are `n = max(n_time_upsamples, n_space_upsamples)` layers named
  `conv3d_transpose_{i}`; layer i has stride 2 in time while `i < n_time_upsamples`
  (else 1), stride 2 in space while `i < n_space_upsamples` (else 1), and
  `n_outputs * 2**(n - 1 - i)` channels (halving down to `n_outputs`), with ReLU
  between layers. `[B, T, H, W, C]` -> `[B, T * 2**n_time_upsamples,
  H * 2**n_space_upsamples, W * 2**n_space_upsamples, n_outputs]`.

  Args:
    n_outputs: D, output channels.
    n_time_upsamples: number of 2x temporal upsamplings.
    n_space_upsamples: number of 2x spatial upsamplings.
    name: module name.
  """

  def __init__(
    self,
    n_outputs: int,
    n_time_upsamples: int = 2,
    n_space_upsamples: int = 4,
    name: Optional[str] = None,
  ):
    super().__init__(name=name)
    if int(n_outputs) < 1:
      raise ValueError(f'n_outputs must be >= 1, got {n_outputs!r}.')
    for arg_name, value in (
      ('n_time_upsamples', n_time_upsamples),
      ('n_space_upsamples', n_space_upsamples),
    ):
      if int(value) < 0:
        raise ValueError(f'{arg_name} must be >= 0, got {value!r}.')
    self._n_outputs = int(n_outputs)
    self._n_time_upsamples = int(n_time_upsamples)
    self._n_space_upsamples = int(n_space_upsamples)

  def __call__(self, x, *, is_training: bool):
    """Upsamples `[B, T, H, W, C]` videos (`is_training` is unused)."""
    del is_training  # No batch statistics or dropout here.
    _check_rank(x, 5, '[B, T, H, W, C]', type(self).__name__)
    n_upsamples = max(self._n_time_upsamples, self._n_space_upsamples)
    for i in range(n_upsamples):
      time_stride = 2 if i < self._n_time_upsamples else 1
      space_stride = 2 if i < self._n_space_upsamples else 1
      channels = self._n_outputs * 2 ** (n_upsamples - 1 - i)
      x = hk.Conv3DTranspose(
        output_channels=channels,
        kernel_shape=[4, 4, 4],
        stride=[time_stride, space_stride, space_stride],
        name=f'conv3d_transpose_{i}',
      )(x)
      if i != n_upsamples - 1:
        x = jax.nn.relu(x)
    return x


def apply_per_frame(fn, inputs):
  """Applies an image function to every frame of `[B, T, H, W, C]` videos.

  The batch and time axes are merged into one batch axis (as `hk.BatchApply` does),
  so batch statistics are computed over all frames of all examples.
  """
  b, t = inputs.shape[:2]
  out = fn(jnp.reshape(inputs, (b * t,) + tuple(inputs.shape[2:])))
  return jnp.reshape(out, (b, t) + tuple(out.shape[1:]))
