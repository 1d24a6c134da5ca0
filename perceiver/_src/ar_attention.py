"""The attention of Perceiver AR, with key/value memories for incremental decoding.

`Attention` is named and initialised like the release's (`google-research/perceiver-ar`),
so parameter trees are interchangeable. The attention itself is
`perceiver._src.dot_product_attention.attend` (dense or chunked); this module adds
rotary position encodings, head groups and the memories. The layers built on it are in
`ar_layers`.

Inside `perceiver._src.attention.record_attention_weights` each attention also records
its softmax weights (e.g. the cross-attention of the latents over the context).

A memory (`AttentionState`) holds a layer's keys and values of earlier steps:

  'kv': the new keys and values are appended to the memory (it grows by the number
      of new elements each call; no mask is allowed).
  'fixed_size_kv': the memory has a fixed length S; the new elements are rolled in at
      its end, dropping the oldest ones, and `memory_mask` marks the valid entries.
      A mask given with the call covers the new elements (the last ones of the
      memory); the older valid entries are visible to every query.
  'fixed_size_rotated_kv': as 'fixed_size_kv', but the memory keeps the keys after
      their rotary encoding, so that the memory's keys are not encoded again at every
      step (the same values; not in the release, whose memories keep raw keys).

Shape glossary:
  B: batch size.
  T: queries; S: keys and values (after the memory, if any).
  H: heads; Dqk, Dv: channels per head of queries/keys and of values.
"""

from typing import NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver._src import ar_positions
from perceiver._src.attention import _record
from perceiver._src.attention import attention_weights
from perceiver._src.attention import conv_1d
from perceiver._src.attention import recording_attention_weights
from perceiver._src.dot_product_attention import attend

POSITION_ENCODING_TYPES = ('absolute', 'rotary')
MEMORY_TYPES = ('none', 'kv', 'fixed_size_kv', 'fixed_size_rotated_kv')


class AttentionState(NamedTuple):
  """One attention layer's keys and values, kept for later steps.

  Attributes:
    k: `[B, S, H, Dqk]` keys (before any rotary encoding, but with
      'fixed_size_rotated_kv').
    v: `[B, S, H, Dv]` values.
    kv_positions: `[B, S]` positions of the keys (rotary encodings), or None.
    memory_mask: `[B, S]` 1.0 for valid entries ('fixed_size_kv'), or None.
  """

  k: jax.Array
  v: jax.Array
  kv_positions: Optional[jax.Array]
  memory_mask: Optional[jax.Array]


def _roll_in(buffer, new):
  """`buffer` `[B, S, ...]` with `new` `[B, n, ...]` appended, its first n dropped."""
  n, size = new.shape[1], buffer.shape[1]
  if n > size:
    raise ValueError(f'{n} new entries do not fit a fixed-size memory of {size} entries.')
  if n == size:
    return new.astype(buffer.dtype)
  return jnp.concatenate([buffer[:, n:], new.astype(buffer.dtype)], axis=1)


