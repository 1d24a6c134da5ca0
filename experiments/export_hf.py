r"""Exports a model to a Hugging Face `transformers` checkpoint directory.

  python -m experiments.export_hf --config=configs/imagenet.py:io_fourier \
      --checkpoint=imagenet_fourier --output_dir=/tmp/perceiver_fourier_hf
  python -m experiments.export_hf --config=configs/mlm.py:bytes \
      --checkpoint=/tmp/mlm_bytes --output_dir=/tmp/mlm_hf

`--config` names the architecture (any override works, as for training), `--checkpoint`
the weights: a released model's name (downloaded once and verified), a training workdir
(its `export/params.npz`), or a parameter file (`.npz`, the release's `.pystate` /
`.pickle`), read by the project's one weight loader (experiments/training/weights.py). The directory gets
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

import types

from absl import flags
from ml_collections import config_flags

from experiments.inference import hf_checkpoints
from experiments.inference import huggingface
from experiments.training import cli
from experiments.training import errors
from experiments.training import weights


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      None,
      'Experiment config of the architecture.',
      lock_config=True,
      flag_values=flag_values,
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint',
      None,
      'Released model name, training workdir or parameter file.',
      required=True,
      flag_values=flag_values,
    ),
    output_dir=flags.DEFINE_string(
      'output_dir',
      None,
      'Directory to write the transformers checkpoint to.',
      required=True,
      flag_values=flag_values,
    ),
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {argv[1:]}')
  config = args.config.value
  if config is None:
    raise errors.ConfigError('--config is required: the config of the architecture.')
  output_dir, checkpoint = args.output_dir.value, args.checkpoint.value
  huggingface.transformers_config(config)  # Refuse before reading any weight.
  params, state = weights.read(checkpoint, config=config)
  translation = hf_checkpoints.export(
    config, params, state, output_dir, source=checkpoint
  )
  print(f'{checkpoint} -> {output_dir}: transformers {translation.architecture}')
  if translation.architecture == 'PerceiverForOpticalFlow':
    print(
      "transformers' flow is this model's divided by model.flow_scale_factor "
      f'({config.model.flow_scale_factor}): multiply its logits by it.'
    )


if __name__ == '__main__':
  cli.run(main, define_flags, name='export_hf')
