"""Sequences, positions and block-causal masks of Perceiver AR.

Sequences are token ids `[B, M]` whose padding (id 0) comes after the tokens; a
sequence's length is the index of its first 0. The N latents sit at the *last* N
positions of each sequence (`mask_style='final_block'`): latent i belongs to position
`length - N + i` and predicts the token after it, so the encoder mask lets it see the
inputs up to and including its position, and the processor mask lets it see the
latents at the same or earlier positions. Latents that would fall before the start of
a short sequence get position -1: they see no input and no other latent.

Shape glossary:
  B: batch size.
  M: input positions.
  N: latents (`z_index_dim`); U: distinct latent positions (`N / latents_per_position`).
"""

from typing import NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp

MASK_STYLES = ('final_block',)


class Masks(NamedTuple):
  """Block-causal attention masks (1.0 where attention is allowed).

  Attributes:
    encoder: `[B, 1, N, M]` latents to inputs.
    processor: `[B, 1, N, N]` latents to latents.
  """

  encoder: Optional[jax.Array]
  processor: Optional[jax.Array]


def sequence_length(tokens):
  """The number of tokens before the first padding id (0) of `tokens` `[M]`."""
  first_zero = jnp.argmax(tokens == 0)
  return jnp.where((first_zero == 0) & (tokens[0] != 0), tokens.shape[0], first_zero)


def truncate_sequence(tokens):
  """`tokens` `[M]` with its last token replaced by padding (0)."""
  length = sequence_length(tokens)
  return tokens.at[jnp.maximum(0, length - 1)].set(0)


def terminal_relative_positions(positions, tokens):
  """Positions counted back from each sequence's last token.

  Row `b` of `positions` `[B, M]` is reversed and rolled so that its last token gets
  `positions[b, 0]` (0 for `arange` positions), the one before it `positions[b, 1]`,
  and so on; entries past the end of the sequence are don't-cares.
  """

  def one(pos, seq):
    return jnp.roll(jnp.flip(pos), sequence_length(seq), axis=0)

  return jax.vmap(one)(positions, tokens)


def latent_last_steps(tokens, num_positions):
  """`[B, U]` positions of the latents: the last U token positions of each sequence,
  -1 where a sequence is shorter than U."""
  lengths = jax.vmap(sequence_length)(tokens)  # [B]
  offsets = jnp.arange(-num_positions, 0, dtype=jnp.int32)
  return jnp.maximum(lengths[:, None].astype(jnp.int32) + offsets[None, :], -1)


def _pairwise(query, key, fn):
  """`[B, 1, Tq, Tk]` float32 of `fn(query[b, i], key[b, j])`."""
  return fn(query[:, :, None], key[:, None, :])[:, None].astype(jnp.float32)


