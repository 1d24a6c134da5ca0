"""End-to-end tests of the Perceiver wrapper: invariances, masks, jit and grad."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import io_processors
from perceiver import perceiver
from perceiver import position_encoding


def _classifier(num_cross_attends=1, permutation=None, preprocessor=False):
  def fn(x, is_training=False, input_mask=None):
    encoder = perceiver.PerceiverEncoder(
      num_self_attends_per_block=2,
      num_blocks=2,
      z_index_dim=5,
      num_z_channels=8,
      num_self_attend_heads=2,
      num_cross_attends=num_cross_attends,
      cross_attend_placement='interleaved',
    )
    decoder = perceiver.ClassificationDecoder(
      num_classes=7,
      num_z_channels=8,
      use_query_residual=True,
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(num_channels=8, init_scale=0.02),
    )
    prep = None
    if preprocessor:
      prep = io_processors.ImagePreprocessor(
        prep_type='pixels',
        spatial_downsample=1,
        position_encoding_type='fourier',
        fourier_position_encoding_kwargs=dict(
          num_bands=3, max_resolution=(3, 5), concat_pos=True, sine_only=False
        ),
      )
    model = perceiver.Perceiver(
      encoder=encoder,
      decoder=decoder,
      input_preprocessor=prep,
      input_permutation=permutation,
    )
    return model(x, is_training=is_training, input_mask=input_mask)

  return hk.transform(fn)


def _pixels_with_pos(seed, b=3, h=3, w=5, c=2):
  img = jax.random.normal(jax.random.PRNGKey(seed), (b, h, w, c))
  pos = position_encoding.build_linear_positions((h, w)).reshape(-1, 2)
  ff = position_encoding.generate_fourier_features(pos, 3, (h, w))
  return img, jnp.concatenate(
    [img.reshape(b, h * w, c), jnp.broadcast_to(ff[None], (b,) + ff.shape)], -1
  )


@pytest.mark.slow
@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('num_cross_attends', [1, 2])
def test_permuting_inputs_with_positions_leaves_logits_unchanged(seed, num_cross_attends):
  """Property: the encoder is permutation invariant over its input elements."""
  _, x = _pixels_with_pos(seed)
  f = _classifier(num_cross_attends)
  params = f.init(jax.random.PRNGKey(seed), x)
  perm = np.random.RandomState(seed).permutation(x.shape[1])
  mask = jnp.asarray(np.random.RandomState(seed + 10).rand(3, 15) > 0.3)
  np.testing.assert_allclose(
    f.apply(params, None, x), f.apply(params, None, x[:, perm]), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(
    f.apply(params, None, x, input_mask=mask),
    f.apply(params, None, x[:, perm], input_mask=mask[:, perm]),
    rtol=1e-5,
    atol=1e-5,
  )


def test_input_permutation_option_after_position_features():
  img, x = _pixels_with_pos(7)
  perm = np.random.RandomState(0).permutation(15)
  plain = _classifier(preprocessor=True)
  permuted = _classifier(preprocessor=True, permutation=perm)
  params = plain.init(jax.random.PRNGKey(0), img)
  assert jax.tree.structure(params) == jax.tree.structure(
    permuted.init(jax.random.PRNGKey(0), img)
  )
  # Pixels travel with their position features: logits are unchanged.
  np.testing.assert_allclose(
    plain.apply(params, None, img),
    permuted.apply(params, None, img),
    rtol=1e-5,
    atol=1e-5,
  )
  # The preprocessed input equals our hand-made pixels + Fourier features.
  no_prep = _classifier()
  np.testing.assert_allclose(
    plain.apply(params, None, img), no_prep.apply(params, None, x), rtol=1e-5, atol=1e-5
  )
  with pytest.raises(ValueError, match='input_permutation'):
    _classifier(permutation=np.array([0, 0, 1])).init(jax.random.PRNGKey(0), x)


@pytest.mark.slow
def test_jit_and_grad():
  _, x = _pixels_with_pos(1)
  f = _classifier(num_cross_attends=2)
  params = jax.jit(f.init)(jax.random.PRNGKey(0), x)
  labels = jnp.array([1, 4, 6])

  def loss(params, x):
    logits = f.apply(params, None, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  value, grads = jax.jit(jax.value_and_grad(loss))(params, x)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  # Finite-difference check of one random direction, in float64 for precision.
  with jax.enable_x64(True):
    params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    x64 = jnp.asarray(x, jnp.float64)
    value64, grads64 = jax.jit(jax.value_and_grad(loss))(params64, x64)
    leaves = jax.tree.leaves(params64)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    direction = jax.tree.unflatten(
      jax.tree.structure(params64),
      [jax.random.normal(k, p.shape, jnp.float64) for k, p in zip(keys, leaves)],
    )
    eps = 1e-6
    # Both sides of the difference in one compiled call.
    shifted = jax.jit(
      jax.vmap(
        lambda s: loss(jax.tree.map(lambda p, d: p + s * d, params64, direction), x64)
      )
    )(jnp.array([eps, -eps], jnp.float64))
    dot = sum(
      jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads64), jax.tree.leaves(direction))
    )
    np.testing.assert_allclose((shifted[0] - shifted[1]) / (2 * eps), dot, rtol=1e-5)
  # The float32 program agrees with the float64 one.
  np.testing.assert_allclose(value, value64, rtol=1e-5)
  np.testing.assert_allclose(
    jax.tree.leaves(grads64)[0], jax.tree.leaves(grads)[0], rtol=1e-3, atol=1e-4
  )


def test_dropout_training_uses_rng_and_eval_is_deterministic():
  _, x = _pixels_with_pos(2)

  def fn(x, is_training):
    encoder = perceiver.PerceiverEncoder(
      num_self_attends_per_block=1,
      num_blocks=1,
      z_index_dim=5,
      num_z_channels=8,
      num_self_attend_heads=2,
      dropout_prob=0.3,
    )
    decoder = perceiver.ProjectionDecoder(num_classes=4)
    return perceiver.Perceiver(encoder, decoder)(x, is_training=is_training)

  f = hk.transform(fn)
  params = f.init(jax.random.PRNGKey(0), x, True)
  params = jax.tree.map(lambda p: p + 0.1, params)
  e1 = f.apply(params, None, x, False)
  e2 = f.apply(params, None, x, False)
  np.testing.assert_array_equal(e1, e2)
  t1 = f.apply(params, jax.random.PRNGKey(1), x, True)
  assert not np.allclose(t1, e1)
