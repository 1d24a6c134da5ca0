"""Simple processors: one-hot inputs, identity, linear heads and tied-embedding logits.

Shape glossary:
  B: batch size.
  N: number of decoder outputs; L: sequence length.
  D: channels of the decoder outputs (d_model).
  V: vocabulary size.

Parameter paths (default names) match DeepMind's release:
  classification_postprocessor/linear/{w,b}
  projection_postprocessor/linear/{w,b}
  embedding_decoder/bias
"""

from typing import Optional

import haiku as hk
import jax.numpy as jnp

from perceiver._src import positional_inputs


def _check_rank3(inputs, arg_name='inputs'):
  if inputs.ndim != 3:
    raise ValueError(f'{arg_name} must have shape [B, N, D], got {tuple(inputs.shape)}.')


class OneHotPreprocessor(hk.Module):
  """Turns one vector per example (e.g. a one-hot label) into a 1-element input.

  `[B, C]` -> `[B, 1, C]`, without position encoding.
  """

  def __init__(self, name: Optional[str] = None):
    super().__init__(name=name)

  def __call__(
    self, inputs, *, is_training: bool, pos=None, network_input_is_1d: bool = True
  ):
    """Returns `(inputs[:, None], None, inputs[:, None])` for `[B, C]` inputs."""
    del is_training, pos, network_input_is_1d  # Unused: a uniform interface.
    if inputs.ndim != 2:
      raise ValueError(f'inputs must have shape [B, C], got {tuple(inputs.shape)}.')
    inputs = inputs[:, None, :]
    # No position encoding: the inputs with and without it are the same.
    return inputs, None, inputs


class IdentityPostprocessor(hk.Module):
  """Returns the decoder outputs unchanged."""

  def __init__(self, name: Optional[str] = None):
    super().__init__(name=name)

  def __call__(self, inputs, *, is_training: bool, pos=None, modality_sizes=None):
    del is_training, pos, modality_sizes  # Unused: a uniform interface.
    return inputs


class ClassificationPostprocessor(hk.Module):
  """Logits from the first decoder output: `[B, N, D]` -> linear -> `[B, num_classes]`.

  Args:
    num_classes: number of logits.
    name: module name.
  """

  def __init__(self, num_classes: int, name: Optional[str] = None):
    super().__init__(name=name)
    self._num_classes = positional_inputs.check_positive_int(num_classes, 'num_classes')

  def __call__(self, inputs, *, is_training: bool, pos=None, modality_sizes=None):
    del is_training, pos, modality_sizes  # Unused: a uniform interface.
    _check_rank3(inputs)
    logits = hk.Linear(self._num_classes)(inputs)  # [B, N, num_classes]
    return logits[:, 0, :]


class ProjectionPostprocessor(hk.Module):
  """A linear layer on every decoder output: `[B, N, D]` -> `[B, N, num_outputs]`.

  Args:
    num_outputs: output channels.
    name: module name.
  """

  def __init__(self, num_outputs: int, name: Optional[str] = None):
    super().__init__(name=name)
    self._num_outputs = positional_inputs.check_positive_int(num_outputs, 'num_outputs')

  def __call__(self, inputs, *, is_training: bool, pos=None, modality_sizes=None):
    del is_training, pos, modality_sizes  # Unused: a uniform interface.
    return hk.Linear(self._num_outputs)(inputs)


class EmbeddingDecoder(hk.Module):
  """Logits against a (tied) embedding matrix: `outputs @ E^T + bias`.

  `[B, L, D]` -> `[B, L, V]`, with a trainable `bias` `[V]` initialised to zeros.

  Args:
    embedding_matrix: E, `[V, D]` (e.g. the input `hk.Embed` table).
    name: module name.
  """

  def __init__(self, embedding_matrix, name: str = 'embedding_decoder'):
    super().__init__(name=name)
    if embedding_matrix.ndim != 2:
      raise ValueError(
        'embedding_matrix must have shape [vocab_size, d_model], got '
        f'{tuple(embedding_matrix.shape)}.'
      )
    self._embedding_matrix = embedding_matrix
    self._vocab_size, self._d_model = embedding_matrix.shape

  def __call__(self, embeddings):
    """Maps `[B, L, D]` embeddings to `[B, L, V]` logits."""
    if embeddings.ndim != 3 or embeddings.shape[-1] != self._d_model:
      raise ValueError(
        f'embeddings must have shape [B, L, {self._d_model}] (d_model of the '
        f'embedding matrix), got {tuple(embeddings.shape)}.'
      )
    batch_size, seq_len, _ = embeddings.shape
    flat = jnp.reshape(embeddings, (-1, self._d_model))  # [B*L, D]
    logits = jnp.matmul(flat, jnp.transpose(self._embedding_matrix))  # [B*L, V]
    bias = hk.get_parameter('bias', shape=[self._vocab_size], init=jnp.zeros)
    logits = logits + bias
    return jnp.reshape(logits, (batch_size, seq_len, self._vocab_size))
