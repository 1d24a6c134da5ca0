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
      'config',
      None,
      'Experiment config to check the checkpoint against.',
      lock_config=True,
    ),
    input_dir=flags.DEFINE_string(
      'input_dir', None, 'transformers checkpoint directory (config.json, safetensors).'
    ),
    output=flags.DEFINE_string('output', None, 'The .npz parameter file to write.'),
  )


def main(argv, *, flag_values):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for name in ('input_dir', 'output'):
    if not flag_values[name].value:
      raise app.UsageError(f'--{name} is required.')
  output = flag_values['output'].value
  try:
    imported = hf_checkpoints.import_checkpoint(
      flag_values['input_dir'].value, flag_values['config'].value
    )
    checkpoint_lib.save_npz(output, imported.params, imported.state)
    spec, overrides = huggingface.config_overrides(imported.config)
  except (ValueError, OSError) as e:
    sys.exit(f'import_hf: error: {e}')
  count = sum(v.size for d in imported.params.values() for v in d.values())
  print(
    f'{imported.checkpoint.path} ({imported.checkpoint.architecture}, {count:,} '
    f'parameters) -> {output}'
  )
  if flag_values['config'].value is None:
    print('config: ' + ' '.join([f'--config={spec}', *overrides]))
  for note in imported.notes:
    print(f'note: {note}')


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
