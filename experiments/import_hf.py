r"""Imports a Hugging Face `transformers` Perceiver checkpoint as a parameter file.

  python -m experiments.import_hf --input_dir=/tmp/perceiver_fourier_hf \
      --output=/tmp/fourier_params.npz
  python -m experiments.import_hf --input_dir=DIR --output=params.npz \
      --config=configs/glue.py:mrpc --config.model.decoder.num_heads=1 \
      --config.model.decoder.qk_channels=1280

`--input_dir` holds `config.json` and `model.safetensors` as `save_pretrained` writes
them (no PyTorch needed; `pytorch_model.bin` is a pickle, which can run code when
loaded, and is refused). Without `--config` the architecture is the one `config.json`
describes, and the command prints the `--config` flags that build it; with `--config`,
every field where the checkpoint differs from that config is named. The parameters are
checked against the model the config builds (every missing, unexpected or misshapen
tensor named) and written to `--output` in this project's `.npz` format, which every
command's `--checkpoint` and `--config.model.init_checkpoint` read. Any failure ends with
a one-line message and exit status 1.
"""

import types

from absl import flags
from ml_collections import config_flags

from experiments.inference import hf_checkpoints
from experiments.inference import huggingface
from experiments.training import cli
from experiments.training import errors
from perceiver import checkpoint as checkpoint_lib


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      None,
      'Experiment config to check the checkpoint against.',
      lock_config=True,
      flag_values=flag_values,
    ),
    input_dir=flags.DEFINE_string(
      'input_dir',
      None,
      'transformers checkpoint directory (config.json, safetensors).',
      required=True,
      flag_values=flag_values,
    ),
    output=flags.DEFINE_string(
      'output',
      None,
      'The .npz parameter file to write.',
      required=True,
      flag_values=flag_values,
    ),
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {argv[1:]}')
  output = args.output.value
  imported = hf_checkpoints.import_checkpoint(args.input_dir.value, args.config.value)
  checkpoint_lib.save_npz(output, imported.params, imported.state)
  spec, overrides = huggingface.config_overrides(imported.config)
  count = sum(v.size for d in imported.params.values() for v in d.values())
  print(
    f'{imported.checkpoint.path} ({imported.checkpoint.architecture}, {count:,} '
    f'parameters) -> {output}'
  )
  if args.config.value is None:
    print('config: ' + ' '.join([f'--config={spec}', *overrides]))
  for note in imported.notes:
    print(f'note: {note}')


if __name__ == '__main__':
  cli.run(main, define_flags, name='import_hf')
