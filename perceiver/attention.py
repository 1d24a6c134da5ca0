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

import math
from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp


def _dropout(rate, x):
  """`hk.dropout` that draws no RNG key when the rate is zero (a no-op then)."""
  if rate == 0.0:
    return x
  return hk.dropout(hk.next_rng_key(), rate, x)


def attend(q, k, v, dropout_prob=0.0, attention_mask=None):
  """Multi-head scaled dot-product attention.

  Logits are `q.k / sqrt(Dqk)`; masked logits are set to -1e30 (-1e4 in float16)
  before the softmax, and query rows whose mask is entirely zero return exact zeros.

  Args:
    q: `[B, T, H, Dqk]` queries.
    k: `[B, S, H, Dqk]` keys.
    v: `[B, S, H, Dv]` values.
    dropout_prob: dropout rate on the attention weights (needs an RNG key if > 0).
    attention_mask: optional `[B, T, S]` mask, nonzero where attention is allowed.

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
  v_head_dim = v.shape[-1]
  hiddens = num_heads * v_head_dim

  attention = jnp.einsum("bthd,bThd->bhtT", q, k)  # [B, H, T, S]
  scale = 1.0 / math.sqrt(q_head_dim)
  attention *= scale

  if attention_mask is not None:
    expected = (batch, q_indices, k.shape[1])
    if tuple(attention_mask.shape) != expected:
      raise ValueError(f"attention_mask must have shape {expected} [B, T, S], got "
                       f"{tuple(attention_mask.shape)}.")
    large_k = jnp.array(1e4 if attention.dtype == jnp.float16 else 1e30,
                        dtype=attention.dtype)
    attention = jnp.where(attention_mask[:, None, :, :], attention, -large_k)

  normalized = jax.nn.softmax(attention)
  if dropout_prob > 0:
    normalized = hk.dropout(hk.next_rng_key(), dropout_prob, normalized)
  summed = jnp.einsum("bhtT,bThd->bthd", normalized, v)  # [B, T, H, Dv]
  summed = jnp.reshape(summed, [batch, q_indices, hiddens])

  if attention_mask is not None:
    # A fully masked query row would otherwise get a uniform softmax: force zeros.
    wipe_attn = jnp.all(attention_mask == 0, axis=2, keepdims=True)  # [B, T, 1]
    summed = jnp.where(wipe_attn, jnp.zeros_like(summed), summed)
  return summed


def conv_1d(output_channels, init_scale=1.0, with_bias=True, name=None):
  """A per-position linear layer (a 1x1 convolution), VarianceScaling-initialised."""
  return hk.Linear(
      output_size=output_channels,
      with_bias=with_bias,
      w_init=hk.initializers.VarianceScaling(init_scale),
      name=name)


def layer_norm(x, name=None):
  """LayerNorm over the last axis with learned scale and offset."""
  return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name=name)(x)


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
  """

  def __init__(self, num_heads=8, init_scale=1.0, with_final_bias=True,
               final_init_scale_multiplier=1., dropout_prob=0.0, qk_channels=None,
               v_channels=None, output_channels=None, name=None):
    super().__init__(name=name)
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
                    attention_mask=attention_mask)
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
  """

  def __init__(self, widening_factor=4, dropout_prob=0.0, dropout_attn_prob=0.0,
               num_heads=8, att_init_scale=1.0, dense_init_scale=1.0,
               qk_channels=None, v_channels=None, name=None):
    super().__init__(name=name)
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
        dropout_prob=dropout_attn_prob)(qkv_inputs, qkv_inputs,
                                        attention_mask=attention_mask)
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
  """

  def __init__(self, widening_factor=1, dropout_prob=0.0, dropout_attn_prob=0.0,
               num_heads=8, att_init_scale=1.0, dense_init_scale=1.0,
               shape_for_attn="kv", use_query_residual=True, qk_channels=None,
               v_channels=None, name=None):
    super().__init__(name=name)
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
        output_channels=output_channels)(layer_norm(inputs_q), layer_norm(inputs_kv),
                                         attention_mask=attention_mask)
    attention = _dropout(dropout_prob, attention)
    x = inputs_q + attention if self._use_query_residual else attention
    x = x + MLP(widening_factor=self._widening_factor, dropout_prob=dropout_prob,
                init_scale=self._dense_init_scale)(layer_norm(x), is_training=is_training)
    return x
