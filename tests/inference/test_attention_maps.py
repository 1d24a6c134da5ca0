"""Attention weights recorded from a forward pass, and the overlay pictures."""

import functools

import haiku as hk
import jax
import numpy as np
import pytest

from experiments.inference import attention_maps
from perceiver import io_processors
from perceiver import perceiver
from perceiver._src import attention as attention_lib


def _np_layer_norm(x, scale, offset):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * scale + offset


def _np_cross_attention_weights(params, q_in, kv_in, mask, heads):
  """Direct float64 computation of a CrossAttention's softmax weights [B, H, T, S]."""
  p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
  lq = _np_layer_norm(
    q_in,
    p['cross_attention/layer_norm']['scale'],
    p['cross_attention/layer_norm']['offset'],
  )
  lkv = _np_layer_norm(
    kv_in,
    p['cross_attention/layer_norm_1']['scale'],
    p['cross_attention/layer_norm_1']['offset'],
  )
  q = (
    lq @ p['cross_attention/attention/linear']['w']
    + p['cross_attention/attention/linear']['b']
  )
  k = (
    lkv @ p['cross_attention/attention/linear_1']['w']
    + p['cross_attention/attention/linear_1']['b']
  )
  b, t, _ = q.shape
  s = k.shape[1]
  q = q.reshape(b, t, heads, -1)
  k = k.reshape(b, s, heads, -1)
  logits = np.einsum('bthd,bshd->bhts', q, k) / np.sqrt(q.shape[-1])
  allowed = np.broadcast_to(mask[:, None, :, :] != 0, logits.shape)
  logits = np.where(allowed, logits, -np.inf)
  peak = np.max(np.where(allowed, logits, -1e300), axis=-1, keepdims=True)
  w = np.where(allowed, np.exp(logits - peak), 0.0)
  total = w.sum(-1, keepdims=True)
  return np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)


@pytest.mark.parametrize('kv_channels', [3, 40])  # folded (factorized) and dense keys
def test_cross_attention_weights_match_numpy(kv_channels):
  heads = 2
  fn = hk.transform(
    lambda q, kv, mask: perceiver.CrossAttention(num_heads=heads, qk_channels=6)(
      q, kv, attention_mask=mask, is_training=False
    )
  )
  rng = np.random.RandomState(0)
  q_in = rng.randn(3, 5, 4).astype(np.float32)
  kv_in = rng.randn(3, 7, kv_channels).astype(np.float32)
  mask = (rng.rand(3, 5, 7) > 0.3).astype(np.int32)
  mask[1, 2] = 0  # A fully masked query row: all weights 0.
  params = fn.init(jax.random.PRNGKey(1), q_in, kv_in, mask)
  plain = fn.apply(params, None, q_in, kv_in, mask)
  recorded, weights = attention_maps.apply_with_attention(
    fn, params, None, None, q_in, kv_in, mask
  )
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(recorded))
  assert list(weights) == ['cross_attention/attention']
  got = np.asarray(weights['cross_attention/attention'])
  assert got.shape == (3, heads, 5, 7)
  want = _np_cross_attention_weights(params, q_in, kv_in, mask, heads)
  np.testing.assert_allclose(got, want, atol=2e-5)
  sums = got.sum(-1)
  alive = mask.any(-1)[:, None, :].repeat(heads, 1)
  np.testing.assert_allclose(sums[alive], 1.0, atol=1e-5)
  np.testing.assert_array_equal(sums[~alive], 0.0)
  np.testing.assert_array_equal(got[np.broadcast_to(mask[:, None] == 0, got.shape)], 0.0)


