r"""Exports a model to a Hugging Face `transformers` checkpoint directory.

  python -m experiments.export_hf --config=configs/imagenet.py:io_fourier \
      --checkpoint=imagenet_fourier --output_dir=/tmp/perceiver_fourier_hf
  python -m experiments.export_hf --config=configs/mlm.py:bytes \
      --checkpoint=/tmp/mlm_bytes --output_dir=/tmp/mlm_hf

`--config` names the architecture (any override works, as for training), `--checkpoint`
the weights: a released model's name (downloaded once and verified, see
experiments/inference/pretrained.py), a training workdir (its `export/params.npz`), or a
parameter file (`.npz`, the release's `.pystate` / `.pickle`). The directory gets
`config.json` (transformers' `PerceiverConfig`, `architectures` naming the model class),
`model.safetensors`, and `preprocessor_config.json` (ImageNet) or `tokenizer_config.json`
(byte models) for transformers' pipelines; load it with the class `config.json` names,
e.g. `transformers.PerceiverForMaskedLM.from_pretrained(DIR)`.
Families: ImageNet (learned positions, Fourier features, conv preprocessing), the byte
masked language model and its GLUE classifier, optical flow, multimodal autoencoding
(see docs/interop.md). A config transformers cannot express (it names each field, its
value and transformers' value), parameters that do not fit the config, or an unreadable
checkpoint end with a one-line message and exit status 1.
"""

import functools
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.inference import hf_checkpoints
from experiments.inference import huggingface
from perceiver import checkpoint as checkpoint_lib


def define_flags():
  """Defines the command-line flags (only when run as a program)."""
  return dict(
    config=config_flags.DEFINE_config_file(
      'config', None, 'Experiment config of the architecture.', lock_config=True
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint', None, 'Released model name, training workdir or parameter file.'
    ),
    output_dir=flags.DEFINE_string(
      'output_dir', None, 'Directory to write the transformers checkpoint to.'
    ),
  )


def main(argv, *, flag_values):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for name in ('config', 'checkpoint', 'output_dir'):
    if not flag_values[name].value:
      raise app.UsageError(f'--{name} is required.')
  config = flag_values['config'].value
  output_dir = flag_values['output_dir'].value
  try:
    huggingface.transformers_config(config)  # Refuse before reading any weights.
    params, state, path = hf_checkpoints.load_params(flag_values['checkpoint'].value)
    translation = hf_checkpoints.export(config, params, state, output_dir)
  except (ValueError, OSError, checkpoint_lib.UnsafeCheckpointError) as e:
    sys.exit(f'export_hf: error: {e}')
  print(f'{path} -> {output_dir}: transformers {translation.architecture}')
  if translation.architecture == 'PerceiverForOpticalFlow':
    print(
      "transformers' flow is this model's divided by model.flow_scale_factor "
      f'({config.model.flow_scale_factor}): multiply its logits by it.'
    )


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
