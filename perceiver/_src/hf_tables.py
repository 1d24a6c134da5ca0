"""The parameter tables between this library's Haiku models and transformers' Perceivers.

`perceiver.huggingface` documents the layouts and architectures and converts with these
tables; this module only lists them: one builder per architecture, composed of builders
for the shared parts (an attention layer, the encoder, the classification decoder).
"""

import re
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

Params = Dict[str, Dict[str, np.ndarray]]

LAYOUTS = ('copy', 'linear', 'conv', 'channels', 'counter', 'ema_hidden')


class Entry(NamedTuple):
  """One Haiku array and the transformers tensor it corresponds to.

  Attributes:
    haiku: `'<module path>/<name>'` in `params` or `state`.
    hf: the transformers state-dict key.
    layout: one of `LAYOUTS`.
    collection: 'params' or 'state'.
    counter: for 'ema_hidden', the state-dict key of the update counter.
  """

  haiku: str
  hf: str
  layout: str
  collection: str = 'params'
  counter: Optional[str] = None


def _linear(haiku: str, hf: str) -> List[Entry]:
  return [
    Entry(f'{haiku}/w', f'{hf}.weight', 'linear'),
    Entry(f'{haiku}/b', f'{hf}.bias', 'copy'),
  ]


def _layer_norm(haiku: str, hf: str) -> List[Entry]:
  return [
    Entry(f'{haiku}/scale', f'{hf}.weight', 'copy'),
    Entry(f'{haiku}/offset', f'{hf}.bias', 'copy'),
  ]


def _positions(haiku: str, hf: str) -> List[Entry]:
  return [Entry(f'{haiku}/pos_embs', hf, 'copy')]


def _attention_layer(haiku: str, hf: str, *, cross: bool) -> List[Entry]:
  """A `CrossAttention` / `SelfAttention` module <-> a `PerceiverLayer`.

  Haiku creates the layer norms in call order: queries, then (cross-attention only)
  keys and values, then the MLP's; and the attention's linears in the order query,
  key, value, output.
  """
  mlp_norm = 'layer_norm_2' if cross else 'layer_norm_1'
  rows = _layer_norm(f'{haiku}/layer_norm', f'{hf}.attention.self.layernorm1')
  if cross:
    rows += _layer_norm(f'{haiku}/layer_norm_1', f'{hf}.attention.self.layernorm2')
  for index, name in enumerate(('self.query', 'self.key', 'self.value', 'output.dense')):
    suffix = f'_{index}' if index else ''
    rows += _linear(f'{haiku}/attention/linear{suffix}', f'{hf}.attention.{name}')
  rows += _layer_norm(f'{haiku}/{mlp_norm}', f'{hf}.layernorm')
  rows += _linear(f'{haiku}/mlp/linear', f'{hf}.mlp.dense1')
  rows += _linear(f'{haiku}/mlp/linear_1', f'{hf}.mlp.dense2')
  return rows


def _encoder(root: str, num_self_attends: int) -> List[Entry]:
  """`PerceiverEncoder` named `root` (its latents included) <-> `perceiver.encoder`."""
  rows = _positions(
    f'{root}/~/trainable_position_encoding', 'perceiver.embeddings.latents'
  )
  rows += _attention_layer(
    f'{root}/~/cross_attention', 'perceiver.encoder.cross_attention', cross=True
  )
  for i in range(num_self_attends):
    suffix = f'_{i}' if i else ''
    rows += _attention_layer(
      f'{root}/~/self_attention{suffix}',
      f'perceiver.encoder.self_attends.{i}',
      cross=False,
    )
  return rows


def _classification_decoder(hf: str) -> List[Entry]:
  """`ClassificationDecoder` (one trainable query) <-> `PerceiverClassificationDecoder`."""
  haiku = 'classification_decoder/~/basic_decoder'
  rows = _positions(
    f'{haiku}/~/trainable_position_encoding',
    f'{hf}.decoder.output_position_encodings.position_embeddings',
  )
  rows += _attention_layer(
    f'{haiku}/cross_attention', f'{hf}.decoder.decoding_cross_attention', cross=True
  )
  rows += _linear(f'{haiku}/output', f'{hf}.decoder.final_layer')
  return rows


