"""Exporting models to transformers checkpoint directories, and importing them.

The logic behind `python -m experiments.export_hf` and `python -m experiments.import_hf`.
Exporting checks, in order: that transformers can express the config
(`huggingface.transformers_config`), that the parameters fit the model the config builds
(`experiments.training.weights`, which reads them and names every missing, unexpected or
misshapen array), then writes `config.json`,
`model.safetensors` and what transformers' pipelines need (`preprocessor_config.json`
for the ImageNet classifiers, `tokenizer_config.json` for the byte models). Importing
reads a directory (`perceiver.huggingface`), derives its config or checks it against a
given one, and checks its tensors against the model of that config, naming each Haiku
path with the file's tensor key.
"""

import json
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import ml_collections
import numpy as np

from experiments.inference import huggingface
from experiments.training import errors
from experiments.training import task as task_lib
from experiments.training import weights
from perceiver import huggingface as hf_lib

Params = Dict[str, Dict[str, np.ndarray]]
# transformers' ImageNet preprocessing (PerceiverImageProcessor) as the release's: a
# centred square of 224 / 256 of the shorter side, bicubic resize, ImageNet statistics.
_IMAGE_MEAN = [0.485, 0.456, 0.406]
_IMAGE_STD = [0.229, 0.224, 0.225]
_BICUBIC = 3  # PIL.Image.BICUBIC
_SPECIAL_TOKENS = dict(
  pad_token='[PAD]',
  bos_token='[BOS]',
  eos_token='[EOS]',
  mask_token='[MASK]',
  cls_token='[CLS]',
  sep_token='[SEP]',
)


class Imported(NamedTuple):
  """An imported transformers checkpoint.

  Attributes:
    params, state: Haiku trees that fit `config`'s model.
    config: the experiment config (given, or derived from `config.json`).
    checkpoint: what `perceiver.huggingface.read_transformers_checkpoint` read.
    notes: what the model computes differently here (see `huggingface.notes`).
  """

  params: Params
  state: Params
  config: ml_collections.ConfigDict
  checkpoint: hf_lib.TransformersCheckpoint
  notes: List[str]


def model_shapes(config: ml_collections.ConfigDict) -> Tuple[Params, Params]:
  """The parameter and state shapes of `config`'s model (nothing is allocated)."""
  task = task_lib.load_task(config.task)
  return weights.model_shapes(
    task.build_model(config), task_lib.example_batch(task, config)
  )


def _pipeline_files(config, translation) -> Dict[str, Dict]:
  """`{file name: JSON object}` that transformers' pipelines read beside the model."""
  architecture = translation.architecture
  if architecture.startswith('PerceiverForImageClassification'):
    size = int(config.data.image_size)
    crop = round(size * 256 / 224)
    return {
      'preprocessor_config.json': dict(
        image_processor_type='PerceiverImageProcessor',
        do_center_crop=True,
        crop_size=dict(height=crop, width=crop),
        do_resize=True,
        size=dict(height=size, width=size),
        resample=_BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=_IMAGE_MEAN,
        image_std=_IMAGE_STD,
      )
    }
  if architecture in ('PerceiverForMaskedLM', 'PerceiverForSequenceClassification'):
    return {
      'tokenizer_config.json': dict(
        tokenizer_class='PerceiverTokenizer',
        model_max_length=int(config.model.max_seq_len),
        **_SPECIAL_TOKENS,
      )
    }
  return {}


def export(
  config: ml_collections.ConfigDict,
  params: Params,
  state: Params,
  output_dir: str,
  *,
  source: str = 'the parameters',
  arg_name: str = '--checkpoint',
) -> huggingface.Translation:
  """Writes the transformers checkpoint of a model of `config` to `output_dir`.

  Args:
    config: the experiment config of the architecture.
    params, state: its weights (e.g. `experiments.training.weights.read(source)`).
    output_dir: where `config.json`, `model.safetensors` and the pipelines' files go.
    source, arg_name: where the weights came from and the flag that named it, for
      messages.

  Raises:
    huggingface.ConfigMismatchError: config fields transformers cannot express.
    errors.DataError: the weights do not fit the config (`weights.fit`).
  """
  translation = huggingface.transformers_config(config)
  params, state = weights.fit(
    (params, state), model_shapes(config), source=source, arg_name=arg_name
  )
  hf_lib.write_transformers_checkpoint(
    output_dir,
    translation.hf_config,
    params,
    state,
    decoder_query_residual=translation.decoder_query_residual,
  )
  for name, body in _pipeline_files(config, translation).items():
    with open(os.path.join(output_dir, name), 'w', encoding='utf-8') as f:
      json.dump(body, f, indent=2, sort_keys=True)
      f.write('\n')
  return translation


def import_checkpoint(
  directory: str, config: Optional[ml_collections.ConfigDict] = None
) -> Imported:
  """Reads a transformers checkpoint directory for `config`'s model (default: the
  config its `config.json` describes).

  Raises:
    errors.DataError: the directory cannot be read
      (`perceiver.huggingface.read_transformers_checkpoint`), or a tensor does not fit
      (every one named, with its key in the file).
    huggingface.ConfigMismatchError: every field where the checkpoint and `config`
      differ.
  """
  try:
    hf_config = hf_lib.read_config(directory)
  except ValueError as e:
    raise errors.DataError(f'--input_dir={directory!r}: {e}') from e
  if config is None:
    config = huggingface.project_config(hf_config)
  else:
    huggingface.check_checkpoint_config(hf_config, config)
  family = huggingface.family_of(config)
  try:
    checkpoint = hf_lib.read_transformers_checkpoint(
      directory, decoder_query_residual=family.decoder_query_residual(config)
    )
  except ValueError as e:
    raise errors.DataError(f'--input_dir={directory!r}: {e}') from e
  params, state = weights.fit(
    (checkpoint.params, checkpoint.state),
    model_shapes(config),
    source=checkpoint.path,
    arg_name='--input_dir',
    file_keys=checkpoint.sources,
    shown=None,  # Name every tensor that does not fit.
  )
  return Imported(params, state, config, checkpoint, huggingface.notes(checkpoint.config))
