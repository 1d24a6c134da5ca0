"""Attention primitives and the attention blocks of the Perceiver.

Shape glossary:
  B: batch size.
  T: number of query elements (e.g. latents N, or decoder outputs O).
  S: number of key/value elements (e.g. inputs M, or latents N).
  H: number of attention heads.
  Dqk, Dv: channels per head of queries/keys and of values.
  C: channels of a sequence.

All modules here create their parameters in `__call__`, in the same order and with the
same names as DeepMind's official release, so parameter trees are interchangeable.
"""

import contextlib
import math

import haiku as hk
import jax
import jax.numpy as jnp


def _dropout(rate, x):
  """`hk.dropout` that also works without an RNG key when the rate is zero.

  A key is drawn whenever one is available, even at rate zero, so the RNG sequence (and
  hence parameter initialisation from a seed) is exactly that of the official release.
  """
  key = hk.maybe_next_rng_key()
  if rate == 0.0:
    return x
  if key is None:
    raise ValueError(f"Dropout with rate {rate} needs an RNG key: pass `rng` to apply.")
  return hk.dropout(key, rate, x)


def _large_logit(dtype):
  """The magnitude given to masked logits: -1e30, or -1e4 for float16 logits."""
  return 1e4 if dtype == jnp.float16 else 1e30


def _softmax_dtype(dtype):
  """Logits of reduced-precision (bfloat16) attention are normalised in float32."""
  return jnp.float32 if dtype == jnp.bfloat16 else dtype


def _masked_logits(q, k, attention_mask, scale):
  """Scaled, masked logits `[B, H, T, S]` of queries `[B, T, H, D]`, keys `[B, S, H, D]`."""
  attention = jnp.einsum("bthd,bThd->bhtT", q, k)  # [B, H, T, S]
  attention = attention.astype(_softmax_dtype(attention.dtype))
  attention *= scale
  if attention_mask is not None:
    large_k = jnp.array(_large_logit(attention.dtype), dtype=attention.dtype)
    attention = jnp.where(attention_mask[:, None, :, :], attention, -large_k)
  return attention


@jax.custom_vjp
def _softmax(logits):
  """`jax.nn.softmax` over the last axis, with the same values and a direct VJP.

  The backward pass is written out, `dlogits = y * (g - sum(y * g))`: the same formula
  as the transpose of `jax.nn.softmax`'s JVP, but XLA compiles this form into fewer
  passes over the `[B, H, T, S]` weights (a cross-attend's backward ran about 15%
  faster on CPU).
  """
  return jax.nn.softmax(logits)


def _softmax_fwd(logits):
  weights = jax.nn.softmax(logits)
  return weights, weights