def _text_inputs() -> List[Entry]:
  """The byte embedding and the input position embedding (`nn.Embedding` both)."""
  return [
    Entry('embed/embeddings', 'perceiver.input_preprocessor.embeddings.weight', 'copy'),
    Entry(
      'trainable_position_encoding/pos_embs',
      'perceiver.input_preprocessor.position_embeddings.weight',
      'copy',
    ),
  ]


def _batchnorm(haiku: str, hf: str) -> List[Entry]:
  rows = [
    Entry(f'{haiku}/scale', f'{hf}.weight', 'channels'),
    Entry(f'{haiku}/offset', f'{hf}.bias', 'channels'),
  ]
  counter = f'{hf}.num_batches_tracked'
  for ema, stat in (('mean_ema', 'running_mean'), ('var_ema', 'running_var')):
    prefix = f'{haiku}/~/{ema}'
    rows += [
      Entry(f'{prefix}/average', f'{hf}.{stat}', 'channels', 'state'),
      Entry(f'{prefix}/counter', counter, 'counter', 'state'),
      Entry(f'{prefix}/hidden', f'{hf}.{stat}', 'ema_hidden', 'state', counter),
    ]
  return rows


def _image_learned(num_self_attends: int) -> List[Entry]:
  prep, hf = 'image_preprocessor', 'perceiver.input_preprocessor'
  rows = [
    Entry(f'{prep}/~/conv2_d/w', f'{hf}.convnet_1x1.weight', 'conv'),
    Entry(f'{prep}/~/conv2_d/b', f'{hf}.convnet_1x1.bias', 'copy'),
  ]
  rows += _positions(
    f'{prep}/~_build_network_inputs/trainable_position_encoding',
    f'{hf}.position_embeddings.position_embeddings',
  )
  rows += _linear(
    f'{prep}/~_build_network_inputs/position_encoding_projector/linear',
    f'{hf}.positions_projection',
  )
  return (
    rows
    + _encoder('perceiver_encoder', num_self_attends)
    + _classification_decoder('perceiver.decoder')
  )


def _image_fourier(num_self_attends: int) -> List[Entry]:
  return _encoder('perceiver_encoder', num_self_attends) + _classification_decoder(
    'perceiver.decoder'
  )


def _image_conv(num_self_attends: int) -> List[Entry]:
  prep, hf = 'image_preprocessor/~/conv2_d_downsample/~', 'perceiver.input_preprocessor'
  rows = [Entry(f'{prep}/conv/w', f'{hf}.convnet.conv.weight', 'conv')]
  rows += _batchnorm(f'{prep}/batchnorm', f'{hf}.convnet.batchnorm')
  return rows + _image_fourier(num_self_attends)


def _masked_lm(num_self_attends: int) -> List[Entry]:
  rows = _text_inputs() + _encoder('perceiver_encoder', num_self_attends)
  rows += _positions(
    'basic_decoder/~/trainable_position_encoding',
    'perceiver.decoder.output_position_encodings.position_embeddings',
  )
  rows += _attention_layer(
    'basic_decoder/cross_attention',
    'perceiver.decoder.decoding_cross_attention',
    cross=True,
  )
  # No output layer (`final_project=False`): logits come from the tied byte embedding.
  rows.append(Entry('embedding_decoder/bias', 'embedding_decoder.bias', 'copy'))
  return rows


def _sequence_classification(num_self_attends: int) -> List[Entry]:
  return (
    _text_inputs()
    + _encoder('perceiver_encoder', num_self_attends)
    + _classification_decoder('perceiver.decoder')
  )


def _optical_flow(num_self_attends: int) -> List[Entry]:
  rows = _linear(
    'image_preprocessor/patches_linear', 'perceiver.input_preprocessor.conv_after_patches'
  )
  rows += _encoder('perceiver_encoder', num_self_attends)
  rows += _attention_layer(
    'flow_decoder/~/basic_decoder/cross_attention',
    'perceiver.decoder.decoder.decoding_cross_attention',
    cross=True,
  )
  rows += _linear(
    'flow_decoder/~/basic_decoder/output', 'perceiver.decoder.decoder.final_layer'
  )
  return rows


