"""Perceiver IO decoders: build output queries and cross-attend from them to the latents.

Shape glossary:
  B: batch size.
  N: number of latents; D: latent channels.
  O: number of output queries (the product of `output_index_dims`, or the number of
     subsampled points); E: query channels; K: output channels.

A decoder has three parts, called by the `Perceiver` wrapper in this order:
  `decoder_query(inputs, modality_sizes, inputs_without_pos, subsampled_points)` ->
  queries `[B, O, E]`; `output_shape(inputs)`; `__call__(query, z, *, is_training,
  query_mask=None)` -> outputs.
"""

import abc

import haiku as hk
import jax.numpy as jnp
import numpy as np

from perceiver import position_encoding
from perceiver._src.attention import CrossAttention
from perceiver._src.attention import PositionwiseLinear
from perceiver._src.attention import compute_dtype_from
from perceiver._src.attention import compute_dtype_scope
from perceiver._src.attention import rematerializer
from perceiver.io_processors import restructure


class AbstractPerceiverDecoder(hk.Module, metaclass=abc.ABCMeta):
  """Abstract Perceiver decoder."""

  @abc.abstractmethod
  def decoder_query(
    self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None
  ):
    """Returns the output queries `[B, O, E]`."""

  @abc.abstractmethod
  def output_shape(self, inputs):
    """Returns `(output shape, output modality sizes or None)`."""

  @abc.abstractmethod
  def __call__(self, query, z, *, is_training, query_mask=None):
    """Decodes the latents `z` `[B, N, D]` with `query` `[B, O, E]`."""


class ProjectionDecoder(AbstractPerceiverDecoder):
  """Mean of the latents, then a zero-initialised linear layer (`logits`) -> `[B, K]`.

  This is the original Perceiver's classifier head (paper 1).

  Args:
    num_classes: K.
    final_avg_before_project: kept for interface compatibility; the latents are always
      averaged before the projection.
    name: module name.
  """

  def __init__(
    self, num_classes, final_avg_before_project=False, name='projection_decoder'
  ):
    super().__init__(name=name)
    self._final_avg_before_project = final_avg_before_project
    self._num_classes = num_classes
    self.final_layer = hk.Linear(num_classes, w_init=jnp.zeros, name='logits')

  def decoder_query(
    self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None
  ):
    return None

  def output_shape(self, inputs):
    return ((inputs.shape[0], self._num_classes), None)

  def __call__(self, query, z, *, is_training, query_mask=None):
    z = jnp.mean(z, axis=1, dtype=z.dtype)  # [B, D]
    return self.final_layer(z)  # [B, K]


DECODER_POSITION_ENCODING_TYPES = ('trainable', 'fourier', 'none')


