"""The Perceiver AR configurations and inputs shared by the compatibility tests and the
generator of their reference data (`data/perceiver_ar_golden/generate.py`).

Plain data and NumPy only: the generator imports this file beside Google Research's
release, without this project's test dependencies.
"""

import numpy as np

RNG_SEED = 7
INIT_SEED = 3
PARAM_NOISE = 0.1


def perturb(params, seed):
  """`params` plus N(0, PARAM_NOISE^2) noise, drawn module by module in sorted order."""
  rs = np.random.RandomState(seed)
  return {
    module: {
      name: (
        np.asarray(value) + PARAM_NOISE * rs.standard_normal(np.shape(value))
      ).astype(np.asarray(value).dtype)
      for name, value in sorted(params[module].items())
    }
    for module in sorted(params)
  }


# Small odd sizes, distinct per axis, so that swapped axes fail.
_COMMON = dict(
  input_embed_dim=12,
  num_z_channels=12,
  num_transformers_per_block=2,
  cross_attend_widening_factor=2,
  transformer_widening_factor=3,
)

# name -> (constructor keywords, input layout). Layout: batch, length, the valid
# tokens of each row, and the position dimensions of `input_idxs` (0: none).
MODEL_CASES = {
  # Absolute sinusoidal positions counted back from the last token; dropout of every
  # kind in training.
  'absolute_sinusoidal': dict(
    kwargs=dict(
      _COMMON,
      num_classes=13,
      input_idx_size=[-1],
      max_context_length=11,
      position_encoding_type='absolute',
      position_encoding='sinusoidal',
      z_index_dim=5,
      num_cross_attend_heads=3,
      num_transformer_heads=2,
      dropout_prob=0.2,
      latent_dropout_prob=0.3,
      encoder_dropout_prob=0.25,
      final_layer_init_zeros=True,
    ),
    lengths=(11, 8, 4),
    position_dims=0,
    train=True,
  ),
  # Rotary encodings of half the channels of half the heads, positions from data,
  # cross-attention in head groups, an extra cross-attend, shifted query positions.
  'rotary_groups': dict(
    kwargs=dict(
      _COMMON,
      input_embed_dim=16,
      num_classes=11,
      input_idx_size=[-1],
      max_context_length=9,
      position_encoding_type='rotary',
      fraction_to_rotate=0.5,
      fraction_heads_to_rotate=0.5,
      max_wavelength=16,
      use_positions_from_data=True,
      z_index_dim=4,
      num_cross_attend_heads=4,
      num_transformer_heads=2,
      cross_attention_head_group_size=2,
      additional_cross_attend_after_layers=[0],
      initial_query_offsetting=True,
      activation_name='gelu',
      dropout_prob=0.1,
      final_layer_init_zeros=False,
    ),
    lengths=(9, 6),
    position_dims=1,
    train=True,
  ),
  # Rotary positions counted back from the last token (negated), chunked
  # cross-attention in blocks smaller than the inputs (the release's chunking needs
  # sizes that divide the latents and the inputs evenly).
  'rotary_chunked': dict(
    kwargs=dict(
      _COMMON,
      num_classes=7,
      input_idx_size=[-1],
      max_context_length=12,
      position_encoding_type='rotary',
      fraction_to_rotate=1.0,
      max_wavelength=13,
      use_negative_rotary_positions=True,
      z_index_dim=6,
      num_cross_attend_heads=2,
      num_transformer_heads=3,
      chunked_cross_attention=True,
      chunked_cross_query_size=3,
      chunked_cross_key_size=4,
    ),
    lengths=(12, 10, 7),
    position_dims=0,
    train=False,
  ),
  # Three position dimensions from data (as the release's ImageNet model), Fourier
  # tables, an MLP on the initial queries, two latents per position.
  'absolute_mlp_query': dict(
    kwargs=dict(
      _COMMON,
      num_classes=9,
      input_idx_size=[6, 5, 4],
      max_context_length=10,
      position_encoding_type='absolute',
      position_encoding='fourier',
      use_positions_from_data=True,
      z_index_dim=6,
      num_latents_per_position=2,
      num_cross_attend_heads=1,
      num_transformer_heads=4,
      initial_query_embed_style='mlp',
      initial_query_embed_num_layers=2,
    ),
    lengths=(10, 7),
    position_dims=3,
    train=False,
  ),
  # A shared learned initial query, learned (random-initialised) position tables,
  # the 'q' shape for the cross-attention, no query residual, and in training a
  # random subset of the inputs.
  'learned_query': dict(
    kwargs=dict(
      _COMMON,
      num_classes=10,
      input_idx_size=[12],
      max_context_length=11,
      position_encoding_type='absolute',
      position_encoding='random',
      learnable_position_embeddings=True,
      use_positions_from_data=True,
      z_index_dim=3,
      num_cross_attend_heads=2,
      num_transformer_heads=2,
      initial_query_embed_style='learned',
      share_learned_initial_query=True,
      cross_attention_shape_for_attn='q',
      encoder_use_query_residual=False,
      train_input_positions=8,
    ),
    lengths=(11, 9, 5),
    position_dims=1,
    train=True,
  ),
}