class Attention(hk.Module):
  """Multi-head attention with rotary or no position encoding and optional memory.

  Args:
    dropout_prob: dropout on the attention weights (training only).
    position_encoding_type: 'absolute' (positions are in the inputs) or 'rotary'.
    fraction_to_rotate: share of each rotated head's channels that is rotated.
    max_wavelength: longest rotary wavelength.
    num_heads: H.
    init_scale: VarianceScaling scale of the projections.
    with_final_bias: whether the output projection has a bias.
    final_init_scale_multiplier: multiplies `init_scale` for the output projection.
    qk_channels, v_channels, output_channels: H * Dqk, H * Dv and the output width
      (defaults: the query channels, `qk_channels`, `v_channels`).
    fraction_heads_to_rotate: share of the heads (of each head group) rotated.
    name: module name.
  """

  def __init__(
    self,
    dropout_prob,
    position_encoding_type,
    fraction_to_rotate,
    max_wavelength,
    num_heads=8,
    init_scale=1.0,
    with_final_bias=True,
    final_init_scale_multiplier=1.0,
    qk_channels=None,
    v_channels=None,
    output_channels=None,
    fraction_heads_to_rotate=1.0,
    name=None,
  ):
    super().__init__(name=name)
    if position_encoding_type not in POSITION_ENCODING_TYPES:
      raise ValueError(
        f'Unknown position_encoding_type {position_encoding_type!r}; expected one of '
        f'{POSITION_ENCODING_TYPES}.'
      )
    self._num_heads = num_heads
    self._init_scale = init_scale
    self._with_final_bias = with_final_bias
    self._final_init_scale = final_init_scale_multiplier * init_scale
    self._dropout_prob = dropout_prob
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._output_channels = output_channels
    self._rotary = position_encoding_type == 'rotary'
    self._rotary_kwargs = dict(
      fraction_to_rotate=fraction_to_rotate,
      fraction_heads_to_rotate=fraction_heads_to_rotate,
      max_wavelength=max_wavelength,
    )

  def __call__(
    self,
    inputs_q,
    inputs_kv,
    *,
    is_training,
    memory_type='none',
    mask=None,
    memory=None,
    q_positions=None,
    kv_positions=None,
    head_group_size=0,
    use_chunked_attention=False,
    query_chunk_size=1024,
    key_chunk_size=4096,
  ):
    """Attends from `inputs_q` `[B, T, Cq]` to `inputs_kv` `[B, S, Ckv]`.

    Args:
      inputs_q, inputs_kv: queries' and keys'/values' inputs.
      is_training: enables dropout.
      memory_type: 'none', 'kv' or 'fixed_size_kv' (module docstring).
      mask: `[B, 1, T, S]` 1.0 where attention is allowed, or None.
      memory: an `AttentionState` of earlier steps, or None.
      q_positions, kv_positions: `[B, T]`, `[B, S]` positions (rotary only).
      head_group_size: attend this many heads at a time (0: all at once); less
        memory for the `[B, H, T, S]` weights, the same values.
      use_chunked_attention: attend in blocks of `query_chunk_size` queries and
        `key_chunk_size` keys (online softmax), the same values.

    Returns:
      `(outputs [B, T, output_channels], AttentionState or None)`: the state holds
      the keys and values including the memory ('none': None).
    """
    if memory_type not in MEMORY_TYPES:
      raise ValueError(
        f'Unknown memory_type {memory_type!r}; expected one of {MEMORY_TYPES}.'
      )
    heads = self._num_heads
    qk_channels = self._qk_channels or inputs_q.shape[-1]
    v_channels = self._v_channels or qk_channels
    output_channels = self._output_channels or v_channels
    for label, channels in (('qk_channels', qk_channels), ('v_channels', v_channels)):
      if channels % heads:
        raise ValueError(
          f'{label} ({channels}) must be divisible by num_heads ({heads}).'
        )

    batch, q_time = inputs_q.shape[:2]
    kv_time = inputs_kv.shape[1]
    q = conv_1d(qk_channels, init_scale=self._init_scale)(inputs_q)
    k = conv_1d(qk_channels, init_scale=self._init_scale)(inputs_kv)
    v = conv_1d(v_channels, init_scale=self._init_scale)(inputs_kv)
    q = jnp.reshape(q, [batch, q_time, heads, qk_channels // heads])
    k = jnp.reshape(k, [batch, kv_time, heads, qk_channels // heads])
    v = jnp.reshape(v, [batch, kv_time, heads, v_channels // heads])

    if head_group_size:
      if use_chunked_attention:
        raise ValueError('head_group_size and chunked attention cannot be combined.')
      if heads % head_group_size:
        raise ValueError(
          f'num_heads ({heads}) must be a multiple of head_group_size ({head_group_size}).'
        )
    group = head_group_size or heads
    rotary = self._rotary
    if rotary and (q_positions is None or kv_positions is None):
      raise ValueError('Rotary attention needs both q_positions and kv_positions.')

    def rotate(x, positions):
      """Rotary encoding of `x` `[B, T, H, D]`, per head group (as the release)."""
      if not rotary:
        return x
      parts = [
        ar_positions.apply_rotary_to_subset(
          x[:, :, i : i + group], positions, **self._rotary_kwargs
        )
        for i in range(0, heads, group)
      ]
      return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=2)

    q = rotate(q, q_positions)
    if memory_type == 'fixed_size_rotated_kv':
      k = rotate(k, kv_positions)  # Encoded once, before entering the memory.
    memory_mask = None
    if memory is not None:
      if memory_type == 'none':
        raise ValueError("A memory was passed with memory_type='none'.")
      if memory_type == 'kv':
        if mask is not None:
          raise ValueError(
            "memory_type='kv' takes no mask: every memory entry is visible."
          )
        k = jnp.concatenate([memory.k, k.astype(memory.k.dtype)], axis=1)
        v = jnp.concatenate([memory.v, v.astype(memory.v.dtype)], axis=1)
        if kv_positions is not None:
          kv_positions = jnp.concatenate([memory.kv_positions, kv_positions], axis=1)
        if memory.memory_mask is not None:
          memory_mask = jnp.concatenate(
            [memory.memory_mask, jnp.ones([batch, kv_time], memory.memory_mask.dtype)],
            axis=1,
          )
      else:
        if memory.memory_mask is None:
          raise ValueError(f'memory_type={memory_type!r} needs memory.memory_mask.')
        k = _roll_in(memory.k, k)
        v = _roll_in(memory.v, v)
        if kv_positions is not None:
          kv_positions = _roll_in(memory.kv_positions, kv_positions)
        memory_mask = _roll_in(
          memory.memory_mask, jnp.ones([batch, kv_time], memory.memory_mask.dtype)
        )
        valid = jnp.broadcast_to(
          memory_mask[:, None, None, :] > 0, (batch, 1, q_time, memory_mask.shape[1])
        )
        if mask is not None:
          # The call's mask covers the new (last) entries; older ones stay visible.
          older = memory_mask.shape[1] - mask.shape[-1]
          mask = jnp.pad(
            mask > 0, [(0, 0), (0, 0), (0, 0), (older, 0)], constant_values=True
          )
          valid = valid & mask
        mask = valid.astype(jnp.float32)
    keys = k if memory_type == 'fixed_size_rotated_kv' else rotate(k, kv_positions)

    if recording_attention_weights():
      # Inside `attention.record_attention_weights`: the weights [B, H, T, S].
      _record(
        self.module_name,
        lambda: attention_weights(q, keys, None if mask is None else mask[:, 0]),
      )

    def attend_heads(q, k, v):
      """Attention of a group of heads `[B, T|S, h, D]` -> `[B, T, h * Dv]`."""
      rate = self._dropout_prob if is_training else 0.0
      chunks = {}
      if use_chunked_attention:
        chunks = dict(query_chunk_size=query_chunk_size, key_chunk_size=key_chunk_size)
        if is_training:
          # The release draws a key per block of queries and keys (dropout of rate 0).
          blocks = -(-q.shape[1] // query_chunk_size) * -(-k.shape[1] // key_chunk_size)
          for _ in range(blocks):
            hk.maybe_next_rng_key()
      elif is_training and rate == 0.0:
        hk.maybe_next_rng_key()  # The release draws a dropout key even at rate 0.
      return attend(
        q,
        k,
        v,
        dropout_prob=rate,
        attention_mask=None if mask is None else mask[:, 0],
        **chunks,
      )

    result = (
      jnp.concatenate(
        [
          attend_heads(
            q[:, :, i : i + group], keys[:, :, i : i + group], v[:, :, i : i + group]
          )
          for i in range(0, heads, group)
        ],
        axis=-1,
      )
      if group < heads
      else attend_heads(q, keys, v)
    )

    outputs = conv_1d(
      output_channels, with_bias=self._with_final_bias, init_scale=self._final_init_scale
    )(result)
    state = None
    if memory_type != 'none':
      state = AttentionState(k=k, v=v, kv_positions=kv_positions, memory_mask=memory_mask)
    return outputs, state
