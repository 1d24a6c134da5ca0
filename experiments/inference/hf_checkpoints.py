"""Exporting models to transformers checkpoint directories, and importing them.

The logic behind `python -m experiments.export_hf` and `python -m experiments.import_hf`.
Exporting checks, in order: that transformers can express the config
(`huggingface.transformers_config`), that the parameters fit the model the config builds
(every missing, unexpected or misshapen array named), then writes `config.json`,
`model.safetensors` and what transformers' pipelines need (`preprocessor_config.json`
for the ImageNet classifiers, `tokenizer_config.json` for the byte models). Importing
reads a directory (`perceiver.huggingface`), derives its config or checks it against a
given one, and checks its tensors against the model of that config, naming each Haiku
path with the file's tensor key.
"""

import importlib
import json
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import jax
import ml_collections
import numpy as np

from experiments.inference import huggingface
from experiments.inference import pretrained
from perceiver import checkpoint as checkpoint_lib
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


def load_params(checkpoint: str) -> Tuple[Params, Params, str]:
  """`(params, state, path)` of a registry name, a training workdir or a parameter file.

  A workdir is read through its `export/params.npz`; a released model's name is
  downloaded once and verified (`pretrained.checkpoint_path`); files are read by the safe
  loader (`perceiver.checkpoint.load_params`: `.npz`, `.pystate`, `.pickle`).
  """
  if os.path.isdir(checkpoint):
    path = os.path.join(checkpoint, 'export', 'params.npz')
    if not os.path.isfile(path):
      raise ValueError(
        f'--checkpoint={checkpoint!r} is a directory without export/params.npz (a '
        'training workdir writes it when a run finishes).'
      )
  else:
    path = pretrained.checkpoint_path(checkpoint)
  params, state = checkpoint_lib.load_params(path)
  return params, state or {}, path


def example_batch(config: ml_collections.ConfigDict) -> Dict[str, np.ndarray]:
  """A one-example batch of zeros in the family's input format (for shapes only)."""
  if config.task == 'experiments.tasks.language.glue':
    length = config.data.seq_len
    return {
      'inputs': np.zeros([1, length], np.int32),
      'input_mask': np.ones([1, length], np.int32),
    }
  return pretrained.example_batch(config)


def model_shapes(config: ml_collections.ConfigDict) -> Tuple[Params, Params]:
  """The parameter and state shapes of `config`'s model (nothing is allocated)."""
  model = importlib.import_module(config.task).build_model(config)
  batch = example_batch(config)
  return jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), batch, is_training=True)
  )


def fit_problems(
  params: Params,
  state: Params,
  want_params: Params,
  want_state: Params,
  sources: Optional[Dict[str, str]] = None,
) -> List[str]:
  """Every array missing from, unexpected in or misshapen in `params`/`state`, compared
  with the model's `want_*`, each named by its Haiku path (and tensor key in `sources`)."""
  sources = sources or {}

  def name(path):
    return f'{path} ({sources[path]})' if path in sources else path

  problems = []
  for label, have, want in (
    ('parameter', params, want_params),
    ('state', state, want_state),
  ):
    have = {
      f'{m}/{n}': tuple(np.shape(v))
      for m, d in (have or {}).items()
      for n, v in d.items()
    }
    want = {
      f'{m}/{n}': tuple(v.shape) for m, d in (want or {}).items() for n, v in d.items()
    }
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    misshapen = sorted(p for p in set(want) & set(have) if want[p] != have[p])
    if missing:
      problems.append(f'{len(missing)} missing {label}(s): {", ".join(missing)}')
    if unexpected:
      problems.append(
        f'{len(unexpected)} unexpected {label}(s): {", ".join(map(name, unexpected))}'
      )
    if misshapen:
      details = [f'{name(p)} {list(have[p])} vs model {list(want[p])}' for p in misshapen]
      problems.append(f'{len(misshapen)} misshapen {label}(s): {", ".join(details)}')
  return problems


def check_fit(params, state, config, *, source: str, sources=None) -> None:
  """Raises CheckpointMismatchError unless `params`/`state` fit `config`'s model."""
  problems = fit_problems(params, state, *model_shapes(config), sources=sources)
  if problems:
    raise hf_lib.CheckpointMismatchError(
      f'{source} does not fit the model of this config: ' + '; '.join(problems) + '.'
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
  config: ml_collections.ConfigDict, params: Params, state: Params, output_dir: str
) -> huggingface.Translation:
  """Writes the transformers checkpoint of a model of `config` to `output_dir`.

  Raises:
    huggingface.ConfigMismatchError: config fields transformers cannot express.
    perceiver.huggingface.CheckpointMismatchError: parameters that do not fit.
  """
  translation = huggingface.transformers_config(config)
  check_fit(params, state, config, source='the checkpoint')
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
    ValueError: see `perceiver.huggingface.read_transformers_checkpoint`;
      `huggingface.ConfigMismatchError` names every field where the checkpoint and
      `config` differ; `CheckpointMismatchError` every tensor that does not fit.
  """
  hf_config = hf_lib.read_config(directory)
  if config is None:
    config = huggingface.project_config(hf_config)
  else:
    huggingface.check_checkpoint_config(hf_config, config)
  family = huggingface.family_of(config)
  checkpoint = hf_lib.read_transformers_checkpoint(
    directory, decoder_query_residual=family.decoder_query_residual(config)
  )
  check_fit(
    checkpoint.params,
    checkpoint.state,
    config,
    source=checkpoint.path,
    sources=checkpoint.sources,
  )
  return Imported(
    checkpoint.params,
    checkpoint.state,
    config,
    checkpoint,
    huggingface.notes(checkpoint.config),
  )
