"""Perceiver AR (Hawthorne et al., ICML 2022): long-context autoregressive modelling.

One cross-attention maps a long sequence of M token embeddings to N latents placed at
the sequence's *last* N positions, then a stack of latent self-attentions refines them;
every mask is causal, so latent i predicts the token after its position from the tokens
up to it. Cost is O(M N + L N^2) instead of a decoder Transformer's O(L M^2).

Shape glossary:
  B: batch size.
  M: input positions (the context); E: `input_embed_dim`.
  N: latents (`z_index_dim`); D: `num_z_channels`; U: distinct latent positions.
  K: `num_classes` (the vocabulary); I: position dimensions of `input_idxs`.
"""

from typing import Any, List, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver import position_encoding as position_encoding_lib
from perceiver._src import ar_attention
from perceiver._src import ar_layers
from perceiver._src import ar_masks
from perceiver._src import ar_positions
from perceiver._src.attention import PositionwiseLinear
from perceiver._src.attention import compute_dtype_from
from perceiver._src.attention import compute_dtype_scope
from perceiver._src.attention import conv_1d
from perceiver._src.attention import recording_attention_weights
from perceiver._src.attention import rematerializer

INITIAL_QUERY_EMBED_STYLES = ('none', 'mlp', 'learned')


class Output(NamedTuple):
  """What `PerceiverAR` returns.

  Attributes:
    input_events_logits: `[B, U, K]` logits of the token after each latent position.
    encoder_mask: `[B, 1, N, M]` the cross-attention mask (None for one latent).
    processor_mask: `[B, 1, N, N]` the latent self-attention mask (None for one latent).
    latent_last_steps: `[B, U]` each latent's position, -1 for latents before the
      start of a short sequence (their logits are meaningless).
    perceiver_state: one `AttentionState` per attention layer (None per layer with
      `memory_type='none'`).
  """

  input_events_logits: jax.Array
  encoder_mask: Optional[jax.Array]
  processor_mask: Optional[jax.Array]
  latent_last_steps: jax.Array
  perceiver_state: List[Any]


