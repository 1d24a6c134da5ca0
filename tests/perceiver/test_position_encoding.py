"""Tests for perceiver.position_encoding on hand-computed values."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import position_encoding


def test_build_linear_positions_grid():
  pos = np.asarray(position_encoding.build_linear_positions((3, 5)))
  assert pos.shape == (3, 5, 2)
  np.testing.assert_allclose(pos[:, 0, 0], [-1.0, 0.0, 1.0])
  np.testing.assert_allclose(pos[0, :, 1], [-1.0, -0.5, 0.0, 0.5, 1.0])
  # ij indexing: the first coordinate varies along the first axis only.
  np.testing.assert_allclose(pos[:, 3, 0], [-1.0, 0.0, 1.0])
  np.testing.assert_allclose(pos[2, :, 0], np.ones(5))


def test_fourier_features_hand_computed_2x3_grid():
  # Grid 2 x 3, 2 bands, max_resolution (4, 6): frequencies [1, 2] and [1, 3].
  pos = position_encoding.build_linear_positions((2, 3)).reshape(-1, 2)
  feats = np.asarray(
    position_encoding.generate_fourier_features(pos, num_bands=2, max_resolution=(4, 6))
  )
  assert feats.shape == (6, 2 * (2 * 2 + 1))
  expected = []
  for y in (-1.0, 1.0):
    for x in (-1.0, 0.0, 1.0):
      args = [y * 1, y * 2, x * 1, x * 3]  # dim-major (dim, band) pairs
      expected.append(
        [y, x] + [np.sin(np.pi * a) for a in args] + [np.cos(np.pi * a) for a in args]
      )
  np.testing.assert_allclose(feats, np.array(expected), atol=1e-6)


def test_fourier_features_sine_only_no_pos():
  pos = jnp.array([[0.25], [0.5]])
  feats = np.asarray(
    position_encoding.generate_fourier_features(
      pos, num_bands=3, max_resolution=(8,), concat_pos=False, sine_only=True
    )
  )
  freqs = np.linspace(1.0, 4.0, 3)
  expected = np.sin(np.pi * np.array([[0.25], [0.5]]) * freqs[None])
  np.testing.assert_allclose(feats, expected, atol=1e-6)
  assert position_encoding.num_fourier_channels(1, 3, False, True) == 3
  assert position_encoding.num_fourier_channels(2, 64) == 258


def test_fourier_position_encoding_module_matches_function_and_batches():
  def fn(pos=None):
    enc = position_encoding.FourierPositionEncoding((3, 5), num_bands=4)
    return enc(batch_size=7, pos=pos)

  f = hk.without_apply_rng(hk.transform(fn))
  params = f.init(None)
  assert not params
  out = np.asarray(f.apply(params))
  assert out.shape == (7, 15, 2 * 9)
  ref = position_encoding.generate_fourier_features(
    position_encoding.build_linear_positions((3, 5)).reshape(-1, 2), 4, (3, 5)
  )
  np.testing.assert_allclose(out[4], np.asarray(ref), atol=1e-6)
  # Explicit positions per example give per-example features.
  pos = jax.random.uniform(jax.random.PRNGKey(0), (7, 11, 2), minval=-1, maxval=1)
  out = np.asarray(f.apply(params, pos))
  ref = position_encoding.generate_fourier_features(pos[2], 4, (3, 5))
  np.testing.assert_allclose(out[2], np.asarray(ref), atol=1e-6)


def test_trainable_position_encoding_shape_and_init():
  def fn(batch_size):
    return position_encoding.TrainablePositionEncoding(
      index_dim=501, num_channels=7, init_scale=0.02
    )(batch_size)

  f = hk.without_apply_rng(hk.transform(fn))
  params = f.init(jax.random.PRNGKey(1), 3)
  w = np.asarray(params['trainable_position_encoding']['pos_embs'])
  assert w.shape == (501, 7)
  assert np.abs(w).max() <= 2 * 0.02 + 1e-6  # Truncated at two stddevs.
  assert 0.01 < w.std() < 0.02
  out = np.asarray(f.apply(params, 3))
  assert out.shape == (3, 501, 7)
  np.testing.assert_array_equal(out[2], w)
  assert f.apply(params, None).shape == (501, 7)


def test_build_position_encoding_projector_paths():
  def fn():
    enc = position_encoding.build_position_encoding(
      'trainable',
      index_dims=(3, 5),
      project_pos_dim=11,
      trainable_position_encoding_kwargs=dict(num_channels=7),
    )
    return enc(batch_size=2)

  f = hk.without_apply_rng(hk.transform(fn))
  params = f.init(jax.random.PRNGKey(0))
  shapes = jax.tree.map(lambda x: x.shape, params)
  assert shapes == {
    'trainable_position_encoding': {'pos_embs': (15, 7)},
    'position_encoding_projector/linear': {'w': (7, 11), 'b': (11,)},
  }
  out = f.apply(params)
  expected = (
    params['trainable_position_encoding']['pos_embs']
    @ params['position_encoding_projector/linear']['w']
    + params['position_encoding_projector/linear']['b']
  )
  np.testing.assert_allclose(out[1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(position_encoding_type='sinusoid', index_dims=(3,)), 'sinusoid'),
    (
      dict(position_encoding_type='fourier', index_dims=(3,)),
      'fourier_position_encoding_kwargs',
    ),
    (
      dict(position_encoding_type='trainable', index_dims=(3,)),
      'trainable_position_encoding_kwargs',
    ),
  ],
)
def test_build_position_encoding_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    hk.transform(lambda: position_encoding.build_position_encoding(**kwargs)).init(None)


def test_fourier_errors_name_arguments():
  with pytest.raises(ValueError, match='max_resolution'):
    position_encoding.generate_fourier_features(jnp.zeros((3, 2)), 4, (5,))
  with pytest.raises(ValueError, match=r'pos must have shape \[N, d\]'):
    position_encoding.generate_fourier_features(jnp.zeros((3,)), 4, (5,))
  with pytest.raises(ValueError, match='index_dims'):
    hk.transform(lambda: position_encoding.FourierPositionEncoding((0, 3), 4)).init(None)

  def wrong_pos():
    enc = position_encoding.FourierPositionEncoding((3, 5), num_bands=2)
    return enc(batch_size=1, pos=jnp.zeros((1, 15, 3)))

  with pytest.raises(ValueError, match='coordinates'):
    hk.transform(wrong_pos).init(None)


@pytest.mark.parametrize(
  'dims,resolution',
  [((7,), (7,)), ((3, 5), (11, 13)), ((5, 3, 7), (5, 3, 7)), ((37, 41), (37, 41))],
)
@pytest.mark.parametrize('concat_pos,sine_only', [(True, False), (False, True)])
def test_grid_features_per_axis_equal_the_features_of_every_position(
  dims, resolution, concat_pos, sine_only
):
  args = dict(num_bands=5, max_resolution=resolution, concat_pos=concat_pos)
  positions = position_encoding.build_linear_positions(dims).reshape(-1, len(dims))
  every = position_encoding.generate_fourier_features(
    positions, sine_only=sine_only, **args
  )
  per_axis = position_encoding.grid_fourier_features(dims, sine_only=sine_only, **args)
  # The same products of the same float32 arguments: equal, not only close.
  np.testing.assert_array_equal(np.asarray(per_axis), np.asarray(every))
  # Under jit XLA may evaluate sin and cos differently for the two layouts: rounding
  # of arguments up to pi * resolution / 2 only.
  jitted = jax.jit(
    lambda: position_encoding.grid_fourier_features(dims, sine_only=sine_only, **args)
  )()
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(every), rtol=0, atol=1e-5)


def test_grid_features_errors_name_arguments():
  with pytest.raises(ValueError, match='max_resolution'):
    position_encoding.grid_fourier_features((3, 5), 4, (5,))
  with pytest.raises(ValueError, match='num_bands'):
    position_encoding.grid_fourier_features((3, 5), 0, (3, 5))
  with pytest.raises(ValueError, match='index_dims'):
    position_encoding.grid_fourier_features((3, 0), 4, (3, 5))
