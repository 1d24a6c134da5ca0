"""The transformers Perceiver classes as experiment configs: one `Family` per class.

Each family names the project config of the release's architecture (its reference) and
translates the class's own `PerceiverConfig` fields (beyond the encoder's, which every
class shares) to and from config fields; `experiments.inference.huggingface` does the
rest. transformers hard-codes everything else of each architecture (Fourier bands,
channel counts, the decoders' heads...), which the reference configs hold.

  family (architecture)                         reference config
  PerceiverForImageClassificationLearned        configs/imagenet.py:io_learned
  PerceiverForImageClassificationFourier        configs/imagenet.py:io_fourier
  PerceiverForImageClassificationConvProcessing configs/imagenet.py:io_conv
  PerceiverForMaskedLM                          configs/mlm.py:bytes
  PerceiverForSequenceClassification           configs/glue.py:mrpc (the GLUE head)
  PerceiverForOpticalFlow                       configs/flow.py:perceiver_io
  PerceiverForMultimodalAutoencoding            configs/multimodal.py:kinetics
"""

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import ml_collections

from experiments.tasks.imagenet import class_names
from experiments.training import errors
from perceiver import huggingface as hf_lib


class ConfigMismatchError(errors.ConfigError):
  """Config fields a transformers config cannot express, or that differ from it."""


@dataclasses.dataclass(frozen=True)
class Family:
  """How one transformers class maps onto experiment configs.

  Attributes:
    architecture: the transformers model class.
    reference: `configs/<file>.py:<variant>` of the release's architecture.
    to_hf: config -> the class's own `PerceiverConfig` fields.
    from_hf: `(hf_config, derived config, has_base)` -> sets the checkpoint's fields.
    carried: model fields (dotted, below `model.`) kept from the user's config.
    decoder_query_residual: config -> the value for `perceiver.huggingface`.
  """

  architecture: str
  reference: str
  to_hf: Callable[[ml_collections.ConfigDict], Dict]
  from_hf: Callable[[Mapping, ml_collections.ConfigDict, bool], None]
  carried: Tuple[str, ...] = ()
  decoder_query_residual: Callable[[ml_collections.ConfigDict], bool] = lambda c: True


def num_labels(hf: Mapping) -> int:
  """transformers' `num_labels`: `config.json` stores `id2label` (2 labels if absent)."""
  if 'num_labels' in hf:
    return int(hf['num_labels'])
  return len(hf.get('id2label') or {}) or 2


def _labels(count: int, names: Optional[List[str]] = None) -> Dict:
  names = names or [f'LABEL_{i}' for i in range(count)]
  return {
    'id2label': {str(i): name for i, name in enumerate(names)},
    'label2id': {name: i for i, name in enumerate(names)},
  }


# ---------------------------------------------------------------- families


def _imagenet_to_hf(c) -> Dict:
  count = int(c.data.num_classes)
  names = None
  if count == 1000:
    names = [class_names.class_name(label) for label in range(count)]
  return dict(image_size=int(c.data.image_size), **_labels(count, names))


def _imagenet_from_hf(hf, d, has_base, *, learned=False, conv=False) -> None:
  d.data.num_classes = num_labels(hf)
  d.model.decoder.num_z_channels = hf['d_latents']
  d.model.decoder.trainable_position_encoding_kwargs.num_channels = hf['d_latents']
  if learned:
    size = hf['image_size']
    if not isinstance(size, int):
      raise ConfigMismatchError(
        f'image_size={size!r}: the learned position encoding needs square images here.'
      )
    d.data.image_size = size
    if not has_base:
      d.model.decoder.use_query_residual = True
  else:
    d.model.decoder.use_query_residual = True
  if conv:
    d.model.input_preprocessor.conv2d_padding = 'transformers'


def _text_to_hf(c) -> Dict:
  return dict(
    d_model=int(c.model.d_model), max_position_embeddings=int(c.model.max_seq_len)
  )


def _text_from_hf(hf, d, has_base) -> None:
  if int(hf['vocab_size']) != 262:
    raise ConfigMismatchError(
      f"vocab_size={hf['vocab_size']}: this project's byte models have 262 ids."
    )
  d.model.d_model = hf['d_model']
  d.model.max_seq_len = hf['max_position_embeddings']
  if not has_base:
    d.data.seq_len = hf['max_position_embeddings']


