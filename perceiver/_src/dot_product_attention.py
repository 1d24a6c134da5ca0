"""Scaled dot-product attention on `[B, T, H, D]` queries and `[B, S, H, D]` keys/values.

`attend` is the official release's function (same values), computed with heads moved
ahead of positions (`[B, H, T, D]`), the layout in which XLA runs the batched products
fastest, optionally in query and key blocks (online softmax) for bounded memory.
`factorized_attend` attends to inputs before their key/value projections: for inputs
with fewer channels than a head (e.g. 133 pixel + Fourier channels against 512 key
channels) it gives the same values with a fraction of the work.

Shape glossary:
  B: batch size.
  T: number of query elements.
  S: number of key/value elements.
  H: number of attention heads.
  Dqk, Dv: channels per head of queries/keys and of values.
  C: channels of the key/value inputs (before projection).
"""

import math
from typing import NamedTuple, Optional, Union

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver._src import softmax_attention


def _large_logit(dtype):
  """The magnitude given to masked logits: -1e30, or -1e4 for float16 logits."""
  return 1e4 if dtype == jnp.float16 else 1e30


def _softmax_dtype(dtype):
  """Logits of reduced-precision (bfloat16) attention are normalised in float32."""
  return jnp.float32 if dtype == jnp.bfloat16 else dtype


def _to_heads_first(x):
  """`[B, T, H, D]` -> `[B, H, T, D]`."""
  return jnp.swapaxes(x, 1, 2)


def _mask_logits(attention, attention_mask):
  """Sets logits `[B, H, T, S]` where `attention_mask` `[B, T or 1, S or 1]` is 0 to -1e30."""
  if attention_mask is None:
    return attention
  large_k = jnp.array(_large_logit(attention.dtype), dtype=attention.dtype)
  return jnp.where(attention_mask[:, None, :, :], attention, -large_k)


def _exact_on_queries(scale):
  """Whether `scale` is a power of two, so scaling the queries instead of the logits
  gives bit-identical logits (and touches `[B, H, T, D]` instead of `[B, H, T, S]`)."""
  return math.frexp(scale)[0] == 0.5


def _scaled_logits(logits, scale):
  """Logits in the softmax dtype, multiplied by `scale` unless it was applied already."""
  logits = logits.astype(_softmax_dtype(logits.dtype))
  return logits if _exact_on_queries(scale) else logits * scale


def _scaled_queries(q, scale):
  return q * jnp.asarray(scale, q.dtype) if _exact_on_queries(scale) else q


def _masked_logits(q, k, attention_mask, scale):
  """Scaled, masked logits `[B, H, T, S]` of queries `[B, H, T, D]`, keys `[B, H, S, D]`."""
  attention = jnp.einsum('bhtd,bhsd->bhts', _scaled_queries(q, scale), k)
  return _mask_logits(_scaled_logits(attention, scale), attention_mask)


@jax.custom_vjp
def _softmax(logits):
  """`jax.nn.softmax` over the last axis, with the same values and a direct VJP.

  The backward pass is written out, `dlogits = y * (g - sum(y * g))`: the same formula
  as the transpose of `jax.nn.softmax`'s JVP, but XLA compiles this form into fewer
  passes over the `[B, H, T, S]` weights.
  """
  return jax.nn.softmax(logits)


def _softmax_fwd(logits):
  weights = jax.nn.softmax(logits)
  return weights, weights