class BasicDecoder(AbstractPerceiverDecoder):
  """Cross-attention decoder: queries built from position encodings of the outputs.

  Args:
    output_num_channels: K, channels of the final projection `output`.
    position_encoding_type: 'trainable', 'fourier' or 'none' (queries supplied by the
      caller, as `MultimodalDecoder` does).
    output_index_dims: the index dimensions of the output (e.g. `(H, W)`).
    subsampled_index_dims: the index dimensions actually decoded when subsampling.
    num_z_channels: D (kept for interface compatibility).
    qk_channels: query/key channels of the cross-attention.
    v_channels: value channels of the cross-attention.
    use_query_residual: residual connection from the queries.
    output_w_init: initialiser of the final projection.
    concat_preprocessed_input: prepend the inputs without position features to the
      queries (e.g. optical flow).
    num_heads: cross-attention heads.
    name: module name.
    final_project: whether to apply the final `output` projection.
    exact_subsampled_positions: how `subsampled_points` map to Fourier query positions.
      False (default, as the official release): index i of a dimension of size n maps to
      `-1 + 2 i / n`. True: to the full grid's `-1 + 2 i / (n - 1)`, so decoding in
      chunks of subsampled points reproduces the full decoding exactly.
    compute_dtype: None / '' (off) or 'bfloat16': decode in bfloat16 with float32
      parameters (see `attention.compute_dtype_scope`); outputs keep the query dtype.
    remat: rematerialise the cross-attention in the backward pass (`hk.remat`).
    remat_policy: with `remat`, what is kept for the backward pass (None / 'full',
      'dots', 'dots_no_batch'; see `attention.rematerializer`).
    attention_query_chunk_size, attention_key_chunk_size: compute the attention in
      blocks of this many queries / latents (None or 0: off), e.g. to decode hundreds
      of thousands of output points in bounded memory (see `attention.attend`).
    **position_encoding_kwargs: `trainable_position_encoding_kwargs`,
      `fourier_position_encoding_kwargs`, `project_pos_dim`.
  """

  def __init__(
    self,
    output_num_channels,
    position_encoding_type='trainable',
    output_index_dims=None,
    subsampled_index_dims=None,
    num_z_channels=1024,
    qk_channels=None,
    v_channels=None,
    use_query_residual=False,
    output_w_init=None,
    concat_preprocessed_input=False,
    num_heads=1,
    name='basic_decoder',
    final_project=True,
    *,
    exact_subsampled_positions=False,
    compute_dtype=None,
    remat=False,
    attention_query_chunk_size=None,
    attention_key_chunk_size=None,
    remat_policy=None,
    **position_encoding_kwargs,
  ):
    super().__init__(name=name)
    self._compute_dtype = compute_dtype_from(compute_dtype)
    self._remat = rematerializer(remat, remat_policy)
    self._chunks = dict(
      query_chunk_size=attention_query_chunk_size or None,
      key_chunk_size=attention_key_chunk_size or None,
    )
    if position_encoding_type not in DECODER_POSITION_ENCODING_TYPES:
      raise ValueError(
        f'Unknown position_encoding_type {position_encoding_type!r}; '
        f'expected one of {DECODER_POSITION_ENCODING_TYPES}.'
      )
    self._position_encoding_type = position_encoding_type
    self.output_pos_enc = None
    if position_encoding_type != 'none':
      # output_index_dims may be None when the queries come from elsewhere (e.g.
      # FlowDecoder); decoder_query then raises if it is asked to build queries.
      self.output_pos_enc = position_encoding.build_position_encoding(
        position_encoding_type, index_dims=output_index_dims, **position_encoding_kwargs
      )
    self._output_index_dim = output_index_dims
    if subsampled_index_dims is None:
      subsampled_index_dims = output_index_dims
    self._subsampled_index_dims = subsampled_index_dims
    self._output_num_channels = output_num_channels
    self._output_w_init = output_w_init
    self._use_query_residual = use_query_residual
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._final_project = final_project
    self._num_heads = num_heads
    self._concat_preprocessed_input = concat_preprocessed_input
    self._exact_subsampled_positions = exact_subsampled_positions

  def output_shape(self, inputs):
    return (
      (inputs.shape[0], self._subsampled_index_dims, self._output_num_channels),
      None,
    )

  def _subsampled_positions(self, subsampled_points):
    """Flat indices `[O]` into `output_index_dims` -> coordinates `[O, d]` in [-1, 1]."""
    dims = tuple(self._output_index_dim)
    subsampled_points = jnp.asarray(subsampled_points)
    if subsampled_points.ndim != 1:
      raise ValueError(
        'subsampled_points must be a 1D array of flat indices into '
        f'output_index_dims={dims}, got shape '
        f'{tuple(subsampled_points.shape)}.'
      )
    idx = jnp.stack(jnp.unravel_index(subsampled_points, dims), axis=1)  # [O, d]
    if self._exact_subsampled_positions:
      denom = jnp.array([max(d - 1, 1) for d in dims])
    else:
      denom = jnp.array(dims)
    return -1 + 2 * idx / denom[None, :]

  def decoder_query(
    self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None
  ):
    if self._position_encoding_type == 'none':
      raise ValueError(
        "BasicDecoder with position_encoding_type='none' builds no "
        'queries; pass queries to __call__ directly.'
      )
    if self._output_index_dim is None:
      raise ValueError(
        'BasicDecoder needs output_index_dims to build queries with '
        f'position_encoding_type={self._position_encoding_type!r}.'
      )
    batch_size = inputs.shape[0]
    if subsampled_points is not None:
      if self._position_encoding_type == 'trainable':
        # A learned embedding is indexed by position: take the subsampled rows.
        pos_emb = self.output_pos_enc(batch_size=batch_size)
        pos_emb = jnp.take(pos_emb, jnp.asarray(subsampled_points), axis=1)
      else:
        pos = self._subsampled_positions(subsampled_points)
        pos = jnp.broadcast_to(pos[None], (batch_size,) + pos.shape)
        pos_emb = self.output_pos_enc(batch_size=batch_size, pos=pos)
        pos_emb = jnp.reshape(pos_emb, [pos_emb.shape[0], -1, pos_emb.shape[-1]])
    else:
      pos_emb = self.output_pos_enc(batch_size=batch_size)
    if self._concat_preprocessed_input:
      if inputs_without_pos is None:
        raise ValueError(
          'inputs_without_pos is required when concat_preprocessed_input=True, got None.'
        )
      pos_emb = jnp.concatenate([inputs_without_pos, pos_emb], axis=-1)
    return pos_emb

  def __call__(self, query, z, *, is_training, query_mask=None):
    """Decodes `z` `[B, N, D]` with `query` `[B, O, E]` -> `[B, O, K]`."""
    if query.ndim != 3:
      raise ValueError(f'query must have shape [B, O, E], got {tuple(query.shape)}.')
    attention_mask = None
    if query_mask is not None:
      if tuple(query_mask.shape) != tuple(query.shape[:2]):
        raise ValueError(
          f'query_mask must have shape {tuple(query.shape[:2])} [B, O], '
          f'got {tuple(query_mask.shape)}.'
        )
      # Every latent is visible: one [B, O, 1] column, broadcast over the latents.
      attention_mask = query_mask[:, :, None]
    output_dtype = query.dtype
    if self._compute_dtype is not None:
      query = query.astype(self._compute_dtype)
      z = z.astype(self._compute_dtype)
    with compute_dtype_scope(self._compute_dtype):
      decoding_cross_attn = CrossAttention(
        dropout_prob=0.0,
        num_heads=self._num_heads,
        widening_factor=1,
        shape_for_attn='kv',
        qk_channels=self._qk_channels,
        v_channels=self._v_channels,
        use_query_residual=self._use_query_residual,
        **self._chunks,
      )
      final_layer = PositionwiseLinear(
        self._output_num_channels, w_init=self._output_w_init, name='output'
      )
      decode = lambda query, z: decoding_cross_attn(
        query, z, is_training=is_training, attention_mask=attention_mask
      )
      output = self._remat(decode)(query, z)
      if self._final_project:
        output = final_layer(output)
    if self._compute_dtype is not None:
      output = output.astype(output_dtype)
    return output