def _masked_lm_from_hf(hf, d, has_base) -> None:
  _text_from_hf(hf, d, has_base)
  decoder = d.model.decoder
  decoder.num_z_channels = hf['d_latents']
  decoder.v_channels = hf['d_model']
  decoder.output_num_channels = hf['d_model']
  decoder.trainable_position_encoding_kwargs.num_channels = hf['d_model']


def glue_task_classes(task: str) -> int:
  from experiments.tasks.language import glue_data  # noqa: PLC0415  (TensorFlow)

  return glue_data.get_task(task).num_classes


def _glue_to_hf(c) -> Dict:
  return dict(_text_to_hf(c), **_labels(glue_task_classes(c.data.task)))


def _glue_from_hf(hf, d, has_base) -> None:
  _text_from_hf(hf, d, has_base)
  count = num_labels(hf)
  if not has_base:
    tasks = {1: 'stsb', 2: 'mrpc', 3: 'mnli'}
    if count not in tasks:
      raise ConfigMismatchError(
        f'num_labels={count}: no GLUE task has that many classes.'
      )
    d.data.task = tasks[count]
  decoder = d.model.decoder
  decoder.num_z_channels = hf['d_latents']
  decoder.qk_channels = None
  decoder.v_channels = None
  decoder.num_heads = 1
  decoder.use_query_residual = True
  decoder.trainable_position_encoding_kwargs.num_channels = hf['d_latents']


def _flow_to_hf(c) -> Dict:
  return dict(train_size=[int(s) for s in c.model.image_size])


def _flow_from_hf(hf, d, has_base) -> None:
  del has_base
  size = tuple(int(s) for s in hf['train_size'])
  d.model.image_size = size
  d.model.input_preprocessor.fourier_position_encoding_kwargs.max_resolution = size
  d.model.decoder.fourier_position_encoding_kwargs.max_resolution = size
  d.model.decoder.num_z_channels = hf['d_latents']


def _multimodal_to_hf(c) -> Dict:
  m, data = c.model, c.data
  patched = tuple(m.image_preprocessor.fourier_position_encoding_kwargs.max_resolution)
  return dict(
    num_frames=int(data.num_frames),
    audio_samples_per_frame=int(data.samples_per_frame),
    samples_per_patch=int(m.audio_preprocessor.samples_per_patch),
    image_size=int(patched[-1]),
    output_shape=[1, int(data.num_frames), int(data.image_size), int(data.image_size)],
    output_num_channels=int(m.decoder.output_num_channels),
    _label_trainable_num_channels=int(
      m.label_decoder.trainable_position_encoding_kwargs.num_channels
    ),
    **_labels(int(data.num_classes)),
  )


