"""The Perceiver encoder: cross-attends from a latent array to the inputs, then runs a
latent Transformer, optionally alternating several cross-attends with latent Transformers
as in the original Perceiver (Jaegle et al. 2021, paper 1).

Shape glossary:
  B: batch size.
  M: number of input elements; C: input channels.
  N: number of latents (`z_index_dim`); D: latent channels (`num_z_channels`).
"""

from typing import Any, List, Sequence, Tuple

import haiku as hk
import jax.numpy as jnp

from perceiver import position_encoding
from perceiver._src.attention import CrossAttention
from perceiver._src.attention import SelfAttention
from perceiver._src.attention import compute_dtype_from
from perceiver._src.attention import compute_dtype_scope
from perceiver._src.attention import recording_attention_weights
from perceiver._src.attention import rematerializer

CROSS_ATTEND_PLACEMENTS = ('start', 'interleaved')


def cross_attend_schedule(num_cross_attends, num_blocks, placement):
  """How many cross-attends run before each latent Transformer block.

  Args:
    num_cross_attends: total number of cross-attends (>= 1).
    num_blocks: number of latent Transformer blocks.
    placement: 'start' (all cross-attends before the first block) or 'interleaved'
      (spread evenly, the first one before block 0; at most one before each block).

  Returns:
    A list of `num_blocks` ints summing to `num_cross_attends` (a single entry when
    `num_blocks` is 0).
  """
  if num_cross_attends < 1:
    raise ValueError(f'num_cross_attends must be >= 1, got {num_cross_attends!r}.')
  if placement not in CROSS_ATTEND_PLACEMENTS:
    raise ValueError(
      f'Unknown cross_attend_placement {placement!r}; expected one of '
      f'{CROSS_ATTEND_PLACEMENTS}.'
    )
  if num_blocks == 0:
    return [num_cross_attends]
  counts = [0] * num_blocks
  if placement == 'start':
    counts[0] = num_cross_attends
    return counts
  if num_cross_attends > num_blocks:
    raise ValueError(
      f"cross_attend_placement='interleaved' needs num_cross_attends "
      f'({num_cross_attends}) <= num_blocks ({num_blocks}).'
    )
  for i in range(num_cross_attends):
    counts[(i * num_blocks) // num_cross_attends] += 1
  return counts


def group_repeats(
  ops: Sequence[Any], max_period: int = 2
) -> List[Tuple[Tuple[Any, ...], int]]:
  """Run-length groups of a sequence: `[(unit, repeats), ...]` concatenating to `ops`.

  A unit is 1 to `max_period` consecutive items; at each position the unit covering the
  most items by repeating (items compared by identity) is chosen, the shorter on ties.
  E.g. `[c0, b, b, b]` -> `[((c0,), 1), ((b,), 3)]` and `[c0, b, c1, b, c1, b]` ->
  `[((c0,), 1), ((b, c1), 2), ((b,), 1)]`.
  """
  groups = []
  i = 0
  while i < len(ops):
    best_period, best_repeats = 1, 1
    for period in range(1, max_period + 1):
      unit = ops[i : i + period]
      if len(unit) < period:
        break
      repeats = 1
      while i + (repeats + 1) * period <= len(ops) and all(
        a is b for a, b in zip(ops[i + repeats * period :], unit)
      ):
        repeats += 1
      if period * repeats > best_period * best_repeats and repeats > 1:
        best_period, best_repeats = period, repeats
    groups.append((tuple(ops[i : i + best_period]), best_repeats))
    i += best_period * best_repeats
  return groups


class PerceiverEncoder(hk.Module):
  """The Perceiver encoder.

  With the defaults this is exactly the official Perceiver IO encoder: one cross-attend
  from the learned latent array to the inputs, then `num_blocks` applications of one
  block of `num_self_attends_per_block` self-attention layers (weights shared by blocks).

  The original Perceiver (paper 1) interleaves several cross-attends with the latent
  Transformer blocks. With `num_cross_attends=k`:
    * `cross_attend_placement='interleaved'` spreads the k cross-attends evenly, one
      before a block; 'start' runs all k before the first block.
    * `share_cross_attend_weights=True` gives the first cross-attend its own weights
      (`cross_attention`) and shares one set (`cross_attention_1`) among the others;
      False gives each its own (`cross_attention`, ..., `cross_attention_{k-1}`).
    * `share_self_attend_weights=True` shares the latent Transformer across blocks;
      False gives block b its own layers (`self_attention_{b * L + l}`).

  Args:
    num_self_attends_per_block: L, self-attention layers per block.
    num_blocks: number of latent Transformer blocks.
    z_index_dim: N, number of latents.
    num_z_channels: D, latent channels.
    qk_channels: query/key channels of all attention layers (default per layer).
    v_channels: value channels of all attention layers (default per layer).
    num_cross_attend_heads: heads of the cross-attends.
    num_self_attend_heads: heads of the self-attends.
    cross_attend_widening_factor: MLP widening in the cross-attends.
    self_attend_widening_factor: MLP widening in the self-attends.
    dropout_prob: dropout rate in all layers (training only).
    z_pos_enc_init_scale: init stddev of the latent array.
    cross_attention_shape_for_attn: 'kv' or 'q', see `CrossAttention`.
    use_query_residual: residual connection around the cross-attention.
    num_cross_attends: k, the total number of cross-attends.
    cross_attend_placement: 'start' or 'interleaved'.
    share_cross_attend_weights: share weights among cross-attends after the first.
    share_self_attend_weights: share latent Transformer weights across blocks.
    name: module name.
    unroll_shared_layers: trace every application of weight-shared layers separately.
      By default (False) a run of repeated applications of the same layers, in
      units of one or two consecutive layers (e.g. the `num_blocks` applications of a
      shared latent Transformer, or a shared cross-attend alternating with a shared
      latent Transformer), runs in a `hk.scan`, so compilation time does not grow with
      the length of the run; the results are the same. Sequences whose repeats have a
      longer period (`group_repeats`) are traced layer by layer.
    compute_dtype: None / '' (off: compute in the parameters' float32) or 'bfloat16':
      run the layers in bfloat16 with float32 parameters (see
      `attention.compute_dtype_scope`); the latents are returned in float32.
    remat: rematerialise each layer in the backward pass (`hk.remat`): less memory,
      about one more forward pass of compute.
    remat_policy: with `remat`, what each layer keeps for the backward pass: None /
      'full' (its input only), 'dots' (also every matrix product's output: only
      elementwise work is recomputed) or 'dots_no_batch' (projection and MLP products,
      not attention products); see `attention.rematerializer`.
    attention_query_chunk_size, attention_key_chunk_size: compute attention in blocks
      of this many queries / keys (None or 0: off); bounds the memory of the
      cross-attend over very large inputs (see `attention.attend`).
    scan_layers: run the `num_self_attends_per_block` self-attends of a block as one
      `hk.scan` over their parameters, stacked `[L, ...]` at every call, so a deep
      block is traced and compiled once instead of once per layer. Parameter names,
      values and dropout draws are unchanged; outputs agree to float32 rounding. Off
      by default: it about halves the compile time of the 26-layer language model but
      costs some step time and memory (docs/performance.md).
      Ignored with `unroll_shared_layers=True`.
  """

  def __init__(
    self,
    num_self_attends_per_block=6,
    num_blocks=8,
    z_index_dim=512,
    num_z_channels=1024,
    qk_channels=None,
    v_channels=None,
    num_cross_attend_heads=1,
    num_self_attend_heads=8,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=1,
    dropout_prob=0.0,
    z_pos_enc_init_scale=0.02,
    cross_attention_shape_for_attn='kv',
    use_query_residual=True,
    name='perceiver_encoder',
    *,
    num_cross_attends=1,
    cross_attend_placement='start',
    share_cross_attend_weights=True,
    share_self_attend_weights=True,
    unroll_shared_layers=False,
    compute_dtype=None,
    remat=False,
    attention_query_chunk_size=None,
    attention_key_chunk_size=None,
    scan_layers=False,
    remat_policy=None,
  ):
    super().__init__(name=name)
    self._scan_layers = bool(scan_layers)
    self._compute_dtype = compute_dtype_from(compute_dtype)
    self._remat = rematerializer(remat, remat_policy)
    self._unroll_shared_layers = bool(unroll_shared_layers)
    chunks = dict(
      query_chunk_size=attention_query_chunk_size or None,
      key_chunk_size=attention_key_chunk_size or None,
    )
    for arg_name, value in (
      ('num_self_attend_heads', num_self_attend_heads),
      ('num_cross_attend_heads', num_cross_attend_heads),
      ('num_z_channels', num_z_channels),
    ):
      if value < 1:
        raise ValueError(f'{arg_name} must be a positive integer, got {value!r}.')
    if num_z_channels % num_self_attend_heads != 0:
      raise ValueError(
        f'num_z_channels ({num_z_channels}) must be divisible by '
        f'num_self_attend_heads ({num_self_attend_heads}).'
      )
    if num_z_channels % num_cross_attend_heads != 0:
      raise ValueError(
        f'num_z_channels ({num_z_channels}) must be divisible by '
        f'num_cross_attend_heads ({num_cross_attend_heads}).'
      )
    if num_blocks < 0:
      raise ValueError(f'num_blocks must be >= 0, got {num_blocks!r}.')
    if num_self_attends_per_block < 0:
      raise ValueError(
        f'num_self_attends_per_block must be >= 0, got {num_self_attends_per_block!r}.'
      )
    # Validates num_cross_attends and cross_attend_placement.
    self._schedule = cross_attend_schedule(
      num_cross_attends, num_blocks, cross_attend_placement
    )
    # The official Perceiver wrapper reads this to tell preprocessors to flatten.
    self._input_is_1d = True
    self._num_blocks = num_blocks
    self._num_cross_attends = num_cross_attends

    self.z_pos_enc = position_encoding.TrainablePositionEncoding(
      index_dim=z_index_dim, num_channels=num_z_channels, init_scale=z_pos_enc_init_scale
    )

    def make_cross_attend():
      return CrossAttention(
        dropout_prob=dropout_prob,
        num_heads=num_cross_attend_heads,
        widening_factor=cross_attend_widening_factor,
        shape_for_attn=cross_attention_shape_for_attn,
        qk_channels=qk_channels,
        v_channels=v_channels,
        use_query_residual=use_query_residual,
        **chunks,
      )

    # The first cross-attend keeps the official name and attribute.
    self.cross_attend = make_cross_attend()
    self.cross_attends: List[CrossAttention] = [self.cross_attend]
    if num_cross_attends > 1:
      if share_cross_attend_weights:
        shared = make_cross_attend()
        self.cross_attends += [shared] * (num_cross_attends - 1)
      else:
        self.cross_attends += [make_cross_attend() for _ in range(num_cross_attends - 1)]

    def make_block():
      return [
        SelfAttention(
          num_heads=num_self_attend_heads,
          dropout_prob=dropout_prob,
          qk_channels=qk_channels,
          v_channels=v_channels,
          widening_factor=self_attend_widening_factor,
          **chunks,
        )
        for _ in range(num_self_attends_per_block)
      ]

    # The first block keeps the official attribute name.
    self.self_attends = make_block()
    if share_self_attend_weights or num_blocks <= 1:
      self.blocks = [self.self_attends] * num_blocks
    else:
      self.blocks = [self.self_attends] + [make_block() for _ in range(num_blocks - 1)]

  def latents(self, inputs):
    """The initial latent array `[B, N, D]` for a batch of inputs `[B, ...]`."""
    return self.z_pos_enc(batch_size=inputs.shape[0])

  def __call__(self, inputs, z, *, is_training, input_mask=None):
    """Encodes `inputs` `[B, M, C]` into latents `[B, N, D]`, starting from `z`.

    Args:
      inputs: `[B, M, C]` preprocessed inputs.
      z: `[B, N, D]` initial latents (see `latents`).
      is_training: enables dropout.
      input_mask: optional `[B, M]` mask, nonzero for inputs to attend to.
    """
    if inputs.ndim != 3:
      raise ValueError(
        f'PerceiverEncoder expects inputs of shape [B, M, C], got '
        f'shape {tuple(inputs.shape)}.'
      )
    if inputs.shape[0] == 0 or inputs.shape[1] == 0:
      raise ValueError(
        f'PerceiverEncoder got inputs of shape {tuple(inputs.shape)}: the batch B '
        'and the number of inputs M must be at least 1.'
      )
    attention_mask = None
    if input_mask is not None:
      if tuple(input_mask.shape) != tuple(inputs.shape[:2]):
        raise ValueError(
          f'input_mask must have shape {tuple(inputs.shape[:2])} [B, M], '
          f'got {tuple(input_mask.shape)}.'
        )
      # Every latent sees the same inputs: one [B, 1, M] row, broadcast over latents.
      attention_mask = input_mask[:, None, :]

    output_dtype = z.dtype
    if self._compute_dtype is not None:
      inputs = inputs.astype(self._compute_dtype)
      z = z.astype(self._compute_dtype)

    def layer_fn(layer):
      """`z -> z` for one cross-attend module or one block (a list of self-attends)."""
      if (
        isinstance(layer, list)
        and len(layer) > 1
        and self._scan_layers
        and not self._unroll_shared_layers
        and not hk.running_init()
        and not recording_attention_weights()
      ):
        return self._scanned_block(layer, is_training=is_training)
      if isinstance(layer, list):
        fns = [
          self._remat(lambda z, sa=sa: sa(z, is_training=is_training)) for sa in layer
        ]
      else:
        fns = [
          self._remat(
            lambda z: layer(
              z, inputs, is_training=is_training, attention_mask=attention_mask
            )
          )
        ]

      def apply(z):
        for fn in fns:
          z = fn(z)
        return z

      return apply

    with compute_dtype_scope(self._compute_dtype):
      for unit, repeats in self._layer_groups():
        fns = [layer_fn(layer) for layer in unit]

        def unit_fn(z, fns=fns):
          for fn in fns:
            z = fn(z)
          return z

        if (
          repeats == 1
          or self._unroll_shared_layers
          or hk.running_init()
          or recording_attention_weights()
        ):
          # Parameters are created on the first application, unrolled.
          for _ in range(repeats):
            z = unit_fn(z)
        else:
          z, _ = hk.scan(lambda z, _, f=unit_fn: (f(z), None), z, None, length=repeats)
    if self._compute_dtype is not None:
      z = z.astype(output_dtype)
    return z

  def _scanned_block(self, layers, *, is_training):
    """`z -> z` running the self-attends `layers` as one `hk.scan` over their stacked
    parameters: the layer is traced (and compiled) once instead of `len(layers)` times.

    Every layer has the same structure, so the parameters of layer l are read by running
    `layers[0]` with a getter that hands it layer l's values, sliced from `[L, ...]`
    stacks of the layers' parameters. Parameter names and values are unchanged.
    """
    first = layers[0].module_name + '/'
    per_layer = []
    for layer in layers:
      prefix = layer.module_name + '/'
      per_layer.append(
        {name[len(prefix) :]: value for name, value in layer.params_dict().items()}
      )
    for layer, params in zip(layers[1:], per_layer[1:]):
      if params.keys() != per_layer[0].keys():
        missing = sorted(per_layer[0].keys() ^ params.keys())
        raise ValueError(
          f'scan_layers: the parameters of {layer.module_name} do not match those of '
          f'{layers[0].module_name}; differing: {missing}.'
        )
    stacked = {
      name: jnp.stack([params[name] for params in per_layer])  # [L, ...]
      for name in per_layer[0]
    }

    def step(z, layer_params):
      def getter(next_getter, value, context):
        if context.full_name.startswith(first):
          value = layer_params.get(context.full_name[len(first) :], value)
        return next_getter(value)

      def apply(z):
        with hk.custom_getter(getter):
          return layers[0](z, is_training=is_training)

      return self._remat(apply)(z), None

    return lambda z: hk.scan(step, z, stacked)[0]

  def _layer_groups(self):
    """The encoder's layers in order, grouped into runs of weight-shared repeats."""
    cross_attends = iter(self.cross_attends)
    ops = []
    if not self.blocks:
      ops += [next(cross_attends) for _ in range(self._schedule[0])]
    for count, block in zip(self._schedule, self.blocks):
      ops += [next(cross_attends) for _ in range(count)]
      if block:
        ops.append(block)
    return group_repeats(ops)
