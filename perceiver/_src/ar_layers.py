"""The layers of Perceiver AR and the stack that runs them.

`Dense`, `SelfAttention` and `CrossAttention` are pre-LayerNorm attention (see
`ar_attention.Attention`) plus a dense block, named and initialised like the release's
(`google-research/perceiver-ar`), so parameter trees are interchangeable. `run_layers`
applies the model's stack of them, with memories, rematerialisation and scanned runs of
self-attentions.

Shape glossary:
  B: batch size.
  N: latents; M: inputs; C: channels.
"""

from typing import Any, List, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver._src.ar_attention import Attention
from perceiver._src.attention import conv_1d


def layer_norm(x):
  """LayerNorm over the last axis (release: `use_fast_variance=True`); bfloat16 inputs
  are normalised in float32 and cast back."""
  module = hk.LayerNorm(
    axis=-1, create_scale=True, create_offset=True, use_fast_variance=True
  )
  if x.dtype == jnp.bfloat16:
    return module(x.astype(jnp.float32)).astype(x.dtype)
  return module(x)


def dropout(rate, x):
  """`hk.dropout` that draws a key whenever one is available, as the release does in
  every call (so the key sequence, and parameter initialisation, match it)."""
  key = hk.maybe_next_rng_key()
  if rate == 0.0:
    return x
  if key is None:
    raise ValueError(f'Dropout with rate {rate} needs an RNG key: pass `rng` to apply.')
  return hk.dropout(key, rate, x)


def activation(name):
  """`'sq_relu'` (`relu(x) ** 2`) or the `jax.nn` function of that name."""
  if name == 'sq_relu':
    return lambda x: jnp.square(jax.nn.relu(x))
  fn = getattr(jax.nn, name, None)
  if not callable(fn):
    raise ValueError(f"Unknown activation_name {name!r}: 'sq_relu' or a jax.nn function.")
  return fn


class Dense(hk.Module):
  """Linear(w * C) -> activation -> Linear(C) -> dropout.

  Args:
    dropout_prob: dropout on the output (training only).
    activation_name: 'sq_relu' (squared ReLU) or a `jax.nn` function name.
    widening_factor: w.
    init_scale: VarianceScaling scale of both layers.
    name: module name.
  """

  def __init__(
    self, dropout_prob, activation_name, widening_factor=4, init_scale=1.0, name=None
  ):
    super().__init__(name=name)
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._init_scale = init_scale
    self._activation = activation(activation_name)

  def __call__(self, x, *, is_training):
    channels = x.shape[-1]
    x = conv_1d(self._widening_factor * channels, init_scale=self._init_scale)(x)
    x = conv_1d(channels, init_scale=self._init_scale)(self._activation(x))
    return dropout(self._dropout_prob if is_training else 0.0, x)


class SelfAttention(hk.Module):
  """`x + Attn(LN(x))`, then `x + Dense(LN(x))`, on `[B, N, C]`.

  Args: as `Attention` and `Dense` (`widening_factor`, `activation_name`,
    `dropout_attn_prob` on the attention weights, `dropout_prob` on the outputs).
  """

  def __init__(
    self,
    dropout_prob,
    position_encoding_type,
    fraction_to_rotate,
    max_wavelength,
    widening_factor=4,
    dropout_attn_prob=0.0,
    num_heads=8,
    att_init_scale=1.0,
    dense_init_scale=1.0,
    activation_name='gelu',
    fraction_heads_to_rotate=1.0,
    name=None,
  ):
    super().__init__(name=name)
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._dropout_attn_prob = dropout_attn_prob
    self._dense_init_scale = dense_init_scale
    self._activation_name = activation_name
    self._attention_kwargs = dict(
      num_heads=num_heads,
      init_scale=att_init_scale,
      position_encoding_type=position_encoding_type,
      fraction_to_rotate=fraction_to_rotate,
      fraction_heads_to_rotate=fraction_heads_to_rotate,
      max_wavelength=max_wavelength,
    )

  def __call__(
    self,
    inputs,
    *,
    is_training,
    memory_type='none',
    mask=None,
    memory=None,
    q_positions=None,
    kv_positions=None,
  ):
    """`(outputs [B, N, C], AttentionState or None)`; arguments as `Attention`."""
    dropout_prob = self._dropout_prob if is_training else 0.0
    normed = layer_norm(inputs)
    attention, state = Attention(
      dropout_prob=self._dropout_attn_prob if is_training else 0.0,
      **self._attention_kwargs,
    )(
      normed,
      normed,
      is_training=is_training,
      memory_type=memory_type,
      mask=mask,
      memory=memory,
      q_positions=q_positions,
      kv_positions=kv_positions,
    )
    x = inputs + dropout(dropout_prob, attention)
    dense = Dense(
      widening_factor=self._widening_factor,
      dropout_prob=dropout_prob,
      init_scale=self._dense_init_scale,
      activation_name=self._activation_name,
    )
    return x + dense(layer_norm(x), is_training=is_training), state


