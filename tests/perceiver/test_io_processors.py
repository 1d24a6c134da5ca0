"""Tests of perceiver.io_processors: values, parameter paths and error messages."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import io_processors as iop
from perceiver import position_encoding

# Parameter values do not matter to these tests; 'rbg' keys compile ~10x faster on
# CPU than the default threefry ones, which keeps this file fast.
RNG = jax.random.key(0, impl='rbg')


def _transform(fn, *args, rng=RNG):
  """Inits and applies `fn`; returns (output, params, state, new_state)."""
  t = hk.transform_with_state(fn)
  # One compiled program per function is much faster than op-by-op dispatch.
  params, state = jax.jit(t.init)(rng, *args)
  out, new_state = jax.jit(t.apply)(params, state, rng, *args)
  return out, params, state, new_state


def _paths(tree):
  return {f'{m}/{n}': tuple(v.shape) for m, d in tree.items() for n, v in d.items()}


def _ff_kwargs(num_bands, max_resolution, **kw):
  return dict(
    fourier_position_encoding_kwargs=dict(
      num_bands=num_bands, max_resolution=max_resolution, **kw
    )
  )


def _np_fourier(pos, num_bands, max_resolution, concat_pos=True, sine_only=False):
  """Independent NumPy reference of the Fourier features of `[n, d]` positions."""
  pos = np.asarray(pos, np.float64)
  sines, cosines = [], []
  for dim, res in enumerate(max_resolution):
    for freq in np.linspace(1.0, res / 2.0, num_bands):
      sines.append(np.sin(np.pi * freq * pos[:, dim]))
      cosines.append(np.cos(np.pi * freq * pos[:, dim]))
  feats = [pos] if concat_pos else []
  feats.append(np.stack(sines, axis=1))
  if not sine_only:
    feats.append(np.stack(cosines, axis=1))
  return np.concatenate(feats, axis=1)


def _grid(*dims):
  axes = [np.linspace(-1.0, 1.0, d) for d in dims]
  return np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1).reshape(-1, len(dims))


def _construct(fn):
  """Runs `fn` (building modules) inside a Haiku transform."""
  return hk.transform(fn).init(RNG)


def _arange(*shape):
  return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


# --------------------------------------------------------------------------------
# space_to_depth / reverse_space_to_depth / extract_patches / patches_for_flow
# --------------------------------------------------------------------------------


def test_space_to_depth_hand_case_channel_order():
  # [1, 2, 2, 3] with 2x2 blocks: channels are (dh dw c).
  x = _arange(1, 2, 2, 3)
  out = np.asarray(iop.space_to_depth(x, spatial_block_size=2))
  assert out.shape == (1, 1, 1, 12)
  expected = [x[0, 0, 0], x[0, 0, 1], x[0, 1, 0], x[0, 1, 1]]
  np.testing.assert_array_equal(out[0, 0, 0], np.concatenate(expected))


def test_space_to_depth_matches_loop_reference_rank5():
  b, t, h, w, c, dt, ds = 2, 4, 6, 9, 3, 2, 3
  x = _arange(b, t, h, w, c)
  out = np.asarray(iop.space_to_depth(x, temporal_block_size=dt, spatial_block_size=ds))
  assert out.shape == (b, t // dt, h // ds, w // ds, dt * ds * ds * c)
  ref = np.zeros_like(out)
  for ti in range(t):
    for hi in range(h):
      for wi in range(w):
        ch = (((ti % dt) * ds + hi % ds) * ds + wi % ds) * c
        ref[:, ti // dt, hi // ds, wi // ds, ch : ch + c] = x[:, ti, hi, wi]
  np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
  'shape,dt,ds',
  [((2, 9, 15, 5), 1, 3), ((3, 6, 10, 14, 5), 3, 2), ((2, 5, 7, 3, 3), 5, 1)],
)
def test_space_to_depth_round_trip(shape, dt, ds):
  x = np.random.RandomState(0).randn(*shape).astype(np.float32)
  y = iop.space_to_depth(x, temporal_block_size=dt, spatial_block_size=ds)
  np.testing.assert_array_equal(
    np.asarray(
      iop.reverse_space_to_depth(y, temporal_block_size=dt, spatial_block_size=ds)
    ),
    x,
  )


@pytest.mark.parametrize('fn', [iop.space_to_depth, iop.reverse_space_to_depth])
def test_space_to_depth_errors(fn):
  with pytest.raises(ValueError, match='rank 4'):
    fn(np.zeros((2, 3, 4)))
  with pytest.raises(ValueError, match='spatial_block_size must be a positive int'):
    fn(np.zeros((1, 4, 4, 4)), spatial_block_size=0)
  with pytest.raises(ValueError, match='temporal_block_size=2 needs rank-5'):
    fn(np.zeros((1, 4, 4, 8)), temporal_block_size=2)


def test_space_to_depth_divisibility_errors():
  with pytest.raises(ValueError, match=r'width \(7\).*spatial_block_size=2'):
    iop.space_to_depth(np.zeros((1, 4, 7, 3)), spatial_block_size=2)
  with pytest.raises(ValueError, match=r'time \(5\).*temporal_block_size=2'):
    iop.space_to_depth(np.zeros((1, 5, 4, 4, 3)), temporal_block_size=2)
  with pytest.raises(ValueError, match=r'channels \(10\).*spatial_block_size\*\*2=4'):
    iop.reverse_space_to_depth(np.zeros((1, 3, 3, 10)), spatial_block_size=2)
  with pytest.raises(ValueError, match=r'channels \(12\).*=8'):
    iop.reverse_space_to_depth(np.zeros((1, 2, 3, 3, 12)), 2, 2)


@pytest.mark.parametrize(
  'shape,sizes,strides,rates,padding',
  [
    ((2, 5, 7, 3), [1, 2, 3, 1], [1, 1, 2, 1], [1, 2, 1, 1], 'VALID'),
    ((2, 5, 7, 3), [1, 2, 3, 1], [1, 1, 2, 1], [1, 2, 1, 1], 'SAME'),
    ((1, 9, 8, 2), [1, 3, 3, 1], [1, 2, 3, 1], [1, 1, 1, 1], 'SAME'),
    ((1, 9, 8, 2), [1, 3, 2, 1], [1, 3, 1, 1], [1, 2, 3, 1], 'SAME'),
    ((3, 6, 11, 1), [1, 1, 4, 1], [1, 5, 2, 1], [1, 1, 2, 1], 'VALID'),
    ((1, 4, 4, 5), [1, 4, 4, 1], [1, 1, 1, 1], [1, 1, 1, 1], 'same'),
  ],
)
def test_extract_patches_matches_tensorflow(shape, sizes, strides, rates, padding):
  tf = pytest.importorskip('tensorflow')
  for dtype in (np.float32, np.int32):
    images = _arange(*shape).astype(dtype) + 1
    ours = np.asarray(iop.extract_patches(images, sizes, strides, rates, padding))
    theirs = tf.image.extract_patches(
      images, sizes=sizes, strides=strides, rates=rates, padding=padding.upper()
    ).numpy()
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_extract_patches_errors():
  img = np.zeros((1, 5, 7, 3))
  ok = [1, 1, 1, 1]
  with pytest.raises(ValueError, match=r'sizes must be \[1, rows, cols, 1\]'):
    iop.extract_patches(img, [2, 2, 2, 1], ok, ok)
  with pytest.raises(ValueError, match='strides must be'):
    iop.extract_patches(img, [1, 2, 2, 1], [1, 2, 2], ok)
  with pytest.raises(ValueError, match='rates must have positive'):
    iop.extract_patches(img, [1, 2, 2, 1], ok, [1, 0, 1, 1])
  with pytest.raises(ValueError, match="padding must be 'VALID' or 'SAME'"):
    iop.extract_patches(img, [1, 2, 2, 1], ok, ok, padding='FULL')
  with pytest.raises(ValueError, match='images must have rank 4'):
    iop.extract_patches(np.zeros((5, 7, 3)), [1, 2, 2, 1], ok, ok)
  with pytest.raises(ValueError, match='do not fit'):
    iop.extract_patches(img, [1, 3, 3, 1], ok, [1, 3, 1, 1])


def test_patches_for_flow_hand_case():
  x = _arange(1, 2, 3, 5, 1) + 1  # [B, T, H, W, C=1], values 1..30
  out = np.asarray(iop.patches_for_flow(x))
  assert out.shape == (1, 2, 3, 5, 9)
  padded = np.pad(x[0, :, :, :, 0], ((0, 0), (1, 1), (1, 1)))
  for t in range(2):
    for h in range(3):
      for w in range(5):
        np.testing.assert_array_equal(
          out[0, t, h, w], padded[t, h : h + 3, w : w + 3].reshape(-1)
        )
  # Corner pixel of frame 1: zero padding above and left.
  np.testing.assert_array_equal(out[0, 1, 0, 0], [0, 0, 0, 0, 16, 17, 0, 21, 22])


def test_patches_for_flow_rgb_channels():
  x = np.random.RandomState(1).randn(2, 2, 5, 7, 3).astype(np.float32)
  out = np.asarray(iop.patches_for_flow(x))
  assert out.shape == (2, 2, 5, 7, 27)
  # Centre of the 3x3 patch (index 4) is the pixel itself, channels (ph pw c).
  np.testing.assert_array_equal(out[..., 12:15], x)
  with pytest.raises(ValueError, match='rank 5'):
    iop.patches_for_flow(x[:, 0])


# --------------------------------------------------------------------------------
# Convolutional resampling
# --------------------------------------------------------------------------------


def _max_pool_same(x):
  return jax.lax.reduce_window(
    x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), 'SAME'
  )


def test_image_preprocessor_conv_values_and_batchnorm_state():
  x = np.random.RandomState(2).randn(2, 9, 11, 3).astype(np.float32)
  fn = lambda x, t: iop.ImagePreprocessor(
    'conv', spatial_downsample=4, num_channels=5, **_ff_kwargs(2, (3, 3))
  )(x, is_training=t)
  t = hk.transform_with_state(fn)
  init = jax.jit(t.init, static_argnums=2)
  apply = jax.jit(t.apply, static_argnums=4)
  params, state = init(RNG, x, True)
  prefix = 'image_preprocessor/~/conv2_d_downsample/~/'
  assert _paths(params) == {
    prefix + 'conv/w': (7, 7, 3, 5),
    prefix + 'batchnorm/scale': (1, 1, 1, 5),
    prefix + 'batchnorm/offset': (1, 1, 1, 5),
  }
  assert set(_paths(state)) == {
    prefix + f'batchnorm/~/{ema}/{v}'
    for ema in ('mean_ema', 'var_ema')
    for v in ('counter', 'hidden', 'average')
  }
  # Non-trivial BatchNorm parameters, to check they are applied.
  scale_key = prefix + 'batchnorm'
  params = hk.data_structures.to_mutable_dict(params)
  params[scale_key]['scale'] = jnp.full((1, 1, 1, 5), 1.5)
  params[scale_key]['offset'] = jnp.linspace(-0.5, 0.5, 5).reshape(1, 1, 1, 5)

  (out, sizes, without), eval_state = apply(params, state, None, x, False)
  assert sizes is None
  jax.tree.map(np.testing.assert_array_equal, eval_state, state)  # eval: unchanged.

  conv = jax.lax.conv_general_dilated(
    x,
    params[prefix + 'conv']['w'],
    (2, 2),
    'SAME',
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  mean = state[scale_key + '/~/mean_ema']['average']
  var = state[scale_key + '/~/var_ema']['average']
  bn = (conv - mean) / jnp.sqrt(var + 1e-5) * 1.5 + params[scale_key]['offset']
  feats = _max_pool_same(jax.nn.relu(bn))  # [2, 3, 3, 5]
  np.testing.assert_allclose(without, feats.reshape(2, 9, 5), atol=1e-5)
  pos = _np_fourier(_grid(3, 3), 2, (3, 3))
  np.testing.assert_allclose(out[..., 5:], np.broadcast_to(pos, (2, 9, 10)), atol=1e-5)

  # Training: batch statistics, and the moving averages move.
  (train_out, _, _), train_state = apply(params, state, None, x, True)
  bmean = conv.mean(axis=(0, 1, 2), keepdims=True)
  bvar = conv.var(axis=(0, 1, 2), keepdims=True)
  bn = (conv - bmean) / jnp.sqrt(bvar + 1e-5) * 1.5 + params[scale_key]['offset']
  feats = _max_pool_same(jax.nn.relu(bn))
  np.testing.assert_allclose(train_out[..., :5], feats.reshape(2, 9, 5), atol=1e-4)
  # Debiased moving averages with decay 0.9: after one step, hidden = 0.1 * mean
  # and the average equals the batch mean.
  mean_ema = train_state[scale_key + '/~/mean_ema']
  np.testing.assert_allclose(mean_ema['hidden'], 0.1 * bmean, atol=1e-6)
  np.testing.assert_allclose(mean_ema['average'], bmean, atol=1e-5)


def test_image_preprocessor_conv_video_is_per_frame_and_16x():
  x = np.random.RandomState(3).randn(2, 3, 16, 16, 3).astype(np.float32)

  def fn(x):
    pre = iop.ImagePreprocessor(
      'conv',
      spatial_downsample=16,
      num_channels=4,
      conv2d_use_batchnorm=False,
      **_ff_kwargs(1, (3, 1, 1)),
    )
    return pre(x, is_training=False, network_input_is_1d=False)[2]

  out, params, _, _ = _transform(fn, x)
  prefix = 'image_preprocessor/~/conv2_d_downsample/~/'
  assert _paths(params) == {
    prefix + 'conv/w': (7, 7, 3, 4),
    prefix + 'conv_1/w': (7, 7, 4, 4),
  }
  assert out.shape == (2, 3, 1, 1, 4)
  # Per-frame application equals the image path applied to each frame.
  ref = hk.transform(
    lambda x: iop.Conv2DDownsample(
      num_layers=2, num_channels=4, use_batchnorm=False, name='d'
    )(x, is_training=False)
  )
  ref_params = {k.replace(prefix, 'd/~/'): v for k, v in params.items()}
  ref_apply = jax.jit(ref.apply)
  for f in range(3):
    np.testing.assert_allclose(out[:, f], ref_apply(ref_params, None, x[:, f]), atol=1e-5)


def test_conv2d_upsample_values():
  x = np.random.RandomState(4).randn(2, 3, 5, 7).astype(np.float32)
  out, params, _, _ = _transform(lambda x: iop.Conv2DUpsample(3)(x, is_training=False), x)
  assert _paths(params) == {
    'conv2_d_upsample/~/transp_conv_1/w': (4, 4, 6, 7),
    'conv2_d_upsample/~/transp_conv_1/b': (6,),
    'conv2_d_upsample/~/transp_conv_2/w': (4, 4, 3, 6),
    'conv2_d_upsample/~/transp_conv_2/b': (3,),
  }

  def tconv(x, p):
    return (
      jax.lax.conv_transpose(
        x, p['w'], (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWOI', 'NHWC')
      )
      + p['b']
    )

  ref = tconv(
    jax.nn.relu(tconv(x, params['conv2_d_upsample/~/transp_conv_1'])),
    params['conv2_d_upsample/~/transp_conv_2'],
  )
  assert out.shape == (2, 12, 20, 3)
  np.testing.assert_allclose(out, ref, atol=1e-4)


def test_conv3d_upsample_shapes_and_paths():
  x = np.ones((1, 3, 2, 5, 4), np.float32)
  out, params, _, _ = _transform(
    lambda x: iop.Conv3DUpsample(3, n_time_upsamples=1, n_space_upsamples=2)(
      x, is_training=False
    ),
    x,
  )
  assert out.shape == (1, 6, 8, 20, 3)
  assert _paths(params) == {
    'conv3_d_upsample/conv3d_transpose_0/w': (4, 4, 4, 6, 4),
    'conv3_d_upsample/conv3d_transpose_0/b': (6,),
    'conv3_d_upsample/conv3d_transpose_1/w': (4, 4, 4, 3, 6),
    'conv3_d_upsample/conv3d_transpose_1/b': (3,),
  }
  with pytest.raises(ValueError, match=r'rank 5 \[B, T, H, W, C\]'):
    _transform(lambda x: iop.Conv3DUpsample(3)(x, is_training=False), x[0])
  with pytest.raises(ValueError, match='n_time_upsamples must be >= 0'):
    _construct(lambda: iop.Conv3DUpsample(3, n_time_upsamples=-1))


# --------------------------------------------------------------------------------
# ImagePreprocessor (non-conv) and ImagePostprocessor
# --------------------------------------------------------------------------------


def test_image_preprocessor_pixels_fourier_values():
  x = np.random.RandomState(5).randn(2, 7, 5, 3).astype(np.float32)
  out, params, _, _ = _transform(
    lambda x: iop.ImagePreprocessor(
      'pixels', spatial_downsample=2, **_ff_kwargs(3, (7, 5))
    )(x, is_training=True),
    x,
  )
  assert params == {}
  with_pos, sizes, without = out
  assert sizes is None
  pixels = x[:, ::2, ::2].reshape(2, 12, 3)
  np.testing.assert_array_equal(without, pixels)
  ff = position_encoding.generate_fourier_features(
    _grid(4, 3).astype(np.float32), num_bands=3, max_resolution=(7, 5)
  )
  expected = np.concatenate([pixels, np.broadcast_to(ff, (2, 12, 14))], axis=-1)
  np.testing.assert_allclose(with_pos, expected, atol=1e-6)
  np.testing.assert_allclose(ff, _np_fourier(_grid(4, 3), 3, (7, 5)), atol=1e-5)


def test_image_preprocessor_pixels_video_not_1d_and_custom_pos():
  x = np.random.RandomState(6).randn(1, 5, 6, 4, 1).astype(np.float32)
  pre = lambda x, **kw: iop.ImagePreprocessor(
    'pixels', spatial_downsample=2, temporal_downsample=3, **_ff_kwargs(1, (2, 3, 2))
  )(x, is_training=False, **kw)
  (flat, _, _), _, _, _ = _transform(lambda x: pre(x), x)
  (grid, _, without), _, _, _ = _transform(lambda x: pre(x, network_input_is_1d=False), x)
  assert grid.shape == (1, 2, 3, 2, 1 + 3 * 3)
  np.testing.assert_array_equal(without, x[:, ::3, ::2, ::2])
  np.testing.assert_allclose(grid.reshape(1, 12, 10), flat, atol=1e-6)
  custom = np.random.RandomState(7).uniform(-1, 1, (1, 12, 3)).astype(np.float32)
  (with_pos, _, _), _, _, _ = _transform(lambda x: pre(x, pos=custom), x)
  np.testing.assert_allclose(
    with_pos[0, :, 1:], _np_fourier(custom[0], 1, (2, 3, 2)), atol=1e-5
  )


def test_image_preprocessor_add_trainable_extra_mlp_values():
  x = np.random.RandomState(8).randn(2, 3, 5, 4).astype(np.float32)

  def fn(x):
    return iop.ImagePreprocessor(
      'pixels',
      spatial_downsample=1,
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(num_channels=4),
      n_extra_pos_mlp=2,
      concat_or_add_pos='add',
    )(x, is_training=True)

  (with_pos, _, without), params, _, _ = _transform(fn, x)
  scope = 'image_preprocessor/~_build_network_inputs/'
  assert _paths(params) == {
    scope + 'trainable_position_encoding/pos_embs': (15, 4),
    scope + 'linear/w': (4, 4),
    scope + 'linear/b': (4,),
    scope + 'linear_1/w': (4, 4),
    scope + 'linear_1/b': (4,),
  }
  p = params[scope + 'trainable_position_encoding']['pos_embs']
  l0, l1 = params[scope + 'linear'], params[scope + 'linear_1']
  p = jax.nn.relu(p + p @ l0['w'] + l0['b'])
  p = p + p @ l1['w'] + l1['b']  # No ReLU after the last layer.
  np.testing.assert_allclose(without, x.reshape(2, 15, 4))
  np.testing.assert_allclose(with_pos, x.reshape(2, 15, 4) + p[None], atol=1e-5)


def test_image_preprocessor_patches_linear_and_flow_squeeze():
  x = np.random.RandomState(9).randn(2, 2, 3, 5, 27).astype(np.float32)

  def fn(x):
    return iop.ImagePreprocessor(
      'patches',
      spatial_downsample=1,
      temporal_downsample=2,
      num_channels=7,
      conv_after_patching=True,
      **_ff_kwargs(2, (3, 5)),
    )(x, is_training=True)

  (with_pos, _, without), params, _, _ = _transform(fn, x)
  assert _paths(params) == {
    'image_preprocessor/patches_linear/w': (54, 7),
    'image_preprocessor/patches_linear/b': (7,),
  }
  lin = params['image_preprocessor/patches_linear']
  stacked = np.concatenate([x[:, 0], x[:, 1]], axis=-1).reshape(2, 15, 54)
  np.testing.assert_allclose(without, stacked @ lin['w'] + lin['b'], atol=1e-4)
  assert with_pos.shape == (2, 15, 7 + 2 * 5)  # 2D encoding: the frame axis is gone.


def test_image_preprocessor_patches_projected_position_encoding_paths():
  x = np.zeros((1, 3, 6, 9, 2), np.float32)

  def fn(x):
    return iop.ImagePreprocessor(
      'patches',
      spatial_downsample=3,
      temporal_downsample=1,
      position_encoding_type='fourier',
      project_pos_dim=5,
      **_ff_kwargs(1, (3, 2, 3)),
    )(x, is_training=True)

  (with_pos, _, without), params, _, _ = _transform(fn, x)
  assert _paths(params) == {
    'image_preprocessor/~_build_network_inputs/position_encoding_projector/linear/w': (
      9,
      5,
    ),
    'image_preprocessor/~_build_network_inputs/position_encoding_projector/linear/b': (
      5,
    ),
  }
  assert without.shape == (1, 18, 18) and with_pos.shape == (1, 18, 23)


def test_image_preprocessor_conv1x1_values():
  x = np.random.RandomState(10).randn(2, 7, 5, 3).astype(np.float32)
  (with_pos, _, without), params, _, _ = _transform(
    lambda x: iop.ImagePreprocessor(
      'conv1x1', spatial_downsample=3, num_channels=4, **_ff_kwargs(1, (3, 2))
    )(x, is_training=True),
    x,
  )
  conv = params['image_preprocessor/~/conv2_d']
  assert conv['w'].shape == (1, 1, 3, 4) and set(params) == {
    'image_preprocessor/~/conv2_d'
  }
  expected = x[:, ::3, ::3] @ conv['w'][0, 0] + conv['b']
  np.testing.assert_allclose(without, expected.reshape(2, 6, 4), atol=1e-5)
  assert with_pos.shape == (2, 6, 4 + 6)


@pytest.mark.parametrize(
  'kwargs,match',
  [
    (dict(prep_type='bogus'), "Unknown prep_type 'bogus'"),
    (dict(concat_or_add_pos='sum'), 'concat_or_add_pos must be one of'),
    (dict(position_encoding_type='none'), "Unknown position_encoding_type 'none'"),
    (dict(prep_type='conv', spatial_downsample=8), 'power of 4.*got 8'),
    (dict(prep_type='conv', temporal_downsample=2), 'temporal_downsample must be 1'),
    (dict(prep_type='conv1x1', temporal_downsample=2), 'temporal_downsample'),
    (dict(prep_type='pixels', spatial_downsample=0), 'spatial_downsample must be a'),
    (dict(n_extra_pos_mlp=-1), 'n_extra_pos_mlp must be >= 0'),
  ],
)
def test_image_preprocessor_constructor_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    hk.transform(lambda: iop.ImagePreprocessor(**kwargs)).init(RNG)


def test_image_preprocessor_call_errors():
  def call(x, **kw):
    return _transform(
      lambda x: iop.ImagePreprocessor('pixels', spatial_downsample=1, **kw)(
        x, is_training=False
      ),
      x,
    )

  with pytest.raises(ValueError, match=r'inputs must have shape .*got shape \(3, 5\)'):
    call(np.zeros((3, 5)), **_ff_kwargs(1, (5,)))
  with pytest.raises(ValueError, match="concat_or_add_pos='add' needs"):
    call(np.zeros((1, 3, 5, 2)), concat_or_add_pos='add', **_ff_kwargs(1, (3, 5)))
  with pytest.raises(ValueError, match='needs fourier_position_encoding_kwargs'):
    call(np.zeros((1, 3, 5, 2)))
  with pytest.raises(ValueError, match=r'width \(5\).*spatial_block_size=2'):
    _transform(
      lambda x: iop.ImagePreprocessor(
        'patches', spatial_downsample=2, **_ff_kwargs(1, (2, 2))
      )(x, is_training=False),
      np.zeros((1, 4, 5, 3)),
    )


def test_image_postprocessor_types():
  x = np.random.RandomState(11).randn(2, 12, 8).astype(np.float32)
  out, params, _, _ = _transform(
    lambda x: iop.ImagePostprocessor('pixels', input_reshape_size=(3, 4))(
      x, is_training=False
    ),
    x,
  )
  assert params == {}
  np.testing.assert_array_equal(out, x.reshape(2, 3, 4, 8))
  out, _, _, _ = _transform(
    lambda x: iop.ImagePostprocessor(
      'patches', spatial_upsample=2, input_reshape_size=(3, 4)
    )(x, is_training=False),
    x,
  )
  np.testing.assert_array_equal(
    out, iop.reverse_space_to_depth(x.reshape(2, 3, 4, 8), spatial_block_size=2)
  )
  out, params, _, _ = _transform(
    lambda x: iop.ImagePostprocessor('conv', n_outputs=3, input_reshape_size=(3, 4))(
      x, is_training=False
    ),
    x,
  )
  assert out.shape == (2, 12, 16, 3)
  assert set(params) == {
    'image_postprocessor/~/conv2_d_upsample/~/transp_conv_1',
    'image_postprocessor/~/conv2_d_upsample/~/transp_conv_2',
  }
  video = np.ones((2, 2, 3, 4, 8), np.float32)
  out, _, _, _ = _transform(
    lambda x: iop.ImagePostprocessor('conv', n_outputs=3)(x, is_training=False), video
  )
  assert out.shape == (2, 2, 12, 16, 3)  # 2D upsampling per frame.
  out, params, _, _ = _transform(
    lambda x: iop.ImagePostprocessor(
      'conv', n_outputs=3, temporal_upsample=2, spatial_upsample=4
    )(x, is_training=False),
    video,
  )
  assert out.shape == (2, 4, 12, 16, 3)
  assert set(params) == {
    f'image_postprocessor/~/conv3_d_upsample/conv3d_transpose_{i}' for i in (0, 1)
  }
  out, params, _, _ = _transform(
    lambda x: iop.ImagePostprocessor(
      'conv1x1', n_outputs=5, spatial_upsample=1, input_reshape_size=(3, 4)
    )(x, is_training=False),
    x,
  )
  conv = params['image_postprocessor/~/conv2_d']
  np.testing.assert_allclose(
    out, x.reshape(2, 3, 4, 8) @ conv['w'][0, 0] + conv['b'], atol=1e-5
  )


@pytest.mark.parametrize(
  'kwargs,match',
  [
    (dict(postproc_type='raft'), "'raft' is not available"),
    (dict(postproc_type='bogus'), "Unknown postproc_type 'bogus'"),
    (dict(postproc_type='conv'), 'needs n_outputs'),
    (dict(postproc_type='conv1x1'), 'needs n_outputs'),
    (dict(postproc_type='pixels', spatial_upsample=2), 'does not upsample'),
    (
      dict(postproc_type='conv1x1', n_outputs=3, temporal_upsample=2),
      'temporal_upsample must be 1',
    ),
    (
      dict(postproc_type='conv', n_outputs=3, temporal_upsample=3),
      'powers of 2.*temporal_upsample=3',
    ),
  ],
)
def test_image_postprocessor_constructor_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    hk.transform(lambda: iop.ImagePostprocessor(**kwargs)).init(RNG)


def test_image_postprocessor_reshape_error():
  with pytest.raises(ValueError, match=r'Cannot reshape .*input_reshape_size=\[3, 5\]'):
    _transform(
      lambda x: iop.ImagePostprocessor(input_reshape_size=(3, 5))(x, is_training=False),
      np.zeros((2, 12, 8)),
    )


# --------------------------------------------------------------------------------
# One-hot, audio, simple postprocessors, embedding decoder
# --------------------------------------------------------------------------------


def test_one_hot_preprocessor():
  x = np.eye(5, dtype=np.float32)[[1, 3, 4]]
  (a, sizes, b), params, _, _ = _transform(
    lambda x: iop.OneHotPreprocessor()(x, is_training=True), x
  )
  assert params == {} and sizes is None
  np.testing.assert_array_equal(a, x[:, None])
  np.testing.assert_array_equal(b, x[:, None])
  with pytest.raises(ValueError, match=r'shape \[B, C\]'):
    _transform(lambda x: iop.OneHotPreprocessor()(x, is_training=True), x[None])


def test_audio_preprocessor_values():
  x = np.random.RandomState(12).randn(2, 15).astype(np.float32)
  pre = lambda x: iop.AudioPreprocessor(samples_per_patch=3, **_ff_kwargs(2, (15,)))(
    x, is_training=False
  )
  (with_pos, sizes, without), params, _, _ = _transform(pre, x)
  (with_pos3, _, _), _, _, _ = _transform(pre, x[..., None])
  assert params == {} and sizes is None
  np.testing.assert_array_equal(without, x.reshape(2, 5, 3))
  expected = np.concatenate(
    [x.reshape(2, 5, 3), np.broadcast_to(_np_fourier(_grid(5), 2, (15,)), (2, 5, 5))],
    axis=-1,
  )
  np.testing.assert_allclose(with_pos, expected, atol=1e-5)
  np.testing.assert_array_equal(with_pos, with_pos3)


def test_audio_preprocessor_trainable_path_and_errors():
  x = np.zeros((2, 12, 1), np.float32)
  _, params, _, _ = _transform(
    lambda x: iop.AudioPreprocessor(
      samples_per_patch=4,
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(num_channels=6),
      n_extra_pos_mlp=1,
    )(x, is_training=False),
    x,
  )
  assert _paths(params) == {
    'audio_preprocessor/~_build_network_inputs/trainable_position_encoding/pos_embs': (
      3,
      6,
    ),
    'audio_preprocessor/~_build_network_inputs/linear/w': (6, 6),
    'audio_preprocessor/~_build_network_inputs/linear/b': (6,),
  }
  ff = _ff_kwargs(1, (3,))
  with pytest.raises(ValueError, match=r'samples \(13\).*samples_per_patch=4'):
    _transform(
      lambda x: iop.AudioPreprocessor(samples_per_patch=4, **ff)(x, is_training=False),
      np.zeros((2, 13)),
    )
  with pytest.raises(ValueError, match=r'\[B, S\] or \[B, S, 1\]'):
    _transform(
      lambda x: iop.AudioPreprocessor(samples_per_patch=4, **ff)(x, is_training=False),
      np.zeros((2, 12, 2)),
    )
  with pytest.raises(ValueError, match="Unknown prep_type 'mel'"):
    _construct(lambda: iop.AudioPreprocessor(prep_type='mel'))
  with pytest.raises(ValueError, match="Unknown postproc_type 'conv'"):
    _construct(lambda: iop.AudioPostprocessor(postproc_type='conv'))


def test_linear_postprocessors_values():
  x = np.random.RandomState(13).randn(2, 3, 5).astype(np.float32)

  def fn(x):
    return (
      iop.AudioPostprocessor(samples_per_patch=4)(x, is_training=False),
      iop.ClassificationPostprocessor(7)(x, is_training=False),
      iop.ProjectionPostprocessor(6)(x, is_training=False),
      iop.IdentityPostprocessor()(x, is_training=False, modality_sizes=None),
    )

  (audio, logits, proj, ident), params, _, _ = _transform(fn, x)
  assert _paths(params) == {
    'audio_postprocessor/linear/w': (5, 4),
    'audio_postprocessor/linear/b': (4,),
    'classification_postprocessor/linear/w': (5, 7),
    'classification_postprocessor/linear/b': (7,),
    'projection_postprocessor/linear/w': (5, 6),
    'projection_postprocessor/linear/b': (6,),
  }
  lin = lambda name: x @ params[name]['w'] + params[name]['b']
  np.testing.assert_allclose(
    audio, lin('audio_postprocessor/linear').reshape(2, 12), atol=1e-5
  )
  np.testing.assert_allclose(
    logits, lin('classification_postprocessor/linear')[:, 0], atol=1e-5
  )
  np.testing.assert_allclose(proj, lin('projection_postprocessor/linear'), atol=1e-5)
  np.testing.assert_array_equal(ident, x)


def test_embedding_decoder_values_and_errors():
  emb = np.random.RandomState(14).randn(11, 5).astype(np.float32)
  x = np.random.RandomState(15).randn(2, 3, 5).astype(np.float32)
  t = hk.transform(lambda x: iop.EmbeddingDecoder(emb)(x))
  params = t.init(RNG, x)
  assert _paths(params) == {'embedding_decoder/bias': (11,)}
  np.testing.assert_array_equal(params['embedding_decoder']['bias'], np.zeros(11))
  bias = np.arange(11, dtype=np.float32)
  out = t.apply({'embedding_decoder': {'bias': bias}}, None, x)
  np.testing.assert_allclose(out, x @ emb.T + bias, atol=1e-5)
  with pytest.raises(ValueError, match=r'\[B, L, 5\]'):
    t.apply(params, None, x[..., :4])
  with pytest.raises(ValueError, match='embedding_matrix must have shape'):
    hk.transform(lambda: iop.EmbeddingDecoder(emb[0])).init(RNG)


# --------------------------------------------------------------------------------
# Multimodal
# --------------------------------------------------------------------------------


def test_restructure_sorted_order_and_errors():
  x = _arange(2, 9, 3)
  parts = iop.restructure({'video': 4, 'audio': 2, 'label': 3}, x)
  assert list(parts) == ['audio', 'label', 'video']
  np.testing.assert_array_equal(parts['audio'], x[:, :2])
  np.testing.assert_array_equal(parts['label'], x[:, 2:5])
  np.testing.assert_array_equal(parts['video'], x[:, 5:])
  np.testing.assert_array_equal(np.concatenate(list(parts.values()), axis=1), x)
  with pytest.raises(ValueError, match='add up to 8.*9 positions'):
    iop.restructure({'a': 5, 'b': 3}, x)


def _mm_modalities():
  # Insertion order deliberately not sorted.
  return {
    'video': iop.ImagePreprocessor(
      'pixels', spatial_downsample=1, **_ff_kwargs(1, (2, 3))
    ),  # C = 2 + 6 = 8
    'label': iop.OneHotPreprocessor(),  # C = 3
    'audio': iop.AudioPreprocessor(
      samples_per_patch=5, **_ff_kwargs(1, (5,))
    ),  # C = 5 + 3 = 8
  }


def _mm_inputs():
  rs = np.random.RandomState(16)
  return {
    'video': rs.randn(2, 2, 3, 2).astype(np.float32),
    'label': np.eye(3, dtype=np.float32)[[0, 2]],
    'audio': rs.randn(2, 20).astype(np.float32),
  }


def test_multimodal_preprocessor_padding_order_and_sizes():
  inputs = _mm_inputs()
  fn = lambda x: iop.MultimodalPreprocessor(_mm_modalities(), min_padding_size=3)(
    x, is_training=True
  )
  (out, sizes, without), params, _, _ = _transform(fn, inputs)
  assert _paths(params) == {
    'multimodal_preprocessor/video_padding/pos_embs': (1, 3),
    'multimodal_preprocessor/label_padding/pos_embs': (1, 8),
    'multimodal_preprocessor/audio_padding/pos_embs': (1, 3),
  }
  assert sizes == {'video': 6, 'label': 1, 'audio': 4}
  assert out.shape == (2, 11, 11)
  parts = iop.restructure(sizes, out)
  solo = {}
  for m in ('video', 'label', 'audio'):
    (solo[m], _, w), _, _, _ = _transform(
      lambda x, m=m: _mm_modalities()[m](x, is_training=True), inputs[m]
    )
    np.testing.assert_array_equal(without[m], w)
  for m in ('audio', 'label', 'video'):
    c = solo[m].shape[-1]
    np.testing.assert_allclose(parts[m][..., :c], solo[m], atol=1e-6)
    pad = params[f'multimodal_preprocessor/{m}_padding']['pos_embs']
    np.testing.assert_array_equal(
      parts[m][..., c:], np.broadcast_to(pad, (2, sizes[m], 11 - c))
    )
  # Sorted concatenation: audio, then label, then video.
  np.testing.assert_array_equal(out[:, :4], parts['audio'])
  np.testing.assert_array_equal(out[:, 4:5], parts['label'])


def test_multimodal_preprocessor_masking():
  inputs = _mm_inputs()
  fn = lambda x: iop.MultimodalPreprocessor(
    _mm_modalities(), mask_probs={'video': 0.5, 'label': 1.0, 'audio': 0.0}
  )(x, is_training=False)
  rng = jax.random.key(3, impl='rbg')
  (out, sizes, _), params, _, _ = _transform(fn, inputs, rng=rng)
  parts = iop.restructure(sizes, out)
  token = lambda m: params[f'multimodal_preprocessor/{m}_mask_token']['pos_embs']
  assert token('video').shape == (1, 10)
  np.testing.assert_array_equal(
    parts['label'], np.broadcast_to(token('label'), (2, 1, 10))
  )
  assert not np.any(np.all(parts['audio'] == token('audio'), axis=-1))
  # One RNG key per modality, in the order of `modalities` (video is first).
  key = next(hk.PRNGSequence(rng))
  mask = np.asarray(jax.random.bernoulli(key, 0.5, (2, 6)))
  assert 0 < mask.sum() < mask.size
  is_token = np.all(parts['video'] == token('video'), axis=-1)
  np.testing.assert_array_equal(is_token, mask)


def test_multimodal_preprocessor_zero_padding_and_errors():
  inputs = _mm_inputs()
  _, params, _, _ = _transform(
    lambda x: iop.MultimodalPreprocessor(_mm_modalities(), min_padding_size=0)(
      x, is_training=True
    ),
    inputs,
  )
  assert set(params) == {'multimodal_preprocessor/label_padding'}
  mods = _mm_modalities
  with pytest.raises(ValueError, match=r"inputs must have exactly.*missing \['audio'\]"):
    _transform(
      lambda x: iop.MultimodalPreprocessor(mods())(x, is_training=True),
      {k: v for k, v in inputs.items() if k != 'audio'},
    )
  with pytest.raises(ValueError, match=r"mask_probs must have exactly.*\['video'\]"):
    hk.transform(
      lambda: iop.MultimodalPreprocessor(mods(), mask_probs={'label': 1.0, 'audio': 0.0})
    ).init(RNG)
  with pytest.raises(ValueError, match=r"mask_probs\['label'\] must be in \[0, 1\]"):
    hk.transform(
      lambda: iop.MultimodalPreprocessor(
        mods(), mask_probs={'label': 1.5, 'audio': 0.0, 'video': 0.0}
      )
    ).init(RNG)
  with pytest.raises(ValueError, match='min_padding_size must be >= 0'):
    hk.transform(lambda: iop.MultimodalPreprocessor(mods(), min_padding_size=-1)).init(
      RNG
    )
  with pytest.raises(ValueError, match='inputs must be a mapping'):
    _transform(
      lambda x: iop.MultimodalPreprocessor(mods())(x, is_training=True), inputs['audio']
    )
  with pytest.raises(ValueError, match='non-empty mapping'):
    _construct(lambda: iop.MultimodalPreprocessor({}))
  with pytest.raises(ValueError, match=r"modality 'video' returned shape \(2, 2, 3, 8\)"):
    _transform(
      lambda x: iop.MultimodalPreprocessor(mods())(
        x, is_training=True, network_input_is_1d=False
      ),
      inputs,
    )


def test_multimodal_postprocessor():
  x = np.random.RandomState(17).randn(2, 6, 5).astype(np.float32)
  sizes = {'label': 1, 'audio': 2, 'video': 3}

  def fn(x):
    post = iop.MultimodalPostprocessor(
      {
        'video': iop.IdentityPostprocessor(),
        'label': iop.ClassificationPostprocessor(4),
        'audio': iop.AudioPostprocessor(samples_per_patch=3),
      }
    )
    return post(x, is_training=False, modality_sizes=sizes)

  out, params, _, _ = _transform(fn, x)
  np.testing.assert_array_equal(out['video'], x[:, 3:])
  lin = params['classification_postprocessor/linear']
  np.testing.assert_allclose(out['label'], x[:, 2] @ lin['w'] + lin['b'], atol=1e-5)
  assert out['audio'].shape == (2, 6)
  dict_out, _, _, _ = _transform(
    lambda d: iop.MultimodalPostprocessor(
      {'a': iop.IdentityPostprocessor()}, input_is_dict=True
    )(d, is_training=False),
    {'a': x},
  )
  np.testing.assert_array_equal(dict_out['a'], x)
  with pytest.raises(ValueError, match='modality_sizes is required'):
    _transform(
      lambda x: iop.MultimodalPostprocessor({'a': iop.IdentityPostprocessor()})(
        x, is_training=False
      ),
      x,
    )
  with pytest.raises(ValueError, match=r"no entry for modalities \['b'\]"):
    _transform(
      lambda d: iop.MultimodalPostprocessor(
        {'b': iop.IdentityPostprocessor()}, input_is_dict=True
      )(d, is_training=False),
      {'a': x},
    )


# --------------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------------


def test_point_cloud_preprocessor_values_and_equivariance():
  rs = np.random.RandomState(18)
  coord_range = ((0.0, 2.0), (-3.0, 3.0), (10.0, 20.0))
  points = np.stack(
    [
      rs.uniform(-0.5, 2.5, (2, 7)),  # Partly outside the range.
      rs.uniform(-3, 3, (2, 7)),
      rs.uniform(10, 20, (2, 7)),
    ],
    axis=-1,
  ).astype(np.float32)
  pre = lambda x: iop.PointCloudPreprocessor(
    num_bands=3, max_resolution=(8, 6, 10), coord_range=coord_range
  )(x, is_training=True)
  (with_pos, sizes, without), params, _, _ = _transform(pre, points)
  assert params == {} and sizes is None
  np.testing.assert_array_equal(without, points)
  norm = np.stack(
    [points[..., 0] - 1.0, points[..., 1] / 3.0, (points[..., 2] - 15.0) / 5.0], axis=-1
  )
  assert norm.min() < -1 or norm.max() > 1  # Not clipped.
  expected = _np_fourier(norm.reshape(-1, 3), 3, (8, 6, 10)).reshape(2, 7, 21)
  assert with_pos.shape == (2, 7, 3 + 21)
  np.testing.assert_allclose(with_pos[..., :3], points)
  np.testing.assert_allclose(with_pos[..., 3:], expected, atol=1e-4)
  perm = rs.permutation(7)
  (permuted, _, _), _, _, _ = _transform(pre, points[:, perm])
  np.testing.assert_allclose(permuted, with_pos[:, perm], atol=1e-6)


def test_point_cloud_preprocessor_add_and_errors():
  points = np.random.RandomState(19).uniform(-1, 1, (2, 5, 3)).astype(np.float32)
  (added, _, _), _, _, _ = _transform(
    lambda x: iop.PointCloudPreprocessor(
      num_bands=1,
      max_resolution=2,
      concat_pos=False,
      sine_only=True,
      concat_or_add_pos='add',
    )(x, is_training=True),
    points,
  )
  np.testing.assert_allclose(added, points + np.sin(np.pi * points), atol=1e-6)
  (numpy_res, _, _), _, _, _ = _transform(
    lambda x: iop.PointCloudPreprocessor(num_bands=2, max_resolution=np.int64(6))(
      x, is_training=True
    ),
    points,
  )
  np.testing.assert_allclose(
    numpy_res[..., 3:],
    _np_fourier(points.reshape(-1, 3), 2, (6, 6, 6)).reshape(2, 5, 15),
    atol=1e-5,
  )

  def call(x, pos=None, **kw):
    return _transform(
      lambda x: iop.PointCloudPreprocessor(num_bands=2, max_resolution=4, **kw)(
        x, is_training=True, pos=pos
      ),
      x,
    )

  with pytest.raises(ValueError, match=r'\[B, N, 3\].*\(2, 5, 2\)'):
    call(points[..., :2])
  with pytest.raises(ValueError, match='pos must be None'):
    call(points, pos=points)
  with pytest.raises(ValueError, match="concat_or_add_pos='add' needs"):
    call(points, concat_or_add_pos='add')
  with pytest.raises(ValueError, match='low < high'):
    _construct(lambda: iop.PointCloudPreprocessor(2, 4, coord_range=((1.0, 1.0),) * 3))
  with pytest.raises(ValueError, match='max_resolution must be'):
    _construct(lambda: iop.PointCloudPreprocessor(2, (4, 4)))
  with pytest.raises(ValueError, match='num_bands must be a positive int'):
    _construct(lambda: iop.PointCloudPreprocessor(0, 4))
  with pytest.raises(ValueError, match='concat_or_add_pos must be one of'):
    _construct(lambda: iop.PointCloudPreprocessor(2, 4, concat_or_add_pos='mul'))


# --------------------------------------------------------------------------------
# jit and grad
# --------------------------------------------------------------------------------


def test_jit_and_grad_through_processors():
  inputs = _mm_inputs()

  def fn(x, images):
    feats, _, _ = iop.MultimodalPreprocessor(
      _mm_modalities(), mask_probs={'video': 0.3, 'label': 1.0, 'audio': 0.0}
    )(x, is_training=True)
    img, _, _ = iop.ImagePreprocessor('conv', num_channels=3, **_ff_kwargs(1, (2, 2)))(
      images, is_training=True
    )
    out = iop.ProjectionPostprocessor(2)(feats, is_training=True)
    return jnp.sum(out**2) + jnp.sum(img**2)

  t = hk.transform_with_state(fn)
  images = np.random.RandomState(20).randn(2, 8, 8, 3).astype(np.float32)
  params, state = jax.jit(t.init)(RNG, inputs, images)
  loss = lambda p: t.apply(p, state, RNG, inputs, images)[0]
  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  np.testing.assert_allclose(value, jax.jit(loss)(params), rtol=1e-5)
  assert set(grads) == set(params)
  flat = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in flat)
  # The label is always masked: its mask-token gradient is non-zero, its padding's 0.
  assert np.any(grads['multimodal_preprocessor/label_mask_token']['pos_embs'] != 0)
  assert np.all(grads['multimodal_preprocessor/label_padding']['pos_embs'] == 0)
  assert np.any(grads['image_preprocessor_1/~/conv2_d_downsample/~/conv']['w'] != 0)


def test_conv2d_downsample_transformers_padding():
  """'transformers' pads the 7x7 convolution by 3 on every side and max-pools without
  padding (transformers' Perceiver), checked against a NumPy loop; 'same' is the release's
  grid (224 -> 56 where 'transformers' gives 55)."""
  rs = np.random.RandomState(3)
  images = rs.randn(2, 9, 12, 2).astype(np.float32)

  def fn(x, padding):
    return iop.Conv2DDownsample(num_channels=3, use_batchnorm=False, padding=padding)(
      x, is_training=False
    )

  t = hk.transform(lambda x: fn(x, 'transformers'))
  params = t.init(RNG, images)
  got = np.asarray(t.apply(params, None, images))
  w = params['conv2_d_downsample/~/conv']['w']
  padded = np.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)))
  h, wd = (9 + 6 - 7) // 2 + 1, (12 + 6 - 7) // 2 + 1
  conv = np.zeros((2, h, wd, 3), np.float32)
  for i in range(h):
    for j in range(wd):
      window = padded[:, 2 * i : 2 * i + 7, 2 * j : 2 * j + 7, :]
      conv[:, i, j] = np.einsum('bhwc,hwco->bo', window, w)
  relu = np.maximum(conv, 0)
  ph, pw = (h - 3) // 2 + 1, (wd - 3) // 2 + 1
  want = np.stack(
    [
      np.stack(
        [relu[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max((1, 2)) for j in range(pw)], 1
      )
      for i in range(ph)
    ],
    1,
  )
  assert got.shape == want.shape == (2, 2, 2, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  shapes = {
    padding: jax.eval_shape(
      lambda x, p=padding: hk.transform(lambda y: fn(y, p)).init(RNG, x),
      jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32),
    )
    for padding in ('same', 'transformers')
  }
  assert jax.tree.map(lambda a: a.shape, shapes['same']) == jax.tree.map(
    lambda a: a.shape, shapes['transformers']
  )
  for padding, side in (('same', 56), ('transformers', 55)):
    out = jax.eval_shape(
      lambda x, p=padding: hk.transform(lambda y: fn(y, p)).apply(
        shapes['same'], None, x
      ),
      jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32),
    )
    assert out.shape == (1, side, side, 3)
  with pytest.raises(ValueError, match="Unknown conv2d_padding 'valid'"):
    hk.transform(
      lambda x: iop.ImagePreprocessor('pixels', conv2d_padding='valid')(
        x, is_training=False
      )
    ).init(RNG, images)