class ClassificationDecoder(AbstractPerceiverDecoder):
  """A `BasicDecoder` with a single query, returning logits `[B, num_classes]`.

  Args:
    num_classes: K.
    name: module name.
    **decoder_kwargs: passed to `BasicDecoder` (e.g. `position_encoding_type`,
      `trainable_position_encoding_kwargs`, `num_heads`).
  """

  def __init__(self, num_classes, name='classification_decoder', **decoder_kwargs):
    super().__init__(name=name)
    self._num_classes = num_classes
    self.decoder = BasicDecoder(
      output_index_dims=(1,), output_num_channels=num_classes, **decoder_kwargs
    )

  def decoder_query(
    self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None
  ):
    return self.decoder.decoder_query(
      inputs, modality_sizes, inputs_without_pos, subsampled_points=subsampled_points
    )

  def output_shape(self, inputs):
    return (inputs.shape[0], self._num_classes), None

  def __call__(self, query, z, *, is_training, query_mask=None):
    logits = self.decoder(query, z, is_training=is_training, query_mask=query_mask)
    return logits[:, 0, :]  # [B, 1, K] -> [B, K]


class MultimodalDecoder(AbstractPerceiverDecoder):
  """Decodes several modalities with one shared cross-attention.

  Each modality's decoder only builds that modality's queries; they are padded with a
  trainable `{modality}_padding` embedding to a common width (max + `min_padding_size`)
  and concatenated in sorted modality order, then one `BasicDecoder`
  (`position_encoding_type='none'`) decodes them all.

  Args:
    modalities: dict modality name -> decoder that builds its queries.
    num_outputs: total number of output queries.
    output_num_channels: K.
    min_padding_size: minimum padding channels added to every modality.
    subsampled_index_dims: dict modality -> number of decoded points when subsampling.
    name: module name.
    **decoder_kwargs: passed to the shared `BasicDecoder`.
  """

  def __init__(
    self,
    modalities,
    num_outputs,
    output_num_channels,
    min_padding_size=2,
    subsampled_index_dims=None,
    name='multimodal_decoder',
    **decoder_kwargs,
  ):
    super().__init__(name=name)
    self._modalities = modalities
    self._subsampled_index_dims = subsampled_index_dims
    self._min_padding_size = min_padding_size
    self._output_num_channels = output_num_channels
    self._num_outputs = num_outputs
    self._decoder = BasicDecoder(
      output_index_dims=(num_outputs,),
      output_num_channels=output_num_channels,
      position_encoding_type='none',
      **decoder_kwargs,
    )

  def decoder_query(
    self, inputs, modality_sizes, inputs_without_pos=None, subsampled_points=None
  ):
    inputs = restructure(modality_sizes, inputs)
    subsampled_points = subsampled_points or dict()
    unknown = set(subsampled_points) - set(self._modalities)
    if unknown:
      raise ValueError(
        f'subsampled_points has unknown modalities {sorted(unknown)}; '
        f'expected a subset of {sorted(self._modalities)}.'
      )
    decoder_queries = dict()
    for modality, decoder in self._modalities.items():
      input_without_pos = None
      if inputs_without_pos is not None:
        input_without_pos = inputs_without_pos.get(modality, None)
      decoder_queries[modality] = decoder.decoder_query(
        inputs=inputs[modality],
        modality_sizes=None,
        inputs_without_pos=input_without_pos,
        subsampled_points=subsampled_points.get(modality, None),
      )

    num_channels = (
      max(query.shape[2] for query in decoder_queries.values()) + self._min_padding_size
    )

    def embed(modality, x):
      x = jnp.reshape(x, [x.shape[0], int(np.prod(x.shape[1:-1])), x.shape[-1]])
      pos = position_encoding.TrainablePositionEncoding(
        1,
        num_channels=num_channels - x.shape[2],
        init_scale=0.02,
        name=f'{modality}_padding',
      )(x.shape[0])
      pos = jnp.broadcast_to(pos, [x.shape[0], x.shape[1], num_channels - x.shape[2]])
      return jnp.concatenate([x, pos], axis=2)

    return jnp.concatenate(
      [
        embed(modality, decoder_queries[modality])
        for modality in sorted(self._modalities.keys())
      ],
      axis=1,
    )

  def output_shape(self, inputs):
    if self._subsampled_index_dims is not None:
      subsampled_index_dims = sum(self._subsampled_index_dims.values())
    else:
      subsampled_index_dims = self._num_outputs
    return (
      (inputs.shape[0], subsampled_index_dims, self._output_num_channels),
      self._subsampled_index_dims,
    )

  def __call__(self, query, z, *, is_training, query_mask=None):
    return self._decoder(query, z, is_training=is_training, query_mask=query_mask)


