"""The Perceiver encoder: cross-attends from a latent array to the inputs, then runs a
latent Transformer, optionally alternating several cross-attends with latent Transformers
as in the original Perceiver (Jaegle et al. 2021, paper 1).

Shape glossary:
  B: batch size.
  M: number of input elements; C: input channels.
  N: number of latents (`z_index_dim`); D: latent channels (`num_z_channels`).
"""

from typing import List

import haiku as hk
import jax.numpy as jnp

from perceiver import position_encoding
from perceiver.attention import CrossAttention
from perceiver.attention import SelfAttention
from perceiver.attention import make_cross_attention_mask

CROSS_ATTEND_PLACEMENTS = ("start", "interleaved")


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
    raise ValueError(f"num_cross_attends must be >= 1, got {num_cross_attends!r}.")
  if placement not in CROSS_ATTEND_PLACEMENTS:
    raise ValueError(f"Unknown cross_attend_placement {placement!r}; expected one of "
                     f"{CROSS_ATTEND_PLACEMENTS}.")
  if num_blocks == 0:
    return [num_cross_attends]
  counts = [0] * num_blocks
  if placement == "start":
    counts[0] = num_cross_attends
    return counts
  if num_cross_attends > num_blocks:
    raise ValueError(
        f"cross_attend_placement='interleaved' needs num_cross_attends "
        f"({num_cross_attends}) <= num_blocks ({num_blocks}).")
  for i in range(num_cross_attends):
    counts[(i * num_blocks) // num_cross_attends] += 1
  return counts


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
  """

  def __init__(self, num_self_attends_per_block=6, num_blocks=8, z_index_dim=512,
               num_z_channels=1024, qk_channels=None, v_channels=None,
               num_cross_attend_heads=1, num_self_attend_heads=8,
               cross_attend_widening_factor=1, self_attend_widening_factor=1,
               dropout_prob=0.0, z_pos_enc_init_scale=0.02,
               cross_attention_shape_for_attn="kv", use_query_residual=True,
               name="perceiver_encoder", *, num_cross_attends=1,
               cross_attend_placement="start", share_cross_attend_weights=True,
               share_self_attend_weights=True):
    super().__init__(name=name)
    if num_z_channels % num_self_attend_heads != 0:
      raise ValueError(f"num_z_channels ({num_z_channels}) must be divisible by "
                       f"num_self_attend_heads ({num_self_attend_heads}).")
    if num_z_channels % num_cross_attend_heads != 0:
      raise ValueError(f"num_z_channels ({num_z_channels}) must be divisible by "
                       f"num_cross_attend_heads ({num_cross_attend_heads}).")
    if num_blocks < 0:
      raise ValueError(f"num_blocks must be >= 0, got {num_blocks!r}.")
    if num_self_attends_per_block < 0:
      raise ValueError(
          f"num_self_attends_per_block must be >= 0, got {num_self_attends_per_block!r}.")
    # Validates num_cross_attends and cross_attend_placement.
    self._schedule = cross_attend_schedule(num_cross_attends, num_blocks,
                                           cross_attend_placement)
    # The official Perceiver wrapper reads this to tell preprocessors to flatten.
    self._input_is_1d = True
    self._num_blocks = num_blocks
    self._num_cross_attends = num_cross_attends

    self.z_pos_enc = position_encoding.TrainablePositionEncoding(
        index_dim=z_index_dim, num_channels=num_z_channels,
        init_scale=z_pos_enc_init_scale)

    def make_cross_attend():
      return CrossAttention(
          dropout_prob=dropout_prob,
          num_heads=num_cross_attend_heads,
          widening_factor=cross_attend_widening_factor,
          shape_for_attn=cross_attention_shape_for_attn,
          qk_channels=qk_channels,
          v_channels=v_channels,
          use_query_residual=use_query_residual)

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
      return [SelfAttention(num_heads=num_self_attend_heads, dropout_prob=dropout_prob,
                            qk_channels=qk_channels, v_channels=v_channels,
                            widening_factor=self_attend_widening_factor)
              for _ in range(num_self_attends_per_block)]

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
      raise ValueError(f"PerceiverEncoder expects inputs of shape [B, M, C], got "
                       f"shape {tuple(inputs.shape)}.")
    attention_mask = None
    if input_mask is not None:
      if tuple(input_mask.shape) != tuple(inputs.shape[:2]):
        raise ValueError(f"input_mask must have shape {tuple(inputs.shape[:2])} [B, M], "
                         f"got {tuple(input_mask.shape)}.")
      attention_mask = make_cross_attention_mask(
          query_mask=jnp.ones(z.shape[:2], dtype=jnp.int32), kv_mask=input_mask)

    cross_attends = iter(self.cross_attends)

    def cross_attend(z, count):
      for _ in range(count):
        z = next(cross_attends)(z, inputs, is_training=is_training,
                                attention_mask=attention_mask)
      return z

    if not self.blocks:
      return cross_attend(z, self._schedule[0])
    for count, block in zip(self._schedule, self.blocks):
      z = cross_attend(z, count)
      for self_attend in block:
        z = self_attend(z, is_training=is_training)
    return z