def _multimodal_from_hf(hf, d, has_base) -> None:
  frames, shape = int(hf['num_frames']), [int(s) for s in hf['output_shape']]
  if len(shape) != 4 or shape[1] != frames or shape[2] != shape[3]:
    raise ConfigMismatchError(
      f'output_shape={shape}: this project decodes square frames of the input clip '
      f'([1, num_frames={frames}, S, S]).'
    )
  spp, patched = int(hf['samples_per_patch']), int(hf['image_size'])
  m, data = d.model, d.data
  data.num_frames = frames
  data.samples_per_frame = hf['audio_samples_per_frame']
  data.image_size = shape[2]
  data.num_classes = num_labels(hf)
  audio = (frames * int(hf['audio_samples_per_frame']),)
  image = (frames, patched, patched)
  m.audio_preprocessor.samples_per_patch = spp
  m.audio_postprocessor.samples_per_patch = spp
  m.audio_preprocessor.fourier_position_encoding_kwargs.max_resolution = audio
  m.audio_decoder.fourier_position_encoding_kwargs.max_resolution = audio
  m.image_preprocessor.fourier_position_encoding_kwargs.max_resolution = image
  m.image_decoder.fourier_position_encoding_kwargs.max_resolution = image
  for section in (m.decoder, m.image_decoder, m.audio_decoder):
    section.output_num_channels = hf['output_num_channels']
  m.label_decoder.trainable_position_encoding_kwargs.num_channels = hf[
    '_label_trainable_num_channels'
  ]
  if not has_base:  # Evaluation decodes in chunks: at most one point of each per chunk.
    points = min(audio[0] // spp, frames * shape[2] * shape[3])
    m.eval_num_chunks = min(m.eval_num_chunks, points)


FAMILIES = {
  f.architecture: f
  for f in (
    Family(
      'PerceiverForImageClassificationLearned',
      'configs/imagenet.py:io_learned',
      _imagenet_to_hf,
      lambda hf, d, b: _imagenet_from_hf(hf, d, b, learned=True),
      carried=('permutation_seed', 'decoder.use_query_residual'),
      decoder_query_residual=lambda c: bool(c.model.decoder.use_query_residual),
    ),
    Family(
      'PerceiverForImageClassificationFourier',
      'configs/imagenet.py:io_fourier',
      _imagenet_to_hf,
      _imagenet_from_hf,
      carried=('permutation_seed',),
    ),
    Family(
      'PerceiverForImageClassificationConvProcessing',
      'configs/imagenet.py:io_conv',
      _imagenet_to_hf,
      lambda hf, d, b: _imagenet_from_hf(hf, d, b, conv=True),
      carried=('permutation_seed',),
    ),
    Family(
      'PerceiverForMaskedLM',
      'configs/mlm.py:bytes',
      _text_to_hf,
      _masked_lm_from_hf,
      carried=('embed_init_scale', 'pos_init_scale'),
    ),
    Family(
      'PerceiverForSequenceClassification',
      'configs/glue.py:mrpc',
      _glue_to_hf,
      _glue_from_hf,
      carried=('embed_init_scale', 'pos_init_scale', 'init_checkpoint'),
    ),
    Family(
      'PerceiverForOpticalFlow',
      'configs/flow.py:perceiver_io',
      _flow_to_hf,
      _flow_from_hf,
      carried=(
        'flow_scale_factor',
        'zero_init_output',
        'tile_min_overlap',
        'init_checkpoint',
      ),
    ),
    Family(
      'PerceiverForMultimodalAutoencoding',
      'configs/multimodal.py:kinetics',
      _multimodal_to_hf,
      _multimodal_from_hf,
      carried=(
        'train_image_points',
        'train_audio_points',
        'eval_num_chunks',
        'init_checkpoint',
      ),
    ),
  )
}
assert set(FAMILIES) == set(hf_lib.ARCHITECTURES)
_IMAGENET_PREP = {
  'conv1x1': 'PerceiverForImageClassificationLearned',
  'pixels': 'PerceiverForImageClassificationFourier',
  'conv': 'PerceiverForImageClassificationConvProcessing',
}
_TASK_FAMILIES = {
  'experiments.tasks.language.mlm': 'PerceiverForMaskedLM',
  'experiments.tasks.language.glue': 'PerceiverForSequenceClassification',
  'experiments.tasks.flow.task': 'PerceiverForOpticalFlow',
  'experiments.tasks.multimodal.task': 'PerceiverForMultimodalAutoencoding',
}


def family_of(config: ml_collections.ConfigDict) -> Family:
  """The `Family` of an experiment config; ConfigMismatchError if it has none."""
  task = config.task
  if task == 'experiments.tasks.imagenet.task':
    if config.model.decoder_type != 'classification':
      raise ConfigMismatchError(
        f'model.decoder_type={config.model.decoder_type!r}: transformers has only '
        "ImageNet classifiers with a cross-attention decoder ('classification')."
      )
    prep = config.model.input_preprocessor.prep_type
    if prep not in _IMAGENET_PREP:
      raise ConfigMismatchError(
        f'model.input_preprocessor.prep_type={prep!r}: transformers has ImageNet '
        f'classifiers for {sorted(_IMAGENET_PREP)}.'
      )
    return FAMILIES[_IMAGENET_PREP[prep]]
  if task not in _TASK_FAMILIES:
    raise ConfigMismatchError(
      f'config.task={task!r} has no transformers counterpart; the exportable tasks are '
      f'{sorted(_TASK_FAMILIES) + ["experiments.tasks.imagenet.task"]}.'
    )
  return FAMILIES[_TASK_FAMILIES[task]]