class BasicVideoAutoencodingDecoder(AbstractPerceiverDecoder):
  """A `BasicDecoder` whose output is reshaped to video `[B, T, H, W, K]`.

  Args:
    output_shape: `[B, T, H, W]`.
    position_encoding_type: 'trainable' or 'fourier'.
    name: module name.
    **decoder_kwargs: passed to `BasicDecoder`; must include `output_num_channels`.
  """

  def __init__(
    self,
    output_shape,
    position_encoding_type,
    name='basic_video_autoencoding_decoder',
    **decoder_kwargs,
  ):
    super().__init__(name=name)
    if len(output_shape) != 4:
      raise ValueError(f'output_shape must be rank 4 [B, T, H, W], got {output_shape!r}.')
    if 'output_num_channels' not in decoder_kwargs:
      raise ValueError('BasicVideoAutoencodingDecoder needs output_num_channels.')
    self._output_shape = list(output_shape)
    self._output_num_channels = decoder_kwargs['output_num_channels']
    self.decoder = BasicDecoder(
      output_index_dims=tuple(self._output_shape[1:4]),
      position_encoding_type=position_encoding_type,
      **decoder_kwargs,
    )

  def decoder_query(
    self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None
  ):
    return self.decoder.decoder_query(
      inputs,
      modality_sizes=modality_sizes,
      inputs_without_pos=inputs_without_pos,
      subsampled_points=subsampled_points,
    )

  def output_shape(self, inputs):
    return (
      [inputs.shape[0]] + self._output_shape[1:] + [self._output_num_channels],
      None,
    )

  def __call__(self, query, z, *, is_training, query_mask=None):
    output = self.decoder(query, z, is_training=is_training, query_mask=query_mask)
    target = self._output_shape + [output.shape[-1]]
    if int(np.prod(output.shape)) != int(np.prod(target)):
      raise ValueError(
        f'Cannot reshape decoder output of shape {tuple(output.shape)} to '
        f'output_shape {self._output_shape} + [{output.shape[-1]}]; with subsampled '
        "decoding use the Perceiver's postprocessor instead."
      )
    return jnp.reshape(output, target)