def _softmax_bwd(weights, g):
  return (weights * (g - jnp.sum(weights * g, axis=-1, keepdims=True)),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


def _dense_attend(q, k, v, dropout_prob, attention_mask, scale):
  """Attention with all `[B, H, T, S]` weights materialised at once: `[B, T, H, Dv]`."""
  attention = _masked_logits(q, k, attention_mask, scale)
  normalized = _softmax(attention).astype(v.dtype)
  if dropout_prob > 0:
    normalized = hk.dropout(hk.next_rng_key(), dropout_prob, normalized)
  return jnp.einsum("bhtT,bThd->bthd", normalized, v)  # [B, T, H, Dv]


def _num_chunks(size, chunk_size):
  return -(-size // chunk_size)


def _pad_axis(x, axis, new_size):
  """Zero-pads axis `axis` of `x` at the end to `new_size`."""
  if x.shape[axis] == new_size:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, new_size - x.shape[axis])
  return jnp.pad(x, widths)


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

  def to_chunks(x):  # [B, S, ...] -> [num_chunks, B, chunk, ...]
    x = _pad_axis(x, 1, padded)
    x = jnp.reshape(x, (batch, num_chunks, key_chunk_size) + x.shape[2:])
    return jnp.moveaxis(x, 1, 0)

  k_chunks, v_chunks = to_chunks(k), to_chunks(v)
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

  acc_dtype = _softmax_dtype(v.dtype)
  stat_dtype = _softmax_dtype(q.dtype)
  large_k = _large_logit(stat_dtype)

  def step(carry, chunk):
    running_max, running_sum, acc = carry
    k_chunk, v_chunk, mask_chunk = chunk
    if shared_mask is not None:
      mask_chunk = shared_mask if mask_chunk is None else mask_chunk & shared_mask
    logits = _masked_logits(q, k_chunk, mask_chunk, scale)  # [B, H, T, chunk]
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
    correction = jnp.exp(running_max - new_max)  # [B, H, T]
    weights = jnp.exp(logits - new_max[..., None])
    running_sum = running_sum * correction + jnp.sum(weights, axis=-1)
    update = jnp.einsum("bhtT,bThd->bhtd", weights.astype(v.dtype), v_chunk)
    acc = acc * correction[..., None].astype(acc_dtype) + update.astype(acc_dtype)
    return (new_max, running_sum, acc), None

  init = (jnp.full((batch, heads, q_len), -large_k, stat_dtype),
          jnp.zeros((batch, heads, q_len), stat_dtype),
          jnp.zeros((batch, heads, q_len, v_dim), acc_dtype))
  (_, running_sum, acc), _ = jax.lax.scan(
      jax.checkpoint(step, prevent_cse=False), init, (k_chunks, v_chunks, mask_chunks))
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

  def to_chunks(x):  # [B, T, ...] -> [num_chunks, B, chunk, ...]
    x = _pad_axis(x, 1, padded)
    x = jnp.reshape(x, (batch, num_chunks, query_chunk_size) + x.shape[2:])
    return jnp.moveaxis(x, 1, 0)

  if attention_mask is not None and attention_mask.shape[1] > 1:
    chunk_fn = lambda xs: attend_fn(*xs)
    xs = (to_chunks(q), to_chunks(attention_mask))
  else:  # No mask, or one shared by every query.
    chunk_fn = lambda q_chunk: attend_fn(q_chunk, attention_mask)
    xs = to_chunks(q)
  out = jax.lax.map(jax.checkpoint(chunk_fn, prevent_cse=False),
                    xs)  # [num_chunks, B, chunk, H, Dv]
  out = jnp.moveaxis(out, 0, 1)
  out = jnp.reshape(out, (batch, padded) + out.shape[3:])
  return out[:, :q_len]


def _check_chunk_size(value, name):
  if value is None or value == 0:
    return None
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f"{name} must be a positive int (or None / 0 for no chunking), "
                     f"got {value!r}.")
  return value