class CrossAttention(hk.Module):
  """`q + Attn(LN(q), LN(kv))` (residual optional), then `x + Dense(LN(x))`.

  Args: as `Attention` and `Dense`, plus `shape_for_attn` ('kv' or 'q': whose
    channels set `qk_channels`), `use_query_residual`, and the attention layout
    (`head_group_size`, `use_chunked_attention`, `query_chunk_size`,
    `key_chunk_size`, see `Attention.__call__`).
  """

  def __init__(
    self,
    dropout_prob,
    position_encoding_type,
    fraction_to_rotate,
    max_wavelength,
    head_group_size,
    use_chunked_attention,
    query_chunk_size=1024,
    key_chunk_size=4096,
    widening_factor=1,
    dropout_attn_prob=0.0,
    num_heads=8,
    att_init_scale=1.0,
    dense_init_scale=1.0,
    shape_for_attn='kv',
    use_query_residual=False,
    activation_name='gelu',
    fraction_heads_to_rotate=1.0,
    name=None,
  ):
    super().__init__(name=name)
    if shape_for_attn not in ('q', 'kv'):
      raise ValueError(
        f"Unknown shape_for_attn {shape_for_attn!r}; expected 'q' or 'kv'."
      )
    self._widening_factor = widening_factor
    self._dropout_prob = dropout_prob
    self._dropout_attn_prob = dropout_attn_prob
    self._dense_init_scale = dense_init_scale
    self._shape_for_attn = shape_for_attn
    self._use_query_residual = use_query_residual
    self._activation_name = activation_name
    self._attention_kwargs = dict(
      num_heads=num_heads,
      init_scale=att_init_scale,
      position_encoding_type=position_encoding_type,
      fraction_to_rotate=fraction_to_rotate,
      fraction_heads_to_rotate=fraction_heads_to_rotate,
      max_wavelength=max_wavelength,
    )
    self._layout = dict(
      head_group_size=head_group_size,
      use_chunked_attention=use_chunked_attention,
      query_chunk_size=query_chunk_size,
      key_chunk_size=key_chunk_size,
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
  ):
    """`(outputs [B, T, Cq], AttentionState or None)`; arguments as `Attention`."""
    dropout_prob = self._dropout_prob if is_training else 0.0
    source = inputs_q if self._shape_for_attn == 'q' else inputs_kv
    attention, state = Attention(
      dropout_prob=self._dropout_attn_prob if is_training else 0.0,
      qk_channels=source.shape[-1],
      output_channels=inputs_q.shape[-1],
      **self._attention_kwargs,
    )(
      layer_norm(inputs_q),
      layer_norm(inputs_kv),
      is_training=is_training,
      memory_type=memory_type,
      mask=mask,
      memory=memory,
      q_positions=q_positions,
      kv_positions=kv_positions,
      **self._layout,
    )
    attention = dropout(dropout_prob, attention)
    x = inputs_q + attention if self._use_query_residual else attention
    dense = Dense(
      widening_factor=self._widening_factor,
      dropout_prob=dropout_prob,
      init_scale=self._dense_init_scale,
      activation_name=self._activation_name,
    )
    return x + dense(layer_norm(x), is_training=is_training), state