def _image_classifier(image_batch, *, is_training, num_cross_attends=1, remat=False):
  model = perceiver.Perceiver(
    input_preprocessor=io_processors.ImagePreprocessor(
      prep_type='pixels',
      spatial_downsample=1,
      position_encoding_type='fourier',
      fourier_position_encoding_kwargs=dict(
        num_bands=2, max_resolution=(5, 7), sine_only=False, concat_pos=True
      ),
    ),
    encoder=perceiver.PerceiverEncoder(
      num_self_attends_per_block=1,
      num_blocks=2,
      z_index_dim=5,
      num_z_channels=8,
      num_self_attend_heads=2,
      num_cross_attend_heads=1,
      num_cross_attends=num_cross_attends,
      cross_attend_placement='interleaved',
      share_cross_attend_weights=True,
      remat=remat,
    ),
    decoder=perceiver.ClassificationDecoder(
      4,
      num_z_channels=8,
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(num_channels=8, init_scale=0.02),
    ),
  )
  return model(image_batch, is_training=is_training)


@pytest.mark.slow
def test_model_weights_encoder_and_decoder_without_changing_outputs_or_params():
  # Two interleaved cross-attends sharing weights (a scan over repeats) under remat:
  # recording unrolls both, with the same values.
  forward = functools.partial(_image_classifier, num_cross_attends=2, remat=True)
  model = hk.transform_with_state(forward)
  images = np.random.RandomState(2).rand(3, 5, 7, 3).astype(np.float32)
  params, state = model.init(jax.random.PRNGKey(0), images, is_training=False)
  with attention_lib.record_attention_weights():
    shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), images, is_training=False)
    )
  assert jax.tree.map(np.shape, shapes[0]) == jax.tree.map(np.shape, params)
  plain, plain_state = jax.jit(
    lambda p, s, x: model.apply(p, s, None, x, is_training=False)
  )(params, state, images)
  apply = jax.jit(
    lambda p, s, x: attention_maps.apply_with_attention(
      model, p, s, None, x, is_training=False
    )
  )
  (logits, new_state), weights = apply(params, state, images)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(plain), rtol=1e-5, atol=1e-6)
  assert jax.tree.structure(new_state) == jax.tree.structure(plain_state)
  decoder_name = 'classification_decoder/~/basic_decoder/cross_attention/attention'
  assert sorted(weights) == sorted(
    [
      attention_maps.ENCODER_CROSS_ATTENTION,
      'perceiver_encoder/~/cross_attention_1/attention',  # The shared later cross-attend.
      decoder_name,
    ]
  )
  encoder = weights[attention_maps.ENCODER_CROSS_ATTENTION]
  assert encoder.shape == (3, 1, 5, 35)  # [B, H, N latents, M = 5 x 7 pixels]
  assert weights[decoder_name].shape == (3, 1, 1, 5)  # [B, H, 1 query, N latents]
  for name, value in weights.items():
    np.testing.assert_allclose(np.asarray(value).sum(-1), 1.0, atol=1e-5, err_msg=name)
  maps = attention_maps.latent_maps(encoder, [0, 4], (5, 7), example=1)
  assert maps.shape == (2, 5, 7)
  np.testing.assert_allclose(maps.reshape(2, -1), np.asarray(encoder)[1, 0, [0, 4]])


def test_input_grid_and_overlays(tmp_path):
  assert attention_maps.input_grid(35, (5, 7)) == (5, 7)
  assert attention_maps.input_grid(4, (7, 5)) == (2, 2)  # ceil(7/4) x ceil(5/4)
  with pytest.raises(ValueError, match='permuted'):
    attention_maps.input_grid(11, (5, 7))
  image = np.full((5, 7, 3), 100, np.uint8)
  maps = np.zeros((2, 5, 7), np.float32)
  maps[0, 1, 2] = 0.5
  out = attention_maps.overlays(image, maps, alpha=1.0)
  assert out.shape == (2, 5, 7, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0, 1, 2], [255, 255, 0])  # The peak: full yellow.
  np.testing.assert_array_equal(out[0, 0, 0], [100, 100, 100])  # No attention: grey.
  np.testing.assert_array_equal(out[1], np.full((5, 7, 3), 100))  # An all-zero map.
  path = attention_maps.save_overlay_grid(str(tmp_path / 'a' / 'grid.png'), image, maps)
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