class PerceiverAR(hk.Module):
  """Perceiver AR over token ids, with the release's keywords and parameter paths.

  Positional keywords and their defaults are those of the release's `PerceiverAR`
  (`google-research/perceiver-ar`), so its checkpoints load unchanged. The keyword-only
  options at the end are additions, all off by default.

  Args:
    num_classes: K, the vocabulary (ids 0 = padding).
    input_idx_size: one table size per position dimension of `input_idxs` (-1: use
      `max_context_length`; absolute position tables only).
    max_context_length: the longest context M the model is built for.
    position_encoding_type: 'absolute' (a position embedding added to each token) or
      'rotary' (rotary encodings of queries and keys in every attention).
    input_embed_dim: E.
    position_encoding: absolute tables: 'sinusoidal', 'linear', 'fourier' or
      'random' (learned from `hk.Embed`'s initialisation).
    learnable_position_embeddings: whether gradients reach the position tables.
    num_transformers_per_block: L, latent self-attention layers.
    z_index_dim: N, latents (the last N positions predict their next tokens).
    num_z_channels: D.
    num_cross_attend_heads, num_transformer_heads: heads of the cross-attention and
      of the self-attentions.
    cross_attend_widening_factor, transformer_widening_factor: dense-block widening.
    initial_query_offsetting: rotary: latent queries use position + 1 (the position
      they predict); `max_wavelength` grows by 1.
    initial_query_embed_style: the latents' initial queries: 'none' (a linear map of
      the last tokens' embeddings), 'mlp' (followed by an MLP of
      `initial_query_embed_num_layers` layers with `initial_query_embed_activation_name`),
      or 'learned' (a learned query, one per latent or `share_learned_initial_query`).
    include_initial_cross_attention: whether the first layer cross-attends the inputs.
    additional_cross_attend_after_layers: indices of self-attention layers followed by
      another cross-attention to the inputs.
    dropout_prob: dropout on attention and dense outputs (training).
    z_pos_enc_init_scale: init scale of the per-position latent code
      (`num_latents_per_position > 1`).
    concat_pos: kept for the release's signature (unused there too).
    cross_attention_shape_for_attn: 'kv' or 'q': which input's width sets the
      cross-attention's query/key channels.
    encoder_use_query_residual: residual around the cross-attention.
    mask_style: 'final_block'.
    latent_dropout_prob: training: drop latents as keys of the self-attentions.
    encoder_dropout_prob: training: drop inputs as keys of the cross-attentions.
    num_latents_per_position: latents sharing a position (their logits are averaged).
    activation_name: dense-block activation ('sq_relu': squared ReLU).
    fraction_to_rotate, fraction_heads_to_rotate, max_wavelength: rotary encodings:
      the share of each head's channels and of the heads rotated, and the longest
      wavelength (>= `max_context_length`).
    cross_attention_head_group_size: cross-attend this many heads at a time (0: all).
    chunked_cross_attention, chunked_cross_query_size, chunked_cross_key_size:
      cross-attend in blocks of queries and keys (online softmax).
    use_positions_from_data: positions come from `input_idxs` (needed for memories);
      otherwise they count back from the last token.
    train_input_positions: training: keep a random subset of this many inputs (0:
      all).
    final_layer_init_zeros: the logits layer starts at zero.
    use_negative_rotary_positions: rotary, positions not from data: negate them.
    name: module name.
    compute_dtype: None / 'float32' or 'bfloat16': compute in bfloat16 with float32
      parameters (logits are float32).
    remat: rematerialise each attention layer in the backward pass.
    remat_policy: with `remat`: None / 'full', 'dots' or 'dots_no_batch'
      (`attention.rematerializer`).
    scan_layers: run consecutive self-attention layers as one `hk.scan` over their
      stacked parameters (compiled once instead of L times), when no memory is used.
  """

  def __init__(
    self,
    num_classes,
    input_idx_size,
    max_context_length,
    position_encoding_type,
    input_embed_dim=1024,
    position_encoding='sinusoidal',
    learnable_position_embeddings=False,
    num_transformers_per_block=12,
    z_index_dim=1024,
    num_z_channels=1024,
    num_cross_attend_heads=1,
    num_transformer_heads=8,
    cross_attend_widening_factor=1,
    transformer_widening_factor=1,
    initial_query_offsetting=False,
    initial_query_embed_style='none',
    share_learned_initial_query=False,
    initial_query_embed_activation_name='sq_relu',
    initial_query_embed_num_layers=2,
    include_initial_cross_attention=True,
    additional_cross_attend_after_layers=None,
    dropout_prob=0.0,
    z_pos_enc_init_scale=0.02,
    concat_pos=True,
    cross_attention_shape_for_attn='kv',
    encoder_use_query_residual=True,
    mask_style='final_block',
    latent_dropout_prob=0.0,
    encoder_dropout_prob=0.0,
    num_latents_per_position=1,
    activation_name='sq_relu',
    fraction_to_rotate=0.25,
    fraction_heads_to_rotate=1.0,
    max_wavelength=8192,
    cross_attention_head_group_size=0,
    chunked_cross_attention=False,
    chunked_cross_query_size=1024,
    chunked_cross_key_size=4096,
    use_positions_from_data=False,
    train_input_positions=0,
    final_layer_init_zeros=True,
    use_negative_rotary_positions=False,
    name='perceiver_ar',
    *,
    compute_dtype=None,
    remat=False,
    remat_policy=None,
    scan_layers=False,
  ):
    super().__init__(name=name)
    del concat_pos  # Unused, as in the release.
    if position_encoding_type not in ar_attention.POSITION_ENCODING_TYPES:
      raise ValueError(
        f'Unknown position_encoding_type {position_encoding_type!r}; expected one of '
        f'{ar_attention.POSITION_ENCODING_TYPES}.'
      )
    if initial_query_embed_style not in INITIAL_QUERY_EMBED_STYLES:
      raise ValueError(
        f'Unknown initial_query_embed_style {initial_query_embed_style!r}; expected '
        f'one of {INITIAL_QUERY_EMBED_STYLES}.'
      )
    if mask_style not in ar_masks.MASK_STYLES:
      raise ValueError(
        f'Unknown mask_style {mask_style!r}; expected one of {ar_masks.MASK_STYLES}.'
      )
    for arg_name, heads in (
      ('num_transformer_heads', num_transformer_heads),
      ('num_cross_attend_heads', num_cross_attend_heads),
    ):
      if heads < 1 or num_z_channels % heads:
        raise ValueError(
          f'num_z_channels ({num_z_channels}) must be divisible by {arg_name} ({heads}).'
        )
    if train_input_positions and train_input_positions >= max_context_length:
      raise ValueError(
        f'train_input_positions ({train_input_positions}) must be smaller than '
        f'max_context_length ({max_context_length}).'
      )
    if initial_query_offsetting:
      max_wavelength += 1  # Query positions grow by one (see __call__).
    if position_encoding_type == 'rotary' and max_wavelength < max_context_length:
      raise ValueError(
        f'max_wavelength ({max_wavelength}) must not be smaller than '
        f'max_context_length ({max_context_length}).'
      )
    after = sorted(additional_cross_attend_after_layers or [])
    if len(set(after)) != len(after) or any(
      not 0 <= i < num_transformers_per_block for i in after
    ):
      raise ValueError(
        'additional_cross_attend_after_layers must hold distinct layer indices in '
        f'[0, {num_transformers_per_block}), got {additional_cross_attend_after_layers!r}.'
      )

    self._num_classes = num_classes
    self._z_index_dim = z_index_dim
    self._rotary = position_encoding_type == 'rotary'
    self._learnable_position_embeddings = learnable_position_embeddings
    self._use_positions_from_data = use_positions_from_data
    self._use_negative_rotary_positions = use_negative_rotary_positions
    self._train_input_positions = train_input_positions
    self._initial_query_offsetting = initial_query_offsetting
    self._initial_query_embed_style = initial_query_embed_style
    self._share_learned_initial_query = share_learned_initial_query
    self._num_latents_per_position = num_latents_per_position
    self._mask_style = mask_style
    self._latent_dropout_prob = latent_dropout_prob
    self._encoder_dropout_prob = encoder_dropout_prob
    self._include_initial_cross_attention = include_initial_cross_attention
    self._compute_dtype = compute_dtype_from(compute_dtype)
    self._remat = rematerializer(remat, remat_policy)
    self._scan_layers = bool(scan_layers)

    # Modules are created in the release's order, which fixes their names.
    if initial_query_embed_style == 'mlp':
      act = ar_layers.activation(initial_query_embed_activation_name)
      layers = []
      for _ in range(initial_query_embed_num_layers):
        layers += [conv_1d(num_z_channels), act]
      self.q_embed_z_linear = hk.Sequential(layers)
    elif initial_query_embed_style == 'learned':
      self.q_embed_learned = hk.get_parameter(
        'q_embed_learned',
        [1 if share_learned_initial_query else z_index_dim, num_z_channels],
        init=hk.initializers.TruncatedNormal(stddev=0.02),
      )
    self.input_embed = hk.Embed(vocab_size=num_classes, embed_dim=input_embed_dim)
    self.position_embeddings = []
    if not self._rotary:
      for idx_size in input_idx_size:
        if idx_size == -1:
          if use_positions_from_data:
            raise ValueError(
              f'input_idx_size={input_idx_size!r} has an unknown size (-1), which '
              'use_positions_from_data cannot use: the table size is undefined.'
            )
          idx_size = max_context_length
        self.position_embeddings.append(
          hk.Embed(
            vocab_size=idx_size,
            embed_dim=input_embed_dim,
            w_init=ar_positions.table_initializer(
              position_encoding, input_embed_dim, idx_size
            ),
          )
        )

    attention_kwargs = dict(
      dropout_prob=dropout_prob,
      position_encoding_type=position_encoding_type,
      fraction_to_rotate=fraction_to_rotate,
      fraction_heads_to_rotate=fraction_heads_to_rotate,
      max_wavelength=max_wavelength,
      activation_name=activation_name,
    )

    def make_cross_attention():
      return ar_layers.CrossAttention(
        widening_factor=cross_attend_widening_factor,
        num_heads=num_cross_attend_heads,
        shape_for_attn=cross_attention_shape_for_attn,
        use_query_residual=encoder_use_query_residual,
        head_group_size=cross_attention_head_group_size,
        use_chunked_attention=chunked_cross_attention,
        query_chunk_size=chunked_cross_query_size,
        key_chunk_size=chunked_cross_key_size,
        **attention_kwargs,
      )

    if include_initial_cross_attention:
      self.initial_cross_attn = make_cross_attention()
    self.z_linear = conv_1d(num_z_channels)
    if num_latents_per_position > 1:
      self.z_pos_enc = position_encoding_lib.TrainablePositionEncoding(
        index_dim=num_latents_per_position,
        num_channels=num_z_channels,
        init_scale=z_pos_enc_init_scale,
        name='z_pos_enc',
      )
    self.latent_transformer = []
    for i in range(num_transformers_per_block):
      self.latent_transformer.append(
        ar_layers.SelfAttention(
          widening_factor=transformer_widening_factor,
          num_heads=num_transformer_heads,
          **attention_kwargs,
        )
      )
      if i in after:
        self.latent_transformer.append(make_cross_attention())
    self.final_layer = PositionwiseLinear(
      num_classes,
      w_init=jnp.zeros
      if final_layer_init_zeros
      else hk.initializers.VarianceScaling(1.0),
      name='logits',
    )

  @property
  def num_attention_layers(self) -> int:
    """Attention layers, hence entries of a memory (`perceiver_state`)."""
    return len(self.latent_transformer) + int(self._include_initial_cross_attention)

  def _positions(self, inputs, input_idxs):
    """`[B, M]` rotary positions: from data, or counted back from the last token."""
    if input_idxs is not None:
      if input_idxs.shape[2] != 1:
        raise ValueError(
          'Rotary encodings take one position dimension; input_idxs has shape '
          f'{tuple(input_idxs.shape)}.'
        )
      return input_idxs[:, :, 0]
    positions = self._terminal_relative_positions(inputs)
    return -positions if self._use_negative_rotary_positions else positions

  def _terminal_relative_positions(self, inputs):
    """`[B, M]`: 0 at each sequence's last token, counting up towards its start."""
    batch, length = inputs.shape
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    return ar_masks.terminal_relative_positions(positions, inputs)

  def _embed(self, inputs, input_idxs):
    """`(embedded [B, M, E], rotary positions [B, M] or None)`."""
    if self._rotary:
      positions = self._positions(inputs, input_idxs)
      return self.input_embed(inputs), positions
    if input_idxs is None:
      input_idxs = self._terminal_relative_positions(inputs)[..., None]
    if input_idxs.shape[-1] != len(self.position_embeddings):
      raise ValueError(
        f'input_idxs has {input_idxs.shape[-1]} position dimensions; input_idx_size '
        f'gives {len(self.position_embeddings)}.'
      )
    encodings = sum(
      table(input_idxs[..., i]) for i, table in enumerate(self.position_embeddings)
    )
    if not self._learnable_position_embeddings:
      encodings = jax.lax.stop_gradient(encodings)
    return self.input_embed(inputs) + encodings, None

  def __call__(
    self,
    inputs,
    input_idxs,
    is_training,
    memory_type='none',
    memory=None,
    z_index_dim=None,
    use_remat=False,
  ):
    """Logits of the next token at the last `z_index_dim` positions.

    Args:
      inputs: `[B, M]` token ids, 0 for padding after the tokens.
      input_idxs: `[B, M, I]` positions (with `use_positions_from_data`), or None.
      is_training: enables dropout, latent and encoder dropout.
      memory_type: 'none', 'kv', 'fixed_size_kv' or 'fixed_size_rotated_kv' (see
        `ar_attention`).
      memory: a list of one `AttentionState` (or None) per attention layer from an
        earlier call, to continue a sequence incrementally; needs
        `use_positions_from_data`.
      z_index_dim: latents for this call (default: the constructor's); with 1 no
        mask is used and the latent sits at position M - 1.
      use_remat: rematerialise each layer (as the constructor's `remat`).

    Returns:
      An `Output`.
    """
    if inputs.ndim != 2:
      raise ValueError(
        f'PerceiverAR expects inputs [B, M], got shape {tuple(inputs.shape)}.'
      )
    batch, num_inputs = inputs.shape
    z_index_dim = z_index_dim or self._z_index_dim
    if self._use_positions_from_data:
      if (
        input_idxs is None or input_idxs.ndim != 3 or input_idxs.shape[:2] != inputs.shape
      ):
        raise ValueError(
          'use_positions_from_data needs input_idxs of shape [B, M, I] matching inputs '
          f'{tuple(inputs.shape)}, got '
          f'{None if input_idxs is None else tuple(input_idxs.shape)}.'
        )
    else:
      if memory is not None:
        raise ValueError('A memory needs use_positions_from_data=True.')
      input_idxs = None
    if memory is not None and len(memory) != self.num_attention_layers:
      raise ValueError(
        f'memory has {len(memory)} entries; the model has {self.num_attention_layers} '
        'attention layers.'
      )
    if is_training and memory is not None:
      raise ValueError('A memory cannot be used in training.')

    if z_index_dim == 1:
      masks = ar_masks.Masks(encoder=None, processor=None)
      last_steps = jnp.full([batch, 1], num_inputs - 1)
    else:
      if num_inputs < z_index_dim:
        raise ValueError(
          f'inputs have {num_inputs} positions, fewer than z_index_dim ({z_index_dim}).'
        )
      masks, last_steps = ar_masks.make_block_causal_masks(
        inputs,
        latent_index_dim=z_index_dim,
        latents_per_position=self._num_latents_per_position,
        mask_style=self._mask_style,
        rng_key=hk.maybe_next_rng_key(),
        latent_dropout_prob=self._latent_dropout_prob,
        is_training=is_training,
      )

    remat = rematerializer(True) if use_remat else self._remat
    with compute_dtype_scope(self._compute_dtype):
      embedded, positions = self._embed(inputs, input_idxs)
      if self._compute_dtype is not None:
        embedded = embedded.astype(self._compute_dtype)
      take = jax.vmap(lambda x, i: jnp.take(x, i, axis=0))
      latent_positions = take(positions, last_steps) if self._rotary else None
      if self._initial_query_embed_style == 'learned':
        if not self._share_learned_initial_query and memory is not None:
          raise ValueError('Unshared learned queries do not support memories.')
        repeats = z_index_dim if self._share_learned_initial_query else 1
        query = jnp.tile(self.q_embed_learned, (batch, repeats, 1)).astype(embedded.dtype)
      else:
        query = self.z_linear(take(embedded, last_steps))
      if self._num_latents_per_position > 1:
        if memory is not None:
          raise ValueError('num_latents_per_position > 1 does not support memories.')
        query = jnp.repeat(query, self._num_latents_per_position, axis=1)
        codes = self.z_pos_enc(batch_size=batch).astype(query.dtype)
        query = query + jnp.tile(
          codes, [1, z_index_dim // self._num_latents_per_position, 1]
        )
      if self._initial_query_embed_style == 'mlp':
        query = self.q_embed_z_linear(query)
      if self._initial_query_offsetting and latent_positions is not None:
        latent_positions = latent_positions + 1

      if is_training:
        if self._train_input_positions:
          masks, embedded, positions = ar_masks.select_input_positions(
            masks, inputs, embedded, positions, self._train_input_positions
          )
        # A key is drawn in every training call, as the release does.
        masks = ar_masks.drop_inputs(
          masks,
          hk.maybe_next_rng_key(),
          self._encoder_dropout_prob,
          (batch, z_index_dim, embedded.shape[1]),
        )

      layers = []
      if self._include_initial_cross_attention:
        layers.append(self.initial_cross_attn)
      layers += self.latent_transformer
      z, states = ar_layers.run_layers(
        layers,
        query,
        embedded,
        masks=masks,
        memory=memory,
        memory_type=memory_type,
        latent_positions=latent_positions,
        input_positions=positions,
        is_training=is_training,
        remat=remat,
        scan=(
          self._scan_layers
          and memory_type == 'none'
          and not hk.running_init()
          and not recording_attention_weights()
        ),
      )

      z = ar_layers.layer_norm(z)
      if self._num_latents_per_position > 1:
        z = hk.AvgPool(
          window_shape=(1, self._num_latents_per_position, 1),
          strides=(1, self._num_latents_per_position, 1),
          padding='VALID',
        )(z)
      logits = self.final_layer(z)
    return Output(
      input_events_logits=logits.astype(jnp.float32),
      encoder_mask=masks.encoder,
      processor_mask=masks.processor,
      latent_last_steps=last_steps,
      perceiver_state=states,
    )
