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
import threading
from typing import Callable, List, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver._src import projection_folding
from perceiver._src.dot_product_attention import Projection
from perceiver._src.dot_product_attention import attend
from perceiver._src.dot_product_attention import check_chunk_size
from perceiver._src.dot_product_attention import factorization_saves_work
from perceiver._src.dot_product_attention import factorized_attend


def _dropout(rate, x):
  """`hk.dropout` that also works without an RNG key when the rate is zero.

  A key is drawn whenever one is available, even at rate zero, so the RNG sequence (and
  hence parameter initialisation from a seed) is exactly that of the official release.
  """
  key = hk.maybe_next_rng_key()
  if rate == 0.0:
    return x
  if key is None:
    raise ValueError(f'Dropout with rate {rate} needs an RNG key: pass `rng` to apply.')
  return hk.dropout(key, rate, x)


class PositionwiseLinear(hk.Linear):
  """`hk.Linear` over the last axis, computed as one 2D matrix product.

  Inputs `[..., C]` are flattened to `[P, C]` (P: all leading positions) for the
  product and the result is reshaped back to `[..., K]`: the same values and the same
  parameters (`w` `[C, K]`, `b` `[K]`) as `hk.Linear`. The flat form makes the
  weight gradient a plain `[C, P] x [P, K]` product; with the leading axes kept, XLA
  contracts the gradient over several axes and copies activations into new layouts.
  The module is named like `hk.Linear` (`linear`, `linear_1`, ...) unless `name` is
  given.
  """

  def __init__(self, output_size, with_bias=True, w_init=None, b_init=None, name=None):
    super().__init__(
      output_size=output_size,
      with_bias=with_bias,
      w_init=w_init,
      b_init=b_init,
      name=name or 'linear',
    )

  def __call__(self, inputs, *, precision=None):
    if inputs.ndim <= 2:
      return super().__call__(inputs, precision=precision)
    flat = jnp.reshape(inputs, (-1, inputs.shape[-1]))  # [P, C]
    out = super().__call__(flat, precision=precision)  # [P, K]
    return jnp.reshape(out, inputs.shape[:-1] + (out.shape[-1],))

  def parameters(self, input_size, dtype=jnp.float32):
    """`(w [input_size, K], b [K] or None)`, created (or fetched) exactly as a call on
    inputs of `input_size` channels and `dtype` would, without applying them."""
    w_init = self.w_init
    if w_init is None:
      w_init = hk.initializers.TruncatedNormal(stddev=1.0 / np.sqrt(input_size))
    w = hk.get_parameter('w', [input_size, self.output_size], dtype, init=w_init)
    b = None
    if self.with_bias:
      b = hk.get_parameter('b', [self.output_size], dtype, init=self.b_init)
    return w, b


def _joint_projection(layers, inputs):
  """The outputs of several `PositionwiseLinear` layers on the same `inputs` `[..., C]`,
  computed as one matrix product with their weights side by side.

  Parameters are created (or fetched) layer by layer in the given order, as separate
  calls would create them; the outputs equal theirs up to float rounding. One product
  `[P, C] x [C, sum K]` reads the inputs once, and in the backward pass gives the
  inputs' gradient as one product instead of a sum of several.
  """
  params = [layer.parameters(inputs.shape[-1], inputs.dtype) for layer in layers]
  w = jnp.concatenate([w for w, _ in params], axis=1)
  flat = jnp.reshape(inputs, (-1, inputs.shape[-1]))
  out = jnp.dot(flat, w)
  if all(b is not None for _, b in params):
    out = out + jnp.concatenate([b for _, b in params])
  elif any(b is not None for _, b in params):
    raise ValueError('_joint_projection: either every layer has a bias or none does.')
  splits = np.cumsum([w.shape[1] for w, _ in params])[:-1]
  return [
    jnp.reshape(part, inputs.shape[:-1] + (part.shape[-1],))
    for part in jnp.split(out, splits, axis=-1)
  ]


def conv_1d(output_channels, init_scale=1.0, with_bias=True, name=None):
  """A per-position linear layer (a 1x1 convolution), VarianceScaling-initialised."""
  return PositionwiseLinear(
    output_size=output_channels,
    with_bias=with_bias,
    w_init=hk.initializers.VarianceScaling(init_scale),
    name=name,
  )


def layer_norm(x, name=None):
  """LayerNorm over the last axis with learned scale and offset.

  bfloat16 inputs are normalised in float32 and the result is cast back to bfloat16.
  """
  module = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name=name)
  if x.dtype == jnp.bfloat16:
    return module(x.astype(jnp.float32)).astype(x.dtype)
  return module(x)


COMPUTE_DTYPES = ('float32', 'bfloat16')