MULTIMODAL_MODALITIES = ('audio', 'image', 'label')
_POSTPROCESSORS = dict(
  audio='audio_postprocessor',
  image='projection_postprocessor',
  label='classification_postprocessor',
)


def _multimodal_autoencoding(num_self_attends: int) -> List[Entry]:
  prep, hf_prep = 'multimodal_preprocessor', 'perceiver.input_preprocessor'
  rows = []
  for m in MULTIMODAL_MODALITIES:
    rows += _positions(f'{prep}/{m}_padding', f'{hf_prep}.padding.{m}')
    rows += _positions(f'{prep}/{m}_mask_token', f'{hf_prep}.mask.{m}')
  rows += _encoder('encoder', num_self_attends)
  for m in MULTIMODAL_MODALITIES:
    rows += _positions(
      f'multimodal_decoder/~decoder_query/{m}_padding', f'perceiver.decoder.padding.{m}'
    )
  rows += _positions(
    'classification_decoder/~/basic_decoder/~/trainable_position_encoding',
    'perceiver.decoder.modalities.label.decoder.output_position_encodings.position_embeddings',
  )
  rows += _attention_layer(
    'multimodal_decoder/~/basic_decoder/cross_attention',
    'perceiver.decoder.decoder.decoding_cross_attention',
    cross=True,
  )
  rows += _linear(
    'multimodal_decoder/~/basic_decoder/output', 'perceiver.decoder.decoder.final_layer'
  )
  for m in MULTIMODAL_MODALITIES:
    rows += _linear(
      f'{_POSTPROCESSORS[m]}/linear',
      f'perceiver.output_postprocessor.modalities.{m}.classifier',
    )
  return rows


_TABLES = {
  'PerceiverForImageClassificationLearned': _image_learned,
  'PerceiverForImageClassificationFourier': _image_fourier,
  'PerceiverForImageClassificationConvProcessing': _image_conv,
  'PerceiverForMaskedLM': _masked_lm,
  'PerceiverForSequenceClassification': _sequence_classification,
  'PerceiverForOpticalFlow': _optical_flow,
  'PerceiverForMultimodalAutoencoding': _multimodal_autoencoding,
}
ARCHITECTURES = tuple(_TABLES)
# The encoder's module name in each architecture's Haiku tree.
ENCODER_ROOTS = {
  name: 'encoder' if name == 'PerceiverForMultimodalAutoencoding' else 'perceiver_encoder'
  for name in ARCHITECTURES
}
# Learned positions: (decoder cross-attention output bias, decoder query), see the fold.
FOLD = (
  'classification_decoder/~/basic_decoder/cross_attention/attention/linear_3/b',
  'classification_decoder/~/basic_decoder/~/trainable_position_encoding/pos_embs',
)


def check_architecture(architecture: str) -> str:
  if architecture not in _TABLES:
    raise ValueError(
      f'architecture {architecture!r} is not a transformers Perceiver model this project '
      f'maps; expected one of {list(ARCHITECTURES)}.'
    )
  return architecture


def parameter_table(architecture: str, num_self_attends: int) -> Tuple[Entry, ...]:
  """The `Entry` of every Haiku array of `architecture`.

  Args:
    architecture: one of `ARCHITECTURES`.
    num_self_attends: self-attention layers in the encoder's block
      (`num_self_attends_per_block`; blocks share them).
  """
  check_architecture(architecture)
  if int(num_self_attends) < 0:
    raise ValueError(f'num_self_attends must be >= 0, got {num_self_attends!r}.')
  return tuple(_TABLES[architecture](int(num_self_attends)))


def count_self_attends(params: Params, architecture: str) -> int:
  """The number of distinct self-attention layers of the encoder in `params`."""
  pattern = re.compile(
    re.escape(ENCODER_ROOTS[check_architecture(architecture)])
    + r'/~/self_attention(?:_(\d+))?/'
  )
  indices = set()
  for module in params:
    match = pattern.match(module + '/')
    if match:
      indices.add(int(match.group(1) or 0))
  return max(indices) + 1 if indices else 0
