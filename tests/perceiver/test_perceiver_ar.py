"""Perceiver AR beyond the release: causality, scale options and bad inputs."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver_ar

KWARGS = dict(
  num_classes=11,
  input_idx_size=[-1],
  max_context_length=13,
  position_encoding_type='rotary',
  input_embed_dim=12,
  num_z_channels=12,
  num_transformers_per_block=3,
  z_index_dim=5,
  num_cross_attend_heads=2,
  num_transformer_heads=3,
  fraction_to_rotate=0.5,
  max_wavelength=16,
  use_positions_from_data=True,
  final_layer_init_zeros=False,
)


def _inputs(lengths=(13, 9), seed=0):
  rs = np.random.RandomState(seed)
  tokens = np.zeros((len(lengths), KWARGS['max_context_length']), np.int32)
  for row, n in enumerate(lengths):
    tokens[row, :n] = rs.randint(3, KWARGS['num_classes'], size=n)
  idxs = np.where(tokens > 0, np.arange(1, tokens.shape[1] + 1)[None], 0)[..., None]
  return jnp.asarray(tokens), jnp.asarray(idxs.astype(np.int32))


def _model(**overrides):
  kwargs = dict(KWARGS, **overrides)

  def forward(tokens, idxs, is_training=False):
    return perceiver_ar.PerceiverAR(**kwargs)(tokens, idxs, is_training=is_training)

  return hk.transform(forward)


def _params(model, tokens, idxs):
  return jax.jit(model.init, static_argnums=3)(jax.random.PRNGKey(1), tokens, idxs, True)


@pytest.mark.parametrize('position_encoding_type', ['rotary', 'absolute'])
def test_logits_do_not_depend_on_later_tokens(position_encoding_type):
  """Latent i predicts token i + 1 from tokens up to i: changing the tokens after a
  latent's position changes none of its logits, and changes the later ones."""
  model = _model(position_encoding_type=position_encoding_type, input_idx_size=[14])
  tokens, idxs = _inputs(lengths=(13,))
  params = _params(model, tokens, idxs)
  apply = jax.jit(model.apply)
  base = apply(params, None, tokens, idxs)
  changed = tokens.at[0, 10:].set(jnp.array([3, 4, 5]))
  out = apply(params, None, changed, idxs)
  np.testing.assert_array_equal(base.latent_last_steps, [[8, 9, 10, 11, 12]])
  np.testing.assert_allclose(
    out.input_events_logits[0, :2], base.input_events_logits[0, :2]
  )
  assert not np.allclose(out.input_events_logits[0, 2:], base.input_events_logits[0, 2:])


@pytest.mark.slow
def test_scanned_layers_rematerialisation_and_chunking_equal_the_default():
  tokens, idxs = _inputs()
  default = _model()
  params = _params(default, tokens, idxs)
  variants = {
    'scan_layers': _model(scan_layers=True),
    'remat': _model(remat=True, remat_policy='dots'),
    # Blocks that divide neither the 5 latents nor the 13 inputs.
    'chunked': _model(
      chunked_cross_attention=True, chunked_cross_query_size=2, chunked_cross_key_size=4
    ),
    'head_groups': _model(cross_attention_head_group_size=1),
  }

  def loss(model, params):
    logits = model.apply(params, None, tokens, idxs).input_events_logits
    return jnp.mean(jnp.square(logits)), logits

  grad = lambda model: jax.jit(jax.grad(lambda p: loss(model, p), has_aux=True))
  want_grads, want = grad(default)(params)
  for name, model in variants.items():
    grads, logits = grad(model)(params)
    np.testing.assert_allclose(logits, want, rtol=2e-5, atol=2e-5, err_msg=name)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
  jaxpr = str(jax.make_jaxpr(lambda p: loss(variants['scan_layers'], p))(params))
  assert 'scan' in jaxpr
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss(variants['remat'], p)[0]))(params))
  assert 'remat' in jaxpr or 'checkpoint' in jaxpr


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
  tokens, idxs = _inputs()
  model, bf16 = _model(), _model(compute_dtype='bfloat16')
  params = _params(bf16, tokens, idxs)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype('float32')}
  want = jax.jit(model.apply)(params, None, tokens, idxs).input_events_logits
  got = jax.jit(bf16.apply)(params, None, tokens, idxs).input_events_logits
  assert got.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(got, want, atol=0.05 * scale)
  assert not np.array_equal(got, want)
  jaxpr = jax.make_jaxpr(lambda p: bf16.apply(p, None, tokens, idxs))(params)
  assert 'bf16' in str(jaxpr)