def _softmax_bwd(weights, g):
  return (weights * (g - jnp.sum(weights * g, axis=-1, keepdims=True)),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


def _dense_attend(q, k, v, dropout_prob, attention_mask, scale):
  """Attention with all `[B, H, T, S]` weights materialised at once: `[B, T, H, Dv]`.

  Heads are moved ahead of positions for both products: XLA's CPU backend runs them
  much faster in this layout than contracting across the `[B, T, H, D]` layout.
  Without dropout the products and the softmax run in `softmax_attention`, whose
  backward pass is written out.
  """
  if dropout_prob == 0:
    mask = None if attention_mask is None else attention_mask != 0
    summed = softmax_attention.softmax_attention(
      _to_heads_first(q), _to_heads_first(k), _to_heads_first(v), mask, scale=scale
    )
    return _to_heads_first(summed)  # [B, T, H, Dv]
  attention = _masked_logits(
    _to_heads_first(q), _to_heads_first(k), attention_mask, scale
  )
  normalized = _softmax(attention).astype(v.dtype)
  normalized = hk.dropout(hk.next_rng_key(), dropout_prob, normalized)
  summed = jnp.einsum('bhts,bhsd->bhtd', normalized, _to_heads_first(v))
  return _to_heads_first(summed)  # [B, T, H, Dv]


def _num_chunks(size, chunk_size):
  return -(-size // chunk_size)


def _pad_axis(x, axis, new_size):
  """Zero-pads axis `axis` of `x` at the end to `new_size`."""
  if x.shape[axis] == new_size:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, new_size - x.shape[axis])
  return jnp.pad(x, widths)


def _to_chunks(x, num_chunks, chunk_size):
  """`[B, L, ...]` -> `[num_chunks, B, chunk_size, ...]`, zero-padding L to fill the
  last chunk."""
  x = _pad_axis(x, 1, num_chunks * chunk_size)
  x = jnp.reshape(x, (x.shape[0], num_chunks, chunk_size) + x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _key_chunked_attend(q, k, v, attention_mask, scale, key_chunk_size):
  """Online-softmax attention over key blocks of `key_chunk_size`: `[B, T, H, Dv]`.

  Only `[B, H, T, key_chunk_size]` logits exist at a time. Each block updates a running
  row maximum `m`, the running sum `l` of `exp(logit - m)` and the running weighted sum
  of values `acc`, rescaling the earlier terms by `exp(m_old - m_new)`; the result is
  `acc / l`, the softmax-weighted sum up to float rounding. Blocks are rematerialised,
  so the backward pass also holds one block of logits at a time.
  """
  batch, q_len, heads, _ = q.shape
  kv_len, v_dim = k.shape[1], v.shape[-1]
  num_chunks = _num_chunks(kv_len, key_chunk_size)
  padded = num_chunks * key_chunk_size

  k_chunks = _to_chunks(k, num_chunks, key_chunk_size)  # [num_chunks, B, chunk, H, D]
  v_chunks = _to_chunks(v, num_chunks, key_chunk_size)
  shared_mask = None  # A mask that every key block uses whole.
  mask_chunks = None  # Or per-block masks [num_chunks, B, T or 1, chunk].
  if attention_mask is not None and attention_mask.shape[2] == 1:
    shared_mask = attention_mask != 0
    if padded != kv_len:
      valid = jnp.arange(padded) < kv_len
      mask_chunks = jnp.reshape(valid, (num_chunks, 1, 1, key_chunk_size))
  elif attention_mask is not None:
    mask = _pad_axis(attention_mask != 0, 2, padded)  # Padded keys are masked.
    mask = jnp.reshape(mask, mask.shape[:2] + (num_chunks, key_chunk_size))
    mask_chunks = jnp.moveaxis(mask, 2, 0)
  elif padded != kv_len:
    valid = jnp.arange(padded) < kv_len
    mask_chunks = jnp.reshape(valid, (num_chunks, 1, 1, key_chunk_size))

  q_heads_first = _to_heads_first(q)  # [B, H, T, Dqk]
  acc_dtype = _softmax_dtype(v.dtype)
  stat_dtype = _softmax_dtype(q.dtype)
  large_k = _large_logit(stat_dtype)

  def step(carry, chunk):
    running_max, running_sum, acc = carry
    k_chunk, v_chunk, mask_chunk = chunk
    if shared_mask is not None:
      mask_chunk = shared_mask if mask_chunk is None else mask_chunk & shared_mask
    logits = _masked_logits(
      q_heads_first, _to_heads_first(k_chunk), mask_chunk, scale
    )  # [B, H, T, chunk]
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
    correction = jnp.exp(running_max - new_max)  # [B, H, T]
    weights = jnp.exp(logits - new_max[..., None])
    running_sum = running_sum * correction + jnp.sum(weights, axis=-1)
    update = jnp.einsum('bhtT,bThd->bhtd', weights.astype(v.dtype), v_chunk)
    acc = acc * correction[..., None].astype(acc_dtype) + update.astype(acc_dtype)
    return (new_max, running_sum, acc), None

  init = (
    jnp.full((batch, heads, q_len), -large_k, stat_dtype),
    jnp.zeros((batch, heads, q_len), stat_dtype),
    jnp.zeros((batch, heads, q_len, v_dim), acc_dtype),
  )
  (_, running_sum, acc), _ = jax.lax.scan(
    jax.checkpoint(step, prevent_cse=False), init, (k_chunks, v_chunks, mask_chunks)
  )
  out = acc / running_sum[..., None].astype(acc_dtype)  # [B, H, T, Dv]
  return jnp.swapaxes(out, 1, 2).astype(v.dtype)  # [B, T, H, Dv]


def _query_chunked_attend(attend_fn, q, attention_mask, query_chunk_size):
  """Applies `attend_fn(q_chunk, mask_chunk)` to query blocks in turn: `[B, T, H, Dv]`.

  Blocks are rematerialised, so only one block's attention weights exist at a time in
  the forward and in the backward pass.
  """
  batch, q_len = q.shape[:2]
  num_chunks = _num_chunks(q_len, query_chunk_size)
  padded = num_chunks * query_chunk_size
  q_chunks = _to_chunks(q, num_chunks, query_chunk_size)  # [num_chunks, B, chunk, H, D]
  if attention_mask is not None and attention_mask.shape[1] > 1:
    chunk_fn = lambda xs: attend_fn(*xs)
    xs = (q_chunks, _to_chunks(attention_mask, num_chunks, query_chunk_size))
  else:  # No mask, or one shared by every query.
    chunk_fn = lambda q_chunk: attend_fn(q_chunk, attention_mask)
    xs = q_chunks
  out = jax.lax.map(
    jax.checkpoint(chunk_fn, prevent_cse=False), xs
  )  # [num_chunks, B, chunk, H, Dv]
  out = jnp.moveaxis(out, 0, 1)
  out = jnp.reshape(out, (batch, padded) + out.shape[3:])
  return out[:, :q_len]


def check_chunk_size(value, name):
  """`value` as a chunk size: None (for None or 0) or a positive int; else ValueError."""
  if value is None or value == 0:
    return None
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(
      f'{name} must be a positive int (or None / 0 for no chunking), got {value!r}.'
    )
  return value


def _check_mask(attention_mask, batch, q_len, kv_len):
  if attention_mask is None:
    return
  if (
    attention_mask.ndim != 3
    or attention_mask.shape[0] != batch
    or attention_mask.shape[1] not in (1, q_len)
    or attention_mask.shape[2] not in (1, kv_len)
  ):
    raise ValueError(
      f'attention_mask must have shape {(batch, q_len, kv_len)} [B, T, S] '
      f'(T or S may be 1), got {tuple(attention_mask.shape)}.'
    )


def attend(
  q,
  k,
  v,
  dropout_prob=0.0,
  attention_mask=None,
  *,
  query_chunk_size=None,
  key_chunk_size=None,
  scale=None,
):
  """Multi-head scaled dot-product attention.

  Logits are `q.k / sqrt(Dqk)`; masked logits are set to -1e30 (-1e4 in float16)
  before the softmax, and query rows whose mask is entirely zero return exact zeros.
  bfloat16 logits are normalised in float32.

  With `query_chunk_size` and/or `key_chunk_size`, the attention weights are computed
  block by block (queries in blocks, keys with an online softmax), so memory holds at
  most `[B, H, query_chunk_size, key_chunk_size]` of them at a time, in training too
  (the blocks are rematerialised in the backward pass). The result equals the
  unchunked one up to float rounding. Chunking does not support attention dropout.

  Args:
    q: `[B, T, H, Dqk]` queries.
    k: `[B, S, H, Dqk]` keys.
    v: `[B, S, H, Dv]` values.
    dropout_prob: dropout rate on the attention weights (needs an RNG key if > 0).
    attention_mask: optional mask, nonzero where attention is allowed: `[B, T, S]`,
      or `[B, 1, S]` / `[B, T, 1]` to share it across queries / keys.
    query_chunk_size: if set (> 0), process queries in blocks of this many.
    key_chunk_size: if set (> 0), process keys in blocks of this many.
    scale: the logits' multiplier; None: `1 / sqrt(Dqk)`.

  Returns:
    `[B, T, H * Dv]` attended values.
  """
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(
      'attend expects q, k, v of rank 4 [B, T, H, D]; got shapes '
      f'q={tuple(q.shape)}, k={tuple(k.shape)}, v={tuple(v.shape)}.'
    )
  batch, q_indices, num_heads, q_head_dim = q.shape
  if k.shape[:1] + k.shape[2:] != (batch, num_heads, q_head_dim):
    raise ValueError(f'k shape {tuple(k.shape)} does not match q shape {tuple(q.shape)}.')
  if v.shape[:3] != k.shape[:3]:
    raise ValueError(f'v shape {tuple(v.shape)} does not match k shape {tuple(k.shape)}.')
  _check_mask(attention_mask, batch, q_indices, k.shape[1])
  query_chunk_size = check_chunk_size(query_chunk_size, 'query_chunk_size')
  key_chunk_size = check_chunk_size(key_chunk_size, 'key_chunk_size')
  if query_chunk_size is not None and query_chunk_size >= q_indices:
    query_chunk_size = None
  if key_chunk_size is not None and key_chunk_size >= k.shape[1]:
    key_chunk_size = None
  if dropout_prob > 0 and (query_chunk_size or key_chunk_size):
    raise ValueError(
      f'Chunked attention (query_chunk_size={query_chunk_size}, key_chunk_size='
      f'{key_chunk_size}) does not support attention dropout (dropout_prob='
      f'{dropout_prob}).'
    )
  if scale is None:
    scale = 1.0 / math.sqrt(q_head_dim)

  if key_chunk_size is not None:
    attend_fn = lambda q, mask: _key_chunked_attend(q, k, v, mask, scale, key_chunk_size)
  else:
    attend_fn = lambda q, mask: _dense_attend(q, k, v, dropout_prob, mask, scale)
  if query_chunk_size is not None:
    summed = _query_chunked_attend(attend_fn, q, attention_mask, query_chunk_size)
  else:
    summed = attend_fn(q, attention_mask)  # [B, T, H, Dv]
  return _merge_heads(summed, attention_mask)


def _merge_heads(summed, attention_mask):
  """`[B, T, H, Dv]` -> `[B, T, H * Dv]`, with exact zeros for fully masked queries."""
  batch, q_len, heads, v_dim = summed.shape
  summed = jnp.reshape(summed, [batch, q_len, heads * v_dim])
  if attention_mask is not None:
    # A fully masked query row would otherwise get a uniform softmax: force zeros.
    wipe_attn = jnp.all(attention_mask == 0, axis=2, keepdims=True)  # [B, T, 1]
    summed = jnp.where(wipe_attn, jnp.zeros_like(summed), summed)
  return summed


class Projection(NamedTuple):
  """A key or value projection `inputs @ w + b` that `factorized_attend` folds away.

  Attributes:
    w: `[C, H * D]` weights.
    b: `[H * D]` bias, or None.
  """

  w: jax.Array
  b: Optional[jax.Array]


def factorization_saves_work(
  *, num_queries, num_keys, input_channels, num_heads, head_channels
):
  """Whether folding a key (or value) projection into the attention takes fewer FLOPs.

  Projecting S inputs of C channels to H heads of D channels and contracting them with
  T queries costs `S C H D + H T S D` multiply-adds; folding the projection into the
  queries (keys) or into the weighted inputs (values) costs `T H D C + H T S C`. It
  pays when the inputs have fewer channels than a head (C < D) or there are few
  queries (e.g. a classification decoder's single query against N latents).
  """
  direct = num_keys * input_channels * num_heads * head_channels + (
    num_heads * num_queries * num_keys * head_channels
  )
  folded = num_queries * num_heads * head_channels * input_channels + (
    num_heads * num_queries * num_keys * input_channels
  )
  return folded < direct


def factorized_attend(
  q,
  inputs_kv,
  keys: Union[jax.Array, Projection],
  values: Union[jax.Array, Projection],
  dropout_prob=0.0,
  attention_mask=None,
  *,
  query_chunk_size=None,
  key_chunk_size=None,
):
  """`attend` to keys and values that may still be projections of `inputs_kv`.

  For a key `Projection`, the logits are computed as `(q w_k^T) . x + q . b_k`: the
  query is mapped into the input space once instead of mapping every input to a key.
  For a value `Projection`, the attention weights pool the inputs first and the
  projection is applied to the pooled `[B, H, T, C]` result: `(P x) w_v + sum(P) b_v`.
  Both are the same sums as `attend` over the projected keys and values, regrouped,
  so the results agree up to float rounding; with
  `factorization_saves_work` they take fewer FLOPs (e.g. the Perceiver IO cross-attend
  over 4,096 pixels of 133 channels into 512-channel keys: about 4x fewer).

  Args:
    q: `[B, T, H, Dqk]` queries.
    inputs_kv: `[B, S, C]` the inputs of the key and value projections.
    keys: `[B, S, H, Dqk]` projected keys, or the key `Projection` of `inputs_kv`.
    values: `[B, S, H, Dv]` projected values, or the value `Projection` of `inputs_kv`.
    dropout_prob: dropout rate on the attention weights (needs an RNG key if > 0).
    attention_mask: as in `attend`.
    query_chunk_size, key_chunk_size: as in `attend` (one head only): the folded
      queries, keys and values are attended to in blocks.

  Returns:
    `[B, T, H * Dv]` attended values.
  """
  if q.ndim != 4 or inputs_kv.ndim != 3:
    raise ValueError(
      'factorized_attend expects q [B, T, H, D] and inputs_kv [B, S, C]; got shapes '
      f'q={tuple(q.shape)}, inputs_kv={tuple(inputs_kv.shape)}.'
    )
  batch, q_len, heads, qk_dim = q.shape
  kv_len, channels = inputs_kv.shape[1:]
  _check_projection(
    keys, 'keys', (batch, kv_len, heads, qk_dim), channels, heads * qk_dim
  )
  v_dim = (
    values.w.shape[-1] if isinstance(values, Projection) else values.shape[-1] * heads
  ) // heads
  _check_projection(
    values, 'values', (batch, kv_len, heads, v_dim), channels, heads * v_dim
  )
  _check_mask(attention_mask, batch, q_len, kv_len)
  scale = 1.0 / math.sqrt(qk_dim)
  if query_chunk_size or key_chunk_size:
    if heads != 1:
      raise ValueError(
        f'factorized_attend in chunks needs one head; got {heads} (q shape '
        f'{tuple(q.shape)}).'
      )
    return _chunked_single_head(
      q,
      inputs_kv,
      keys,
      values,
      dropout_prob,
      attention_mask,
      scale,
      dict(query_chunk_size=query_chunk_size, key_chunk_size=key_chunk_size),
    )
  if dropout_prob == 0:
    return _factorized_softmax_attention(
      q, inputs_kv, keys, values, attention_mask, scale
    )
  q_heads = _scaled_queries(_to_heads_first(q), scale)  # [B, H, T, Dqk]
  if isinstance(keys, Projection):
    w_k = jnp.reshape(keys.w, (channels, heads, qk_dim))
    q_inputs = jnp.einsum('bhtd,chd->bhtc', q_heads, w_k)  # [B, H, T, C]
    attention = jnp.einsum('bhtc,bsc->bhts', q_inputs, inputs_kv)
    if keys.b is not None:
      b_k = jnp.reshape(keys.b, (heads, qk_dim))
      attention += jnp.einsum('bhtd,hd->bht', q_heads, b_k)[..., None]
  else:
    attention = jnp.einsum('bhtd,bhsd->bhts', q_heads, _to_heads_first(keys))
  attention = _mask_logits(_scaled_logits(attention, scale), attention_mask)
  weights = _softmax(attention).astype(inputs_kv.dtype)  # [B, H, T, S]
  if dropout_prob > 0:
    weights = hk.dropout(hk.next_rng_key(), dropout_prob, weights)

  if isinstance(values, Projection):
    w_v = jnp.reshape(values.w, (channels, heads, v_dim))
    pooled = jnp.einsum('bhts,bsc->bhtc', weights, inputs_kv)  # [B, H, T, C]
    summed = jnp.einsum('bhtc,chd->bthd', pooled, w_v)  # [B, T, H, Dv]
    if values.b is not None:
      b_v = jnp.reshape(values.b, (heads, v_dim))
      if dropout_prob > 0:  # Dropped weights no longer sum to one.
        total = _to_heads_first(jnp.sum(weights, axis=-1)[..., None])  # [B, T, H, 1]
        summed += total * b_v
      else:
        summed += b_v
  else:
    summed = _to_heads_first(
      jnp.einsum('bhts,bhsd->bhtd', weights, _to_heads_first(values))
    )
  return _merge_heads(summed, attention_mask)


def _chunked_single_head(q, inputs_kv, keys, values, dropout_prob, mask, scale, chunks):
  """`factorized_attend` with one head, through `attend`'s blocks: `[B, T, Dv]`.

  The folded keys and values are the raw inputs (one head of C channels); as in
  `_factorized_softmax_attention`, a key bias is left out (the softmax cancels it).
  """
  if isinstance(keys, Projection):
    queries = jnp.einsum('bthd,cd->bthc', q, keys.w)  # [B, T, 1, C]
    keys = inputs_kv[:, :, None]
  else:
    queries = q
  folded_values = isinstance(values, Projection)
  out = attend(
    queries,
    keys,
    inputs_kv[:, :, None] if folded_values else values,
    dropout_prob=dropout_prob,
    attention_mask=mask,
    scale=scale,
    **chunks,
  )  # [B, T, C or Dv]
  if not folded_values:
    return out
  out = jnp.dot(out, values.w)
  if values.b is not None:
    out += values.b  # The weights of a row sum to one.
  return _merge_heads(out[:, :, None], mask)  # Rows that see no input stay zero.


def _factorized_softmax_attention(q, inputs_kv, keys, values, attention_mask, scale):
  """`factorized_attend` without dropout, through `softmax_attention`: `[B, T, H * Dv]`.

  A key projection's bias adds `q . b_k` to every logit of a query row, which the
  softmax cancels, so it is left out (its gradient is exactly zero); the raw inputs
  serve as keys and values shared by all heads.
  """
  channels = inputs_kv.shape[-1]
  heads = q.shape[2]
  q_heads = _to_heads_first(q)  # [B, H, T, Dqk]
  shared_inputs = inputs_kv[:, None]  # [B, 1, S, C]
  if isinstance(keys, Projection):
    w_k = jnp.reshape(keys.w, (channels, heads, q.shape[-1]))
    queries = jnp.einsum('bhtd,chd->bhtc', q_heads, w_k)  # [B, H, T, C]
    key_array = shared_inputs
  else:
    queries, key_array = q_heads, _to_heads_first(keys)
  value_array = (
    shared_inputs if isinstance(values, Projection) else _to_heads_first(values)
  )
  mask = None if attention_mask is None else attention_mask != 0
  out = softmax_attention.softmax_attention(
    queries, key_array, value_array, mask, scale=scale
  )  # [B, H, T, C or Dv]
  if isinstance(values, Projection):
    v_dim = values.w.shape[-1] // heads
    w_v = jnp.reshape(values.w, (channels, heads, v_dim))
    summed = jnp.einsum('bhtc,chd->bthd', out, w_v)  # [B, T, H, Dv]
    if values.b is not None:
      summed += jnp.reshape(values.b, (heads, v_dim))  # The weights sum to one.
  else:
    summed = _to_heads_first(out)
  return _merge_heads(summed, attention_mask)


def _check_projection(value, name, shape, channels, width):
  """Checks a projected `[B, S, H, D]` array or a `Projection` from C channels."""
  if isinstance(value, Projection):
    if value.w.shape != (channels, width) or (
      value.b is not None and value.b.shape != (width,)
    ):
      raise ValueError(
        f'{name} projection must have w [{channels}, {width}] and b [{width}]; got '
        f'w {tuple(value.w.shape)}, b '
        f'{None if value.b is None else tuple(value.b.shape)}.'
      )
  elif tuple(value.shape) != shape:
    raise ValueError(
      f'{name} must have shape {shape} [B, S, H, D]; got {tuple(value.shape)}.'
    )