def compute_dtype_from(value):
  """`None` (no cast: float32 models stay float32) or the dtype named by `value`.

  Accepts None, '' (both: off), 'float32', 'bfloat16' or the matching jnp dtypes.
  """
  if value is None or (isinstance(value, str) and not value):
    return None
  name = value if isinstance(value, str) else jnp.dtype(value).name
  if name not in COMPUTE_DTYPES:
    raise ValueError(
      f'compute_dtype must be one of {COMPUTE_DTYPES} (or None), got {value!r}.'
    )
  return jnp.dtype(name)


REMAT_POLICIES = ('full', 'dots', 'dots_no_batch')


def rematerializer(remat, policy=None):
  """`fn -> fn`: `hk.remat` with the named saving policy, or the identity if not `remat`.

  Args:
    remat: whether to rematerialise in the backward pass.
    policy: what the forward pass keeps for the backward pass. None, '' or 'full': only
      the layer's inputs, everything else is recomputed. 'dots': also the output of
      every matrix product (`jax.checkpoint_policies.dots_saveable`), so only
      elementwise work (layer norms, softmax, GELU) is recomputed. 'dots_no_batch':
      the outputs of products without batch dimensions, i.e. projections and MLPs but
      not the attention products (`dots_with_no_batch_dims_saveable`).
  """
  if policy is None or policy in ('', 'full'):
    saver = None
  elif policy == 'dots':
    saver = jax.checkpoint_policies.dots_saveable
  elif policy == 'dots_no_batch':
    saver = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
  else:
    raise ValueError(
      f'remat_policy must be one of {REMAT_POLICIES} (or None), got {policy!r}.'
    )
  if not remat:
    if saver is not None:
      raise ValueError(f'remat_policy={policy!r} needs remat=True.')
    return lambda fn: fn
  # While attention weights are recorded, run unrematerialised (same values).
  return lambda fn: fn if _RECORDER.stack else hk.remat(fn, policy=saver)


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
    if (
      jnp.issubdtype(value.dtype, jnp.floating)
      and 'layer_norm' not in context.module_name
    ):
      value = value.astype(compute_dtype)
    return value

  with hk.custom_creator(create_in_float32), hk.custom_getter(cast_for_compute):
    yield


def make_cross_attention_mask(query_mask, kv_mask):
  """Outer product of a query mask `[B, T]` and a key/value mask `[B, S]` -> `[B, T, S]`."""
  if query_mask.ndim != 2 or kv_mask.ndim != 2:
    raise ValueError(
      'make_cross_attention_mask expects query_mask [B, T] and kv_mask [B, S]; got '
      f'shapes {tuple(query_mask.shape)} and {tuple(kv_mask.shape)}.'
    )
  if query_mask.shape[0] != kv_mask.shape[0]:
    raise ValueError(
      f'query_mask batch {query_mask.shape[0]} != kv_mask batch {kv_mask.shape[0]}.'
    )
  return jax.vmap(jnp.outer)(query_mask, kv_mask)


def _check_divisible(channels, num_heads, arg_name):
  if channels % num_heads != 0:
    raise ValueError(
      f'{arg_name} ({channels}) must be divisible by num_heads ({num_heads}).'
    )


class _Recorder(threading.local):
  """Per-thread stack of active attention-weight recordings."""

  def __init__(self):
    super().__init__()
    self.stack: List[Tuple[Callable[[str], bool], list]] = []


_RECORDER = _Recorder()


def _is_cross_attention(module_name: str) -> bool:
  return 'cross_attention' in module_name


@contextlib.contextmanager
def record_attention_weights(select: Optional[Callable[[str], bool]] = None):
  """Records the attention weights of every `Attention` called inside the scope.

  Off by default; nothing changes outside this scope. Inside it, each selected
  `Attention` call also computes its softmax weights `[B, H, T, S]` (float32, before
  attention dropout; zeros for fully masked query rows, as the attended values) and
  appends `(module name, weights)` to the yielded list, in call order. Parameters,
  state and outputs are unchanged. While recording, `hk.remat` and the `hk.scan` over
  repeated shared layers are bypassed (the same values, unrolled) so that no weight
  escapes a nested trace; enter the scope inside the function that `jax.jit`
  traces (e.g. around `model.apply` in a jitted function) to get the weights out of
  a jitted computation.

  Args:
    select: `module_name -> bool`, which attention modules to record; default: the
      cross-attentions (names containing 'cross_attention', e.g.
      'perceiver_encoder/~/cross_attention/attention').

  Yields:
    The list of `(module_name, weights)` pairs, filled as the modules run.
  """
  records = []
  _RECORDER.stack.append((select or _is_cross_attention, records))
  try:
    yield records
  finally:
    _RECORDER.stack.pop()


def recording_attention_weights() -> bool:
  """Whether a `record_attention_weights` scope is active in this thread."""
  return bool(_RECORDER.stack)


