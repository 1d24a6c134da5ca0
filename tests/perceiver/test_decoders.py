"""Tests for the Perceiver IO decoders."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver

B, N, D = 3, 5, 8


def _z(seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (B, N, D))


def _decode_fn(decoder_fn, subsampled=None):
  def fn(z):
    dec = decoder_fn()
    query = dec.decoder_query(z, subsampled_points=subsampled)
    return dec(query, z, is_training=False)

  return hk.transform(fn)


FOURIER = dict(
  position_encoding_type='fourier',
  fourier_position_encoding_kwargs=dict(num_bands=3, concat_pos=True),
)
TRAINABLE = dict(
  position_encoding_type='trainable',
  trainable_position_encoding_kwargs=dict(num_channels=6),
)


@pytest.mark.slow
@pytest.mark.parametrize('pe_kwargs, exact', [(TRAINABLE, False), (FOURIER, True)])
def test_subsampled_decoding_equals_slice_of_full(pe_kwargs, exact):
  dims = (3, 7)
  points = jnp.array([0, 4, 13, 20, 9])
  make = lambda: perceiver.BasicDecoder(
    output_num_channels=4,
    output_index_dims=dims,
    num_heads=1,
    exact_subsampled_positions=exact,
    **pe_kwargs,
  )
  full_f = _decode_fn(make)
  params = full_f.init(jax.random.PRNGKey(0), _z())
  full = full_f.apply(params, None, _z())
  sub = _decode_fn(make, points).apply(params, None, _z())
  assert full.shape == (B, 21, 4) and sub.shape == (B, 5, 4)
  np.testing.assert_allclose(sub, full[:, np.asarray(points)], rtol=1e-5, atol=1e-6)


def test_default_subsampled_fourier_positions_follow_official_mapping():
  dims = (3, 7)
  points = np.array([0, 4, 13, 20])

  def fn(z):
    dec = perceiver.BasicDecoder(output_num_channels=4, output_index_dims=dims, **FOURIER)
    return dec.decoder_query(z, subsampled_points=jnp.asarray(points))

  q = np.asarray(hk.transform(fn).apply({}, None, _z()))
  rows, cols = np.unravel_index(points, dims)
  np.testing.assert_allclose(q[0, :, 0], -1 + 2 * rows / 3, atol=1e-6)
  np.testing.assert_allclose(q[0, :, 1], -1 + 2 * cols / 7, atol=1e-6)


def test_query_mask_masked_rows_ignore_latents():
  make = lambda: perceiver.BasicDecoder(
    output_num_channels=4, output_index_dims=(7,), **TRAINABLE
  )
  qmask = jnp.array([[1, 1, 0, 1, 0, 1, 1]] * B)

  def fn(z):
    dec = make()
    return dec(dec.decoder_query(z), z, is_training=False, query_mask=qmask)

  f = hk.transform(fn)
  params = f.init(jax.random.PRNGKey(0), _z())
  a, b = f.apply(params, None, _z(1)), f.apply(params, None, _z(2))
  np.testing.assert_allclose(a[:, 2], b[:, 2], rtol=1e-6)
  np.testing.assert_allclose(a[:, 4], b[:, 4], rtol=1e-6)
  assert not np.allclose(a[:, 0], b[:, 0])


def test_classification_decoder_paths_and_output():
  f = _decode_fn(
    lambda: perceiver.ClassificationDecoder(
      num_classes=11,
      num_z_channels=D,
      use_query_residual=True,
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(num_channels=D, init_scale=0.02),
    )
  )
  params = f.init(jax.random.PRNGKey(0), _z())
  assert 'classification_decoder/~/basic_decoder/~/trainable_position_encoding' in params
  assert params['classification_decoder/~/basic_decoder/output']['w'].shape == (D, 11)
  assert f.apply(params, None, _z()).shape == (B, 11)


def test_projection_decoder_is_mean_then_linear():
  def fn(z):
    return perceiver.ProjectionDecoder(num_classes=7)(None, z, is_training=False)

  f = hk.transform(fn)
  params = f.init(jax.random.PRNGKey(0), _z())
  np.testing.assert_array_equal(
    f.apply(params, None, _z()), np.zeros((B, 7))
  )  # zero init
  w = jax.random.normal(jax.random.PRNGKey(1), (D, 7))
  b = jnp.arange(7.0)
  params = {'projection_decoder/~/logits': {'w': w, 'b': b}}
  np.testing.assert_allclose(
    f.apply(params, None, _z()), _z().mean(1) @ w + b, rtol=1e-5, atol=1e-5
  )


def test_flow_decoder_uses_inputs_as_queries_and_rescales():
  inputs = jax.random.normal(jax.random.PRNGKey(3), (B, 15, 6))

  def fn(x, z, rescale):
    dec = perceiver.FlowDecoder(
      output_image_shape=(3, 5),
      rescale_factor=rescale,
      output_num_channels=2,
      position_encoding_type='none',
    )
    return dec(dec.decoder_query(x), z, is_training=False)

  f = hk.transform(fn)
  params = f.init(jax.random.PRNGKey(0), inputs, _z(), 1.0)
  a = f.apply(params, None, inputs, _z(), 1.0)
  b = f.apply(params, None, inputs, _z(), 100.0)
  assert a.shape == (B, 3, 5, 2)
  np.testing.assert_allclose(b * 100.0, a, rtol=1e-5)
  with pytest.raises(ValueError, match='subsampled_points'):
    hk.transform(
      lambda x: perceiver.FlowDecoder(
        (3, 5), position_encoding_type='none'
      ).decoder_query(x, subsampled_points=jnp.arange(3))
    ).init(None, inputs)

  def bad_shape(x, z):
    dec = perceiver.FlowDecoder(output_image_shape=(4, 4), position_encoding_type='none')
    return dec(dec.decoder_query(x), z, is_training=False)

  with pytest.raises(ValueError, match='output_image_shape=\\(4, 4\\)'):
    hk.transform(bad_shape).init(jax.random.PRNGKey(0), inputs, _z())


def test_video_decoder_reshapes_and_validates():
  with pytest.raises(ValueError, match='rank 4'):
    hk.transform(
      lambda: perceiver.BasicVideoAutoencodingDecoder(
        [B, 3, 5], 'trainable', output_num_channels=2
      )
    ).init(None)

  def fn(z):
    dec = perceiver.BasicVideoAutoencodingDecoder(
      [B, 3, 5, 7],
      position_encoding_type='fourier',
      output_num_channels=2,
      fourier_position_encoding_kwargs=dict(num_bands=2),
    )
    return dec(dec.decoder_query(z), z, is_training=False)

  f = hk.transform(fn)
  assert f.apply(f.init(jax.random.PRNGKey(0), _z()), None, _z()).shape == (B, 3, 5, 7, 2)


def test_decoder_errors():
  with pytest.raises(ValueError, match="position_encoding_type 'sine'"):
    hk.transform(lambda: perceiver.BasicDecoder(4, position_encoding_type='sine')).init(
      None
    )

  def none_query(z):
    return perceiver.BasicDecoder(4, position_encoding_type='none').decoder_query(z)

  with pytest.raises(ValueError, match='builds no queries'):
    hk.transform(none_query).init(None, _z())

  def concat_missing(z):
    return perceiver.BasicDecoder(
      4, output_index_dims=(3,), concat_preprocessed_input=True, **TRAINABLE
    ).decoder_query(z)

  with pytest.raises(ValueError, match='inputs_without_pos is required'):
    hk.transform(concat_missing).init(jax.random.PRNGKey(0), _z())


def test_multimodal_decoder_pads_and_orders_queries():
  modality_sizes = {'b_audio': 2, 'a_image': 3}
  inputs = jax.random.normal(jax.random.PRNGKey(5), (B, 5, 4))

  def fn(inputs, z):
    dec = perceiver.MultimodalDecoder(
      modalities={
        'b_audio': perceiver.BasicDecoder(
          output_num_channels=3, output_index_dims=(2,), **TRAINABLE
        ),
        'a_image': perceiver.BasicDecoder(
          output_num_channels=3,
          output_index_dims=(3,),
          position_encoding_type='trainable',
          trainable_position_encoding_kwargs=dict(num_channels=9),
        ),
      },
      num_outputs=5,
      output_num_channels=7,
      min_padding_size=2,
    )
    query = dec.decoder_query(inputs, modality_sizes)
    return query, dec(query, z, is_training=False)

  f = hk.transform(fn)
  params = f.init(jax.random.PRNGKey(0), inputs, _z())
  assert params['multimodal_decoder/~decoder_query/a_image_padding'][
    'pos_embs'
  ].shape == (1, 2)
  assert params['multimodal_decoder/~decoder_query/b_audio_padding'][
    'pos_embs'
  ].shape == (1, 5)
  query, out = f.apply(params, None, inputs, _z())
  assert query.shape == (B, 5, 11) and out.shape == (B, 5, 7)
  # The sorted order puts a_image's 3 queries first; its padding fills channels 9..10.
  pad = params['multimodal_decoder/~decoder_query/a_image_padding']['pos_embs'][0]
  np.testing.assert_allclose(query[:, :3, 9:], np.broadcast_to(pad, (B, 3, 2)))


def test_flow_decoder_as_in_the_official_colab_needs_no_output_index_dims():
  """The release's flow model passes Fourier kwargs but no output_index_dims."""
  inputs = jax.random.normal(jax.random.PRNGKey(4), (B, 15, 6))

  def fn(x, z):
    dec = perceiver.FlowDecoder(
      (3, 5),
      rescale_factor=100.0,
      use_query_residual=False,
      output_num_channels=2,
      output_w_init=jnp.zeros,
      position_encoding_type='fourier',
      fourier_position_encoding_kwargs=dict(
        concat_pos=True, max_resolution=(3, 5), num_bands=4, sine_only=False
      ),
    )
    return dec(dec.decoder_query(x), z, is_training=False)

  f = hk.transform(fn)
  params = f.init(jax.random.PRNGKey(0), inputs, _z())
  assert f.apply(params, None, inputs, _z()).shape == (B, 3, 5, 2)

  def query_without_dims(x):
    return perceiver.BasicDecoder(
      2,
      position_encoding_type='fourier',
      fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(3, 5)),
    ).decoder_query(x)

  with pytest.raises(ValueError, match='needs output_index_dims'):
    hk.transform(query_without_dims).init(None, inputs)