class FlowDecoder(AbstractPerceiverDecoder):
  """Optical-flow decoder: the queries are the preprocessed inputs themselves.

  The output is divided by `rescale_factor` and reshaped to `[B, H, W, K]`.

  Args:
    output_image_shape: `(H, W)`.
    output_num_channels: K (2 for flow).
    rescale_factor: divisor of the output.
    name: module name.
    **decoder_kwargs: passed to `BasicDecoder`.
  """

  def __init__(
    self,
    output_image_shape,
    output_num_channels=2,
    rescale_factor=100.0,
    name='flow_decoder',
    **decoder_kwargs,
  ):
    super().__init__(name=name)
    self._output_image_shape = tuple(output_image_shape)
    self._output_num_channels = output_num_channels
    self._rescale_factor = rescale_factor
    self.decoder = BasicDecoder(output_num_channels=output_num_channels, **decoder_kwargs)

  def output_shape(self, inputs):
    return (
      (inputs.shape[0],) + self._output_image_shape + (self._output_num_channels,),
      None,
    )

  def decoder_query(
    self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None
  ):
    if subsampled_points is not None:
      raise ValueError(
        f'FlowDecoder does not support subsampled_points; got {subsampled_points!r}.'
      )
    return inputs

  def __call__(self, query, z, *, is_training, query_mask=None):
    preds = self.decoder(query, z, is_training=is_training, query_mask=query_mask)
    preds = preds / self._rescale_factor
    target = [preds.shape[0]] + list(self._output_image_shape) + [preds.shape[-1]]
    if int(np.prod(preds.shape)) != int(np.prod(target)):
      raise ValueError(
        f'Cannot reshape flow predictions of shape {tuple(preds.shape)} to '
        f'[B, H, W, C] with output_image_shape={self._output_image_shape}.'
      )
    return jnp.reshape(preds, target)