def attend(q, k, v, dropout_prob=0.0, attention_mask=None, *, query_chunk_size=None,
           key_chunk_size=None):
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

  Returns:
    `[B, T, H * Dv]` attended values.
  """
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(
        "attend expects q, k, v of rank 4 [B, T, H, D]; got shapes "
        f"q={tuple(q.shape)}, k={tuple(k.shape)}, v={tuple(v.shape)}.")
  batch, q_indices, num_heads, q_head_dim = q.shape
  if k.shape[:1] + k.shape[2:] != (batch, num_heads, q_head_dim):
    raise ValueError(f"k shape {tuple(k.shape)} does not match q shape {tuple(q.shape)}.")
  if v.shape[:3] != k.shape[:3]:
    raise ValueError(f"v shape {tuple(v.shape)} does not match k shape {tuple(k.shape)}.")
  if attention_mask is not None:
    expected = (batch, q_indices, k.shape[1])
    if (attention_mask.ndim != 3 or attention_mask.shape[0] != batch or
        attention_mask.shape[1] not in (1, q_indices) or
        attention_mask.shape[2] not in (1, k.shape[1])):
      raise ValueError(f"attention_mask must have shape {expected} [B, T, S] (T or S "
                       f"may be 1), got {tuple(attention_mask.shape)}.")
  query_chunk_size = _check_chunk_size(query_chunk_size, "query_chunk_size")
  key_chunk_size = _check_chunk_size(key_chunk_size, "key_chunk_size")
  if query_chunk_size is not None and query_chunk_size >= q_indices:
    query_chunk_size = None
  if key_chunk_size is not None and key_chunk_size >= k.shape[1]:
    key_chunk_size = None
  if dropout_prob > 0 and (query_chunk_size or key_chunk_size):
    raise ValueError(
        f"Chunked attention (query_chunk_size={query_chunk_size}, key_chunk_size="
        f"{key_chunk_size}) does not support attention dropout (dropout_prob="
        f"{dropout_prob}).")
  v_head_dim = v.shape[-1]
  hiddens = num_heads * v_head_dim
  scale = 1.0 / math.sqrt(q_head_dim)

  if key_chunk_size is not None:
    attend_fn = lambda q, mask: _key_chunked_attend(q, k, v, mask, scale, key_chunk_size)
  else:
    attend_fn = lambda q, mask: _dense_attend(q, k, v, dropout_prob, mask, scale)
  if query_chunk_size is not None:
    summed = _query_chunked_attend(attend_fn, q, attention_mask, query_chunk_size)
  else:
    summed = attend_fn(q, attention_mask)  # [B, T, H, Dv]
  summed = jnp.reshape(summed, [batch, q_indices, hiddens])

  if attention_mask is not None:
    # A fully masked query row would otherwise get a uniform softmax: force zeros.
    wipe_attn = jnp.all(attention_mask == 0, axis=2, keepdims=True)  # [B, T, 1]
    summed = jnp.where(wipe_attn, jnp.zeros_like(summed), summed)
  return summed


class PositionwiseLinear(hk.Linear):
  """`hk.Linear` over the last axis, computed as one 2D matrix product.

  Inputs `[..., C]` are flattened to `[P, C]` (P: all leading positions) for the
  product and the result is reshaped back to `[..., K]`: the same values and the same
  parameters (`w` `[C, K]`, `b` `[K]`) as `hk.Linear`. The flat form makes the
  weight gradient a plain `[C, P] x [P, K]` product; with the leading axes kept, XLA
  contracts the gradient over several axes and copies activations into new layouts,
  which made the backward pass of a CPU train step about a quarter slower.
  The module is named like `hk.Linear` (`linear`, `linear_1`, ...) unless `name` is
  given.
  """

  def __init__(self, output_size, with_bias=True, w_init=None, b_init=None,
               name=None):
    super().__init__(output_size=output_size, with_bias=with_bias, w_init=w_init,
                     b_init=b_init, name=name or "linear")

  def __call__(self, inputs, *, precision=None):
    if inputs.ndim <= 2:
      return super().__call__(inputs, precision=precision)
    flat = jnp.reshape(inputs, (-1, inputs.shape[-1]))  # [P, C]
    out = super().__call__(flat, precision=precision)  # [P, K]
    return jnp.reshape(out, inputs.shape[:-1] + (out.shape[-1],))


def conv_1d(output_channels, init_scale=1.0, with_bias=True, name=None):
  """A per-position linear layer (a 1x1 convolution), VarianceScaling-initialised."""
  return PositionwiseLinear(
      output_size=output_channels,
      with_bias=with_bias,
      w_init=hk.initializers.VarianceScaling(init_scale),
      name=name)


def layer_norm(x, name=None):
  """LayerNorm over the last axis with learned scale and offset.

  bfloat16 inputs are normalised in float32 and the result is cast back to bfloat16.
  """
  module = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name=name)
  if x.dtype == jnp.bfloat16:
    return module(x.astype(jnp.float32)).astype(x.dtype)
  return module(x)


COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype_from(value):
  """`None` (no cast: float32 models stay float32) or the dtype named by `value`.

  Accepts None, '' (both: off), 'float32', 'bfloat16' or the matching jnp dtypes.
  """
  if value is None or (isinstance(value, str) and not value):
    return None
  name = value if isinstance(value, str) else jnp.dtype(value).name
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES} (or None), got "
                     f"{value!r}.")
  return jnp.dtype(name)


@contextlib.contextmanager
def compute_dtype_scope(compute_dtype):
  """Within this scope parameters are created and stored in float32 but handed to the
  layers in `compute_dtype` (LayerNorm parameters excepted), so matrix products run in
  `compute_dtype` while the optimizer updates float32 weights. With None: no effect.

  Args:
    compute_dtype: None or a dtype accepted by `compute_dtype_from`.
  """
  compute_dtype = compute_dtype_from(compute_dtype)
  if compute_dtype is None:
    yield
    return

  def create_in_float32(next_creator, shape, dtype, init, context):
    del context
    if jnp.issubdtype(dtype, jnp.floating):
      dtype = jnp.float32
    return next_creator(shape, dtype, init)

  def cast_for_compute(next_getter, value, context):
    value = next_getter(value)
    if (jnp.issubdtype(value.dtype, jnp.floating)
        and "layer_norm" not in context.module_name):
      value = value.astype(compute_dtype)
    return value

  with hk.custom_creator(create_in_float32), hk.custom_getter(cast_for_compute):
    yield


def make_cross_attention_mask(query_mask, kv_mask):
  """Outer product of a query mask `[B, T]` and a key/value mask `[B, S]` -> `[B, T, S]`."""
  if query_mask.ndim != 2 or kv_mask.ndim != 2:
    raise ValueError(
        "make_cross_attention_mask expects query_mask [B, T] and kv_mask [B, S]; got "
        f"shapes {tuple(query_mask.shape)} and {tuple(kv_mask.shape)}.")
  if query_mask.shape[0] != kv_mask.shape[0]:
    raise ValueError(
        f"query_mask batch {query_mask.shape[0]} != kv_mask batch {kv_mask.shape[0]}.")
  return jax.vmap(jnp.outer)(query_mask, kv_mask)


def _check_divisible(channels, num_heads, arg_name):
  if channels % num_heads != 0:
    raise ValueError(
        f"{arg_name} ({channels}) must be divisible by num_heads ({num_heads}).")


class Attention(hk.Module):
  """Multi-head attention with query/key/value/output projections.

  Projections are created in the order q, k, v, output (`linear` ... `linear_3`).

  Args:
    num_heads: H.
    init_scale: VarianceScaling scale of the q/k/v projections.
    with_final_bias: whether the output projection has a bias.
    final_init_scale_multiplier: multiplies `init_scale` for the output projection.
    dropout_prob: dropout on the attention weights.
    qk_channels: H * Dqk; defaults to the query input channels.
    v_channels: H * Dv; defaults to `qk_channels`.
    output_channels: output channels; defaults to `v_channels`.
    name: module name.
    query_chunk_size: compute the attention weights for blocks of this many queries
      at a time (see `attend`); None: all at once.
    key_chunk_size: likewise for blocks of keys (online softmax).
  """

  def __init__(self, num_heads=8, init_scale=1.0, with_final_bias=True,
               final_init_scale_multiplier=1., dropout_prob=0.0, qk_channels=None,
               v_channels=None, output_channels=None, name=None, *,
               query_chunk_size=None, key_chunk_size=None):
    super().__init__(name=name)
    self._query_chunk_size = _check_chunk_size(query_chunk_size, "query_chunk_size")
    self._key_chunk_size = _check_chunk_size(key_chunk_size, "key_chunk_size")
    if num_heads < 1:
      raise ValueError(f"num_heads must be >= 1, got {num_heads!r}.")
    self._num_heads = num_heads
    self._init_scale = init_scale
    self._with_final_bias = with_final_bias
    self._final_init_scale = final_init_scale_multiplier * init_scale
    self._dropout_prob = dropout_prob
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._output_channels = output_channels

  def __call__(self, inputs_q, inputs_kv, attention_mask=None):
    """Attends from `inputs_q` `[B, T, Cq]` to `inputs_kv` `[B, S, Ckv]` -> `[B, T, Cout]`."""
    if inputs_q.ndim != 3 or inputs_kv.ndim != 3:
      raise ValueError(
          "Attention expects inputs_q [B, T, C] and inputs_kv [B, S, C]; got shapes "
          f"{tuple(inputs_q.shape)} and {tuple(inputs_kv.shape)}.")
    qk_channels = self._qk_channels or inputs_q.shape[-1]
    v_channels = self._v_channels or qk_channels
    output_channels = self._output_channels or v_channels
    _check_divisible(qk_channels, self._num_heads, "qk_channels")
    _check_divisible(v_channels, self._num_heads, "v_channels")
    heads = self._num_heads

    q = conv_1d(qk_channels, init_scale=self._init_scale)(inputs_q)
    k = conv_1d(qk_channels, init_scale=self._init_scale)(inputs_kv)
    v = conv_1d(v_channels, init_scale=self._init_scale)(inputs_kv)

    batch, q_time, _ = q.shape
    kv_time = k.shape[1]
    q = jnp.reshape(q, [batch, q_time, heads, qk_channels // heads])
    k = jnp.reshape(k, [batch, kv_time, heads, qk_channels // heads])
    v = jnp.reshape(v, [batch, kv_time, heads, v_channels // heads])

    result = attend(q, k, v, dropout_prob=self._dropout_prob,
                    attention_mask=attention_mask,
                    query_chunk_size=self._query_chunk_size,
                    key_chunk_size=self._key_chunk_size)
    return conv_1d(output_channels, with_bias=self._with_final_bias,
                   init_scale=self._final_init_scale)(result)


class MLP(hk.Module):
  """Transformer feed-forward block: Linear(w*C) -> GELU (tanh) -> Linear(C) -> dropout.

  Args:
    widening_factor: w, the hidden width as a multiple of the input channels.
    dropout_prob: dropout rate on the output (training only).
    init_scale: VarianceScaling scale of both layers.
    name: module name.
  """

  def __init__(self, widening_factor=4, dropout_prob=0.0, init_scale=1., name=None):
    super().__init__(name=name)
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._init_scale = init_scale

  def __call__(self, x, *, is_training):
    dropout_prob = self._dropout_prob if is_training else 0.0
    output_channels = x.shape[-1]
    x = conv_1d(self._widening_factor * output_channels, init_scale=self._init_scale)(x)
    x = jax.nn.gelu(x)
    x = conv_1d(output_channels, init_scale=self._init_scale)(x)
    return _dropout(dropout_prob, x)


class SelfAttention(hk.Module):
  """Pre-LN Transformer layer: `x + Attn(LN(x))`, then `x + MLP(LN(x))`.

  Input and output `[B, N, C]`.

  Args:
    widening_factor: MLP widening factor.
    dropout_prob: dropout on the attention and MLP outputs (training only).
    dropout_attn_prob: dropout on the attention weights (training only).
    num_heads: attention heads.
    att_init_scale: init scale of the attention projections.
    dense_init_scale: init scale of the MLP.
    qk_channels: query/key channels (default C).
    v_channels: value channels (default `qk_channels`).
    name: module name.
    query_chunk_size, key_chunk_size: attention chunking, see `Attention`.
  """

  def __init__(self, widening_factor=4, dropout_prob=0.0, dropout_attn_prob=0.0,
               num_heads=8, att_init_scale=1.0, dense_init_scale=1.0,
               qk_channels=None, v_channels=None, name=None, *,
               query_chunk_size=None, key_chunk_size=None):
    super().__init__(name=name)
    self._chunks = dict(query_chunk_size=query_chunk_size,
                        key_chunk_size=key_chunk_size)
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._dropout_attn_prob = dropout_attn_prob
    self._num_heads = num_heads
    self._att_init_scale = att_init_scale
    self._dense_init_scale = dense_init_scale
    self._qk_channels = qk_channels
    self._v_channels = v_channels

  def __call__(self, inputs, *, attention_mask=None, is_training):
    dropout_prob = self._dropout_prob if is_training else 0.0
    dropout_attn_prob = self._dropout_attn_prob if is_training else 0.0

    x = inputs
    qkv_inputs = layer_norm(inputs)
    attention = Attention(
        num_heads=self._num_heads,
        init_scale=self._att_init_scale,
        qk_channels=self._qk_channels,
        v_channels=self._v_channels,
        dropout_prob=dropout_attn_prob,
        **self._chunks)(qkv_inputs, qkv_inputs, attention_mask=attention_mask)
    x = x + _dropout(dropout_prob, attention)
    x = x + MLP(widening_factor=self._widening_factor, dropout_prob=dropout_prob,
                init_scale=self._dense_init_scale)(layer_norm(x), is_training=is_training)
    return x


CROSS_ATTENTION_SHAPES = ("q", "kv")


class CrossAttention(hk.Module):
  """Pre-LN cross-attention layer with an MLP.

  `x = q + Attn(LN(q), LN(kv))` (the residual is optional), then `x + MLP(LN(x))`.
  Queries `[B, T, Cq]`, keys/values `[B, S, Ckv]`, output `[B, T, Cq]`.

  Args:
    widening_factor: MLP widening factor.
    dropout_prob: dropout on the attention and MLP outputs (training only).
    dropout_attn_prob: dropout on the attention weights (training only).
    num_heads: attention heads.
    att_init_scale: init scale of the attention projections.
    dense_init_scale: init scale of the MLP.
    shape_for_attn: 'kv' or 'q': which input sets the default `qk_channels`.
    use_query_residual: whether to add the queries to the attention output.
    qk_channels: query/key channels (overrides `shape_for_attn`).
    v_channels: value channels (default `qk_channels`).
    name: module name.
    query_chunk_size, key_chunk_size: attention chunking, see `Attention`.
  """

  def __init__(self, widening_factor=1, dropout_prob=0.0, dropout_attn_prob=0.0,
               num_heads=8, att_init_scale=1.0, dense_init_scale=1.0,
               shape_for_attn="kv", use_query_residual=True, qk_channels=None,
               v_channels=None, name=None, *, query_chunk_size=None,
               key_chunk_size=None):
    super().__init__(name=name)
    self._chunks = dict(query_chunk_size=query_chunk_size,
                        key_chunk_size=key_chunk_size)
    if shape_for_attn not in CROSS_ATTENTION_SHAPES:
      raise ValueError(f"Unknown shape_for_attn {shape_for_attn!r}; expected one of "
                       f"{CROSS_ATTENTION_SHAPES}.")
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._dropout_attn_prob = dropout_attn_prob
    self._num_heads = num_heads
    self._att_init_scale = att_init_scale
    self._dense_init_scale = dense_init_scale
    self._shape_for_attn = shape_for_attn
    self._use_query_residual = use_query_residual
    self._qk_channels = qk_channels
    self._v_channels = v_channels

  def __call__(self, inputs_q, inputs_kv, *, attention_mask=None, is_training):
    dropout_prob = self._dropout_prob if is_training else 0.0
    dropout_attn_prob = self._dropout_attn_prob if is_training else 0.0

    output_channels = inputs_q.shape[-1]
    if self._shape_for_attn == "q":
      qk_channels = inputs_q.shape[-1]
    else:
      qk_channels = inputs_kv.shape[-1]
    if self._qk_channels is not None:
      qk_channels = self._qk_channels
    v_channels = self._v_channels

    attention = Attention(
        num_heads=self._num_heads,
        init_scale=self._att_init_scale,
        dropout_prob=dropout_attn_prob,
        qk_channels=qk_channels,
        v_channels=v_channels,
        output_channels=output_channels,
        **self._chunks)(layer_norm(inputs_q), layer_norm(inputs_kv),
                        attention_mask=attention_mask)
    attention = _dropout(dropout_prob, attention)
    x = inputs_q + attention if self._use_query_residual else attention
    x = x + MLP(widening_factor=self._widening_factor, dropout_prob=dropout_prob,
                init_scale=self._dense_init_scale)(layer_norm(x), is_training=is_training)
    return x
