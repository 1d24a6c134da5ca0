"""Combining several modalities into one input array, and splitting outputs again.

Shape glossary:
  B: batch size.
  N_m: number of positions of modality m; N = sum over modalities of N_m.
  C_m: channels of modality m after its preprocessor.
  C: common channels, `max_m C_m + min_padding_size`.

Modalities are always concatenated and split in sorted key order, whatever the order
of the dictionaries passed in. Parameter paths (default names) match DeepMind's
release: `multimodal_preprocessor/{modality}_padding/pos_embs` `[1, C - C_m]` and
`multimodal_preprocessor/{modality}_mask_token/pos_embs` `[1, C]`.
"""

from typing import Any, Callable, Mapping, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver import position_encoding

ModalitySizeT = Mapping[str, int]


def restructure(modality_sizes: ModalitySizeT, inputs) -> Mapping[str, Any]:
  """Splits `[B, N, ...]` along N into one array per modality, in sorted key order.

  Args:
    modality_sizes: N_m for every modality; they must add up to N.
    inputs: `[B, N, ...]` array, modalities concatenated in sorted key order.

  Returns:
    A dict from modality to its `[B, N_m, ...]` slice (keys inserted in sorted order).
  """
  if inputs.ndim < 2:
    raise ValueError(f'inputs must have shape [B, N, ...], got {tuple(inputs.shape)}.')
  total = sum(int(modality_sizes[m]) for m in modality_sizes)
  if total != inputs.shape[1]:
    raise ValueError(
      f'modality_sizes={dict(modality_sizes)} add up to {total}, but inputs of '
      f'shape {tuple(inputs.shape)} have {inputs.shape[1]} positions in axis 1.'
    )
  outputs = {}
  index = 0
  for modality in sorted(modality_sizes):
    size = int(modality_sizes[modality])
    outputs[modality] = inputs[:, index : index + size]
    index += size
  return outputs


def _check_modality_keys(got, expected, arg_name):
  got, expected = set(got), set(expected)
  if got != expected:
    raise ValueError(
      f'{arg_name} must have exactly the modalities {sorted(expected)}; missing '
      f'{sorted(expected - got)}, unexpected {sorted(got - expected)}.'
    )