def _layer_runs(layers, scan: bool) -> List[Tuple[int, List[Any]]]:
  """`[(index of the first layer, [layers])]`: with `scan`, consecutive
  self-attentions grouped into one run, every other layer on its own."""
  runs = []
  for i, layer in enumerate(layers):
    if (
      scan
      and runs
      and isinstance(layer, SelfAttention)
      and isinstance(runs[-1][1][-1], SelfAttention)
    ):
      runs[-1][1].append(layer)
    else:
      runs.append((i, [layer]))
  return runs


def _scanned_self_attention(
  layers: Sequence[SelfAttention], z, mask, positions, is_training, remat
):
  """Runs self-attention `layers` as one `hk.scan` over their stacked parameters.

  The layers have the same structure, so layer l runs as `layers[0]` with a getter
  that hands it layer l's parameters, sliced from `[L, ...]` stacks; parameter names
  and values are unchanged.
  """
  first = layers[0].module_name + '/'
  per_layer = []
  for layer in layers:
    prefix = layer.module_name + '/'
    per_layer.append(
      {name[len(prefix) :]: value for name, value in layer.params_dict().items()}
    )
  stacked = {name: jnp.stack([p[name] for p in per_layer]) for name in per_layer[0]}

  def step(z, layer_params):
    def getter(next_getter, value, context):
      if context.full_name.startswith(first):
        value = layer_params.get(context.full_name[len(first) :], value)
      return next_getter(value)

    def apply(z):
      with hk.custom_getter(getter):
        return layers[0](
          z,
          is_training=is_training,
          mask=mask,
          q_positions=positions,
          kv_positions=positions,
        )[0]

    return remat(apply)(z), None

  return hk.scan(step, z, stacked)[0]


def run_layers(
  layers,
  z,
  inputs,
  *,
  masks,
  memory,
  memory_type,
  latent_positions,
  input_positions,
  is_training,
  remat,
  scan,
):
  """Applies the attention layers in order to the latents.

  Args:
    layers: `CrossAttention` (to `inputs`) and `SelfAttention` modules.
    z: `[B, N, C]` initial latents.
    inputs: `[B, M, C']` embedded inputs.
    masks: `ar_masks.Masks` (encoder: latents to inputs, processor: latents).
    memory: one `AttentionState` (or None) per layer, or None.
    memory_type: see `ar_attention`.
    latent_positions, input_positions: rotary positions `[B, N]`, `[B, M]` (or None).
    is_training: enables dropout.
    remat: `fn -> fn`, wraps each layer (rematerialisation or the identity).
    scan: run consecutive self-attentions as one `hk.scan` (no memories).

  Returns:
    `(z [B, N, C], [AttentionState or None per layer])`.
  """
  memories = list(memory) if memory is not None else [None] * len(layers)
  states = []
  for start, run in _layer_runs(layers, scan):
    if len(run) > 1:
      z = _scanned_self_attention(
        run, z, masks.processor, latent_positions, is_training, remat
      )
      states += [None] * len(run)
      continue
    layer, layer_memory = run[0], memories[start]
    if isinstance(layer, CrossAttention):
      kv, mask, kv_positions = (inputs,), masks.encoder, input_positions
    else:
      kv, mask, kv_positions = (), masks.processor, latent_positions

    def call(
      z, layer=layer, layer_memory=layer_memory, kv=kv, mask=mask, kvp=kv_positions
    ):
      return layer(
        z,
        *kv,
        is_training=is_training,
        memory_type=memory_type,
        mask=mask,
        memory=layer_memory,
        q_positions=latent_positions,
        kv_positions=kvp,
      )

    z, state = remat(call)(z)
    states.append(state)
  return z, states