# Incremental decoding with memories: (position_encoding_type, memory_type).
CACHE_CASES = {
  f'{position}_{memory}': dict(position_encoding_type=position, memory_type=memory)
  for position in ('absolute', 'rotary')
  for memory in ('kv', 'fixed_size_kv')
}
CACHE_CONTEXT = 7  # Context M of the cache cases.
CACHE_LATENTS = 3  # Latents N of the cache cases.
CACHE_BATCH = 2
CACHE_LAYERS = 2
CACHE_CROSS_HEADS = 2
CACHE_SELF_HEADS = 3
CACHE_CHANNELS = 12
CACHE_CLASSES = 23
CACHE_MAX_START = 17  # Positions start at a random offset below this.


def cache_model_kwargs(position_encoding_type):
  """The model of the cache cases (as in the release's own caching test, smaller)."""
  return dict(
    num_classes=CACHE_CLASSES,
    input_idx_size=[CACHE_MAX_START + CACHE_CONTEXT + 2],
    max_context_length=CACHE_CONTEXT,
    position_encoding_type=position_encoding_type,
    input_embed_dim=CACHE_CHANNELS,
    fraction_to_rotate=0.5,
    max_wavelength=64,
    use_positions_from_data=True,
    num_transformers_per_block=CACHE_LAYERS,
    z_index_dim=CACHE_LATENTS,
    num_z_channels=CACHE_CHANNELS,
    num_cross_attend_heads=CACHE_CROSS_HEADS,
    num_transformer_heads=CACHE_SELF_HEADS,
    final_layer_init_zeros=False,
  )


def cache_inputs():
  """`(tokens [B, M], input_idxs [B, M, 1])`: positions consecutive from a random start."""
  rs = np.random.RandomState(11)
  tokens = rs.randint(3, CACHE_CLASSES, size=(CACHE_BATCH, CACHE_CONTEXT)).astype(
    np.int32
  )
  starts = rs.randint(0, CACHE_MAX_START, size=(CACHE_BATCH,))
  idxs = (np.arange(CACHE_CONTEXT)[None, :] + 1 + starts[:, None]).astype(np.int32)
  return tokens, idxs[..., None]


def cache_schedule():
  """The calls of the cache cases, `[(start, end)]` of the token range each call adds:
  first everything but the last N - 1 tokens (with one latent), then one at a time."""
  first = CACHE_CONTEXT - CACHE_LATENTS + 1
  return [(0, first)] + [(i, i + 1) for i in range(first, CACHE_CONTEXT)]


# The released 131,072-position copy-task model (`random_mirrored_131072` in the
# release's experiment.py): the architecture its checkpoint was trained with.
RELEASE_COPY_131072 = dict(
  num_classes=259,
  input_idx_size=[131073],
  max_context_length=131072,
  input_embed_dim=1024,
  position_encoding='sinusoidal',
  learnable_position_embeddings=False,
  position_encoding_type='absolute',
  fraction_to_rotate=0.5,
  fraction_heads_to_rotate=1.0,
  max_wavelength=131072,
  use_positions_from_data=True,
  num_transformers_per_block=6,
  z_index_dim=1024,
  num_z_channels=1024,
  num_cross_attend_heads=16,
  cross_attention_head_group_size=4,
  num_transformer_heads=16,
  cross_attend_widening_factor=4,
  transformer_widening_factor=4,
  dropout_prob=0.1,
  activation_name='sq_relu',
)


def model_inputs(case):
  """`(tokens [B, M], input_idxs [B, M, I] or None)` of a model case, from its seed."""
  rs = np.random.RandomState(sum(map(ord, case)))
  spec = MODEL_CASES[case]
  num_classes = spec['kwargs']['num_classes']
  length = spec['kwargs']['max_context_length']
  tokens = np.zeros((len(spec['lengths']), length), np.int32)
  for row, valid in enumerate(spec['lengths']):
    tokens[row, :valid] = rs.randint(3, num_classes, size=valid)
  dims = spec['position_dims']
  if not dims:
    return tokens, None
  sizes = [s if s > 0 else length + 1 for s in spec['kwargs']['input_idx_size']]
  idxs = np.stack(
    [rs.randint(1, size, size=tokens.shape) for size in sizes[:dims]], axis=-1
  ).astype(np.int32)
  if dims == 1:
    idxs[..., 0] = np.arange(1, length + 1)[None, :]
  idxs[tokens == 0] = 0
  return tokens, idxs


# Inputs of the mask cases: (latents, latents per position, valid tokens per row).
MASK_CASES = {
  'one_per_position': dict(latents=5, per_position=1, lengths=(9, 6, 3, 1), length=9),
  'two_per_position': dict(latents=6, per_position=2, lengths=(7, 2), length=7),
}
ROTARY_CASES = {
  'full': dict(fraction_to_rotate=1.0, fraction_heads_to_rotate=1.0, max_wavelength=64),
  'half_channels_half_heads': dict(
    fraction_to_rotate=0.5, fraction_heads_to_rotate=0.5, max_wavelength=32
  ),
  'quarter_channels_most_heads': dict(
    fraction_to_rotate=0.34, fraction_heads_to_rotate=0.75, max_wavelength=1000
  ),
}
ROTARY_SHAPE = (2, 5, 4, 6)  # [B, T, H, D]


def mask_tokens(case):
  spec = MASK_CASES[case]
  tokens = np.zeros((len(spec['lengths']), spec['length']), np.int32)
  for row, valid in enumerate(spec['lengths']):
    tokens[row, :valid] = 3 + row + np.arange(valid)
  return tokens


def rotary_inputs():
  rs = np.random.RandomState(5)
  x = rs.standard_normal(ROTARY_SHAPE).astype(np.float32)
  positions = rs.randint(0, 50, size=ROTARY_SHAPE[:2]).astype(np.int32)
  return x, positions
