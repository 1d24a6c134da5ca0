"""`softmax_attention`: values against float64 NumPy, its hand-written VJP against
`jax.grad` of the same function written with plain jnp operations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver
from perceiver._src import softmax_attention as sa

B, H, T, S, D, DV = 3, 2, 5, 7, 3, 4


def _jnp_reference(q, k, v, mask, scale):
  """The same attention with JAX's derived VJP (no custom rules)."""
  k = jnp.broadcast_to(k, k.shape[:1] + (q.shape[1],) + k.shape[2:])
  v = jnp.broadcast_to(v, v.shape[:1] + (q.shape[1],) + v.shape[2:])
  logits = jnp.einsum('bhtd,bhsd->bhts', q, k).astype(jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask[:, None], logits, -1e30)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum('bhts,bhsd->bhtd', weights, v)


def _np_reference(q, k, v, mask, scale):
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum('bhtd,bhsd->bhts', q, np.broadcast_to(k, (B, H, S, D))) * scale
  if mask is not None:
    logits = np.where(np.asarray(mask)[:, None], logits, -1e30)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum('bhts,bhsd->bhtd', w, np.broadcast_to(v, (B, H, S, DV)))


def _inputs(seed, k_heads=H, v_heads=H, dtype=jnp.float32):
  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(ks[0], (B, H, T, D), dtype)
  k = jax.random.normal(ks[1], (B, k_heads, S, D), dtype)
  v = jax.random.normal(ks[2], (B, v_heads, S, DV), dtype)
  g = jax.random.normal(ks[3], (B, H, T, DV), dtype)
  return q, k, v, g


def _mask(seed=0):
  mask = np.random.RandomState(seed).rand(B, T, S) > 0.4
  mask[:, :, 0] = True  # Every row sees at least one key.
  return jnp.asarray(mask)


CASES = [
  # (key heads, value heads, scale, masked)
  (H, H, 0.5, False),  # A power of two: applied to the queries exactly.
  (H, H, 1 / math.sqrt(D), True),
  (1, 1, 1 / math.sqrt(D), False),  # Keys and values shared by the heads.
  (1, H, 0.25, True),
  (H, 1, 0.3, True),
]


@pytest.mark.parametrize('k_heads,v_heads,scale,masked', CASES)
def test_values_match_float64_reference(k_heads, v_heads, scale, masked):
  q, k, v, _ = _inputs(0, k_heads, v_heads)
  mask = _mask() if masked else None
  out = sa.softmax_attention(q, k, v, mask, scale=scale)
  assert out.shape == (B, H, T, DV) and out.dtype == jnp.float32
  np.testing.assert_allclose(
    out, _np_reference(q, k, v, mask, scale), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize('k_heads,v_heads,scale,masked', CASES)
def test_vjp_matches_derived_gradients(k_heads, v_heads, scale, masked):
  q, k, v, g = _inputs(1, k_heads, v_heads)
  mask = _mask(1) if masked else None

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * g)

  ours = jax.grad(
    loss(lambda q, k, v: sa.softmax_attention(q, k, v, mask, scale=scale)), (0, 1, 2)
  )(q, k, v)
  ref = jax.grad(loss(lambda q, k, v: _jnp_reference(q, k, v, mask, scale)), (0, 1, 2))(
    q, k, v
  )
  for name, a, b in zip('qkv', ours, ref):
    assert a.shape == b.shape, name
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)


def test_fully_masked_rows_get_zero_output_and_exactly_zero_gradient():
  """Through `attend`, which zeroes the rows that see no key."""
  q, k, v, _ = _inputs(2)
  q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # [B, T or S, H, D]
  mask = np.asarray(_mask(2)).copy()
  mask[1, 3, :] = False
  mask = jnp.asarray(mask)
  g = jax.random.normal(jax.random.PRNGKey(5), (B, T, H * DV))

  def loss(q, k, v):
    return jnp.sum(perceiver.attend(q, k, v, attention_mask=mask) * g)

  out = perceiver.attend(q, k, v, attention_mask=mask)
  np.testing.assert_array_equal(out[1, 3], np.zeros(H * DV))
  dq, dk, dv = jax.grad(loss, (0, 1, 2))(q, k, v)
  np.testing.assert_array_equal(dq[1, 3], np.zeros((H, D)))
  # The dead row sends nothing to the keys and values: moving its query changes none
  # of their gradients.
  q2 = q.at[1, 3].add(10.0)
  _, dk2, dv2 = jax.grad(loss, (0, 1, 2))(q2, k, v)
  np.testing.assert_array_equal(dk, dk2)
  np.testing.assert_array_equal(dv, dv2)


def test_query_chunked_attend_has_the_same_gradients():
  q, k, v, _ = _inputs(3)
  q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
  mask = _mask(3)

  def loss(chunk):
    return lambda q, k, v: jnp.sum(
      perceiver.attend(q, k, v, attention_mask=mask, query_chunk_size=chunk) ** 2
    )

  whole = jax.grad(loss(None), (0, 1, 2))(q, k, v)
  chunked = jax.grad(loss(2), (0, 1, 2))(q, k, v)
  for a, b in zip(whole, chunked):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_normalises_in_float32_and_stays_close():
  q, k, v, g = _inputs(4)
  mask = _mask(4)
  scale = 1 / math.sqrt(D)  # Not a power of two: applied to the float32 logits.
  low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  out = sa.softmax_attention(*low, mask, scale=scale)
  assert out.dtype == jnp.bfloat16
  ref = _np_reference(*low, mask, scale)
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=3e-2, atol=3e-2)
  grads = jax.grad(
    lambda *x: jnp.sum(
      sa.softmax_attention(*x, mask, scale=scale).astype(jnp.float32) * g
    ),
    (0, 1, 2),
  )(*low)
  ref_grads = jax.grad(
    lambda *x: jnp.sum(_jnp_reference(*x, mask, scale) * g), (0, 1, 2)
  )(q, k, v)
  for a, b in zip(grads, ref_grads):
    assert a.dtype == jnp.bfloat16
    scale_b = float(jnp.max(jnp.abs(b)))
    np.testing.assert_allclose(
      np.asarray(a, np.float32) / scale_b, np.asarray(b) / scale_b, atol=4e-2
    )


def test_scale_goes_to_the_queries_only_where_exact():
  assert sa.scales_queries_exactly(0.125, jnp.bfloat16)
  assert sa.scales_queries_exactly(0.3, jnp.float32)
  assert not sa.scales_queries_exactly(0.3, jnp.bfloat16)


def test_bad_shapes_are_named():
  q, k, v, _ = _inputs(5)
  with pytest.raises(ValueError, match='k shape'):
    sa.softmax_attention(q, k[:, :, :, :2], v, scale=1.0)
  with pytest.raises(ValueError, match='differ in S'):
    sa.softmax_attention(q, k, v[:, :, :4], scale=1.0)
  with pytest.raises(ValueError, match='mask must have shape'):
    sa.softmax_attention(q, k, v, jnp.ones((B, T, S + 1), bool), scale=1.0)