def test_training_needs_no_rng_without_dropout_and_draws_latent_dropout():
  tokens, idxs = _inputs()
  model = _model(latent_dropout_prob=0.5)
  params = _params(model, tokens, idxs)
  apply = jax.jit(model.apply, static_argnums=4)
  one = apply(params, jax.random.PRNGKey(0), tokens, idxs, True).processor_mask
  two = apply(params, jax.random.PRNGKey(5), tokens, idxs, True).processor_mask
  assert not np.array_equal(one, two)
  # Every latent still sees itself.
  np.testing.assert_array_equal(np.diagonal(one[:, 0], axis1=1, axis2=2), 1.0)
  with pytest.raises(ValueError, match='latent_dropout_prob=0.5 needs an RNG key'):
    model.apply(params, None, tokens, idxs, True)
  out = jax.jit(_model().apply, static_argnums=4)(params, None, tokens, idxs, True)
  assert np.isfinite(out.input_events_logits).all()


@pytest.mark.parametrize(
  'overrides, message',
  [
    (dict(max_wavelength=8), r'max_wavelength \(8\) must not be smaller'),
    (dict(num_transformer_heads=5), r'num_z_channels \(12\) must be divisible'),
    (
      dict(position_encoding_type='relative'),
      "Unknown position_encoding_type 'relative'",
    ),
    (dict(mask_style='strided'), "Unknown mask_style 'strided'"),
    (dict(initial_query_embed_style='conv'), "Unknown initial_query_embed_style 'conv'"),
    (dict(additional_cross_attend_after_layers=[3]), r'in \[0, 3\), got \[3\]'),
    (
      dict(
        position_encoding_type='absolute',
        position_encoding='wavelet',
        input_idx_size=[14],
      ),
      "Unknown position_encoding 'wavelet'",
    ),
    (dict(fraction_to_rotate=0.1), 'rotates no channel pair'),
    (dict(train_input_positions=13), r'train_input_positions \(13\) must be smaller'),
  ],
)
def test_bad_configuration_is_named(overrides, message):
  tokens, idxs = _inputs()
  with pytest.raises(ValueError, match=message):
    _params(_model(**overrides), tokens, idxs)


def test_bad_inputs_are_named():
  tokens, idxs = _inputs()
  model = _model()
  params = _params(model, tokens, idxs)
  with pytest.raises(
    ValueError, match=r'expects inputs \[B, M\], got shape \(2, 13, 1\)'
  ):
    model.apply(params, None, tokens[..., None], idxs)
  with pytest.raises(ValueError, match='needs input_idxs of shape'):
    model.apply(params, None, tokens, None)
  with pytest.raises(ValueError, match=r'fewer than z_index_dim \(5\)'):
    model.apply(params, None, tokens[:, :3], idxs[:, :3])

  def with_memory(tokens):
    model = perceiver_ar.PerceiverAR(**dict(KWARGS, use_positions_from_data=False))
    return model(tokens, None, False, memory_type='kv', memory=[None] * 4, z_index_dim=1)

  with pytest.raises(ValueError, match='A memory needs use_positions_from_data=True'):
    hk.transform(with_memory).init(jax.random.PRNGKey(0), tokens)


def test_recorded_cross_attention_weights_are_causal_and_sum_to_one():
  tokens, idxs = _inputs(lengths=(13, 9))
  model = _model(cross_attention_head_group_size=1)
  params = _params(model, tokens, idxs)

  def attention(params):
    with perceiver_ar.record_attention_weights() as records:
      model.apply(params, None, tokens, idxs)
    return records

  records = jax.jit(lambda p: [w for _, w in attention(p)])(params)
  names = [name for name, _ in attention(params)]
  assert names == ['perceiver_ar/~/cross_attention/attention']
  weights = np.asarray(records[0])  # [B, H, N, M]
  assert weights.shape == (2, 2, 5, 13)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  # Row 1 has 9 tokens: latent i sits at position 4 + i and sees nothing after it.
  for i in range(5):
    assert not weights[1, :, i, 4 + i + 1 :].any()
    assert weights[1, :, i, : 4 + i + 1].min() > 0
