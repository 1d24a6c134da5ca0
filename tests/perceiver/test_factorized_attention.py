"""Attention with key/value projections folded in (`factorized_attend`).

The folded forms regroup the same sums, so values and gradients must match attention
over the projected keys and values, and the Attention module must keep its parameters
while taking the folded path when it is cheaper.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver
from perceiver._src import attention
from perceiver._src import dot_product_attention as dpa

B, T, S, H, DQK, DV, C = 3, 5, 7, 2, 3, 4, 5


def _inputs(seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 6)
  q = jax.random.normal(ks[0], (B, T, H, DQK))
  x = jax.random.normal(ks[1], (B, S, C))
  w_k = jax.random.normal(ks[2], (C, H * DQK))
  b_k = jax.random.normal(ks[3], (H * DQK,))
  w_v = jax.random.normal(ks[4], (C, H * DV))
  b_v = jax.random.normal(ks[5], (H * DV,))
  return q, x, w_k, b_k, w_v, b_v


def _project(x, w, b, head_channels):
  out = x @ w + (0.0 if b is None else b)
  return out.reshape(B, S, H, head_channels)


def _np_reference(q, x, w_k, b_k, w_v, b_v, mask=None):
  """float64 NumPy attention over explicitly projected keys and values."""
  q, x, w_k, w_v = (np.asarray(a, np.float64) for a in (q, x, w_k, w_v))
  k = (x @ w_k + (0 if b_k is None else np.asarray(b_k))).reshape(B, S, H, DQK)
  v = (x @ w_v + (0 if b_v is None else np.asarray(b_v))).reshape(B, S, H, DV)
  logits = np.einsum('bthd,bshd->bhts', q, k) / np.sqrt(DQK)
  if mask is not None:
    logits = np.where(mask[:, None].astype(bool), logits, -1e30)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum('bhts,bshd->bthd', weights, v).reshape(B, T, H * DV)
  if mask is not None:
    out[~mask.astype(bool).any(-1)] = 0.0
  return out


def test_factorization_saves_work_hand_computed():
  # Perceiver IO image cross-attend: 4,096 inputs of 133 channels, one 512-channel head.
  # Direct: 4096*133*512 + 256*4096*512 = 815.8M; folded: 256*512*133 + 256*4096*133
  # = 156.9M.
  assert dpa.factorization_saves_work(
    num_queries=256, num_keys=4096, input_channels=133, num_heads=1, head_channels=512
  )
  # Latent self-attention, 8 heads of 64: direct 100.7M against folded 335.5M.
  assert not dpa.factorization_saves_work(
    num_queries=256, num_keys=256, input_channels=512, num_heads=8, head_channels=64
  )
  # A classification decoder's single query against 256 latents of 512 channels.
  assert dpa.factorization_saves_work(
    num_queries=1, num_keys=256, input_channels=512, num_heads=1, head_channels=512
  )


@pytest.mark.parametrize('fold_keys', [True, False])
@pytest.mark.parametrize('fold_values', [True, False])
@pytest.mark.parametrize('with_bias', [True, False])
@pytest.mark.parametrize('masked', [False, True])
def test_factorized_attend_matches_attention_over_projections(
  fold_keys, fold_values, with_bias, masked
):
  q, x, w_k, b_k, w_v, b_v = _inputs()
  if not with_bias:
    b_k = b_v = None
  mask = None
  if masked:
    mask = np.random.RandomState(0).rand(B, T, S) > 0.4
    mask[1, 2, :] = False  # A fully masked query.
  keys = dpa.Projection(w_k, b_k) if fold_keys else _project(x, w_k, b_k, DQK)
  values = dpa.Projection(w_v, b_v) if fold_values else _project(x, w_v, b_v, DV)
  out = dpa.factorized_attend(
    q, x, keys, values, attention_mask=None if mask is None else jnp.asarray(mask)
  )
  np.testing.assert_allclose(
    out, _np_reference(q, x, w_k, b_k, w_v, b_v, mask), rtol=2e-5, atol=2e-5
  )
  if masked:
    np.testing.assert_array_equal(np.asarray(out)[1, 2], np.zeros(H * DV))


def test_factorized_attend_gradients_match_direct_attention():
  args = _inputs(seed=1)
  cotangent = jax.random.normal(jax.random.PRNGKey(9), (B, T, H * DV))

  def folded(q, x, w_k, b_k, w_v, b_v):
    out = dpa.factorized_attend(q, x, dpa.Projection(w_k, b_k), dpa.Projection(w_v, b_v))
    return jnp.sum(out * cotangent)

  def direct(q, x, w_k, b_k, w_v, b_v):
    out = perceiver.attend(q, _project(x, w_k, b_k, DQK), _project(x, w_v, b_v, DV))
    return jnp.sum(out * cotangent)

  ours = jax.grad(folded, argnums=tuple(range(6)))(*args)
  theirs = jax.grad(direct, argnums=tuple(range(6)))(*args)
  for name, a, b in zip(['q', 'x', 'w_k', 'b_k', 'w_v', 'b_v'], ours, theirs):
    # The key bias shifts every logit of a query equally: its gradient is zero.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)
  np.testing.assert_allclose(ours[3], np.zeros(H * DQK), atol=1e-5)


def test_factorized_attend_with_dropout_uses_the_same_weights():
  q, x, w_k, b_k, w_v, b_v = _inputs(seed=2)

  def folded():
    return dpa.factorized_attend(
      q, x, dpa.Projection(w_k, b_k), dpa.Projection(w_v, b_v), dropout_prob=0.5
    )

  def direct():
    return perceiver.attend(
      q, _project(x, w_k, b_k, DQK), _project(x, w_v, b_v, DV), dropout_prob=0.5
    )

  key = jax.random.PRNGKey(3)
  ours = hk.transform(folded).apply({}, key)
  theirs = hk.transform(direct).apply({}, key)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  # Dropout changed the result (dropped weights no longer sum to one).
  undropped = dpa.factorized_attend(
    q, x, dpa.Projection(w_k, b_k), dpa.Projection(w_v, b_v)
  )
  assert np.abs(np.asarray(ours) - np.asarray(undropped)).max() > 1e-2


def test_factorized_attend_rejects_mismatched_projections():
  q, x, w_k, b_k, w_v, b_v = _inputs()
  with pytest.raises(ValueError, match=r'keys projection must have w \[5, 6\]'):
    dpa.factorized_attend(q, x, dpa.Projection(w_k[:4], b_k), dpa.Projection(w_v, b_v))
  with pytest.raises(ValueError, match=r'values must have shape \(3, 7, 2, 4\)'):
    dpa.factorized_attend(q, x, dpa.Projection(w_k, b_k), jnp.zeros((B, S + 1, H, DV)))
  with pytest.raises(ValueError, match=r'attention_mask must have shape \(3, 5, 7\)'):
    dpa.factorized_attend(
      q,
      x,
      dpa.Projection(w_k, b_k),
      dpa.Projection(w_v, b_v),
      attention_mask=jnp.ones((B, T, S + 1)),
    )


def _dot_output_shapes(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args)
  shapes = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        shapes.append(tuple(eqn.outvars[0].aval.shape))
      for value in eqn.params.values():
        for sub in value if isinstance(value, (list, tuple)) else [value]:
          if hasattr(sub, 'eqns'):
            visit(sub)
          elif hasattr(sub, 'jaxpr') and hasattr(sub.jaxpr, 'eqns'):
            visit(sub.jaxpr)

  visit(jaxpr.jaxpr)
  return shapes


@pytest.mark.parametrize('chunk', [None, 4])
@pytest.mark.parametrize('kv_channels, folded', [(5, True), (48, False)])
def test_attention_module_folds_projections_only_when_cheaper(kv_channels, folded, chunk):
  """Queries [3, 13, 16] (one 16-channel head) attend to 11 inputs of `kv_channels`,
  whole or in blocks of 4 queries and 4 keys."""
  xq = jax.random.normal(jax.random.PRNGKey(4), (3, 13, 16))
  xkv = jax.random.normal(jax.random.PRNGKey(5), (3, 11, kv_channels))
  f = hk.transform(
    lambda a, b: perceiver.Attention(
      num_heads=1, query_chunk_size=chunk, key_chunk_size=chunk
    )(a, b)
  )
  params = f.init(jax.random.PRNGKey(6), xq, xkv)
  assert {k: {n: v.shape for n, v in d.items()} for k, d in params.items()} == {
    'attention/linear': {'w': (16, 16), 'b': (16,)},
    'attention/linear_1': {'w': (kv_channels, 16), 'b': (16,)},
    'attention/linear_2': {'w': (kv_channels, 16), 'b': (16,)},
    'attention/linear_3': {'w': (16, 16), 'b': (16,)},
  }
  out = f.apply(params, None, xq, xkv)
  p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
  lin = lambda x, n: np.asarray(x, np.float64) @ p[n]['w'] + p[n]['b']
  q, k, v = (
    lin(xq, 'attention/linear'),
    lin(xkv, 'attention/linear_1'),
    lin(xkv, 'attention/linear_2'),
  )
  logits = np.einsum('btd,bsd->bts', q, k) / 4.0
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  ref = lin(np.einsum('bts,bsd->btd', weights, v), 'attention/linear_3')
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  # The folded path never projects the 11 inputs to keys or values.
  projected_inputs = (33, 16) in _dot_output_shapes(
    lambda a, b: f.apply(params, None, a, b), xq, xkv
  )
  assert projected_inputs != folded


def test_positionwise_linear_parameters_are_those_a_call_creates():
  x = jnp.ones((2, 3, 5))

  def by_call(x):
    return attention.conv_1d(7, init_scale=2.0)(x)

  def by_parameters(x):
    return attention.conv_1d(7, init_scale=2.0).parameters(x.shape[-1], x.dtype)

  key = jax.random.PRNGKey(8)
  called = hk.transform(by_call).init(key, x)
  created = hk.transform(by_parameters).init(key, x)
  assert jax.tree.structure(called) == jax.tree.structure(created)
  for a, b in zip(jax.tree.leaves(called), jax.tree.leaves(created)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('fold_keys', [True, False])
@pytest.mark.parametrize('fold_values', [True, False])
def test_factorized_attend_in_blocks_with_one_head(fold_keys, fold_values):
  """One head, queries and keys in blocks: the values and gradients of the whole."""
  ks = jax.random.split(jax.random.PRNGKey(11), 6)
  q = jax.random.normal(ks[0], (B, T, 1, DQK))
  x = jax.random.normal(ks[1], (B, S, C))
  w_k, b_k = jax.random.normal(ks[2], (C, DQK)), jax.random.normal(ks[3], (DQK,))
  w_v, b_v = jax.random.normal(ks[4], (C, DV)), jax.random.normal(ks[5], (DV,))
  mask = np.random.RandomState(1).rand(B, T, S) > 0.3
  mask[2, 1, :] = False  # A query that sees no input.
  mask = jnp.asarray(mask)

  def run(q, x, w_k, b_k, w_v, b_v, **chunks):
    keys = dpa.Projection(w_k, b_k) if fold_keys else (x @ w_k + b_k)[:, :, None]
    values = dpa.Projection(w_v, b_v) if fold_values else (x @ w_v + b_v)[:, :, None]
    return dpa.factorized_attend(q, x, keys, values, attention_mask=mask, **chunks)

  args = (q, x, w_k, b_k, w_v, b_v)
  whole = run(*args)
  blocks = run(*args, query_chunk_size=2, key_chunk_size=3)
  np.testing.assert_allclose(blocks, whole, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(blocks)[2, 1], np.zeros(DV))
  g = jax.random.normal(jax.random.PRNGKey(12), whole.shape)
  grads = [
    jax.grad(lambda *a, c=c: jnp.sum(run(*a, **c) * g), tuple(range(6)))(*args)
    for c in ({}, dict(query_chunk_size=2, key_chunk_size=3))
  ]
  for name, a, b in zip(['q', 'x', 'w_k', 'b_k', 'w_v', 'b_v'], *grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


def test_factorized_attend_in_blocks_needs_one_head():
  q, x, w_k, b_k, w_v, b_v = _inputs()
  with pytest.raises(ValueError, match='needs one head; got 2'):
    dpa.factorized_attend(
      q, x, dpa.Projection(w_k, b_k), dpa.Projection(w_v, b_v), key_chunk_size=3
    )
