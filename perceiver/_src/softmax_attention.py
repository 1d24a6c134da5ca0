"""Softmax attention on heads-first arrays, with a hand-written backward pass.

`softmax_attention` computes `softmax(scale * q k^T, masked) v` per head, the product
at the heart of `dot_product_attention.attend` and `factorized_attend`. Its VJP is
written out (`jax.custom_vjp`) instead of derived by JAX:

  dv = p^T g,   dp = g v^T,   ds = p * (dp - rowsum(g * o)),   dq = scale * ds k,
  dk = scale * ds^T q

with `p` the softmax weights and `o = p v` the output. The row sums of `p * dp` equal
those of `g * o` (`sum_s p_s sum_d g_d v_sd = sum_d g_d o_d`), which reads `[.., T, Dv]`
instead of `[.., T, S]`; the scale is applied to the queries and their gradient rather
than to the logits and theirs, so no pass over the `[B, H, T, S]` logits or weights is
spent on it. The derived VJP of the same function makes two passes over the weights
for the softmax gradient, one for the scale and, where a mask is given, one for the
mask's select; XLA keeps some of those as separate kernels. Values are those of the
derived VJP up to float rounding.

Keys and values may be shared by all heads (one head axis of size 1), as when
`factorized_attend` attends to the raw inputs: the products then contract across heads
in one larger matrix product per batch element.

Shape glossary:
  B: batch size.
  H: number of query heads; Hk: 1 or H, heads of the keys (or values).
  T: number of queries.
  S: number of keys/values.
  D, Dv: channels of queries/keys and of values.
"""

import functools
import math

import jax
import jax.numpy as jnp


def _large_logit(dtype):
  """The magnitude given to masked logits: -1e30, or -1e4 for float16 logits."""
  return 1e4 if dtype == jnp.float16 else 1e30


def softmax_dtype(dtype):
  """Logits of reduced-precision (bfloat16) attention are normalised in float32."""
  return jnp.float32 if dtype == jnp.bfloat16 else dtype


def scales_queries_exactly(scale, dtype):
  """Whether multiplying the queries by `scale` instead of the logits loses nothing.

  A power of two only moves the exponent (bit-identical logits); any scale is applied
  to float32 or float64 queries (one rounding of each query element, about 6e-8
  relative in float32); in bfloat16 a scale that is not a power of two would round
  each query to 8 bits of mantissa, so it is applied to the float32 logits instead.
  """
  return math.frexp(scale)[0] == 0.5 or jnp.dtype(dtype).itemsize >= 4


def _check(q, k, v, mask):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(
      'softmax_attention expects q [B, H, T, D], k [B, Hk, S, D] and v [B, Hk, S, Dv]; '
      f'got shapes q={tuple(q.shape)}, k={tuple(k.shape)}, v={tuple(v.shape)}.'
    )
  batch, heads, q_len, depth = q.shape
  for name, x, channels in (('k', k, depth), ('v', v, v.shape[-1])):
    if x.shape[0] != batch or x.shape[1] not in (1, heads) or x.shape[3] != channels:
      raise ValueError(
        f'{name} shape {tuple(x.shape)} does not fit q shape {tuple(q.shape)} '
        '(batch, heads 1 or H, channels).'
      )
  if k.shape[2] != v.shape[2]:
    raise ValueError(f'k {tuple(k.shape)} and v {tuple(v.shape)} differ in S.')
  if mask is not None and (
    mask.ndim != 3
    or mask.shape[0] != batch
    or mask.shape[1] not in (1, q_len)
    or mask.shape[2] not in (1, k.shape[2])
  ):
    raise ValueError(
      f'mask must have shape {(batch, q_len, k.shape[2])} [B, T, S] (T or S may be '
      f'1), got {tuple(mask.shape)}.'
    )