class MultimodalPreprocessor(hk.Module):
  """Preprocesses each modality, pads channels to a common size and concatenates.

  Each modality's preprocessor gives `[B, N_m, C_m]`; its channels are padded to
  `C = max_m C_m + min_padding_size` with a trainable vector `{modality}_padding`
  (`[1, C - C_m]`, truncated normal stddev 0.02) shared by all its positions. With
  `mask_probs`, every position of modality m is then replaced, independently with
  probability `mask_probs[m]`, by a trainable `{modality}_mask_token` (`[1, C]`);
  this happens in training and evaluation alike and draws one RNG key per modality
  (in the order of `modalities`, even when the probability is 0). The padded
  modalities are concatenated along N in sorted key order.

  A modality whose padding would have zero channels (possible only with
  `min_padding_size=0`) gets no padding parameter.

  Args:
    modalities: modality name -> preprocessor (`fn(x, *, is_training, pos,
      network_input_is_1d) -> (inputs, modality_sizes, inputs_without_pos)`).
    mask_probs: optional modality name -> masking probability in [0, 1], for every
      modality.
    min_padding_size: padding channels added to the widest modality.
    name: module name.
  """

  def __init__(
    self,
    modalities: Mapping[str, Callable[..., Any]],
    mask_probs: Optional[Mapping[str, float]] = None,
    min_padding_size: int = 2,
    name: Optional[str] = None,
  ):
    super().__init__(name=name)
    if not modalities:
      raise ValueError(f'modalities must be a non-empty mapping, got {modalities!r}.')
    if int(min_padding_size) < 0:
      raise ValueError(f'min_padding_size must be >= 0, got {min_padding_size!r}.')
    if mask_probs is not None:
      _check_modality_keys(mask_probs, modalities, 'mask_probs')
      for modality, prob in mask_probs.items():
        if not 0.0 <= float(prob) <= 1.0:
          raise ValueError(f'mask_probs[{modality!r}] must be in [0, 1], got {prob!r}.')
    self._modalities = modalities
    self._min_padding_size = int(min_padding_size)
    self._mask_probs = mask_probs

  def __call__(
    self, inputs, *, is_training: bool, pos=None, network_input_is_1d: bool = True
  ):
    """Preprocesses a dict of modality inputs.

    Args:
      inputs: modality name -> raw input of that modality's preprocessor.
      is_training: passed to every preprocessor.
      pos: passed to every preprocessor.
      network_input_is_1d: passed to every preprocessor (their outputs must be
        `[B, N_m, C_m]`).

    Returns:
      `(inputs_with_pos, modality_sizes, inputs_without_pos)`: `[B, N, C]`, a dict
      modality -> N_m, and a dict modality -> that preprocessor's inputs without
      position encoding.
    """
    if not isinstance(inputs, Mapping):
      raise ValueError(
        'inputs must be a mapping from modality name to array, got '
        f'{type(inputs).__name__}.'
      )
    _check_modality_keys(inputs, self._modalities, 'inputs')
    outputs = {}
    inputs_without_pos = {}
    for modality, preprocessor in self._modalities.items():
      outputs[modality], _, inputs_without_pos[modality] = preprocessor(
        inputs[modality],
        is_training=is_training,
        pos=pos,
        network_input_is_1d=network_input_is_1d,
      )
    for modality, output in outputs.items():
      if output.ndim != 3:
        raise ValueError(
          f'The preprocessor of modality {modality!r} returned shape '
          f'{tuple(output.shape)}; MultimodalPreprocessor needs [B, N, C].'
        )
    batch_sizes = {m: o.shape[0] for m, o in outputs.items()}
    if len(set(batch_sizes.values())) != 1:
      raise ValueError(f'Modalities have different batch sizes: {batch_sizes}.')

    common_channels = max(o.shape[2] for o in outputs.values()) + self._min_padding_size
    padded = {}
    modality_sizes = {}
    for modality, output in outputs.items():
      batch_size, num_positions, channels = output.shape
      pad_channels = common_channels - channels
      if pad_channels > 0:
        padding = position_encoding.TrainablePositionEncoding(
          1, num_channels=pad_channels, init_scale=0.02, name=f'{modality}_padding'
        )(batch_size=batch_size)  # [B, 1, C - C_m]
        padding = jnp.broadcast_to(padding, (batch_size, num_positions, pad_channels))
        output = jnp.concatenate([output, padding], axis=2)

      if self._mask_probs is not None:
        mask_token = position_encoding.TrainablePositionEncoding(
          1, num_channels=common_channels, init_scale=0.02, name=f'{modality}_mask_token'
        )(batch_size=batch_size)  # [B, 1, C]
        mask = jax.random.bernoulli(
          hk.next_rng_key(), self._mask_probs[modality], shape=(batch_size, num_positions)
        )
        output = jnp.where(mask[:, :, None], mask_token, output)

      padded[modality] = output
      modality_sizes[modality] = num_positions

    concatenated = jnp.concatenate([padded[m] for m in sorted(padded)], axis=1)
    return concatenated, modality_sizes, inputs_without_pos


class MultimodalPostprocessor(hk.Module):
  """Applies one postprocessor per modality.

  Args:
    modalities: modality name -> postprocessor (`fn(x, *, is_training, pos,
      modality_sizes)`).
    input_is_dict: if True, inputs are already a dict modality -> array; otherwise a
      `[B, N, ...]` array split by `modality_sizes` (sorted key order, see
      `restructure`).
    name: module name.
  """

  def __init__(
    self,
    modalities: Mapping[str, Callable[..., Any]],
    input_is_dict: bool = False,
    name: Optional[str] = None,
  ):
    super().__init__(name=name)
    if not modalities:
      raise ValueError(f'modalities must be a non-empty mapping, got {modalities!r}.')
    self._modalities = modalities
    self._input_is_dict = input_is_dict

  def __call__(self, inputs, *, is_training: bool, pos=None, modality_sizes=None):
    """Returns a dict modality -> postprocessed output."""
    if not self._input_is_dict:
      if modality_sizes is None:
        raise ValueError(
          'modality_sizes is required to split array inputs into modalities '
          '(input_is_dict=False), got None.'
        )
      inputs = restructure(modality_sizes=modality_sizes, inputs=inputs)
    missing = sorted(set(self._modalities) - set(inputs))
    if missing:
      raise ValueError(
        f'inputs have no entry for modalities {missing}; got {sorted(inputs)}.'
      )
    return {
      modality: postprocessor(
        inputs[modality], is_training=is_training, pos=pos, modality_sizes=None
      )
      for modality, postprocessor in self._modalities.items()
    }