def _record(module_name, weights_fn):
  wanted = [records for select, records in _RECORDER.stack if select(module_name)]
  if wanted:
    weights = weights_fn()
    for records in wanted:
      records.append((module_name, weights))


def attention_weights(q, k, attention_mask=None):
  """Softmax attention weights `[B, H, T, S]` (float32) of queries `[B, T, H, D]` and
  keys `[B, S, H, D]`; masked keys get 0 and fully masked query rows are all 0."""
  scale = 1.0 / math.sqrt(q.shape[-1])
  logits = jnp.einsum(
    'bthd,bshd->bhts', q.astype(jnp.float32), k.astype(jnp.float32)
  ) * jnp.float32(scale)
  if attention_mask is None:
    return jax.nn.softmax(logits, axis=-1)
  allowed = attention_mask[:, None, :, :] != 0
  weights = jax.nn.softmax(jnp.where(allowed, logits, -jnp.inf), axis=-1)
  return jnp.where(jnp.any(allowed, axis=-1, keepdims=True), weights, 0.0)


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

  def __init__(
    self,
    num_heads=8,
    init_scale=1.0,
    with_final_bias=True,
    final_init_scale_multiplier=1.0,
    dropout_prob=0.0,
    qk_channels=None,
    v_channels=None,
    output_channels=None,
    name=None,
    *,
    query_chunk_size=None,
    key_chunk_size=None,
  ):
    super().__init__(name=name)
    self._query_chunk_size = check_chunk_size(query_chunk_size, 'query_chunk_size')
    self._key_chunk_size = check_chunk_size(key_chunk_size, 'key_chunk_size')
    if num_heads < 1:
      raise ValueError(f'num_heads must be >= 1, got {num_heads!r}.')
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
        'Attention expects inputs_q [B, T, C] and inputs_kv [B, S, C]; got shapes '
        f'{tuple(inputs_q.shape)} and {tuple(inputs_kv.shape)}.'
      )
    qk_channels = self._qk_channels or inputs_q.shape[-1]
    v_channels = self._v_channels or qk_channels
    output_channels = self._output_channels or v_channels
    _check_divisible(qk_channels, self._num_heads, 'qk_channels')
    _check_divisible(v_channels, self._num_heads, 'v_channels')
    heads = self._num_heads

    batch, q_time, q_channels = inputs_q.shape
    kv_time, kv_channels = inputs_kv.shape[1:]
    qk_depth, v_depth = qk_channels // heads, v_channels // heads
    # Created in this order, the layers are named linear, linear_1, linear_2, linear_3.
    q_layer = conv_1d(qk_channels, init_scale=self._init_scale)
    k_layer = conv_1d(qk_channels, init_scale=self._init_scale)
    v_layer = conv_1d(v_channels, init_scale=self._init_scale)
    o_layer = conv_1d(
      output_channels, with_bias=self._with_final_bias, init_scale=self._final_init_scale
    )
    chunked = self._query_chunk_size is not None or self._key_chunk_size is not None
    recording = bool(_RECORDER.stack)
    sizes = dict(num_queries=q_time, num_keys=kv_time, num_heads=heads)

    def folds(head_channels):
      """Whether folding a key/value projection into the attention is cheaper (in
      blocks, `factorized_attend` takes one head)."""
      return (not chunked or heads == 1) and factorization_saves_work(
        input_channels=kv_channels, head_channels=head_channels, **sizes
      )

    fold_keys, fold_values = folds(qk_depth), folds(v_depth)
    fold_queries = (
      inputs_q is not inputs_kv
      and not recording
      and not fold_keys
      and projection_folding.query_folding_saves_work(
        query_channels=q_channels, head_channels=qk_depth, **sizes
      )
    )
    fold_outputs = (
      not recording
      and not fold_values
      and projection_folding.output_folding_saves_work(
        output_channels=output_channels, head_channels=v_depth, **sizes
      )
    )

    # Parameters are created in the order q, k, v, output on every path.
    # Self-attention: one product with the three projections side by side, where the
    # weights it concatenates at every call are smaller than the activations.
    joint = inputs_q is inputs_kv and not fold_keys
    if joint and batch * q_time >= 2 * qk_channels + v_channels:
      q, k, v = _joint_projection((q_layer, k_layer, v_layer), inputs_q)
      if fold_values:
        v = Projection(*v_layer.parameters(kv_channels, inputs_kv.dtype))
      else:
        v = jnp.reshape(v, [batch, kv_time, heads, v_depth])
      k = jnp.reshape(k, [batch, kv_time, heads, qk_depth])
    else:
      if fold_queries:
        q_params = q_layer.parameters(q_channels, inputs_q.dtype)
      else:
        q = q_layer(inputs_q)

      def project(layer, head_channels, fold):
        """The layer's `Projection` where folding it in is cheaper, else its output."""
        if fold:
          return Projection(*layer.parameters(kv_channels, inputs_kv.dtype))
        return jnp.reshape(layer(inputs_kv), [batch, kv_time, heads, head_channels])

      k = project(k_layer, qk_depth, fold_keys)  # [B, S, H, Dqk] or a Projection.
      v = project(v_layer, v_depth, fold_values)  # [B, S, H, Dv] or a Projection.
    scale = 1.0 / math.sqrt(qk_depth)
    if fold_queries:
      q, k = projection_folding.fold_query_projection(inputs_q, k, *q_params)
    else:
      q = jnp.reshape(q, [batch, q_time, heads, qk_depth])
    if fold_outputs:
      w_o, b_o = o_layer.parameters(v_channels, v.dtype)
      v = projection_folding.fold_output_projection(v, w_o)

    def dense_keys():
      if not isinstance(k, Projection):
        return k
      keys = jnp.einsum('bsc,ck->bsk', inputs_kv, k.w)
      if k.b is not None:
        keys = keys + k.b
      return jnp.reshape(keys, [batch, kv_time, heads, qk_depth])

    if recording:
      _record(
        self.module_name, lambda: attention_weights(q, dense_keys(), attention_mask)
      )
    if isinstance(k, Projection) or isinstance(v, Projection):
      result = factorized_attend(
        q,
        inputs_kv,
        k,
        v,
        dropout_prob=self._dropout_prob,
        attention_mask=attention_mask,
        query_chunk_size=self._query_chunk_size,
        key_chunk_size=self._key_chunk_size,
      )
    else:
      result = attend(
        q,
        k,
        v,
        dropout_prob=self._dropout_prob,
        attention_mask=attention_mask,
        query_chunk_size=self._query_chunk_size,
        key_chunk_size=self._key_chunk_size,
        scale=scale,
      )
    if fold_outputs:
      return projection_folding.sum_heads(result, heads, b_o)
    return o_layer(result)