def softmax_attention(q, k, v, mask=None, *, scale):
  """`softmax(scale * q.k, masked) . v` per head: `[B, H, T, Dv]` in `v`'s dtype.

  Masked logits are set to -1e30 (-1e4 in float16) before the softmax, so a fully
  masked row gets uniform weights (callers zero such rows afterwards). bfloat16 logits
  are normalised in float32. The backward pass is the hand-written one described in
  the module docstring.

  Args:
    q: `[B, H, T, D]` queries.
    k: `[B, Hk, S, D]` keys, Hk = H or 1 (shared by all heads).
    v: `[B, Hk, S, Dv]` values, Hk = H or 1.
    mask: optional boolean `[B, T or 1, S or 1]`, True where attention is allowed,
      shared by all heads.
    scale: the logits' multiplier, e.g. `1 / sqrt(D)`.

  Returns:
    `[B, H, T, Dv]` attended values.
  """
  _check(q, k, v, mask)
  if mask is not None:
    mask = mask.astype(bool)
  # Keys and values shared by the heads lose their head axis, and so do the queries
  # of a single head: XLA copies products whose results keep a size-1 axis.
  k = k[:, 0] if k.shape[1] == 1 else k
  v = v[:, 0] if v.shape[1] == 1 else v
  if q.shape[1] == 1:
    return _attention(float(scale), q[:, 0], k, v, mask)[:, None]
  return _attention(float(scale), q, k, v, mask)


def _indices(x, positions):
  """Einsum indices of `x`: batch, head (if `x` has a head axis), `positions`, channels."""
  return 'bh' + positions + 'd' if x.ndim == 4 else 'b' + positions + 'd'


def _forward(scale, q, k, v, mask):
  """`(output, weights, scaled queries)`; q `[B, (H,) T, D]`, k and v `[B, (H,) S, D]`."""
  on_queries = scales_queries_exactly(scale, q.dtype)
  if on_queries:
    q = q * jnp.asarray(scale, q.dtype)
  q_eq, k_eq, v_eq = _indices(q, 't'), _indices(k, 's'), _indices(v, 's')
  w_eq = q_eq[:-1] + 's'  # The weights: [B, (H,) T, S].
  logits = jnp.einsum(f'{q_eq},{k_eq}->{w_eq}', q, k)
  logits = logits.astype(softmax_dtype(logits.dtype))
  if not on_queries:
    logits = logits * scale
  if mask is not None:
    large = jnp.asarray(_large_logit(logits.dtype), logits.dtype)
    logits = jnp.where(mask[:, None] if q.ndim == 4 else mask, logits, -large)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum(f'{w_eq},{v_eq}->{q_eq}', weights, v)
  return out, weights, q


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(scale, q, k, v, mask):
  return _forward(scale, q, k, v, mask)[0]


def _attention_fwd(scale, q, k, v, mask):
  out, weights, scaled_q = _forward(scale, q, k, v, mask)
  return out, (scaled_q, k, v, mask, weights, out)


def _attention_bwd(scale, residuals, g):
  q, k, v, mask, weights, out = residuals
  on_queries = scales_queries_exactly(scale, q.dtype)
  q_eq, k_eq, v_eq = _indices(q, 't'), _indices(k, 's'), _indices(v, 's')
  w_eq = q_eq[:-1] + 's'
  g = g.astype(v.dtype)
  stat_dtype = softmax_dtype(weights.dtype)

  dv = jnp.einsum(f'{w_eq},{q_eq}->{v_eq}', weights, g)
  dp = jnp.einsum(f'{q_eq},{v_eq}->{w_eq}', g, v).astype(stat_dtype)
  row = jnp.sum(g.astype(stat_dtype) * out.astype(stat_dtype), axis=-1, keepdims=True)
  ds = weights.astype(stat_dtype) * (dp - row)
  if not on_queries:
    ds = ds * scale
  ds = ds.astype(q.dtype)
  dq = jnp.einsum(f'{w_eq},{k_eq}->{q_eq}', ds, k)
  dk = jnp.einsum(f'{w_eq},{q_eq}->{k_eq}', ds, q)
  if on_queries:
    dq = dq * jnp.asarray(scale, dq.dtype)
  return dq, dk.astype(k.dtype), dv.astype(v.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)