def make_block_causal_masks(
  tokens,
  *,
  latent_index_dim,
  latents_per_position=1,
  mask_style='final_block',
  rng_key=None,
  latent_dropout_prob=0.0,
  is_training=False,
):
  """Block-causal masks with the latents at the final positions of each sequence.

  The encoder mask lets latent i see input j iff `j <= position_i` and token j is
  not padding; the processor mask lets latent i see latent k iff `position_k <=
  position_i` and latent k has a valid position (>= 0). In training, latents are
  dropped as keys with probability `latent_dropout_prob` (they then influence no
  other latent). Every latent always sees itself.

  Args:
    tokens: `[B, M]` token ids, 0 for padding after the tokens.
    latent_index_dim: N.
    latents_per_position: latents sharing each position (N must be a multiple).
    mask_style: 'final_block' (the only style of the release).
    rng_key: key for latent dropout; the release draws one here in every call, and
      splits it the same way (training with latent dropout needs it).
    latent_dropout_prob: probability of dropping a latent as a key (training only).
    is_training: enables latent dropout.

  Returns:
    `(Masks, latent_last_steps)`: masks `[B, 1, N, M]` and `[B, 1, N, N]` (float32),
    and the `[B, U]` positions of the latents.
  """
  if mask_style not in MASK_STYLES:
    raise ValueError(f'Unknown mask_style {mask_style!r}; expected one of {MASK_STYLES}.')
  if latent_index_dim % latents_per_position:
    raise ValueError(
      f'z_index_dim ({latent_index_dim}) must be a multiple of '
      f'num_latents_per_position ({latents_per_position}).'
    )
  batch, num_inputs = tokens.shape
  last_steps = latent_last_steps(tokens, latent_index_dim // latents_per_position)
  all_positions = jnp.repeat(last_steps, latents_per_position, axis=1)  # [B, N]
  input_ids = jnp.broadcast_to(jnp.arange(num_inputs), (batch, num_inputs))

  encoder = _pairwise(all_positions, input_ids, jnp.greater_equal)
  encoder = encoder * (tokens > 0)[:, None, None, :].astype(jnp.float32)
  processor = _pairwise(all_positions, all_positions, jnp.greater_equal)
  processor = processor * (all_positions >= 0)[:, None, None, :].astype(jnp.float32)
  if is_training and latent_dropout_prob > 0.0:
    if rng_key is None:
      raise ValueError(
        f'latent_dropout_prob={latent_dropout_prob} needs an RNG key: pass `rng` to apply.'
      )
    # The release splits off a key for per-example latent steps first (unused here).
    rng_key, _ = jax.random.split(rng_key)
    _, dropout_key = jax.random.split(rng_key)
    keep = jax.random.bernoulli(
      dropout_key, 1.0 - latent_dropout_prob, shape=[batch, latent_index_dim]
    )
    processor = processor * keep[:, None, None, :].astype(jnp.float32)
  diagonal = jnp.arange(latent_index_dim)
  processor = processor.at[..., diagonal, diagonal].set(1.0)
  return Masks(encoder=encoder, processor=processor), last_steps


def select_input_positions(masks, tokens, embedded, positions, count):
  """Training: keeps `count` random inputs per example (padding last).

  Args:
    masks: `Masks`; the encoder mask's columns are selected with the inputs.
    tokens: `[B, M]` token ids.
    embedded: `[B, M, C]` embedded inputs.
    positions: `[B, M]` rotary positions, or None.
    count: inputs kept.

  Returns:
    `(masks, embedded [B, count, C], positions [B, count] or None)`; one Haiku key is
    drawn per example (`hk.vmap` with split keys, as the release).
  """

  def select(tokens, embedded, encoder_mask, positions):
    order = jax.random.permutation(hk.next_rng_key(), jnp.arange(tokens.shape[0]))
    order = order[:count]
    order = order[jnp.argsort(tokens[order] == 0, stable=True)]
    return (
      encoder_mask[:, :, order],
      embedded[order],
      None if positions is None else positions[order],
    )

  encoder, embedded, positions = hk.vmap(select, split_rng=not hk.running_init())(
    tokens, embedded, masks.encoder, positions
  )
  return Masks(encoder=encoder, processor=masks.processor), embedded, positions


def drop_inputs(masks, rng_key, rate, shape):
  """Training: removes each input from every latent's view with probability `rate`
  (the release's `encoder_dropout_prob`); `masks.encoder` may be None (one latent).

  Args:
    masks: `Masks`.
    rng_key: the key of the draw.
    rate: the probability of dropping an input.
    shape: `(B, N, M)`.

  Returns:
    `Masks` with the encoder mask `[B, 1, N, M]` (unchanged when `rate` is 0).
  """
  if rate <= 0.0:
    return masks
  if rng_key is None:
    raise ValueError(f'encoder_dropout_prob={rate} needs an RNG key in training.')
  batch, num_latents, num_inputs = shape
  keep = jax.random.bernoulli(rng_key, 1.0 - rate, shape=(batch, num_inputs))
  keep = jnp.broadcast_to(
    keep[:, None, None, :].astype(jnp.float32), (batch, 1, num_latents, num_inputs)
  )
  encoder = keep if masks.encoder is None else masks.encoder * keep
  return Masks(encoder=encoder, processor=masks.processor)
