"""Folding the query and output projections into the keys and values: the same values
and gradients as projecting, the same parameters, and the cost rule that picks it."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver
from perceiver._src import attention
from perceiver._src import projection_folding as pf

B, T, S, H, D, DV, CQ, COUT = 2, 11, 3, 2, 5, 4, 3, 7


def test_cost_rules_hand_computed():
  # The optical-flow decoder: 182,528 queries of 322 channels, 2,048 latents, one head
  # of 512. Direct: 182528*322*512 + 182528*2048*512 = 221.5G multiply-adds; folded:
  # 2048*512*322 + 182528*2048*323 = 121.1G.
  flow = dict(num_queries=182_528, num_keys=2048, num_heads=1, head_channels=512)
  assert pf.query_folding_saves_work(query_channels=322, **flow)
  assert pf.output_folding_saves_work(output_channels=322, **flow)
  # The byte MLM decoder: 2,048 queries of 768 channels, 256 latents, 8 heads of 32:
  # folding would repeat the 768 query channels in every head.
  mlm = dict(num_queries=2048, num_keys=256, num_heads=8)
  assert not pf.query_folding_saves_work(query_channels=768, head_channels=32, **mlm)
  assert not pf.output_folding_saves_work(output_channels=768, head_channels=96, **mlm)
  # A latent array attending to many inputs (an encoder cross-attend): never.
  enc = dict(num_queries=256, num_keys=4096, num_heads=1, head_channels=512)
  assert not pf.query_folding_saves_work(query_channels=512, **enc)
  assert not pf.output_folding_saves_work(output_channels=512, **enc)


def _arrays(seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 7)
  x_q = jax.random.normal(ks[0], (B, T, CQ))
  k = jax.random.normal(ks[1], (B, S, H, D))
  v = jax.random.normal(ks[2], (B, S, H, DV))
  w_q = jax.random.normal(ks[3], (CQ, H * D))
  b_q = jax.random.normal(ks[4], (H * D,))
  w_o = jax.random.normal(ks[5], (H * DV, COUT))
  b_o = jax.random.normal(ks[6], (COUT,))
  return x_q, k, v, w_q, b_q, w_o, b_o


def _mask():
  mask = np.random.RandomState(0).rand(B, T, S) > 0.3
  mask[0, 4] = False  # A query that sees no key.
  return jnp.asarray(mask)


@pytest.mark.parametrize('with_bias', [True, False])
@pytest.mark.parametrize('masked', [False, True])
def test_folded_attention_equals_projected(with_bias, masked):
  x_q, k, v, w_q, b_q, w_o, b_o = _arrays()
  if not with_bias:
    b_q = b_o = None
  mask = _mask() if masked else None
  scale = 1 / np.sqrt(D)

  def projected(x_q, k, v, w_q, w_o):
    q = x_q @ w_q + (0 if b_q is None else b_q)
    out = perceiver.attend(q.reshape(B, T, H, D), k, v, attention_mask=mask)
    return out @ w_o + (0 if b_o is None else b_o)

  def folded(x_q, k, v, w_q, w_o):
    q2, k2 = pf.fold_query_projection(x_q, k, w_q, b_q)
    v2 = pf.fold_output_projection(v, w_o)
    out = perceiver.attend(q2, k2, v2, attention_mask=mask, scale=scale)
    return pf.sum_heads(out, H, b_o)

  args = (x_q, k, v, w_q, w_o)
  np.testing.assert_allclose(folded(*args), projected(*args), rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.PRNGKey(9), (B, T, COUT))
  grads = [
    jax.grad(lambda *a, f=f: jnp.sum(f(*a) * g), tuple(range(5)))(*args)
    for f in (folded, projected)
  ]
  for name, a, b in zip(['x_q', 'k', 'v', 'w_q', 'w_o'], *grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


def _decoder_like(x_q, z, query_chunk_size=None):
  return perceiver.Attention(
    num_heads=1,
    qk_channels=8,
    v_channels=8,
    output_channels=3,
    query_chunk_size=query_chunk_size,
  )(x_q, z)


def test_attention_module_folds_for_many_queries_with_the_same_parameters():
  # 13 queries of 3 channels against 2 latents of 5 channels into one head of 8:
  # both folds pay (checked), and the module must still equal the projections.
  n_q, n_kv, c_q, c_kv = 13, 2, 3, 5
  sizes = dict(num_queries=n_q, num_keys=n_kv, num_heads=1, head_channels=8)
  assert pf.query_folding_saves_work(query_channels=c_q, **sizes)
  assert pf.output_folding_saves_work(output_channels=3, **sizes)
  x_q = jax.random.normal(jax.random.PRNGKey(1), (B, n_q, c_q))
  z = jax.random.normal(jax.random.PRNGKey(2), (B, n_kv, c_kv))
  module = hk.transform(_decoder_like)
  params = module.init(jax.random.PRNGKey(0), x_q, z)
  # The same parameters, values included, as a call that takes the unfolded path
  # (a single query folds nothing).
  unfolded_params = module.init(jax.random.PRNGKey(0), x_q[:, :1], z)
  jax.tree.map(np.testing.assert_array_equal, params, unfolded_params)
  p = {k.split('/')[-1]: v for k, v in params.items()}
  q = x_q @ p['linear']['w'] + p['linear']['b']
  k = z @ p['linear_1']['w'] + p['linear_1']['b']
  v = z @ p['linear_2']['w'] + p['linear_2']['b']
  logits = np.einsum('btd,bsd->bts', q, k) / np.sqrt(8)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  ref = np.einsum('bts,bsd->btd', w, v) @ p['linear_3']['w'] + p['linear_3']['b']
  out = module.apply(params, None, x_q, z)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  chunked = hk.transform(lambda a, b: _decoder_like(a, b, query_chunk_size=4))
  np.testing.assert_allclose(
    chunked.apply(params, None, x_q, z), ref, rtol=1e-5, atol=1e-5
  )


def test_recorded_weights_are_the_softmax_of_the_projected_queries():
  x_q = jax.random.normal(jax.random.PRNGKey(3), (B, 13, 3))
  z = jax.random.normal(jax.random.PRNGKey(4), (B, 2, 5))
  module = hk.transform(_decoder_like)
  params = module.init(jax.random.PRNGKey(0), x_q, z)

  def recorded(x_q, z):
    with attention.record_attention_weights(lambda name: True) as records:
      out = _decoder_like(x_q, z)
    return out, records[0][1]

  out, weights = hk.transform(recorded).apply(params, None, x_q, z)
  np.testing.assert_allclose(
    out, module.apply(params, None, x_q, z), rtol=1e-5, atol=1e-6
  )
  p = {k.split('/')[-1]: v for k, v in params.items()}
  q = x_q @ p['linear']['w'] + p['linear']['b']
  k = z @ p['linear_1']['w'] + p['linear_1']['b']
  ref = jax.nn.softmax(jnp.einsum('btd,bsd->bts', q, k) / np.sqrt(8), axis=-1)
  np.testing.assert_allclose(weights[:, 0], ref, rtol=1e-5, atol=1e-6)