class MLP(hk.Module):
  """Transformer feed-forward block: Linear(w*C) -> GELU (tanh) -> Linear(C) -> dropout.

  Args:
    widening_factor: w, the hidden width as a multiple of the input channels.
    dropout_prob: dropout rate on the output (training only).
    init_scale: VarianceScaling scale of both layers.
    name: module name.
  """

  def __init__(self, widening_factor=4, dropout_prob=0.0, init_scale=1.0, name=None):
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

  def __init__(
    self,
    widening_factor=4,
    dropout_prob=0.0,
    dropout_attn_prob=0.0,
    num_heads=8,
    att_init_scale=1.0,
    dense_init_scale=1.0,
    qk_channels=None,
    v_channels=None,
    name=None,
    *,
    query_chunk_size=None,
    key_chunk_size=None,
  ):
    super().__init__(name=name)
    self._chunks = dict(query_chunk_size=query_chunk_size, key_chunk_size=key_chunk_size)
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
      **self._chunks,
    )(qkv_inputs, qkv_inputs, attention_mask=attention_mask)
    x = x + _dropout(dropout_prob, attention)
    x = x + MLP(
      widening_factor=self._widening_factor,
      dropout_prob=dropout_prob,
      init_scale=self._dense_init_scale,
    )(layer_norm(x), is_training=is_training)
    return x


CROSS_ATTENTION_SHAPES = ('q', 'kv')


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

  def __init__(
    self,
    widening_factor=1,
    dropout_prob=0.0,
    dropout_attn_prob=0.0,
    num_heads=8,
    att_init_scale=1.0,
    dense_init_scale=1.0,
    shape_for_attn='kv',
    use_query_residual=True,
    qk_channels=None,
    v_channels=None,
    name=None,
    *,
    query_chunk_size=None,
    key_chunk_size=None,
  ):
    super().__init__(name=name)
    self._chunks = dict(query_chunk_size=query_chunk_size, key_chunk_size=key_chunk_size)
    if shape_for_attn not in CROSS_ATTENTION_SHAPES:
      raise ValueError(
        f'Unknown shape_for_attn {shape_for_attn!r}; expected one of '
        f'{CROSS_ATTENTION_SHAPES}.'
      )
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
    if self._shape_for_attn == 'q':
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
      **self._chunks,
    )(layer_norm(inputs_q), layer_norm(inputs_kv), attention_mask=attention_mask)
    attention = _dropout(dropout_prob, attention)
    x = inputs_q + attention if self._use_query_residual else attention
    x = x + MLP(
      widening_factor=self._widening_factor,
      dropout_prob=dropout_prob,
      init_scale=self._dense_init_scale,
    )(layer_norm(x), is_training=is_training)
    return x
