"""Perceiver and Perceiver IO: the public model module.

Drop-in compatible with `perceiver.perceiver` of DeepMind's official release: same names,
constructor keywords, call signatures, numerics and parameter paths. The building blocks
live in focused modules (`attention`, `encoder`, `decoders`) and are re-exported here.

Shape glossary:
  B: batch size.
  M: number of (preprocessed) input elements; C: input channels.
  N: number of latents; D: latent channels.
  O: number of output queries; K: output channels.
"""

import haiku as hk
import jax.numpy as jnp
import numpy as np

# The official module exposes these as attributes (`perceiver.position_encoding`).
from perceiver import io_processors  # noqa: F401
from perceiver import position_encoding  # noqa: F401
from perceiver._src.attention import MLP
from perceiver._src.attention import Attention
from perceiver._src.attention import CrossAttention
from perceiver._src.attention import SelfAttention
from perceiver._src.attention import attend
from perceiver._src.attention import conv_1d
from perceiver._src.attention import layer_norm
from perceiver._src.attention import make_cross_attention_mask
from perceiver._src.decoders import AbstractPerceiverDecoder
from perceiver._src.decoders import BasicDecoder
from perceiver._src.decoders import BasicVideoAutoencodingDecoder
from perceiver._src.decoders import ClassificationDecoder
from perceiver._src.decoders import FlowDecoder
from perceiver._src.decoders import MultimodalDecoder
from perceiver._src.decoders import ProjectionDecoder
from perceiver._src.encoder import PerceiverEncoder

__all__ = [
  'AbstractPerceiverDecoder',
  'Attention',
  'BasicDecoder',
  'BasicVideoAutoencodingDecoder',
  'ClassificationDecoder',
  'CrossAttention',
  'FlowDecoder',
  'MLP',
  'MultimodalDecoder',
  'Perceiver',
  'PerceiverEncoder',
  'ProjectionDecoder',
  'SelfAttention',
  'attend',
  'conv_1d',
  'layer_norm',
  'make_cross_attention_mask',
]


class Perceiver(hk.Module):
  """The Perceiver: preprocess -> encode into latents -> decode -> postprocess.

  Args:
    encoder: a `PerceiverEncoder`.
    decoder: an `AbstractPerceiverDecoder`.
    input_preprocessor: optional callable
      `(inputs, *, pos, is_training, network_input_is_1d)` ->
      `(inputs [B, M, C], modality_sizes, inputs_without_pos)`.
    output_postprocessor: optional callable
      `(outputs, *, is_training, modality_sizes)` -> outputs.
    name: module name.
    input_permutation: optional fixed permutation of the M preprocessed input elements,
      applied after position features are attached and before the encoder (the permuted
      input experiments of paper 1; `input_mask` is permuted with them). Decoder queries
      are built from the unpermuted inputs.
  """

  def __init__(
    self,
    encoder,
    decoder,
    input_preprocessor=None,
    output_postprocessor=None,
    name='perceiver',
    *,
    input_permutation=None,
  ):
    super().__init__(name=name)
    self._input_preprocessor = input_preprocessor
    self._output_postprocessor = output_postprocessor
    self._decoder = decoder
    self._encoder = encoder
    self._input_permutation = None
    if input_permutation is not None:
      perm = np.asarray(input_permutation)
      if perm.ndim != 1 or not np.array_equal(np.sort(perm), np.arange(perm.size)):
        raise ValueError(
          'input_permutation must be a permutation of range(M), got an '
          f'array of shape {perm.shape}.'
        )
      self._input_permutation = perm

  def __call__(
    self,
    inputs,
    *,
    is_training,
    subsampled_output_points=None,
    pos=None,
    input_mask=None,
    query_mask=None,
  ):
    """Runs the model.

    Args:
      inputs: raw inputs for the preprocessor (or `[B, M, C]` without one).
      is_training: enables dropout and BatchNorm statistics updates.
      subsampled_output_points: flat output indices to decode (or a dict per modality
        for multimodal decoders); None decodes every output.
      pos: optional positions passed to the preprocessor.
      input_mask: optional `[B, M]` mask of inputs to attend to.
      query_mask: optional `[B, O]` mask of decoder queries.

    Returns:
      The decoder (or postprocessor) outputs.
    """
    if self._input_preprocessor:
      network_input_is_1d = getattr(self._encoder, '_input_is_1d', True)
      inputs, modality_sizes, inputs_without_pos = self._input_preprocessor(
        inputs, pos=pos, is_training=is_training, network_input_is_1d=network_input_is_1d
      )
    else:
      modality_sizes = None
      inputs_without_pos = None

    encoder_query = self._encoder.latents(inputs)
    decoder_query = self._decoder.decoder_query(
      inputs,
      modality_sizes,
      inputs_without_pos,
      subsampled_points=subsampled_output_points,
    )

    if self._input_permutation is not None:
      if inputs.shape[1] != self._input_permutation.size:
        raise ValueError(
          f'input_permutation has {self._input_permutation.size} entries but the '
          f'preprocessed inputs have {inputs.shape[1]} elements.'
        )
      inputs = jnp.take(inputs, self._input_permutation, axis=1)
      if input_mask is not None:
        if tuple(input_mask.shape) != tuple(inputs.shape[:2]):
          raise ValueError(
            f'input_mask must have shape {tuple(inputs.shape[:2])} [B, M], got '
            f'{tuple(input_mask.shape)}.'
          )
        input_mask = jnp.take(input_mask, self._input_permutation, axis=1)

    z = self._encoder(
      inputs, encoder_query, is_training=is_training, input_mask=input_mask
    )
    _, output_modality_sizes = self._decoder.output_shape(inputs)
    output_modality_sizes = output_modality_sizes or modality_sizes

    outputs = self._decoder(
      decoder_query, z, is_training=is_training, query_mask=query_mask
    )
    if self._output_postprocessor:
      outputs = self._output_postprocessor(
        outputs, is_training=is_training, modality_sizes=output_modality_sizes
      )
    return outputs
