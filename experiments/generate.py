r"""Generates tokens with a Perceiver AR model, one latent per token (key/value caches).

  python -m experiments.generate --config=configs/perceiver_ar.py:bytes \
      --checkpoint=/tmp/ar_bytes/export/params.npz --prompt='def main(' \
      --num_tokens=200 --temperature=0.8 --top_k=40 --seed=0

  python -m experiments.generate --checkpoint=perceiver_ar_copy_131072 --prompt_tokens=3,4,5

`--checkpoint` takes a workdir's `export/params.npz`, the release's zipped snapshot, or
a registry name (`perceiver_ar_copy_131072`, downloaded once into $PERCEIVER_CACHE and
verified; its config is found in configs/perceiver_ar.py). `--prompt` is text (UTF-8
bytes); `--prompt_tokens` comma-separated token ids (bytes + 3). The prompt and the new
tokens must fit the model's context. `--nocached` runs a full call per token instead
(the same distribution from the same number of latents; slower). The generated text
goes to stdout, the speed to stderr; bad input ends with a message and exit status 1.
"""

import functools
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from configs import perceiver_ar as perceiver_ar_config
from experiments.inference import pretrained
from experiments.tasks.perceiver_ar import generation
from perceiver import checkpoint as checkpoint_lib

_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  'configs',
  'perceiver_ar.py',
)


def define_flags():
  """Defines the command-line flags (only when run as a program)."""
  return dict(
    config=config_flags.DEFINE_config_file(
      'config', None, 'Perceiver AR config (default: the release of --checkpoint).'
    ),
    checkpoint=flags.DEFINE_string('checkpoint', None, 'Parameters or registry name.'),
    prompt=flags.DEFINE_string('prompt', None, 'Text prompt.'),
    prompt_tokens=flags.DEFINE_list('prompt_tokens', [], 'Prompt as token ids.'),
    num_tokens=flags.DEFINE_integer('num_tokens', 100, 'Tokens to generate.'),
    temperature=flags.DEFINE_float('temperature', 1.0, '0: the most likely token.'),
    top_k=flags.DEFINE_integer('top_k', 0, 'Sample among the k most likely (0: all).'),
    top_p=flags.DEFINE_float('top_p', 1.0, 'Nucleus sampling mass (1: all).'),
    seed=flags.DEFINE_integer('seed', 0, 'Sampling seed.'),
    cached=flags.DEFINE_bool('cached', True, 'Use the key/value caches.'),
    print_tokens=flags.DEFINE_bool('print_tokens', False, 'Also print the token ids.'),
  )


def _config_and_path(flag_values):
  checkpoint = flag_values['checkpoint'].value
  config = flag_values['config'].value
  if checkpoint in perceiver_ar_config.RELEASES and not os.path.isfile(checkpoint):
    if config is None:
      config = perceiver_ar_config.get_config(perceiver_ar_config.RELEASES[checkpoint])
    checkpoint = pretrained.checkpoint_path(checkpoint)
  if config is None:
    raise ValueError('--config is required for a checkpoint file.')
  return config, checkpoint


def main(argv, *, flag_values):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flag_values['checkpoint'].value:
    raise app.UsageError('--checkpoint is required.')
  try:
    config, path = _config_and_path(flag_values)
    params = generation.load_params(path, config)
    prompt = generation.prompt_tokens(
      config,
      text=flag_values['prompt'].value,
      tokens=[int(t) for t in flag_values['prompt_tokens'].value],
    )
    result = generation.generate(
      config,
      params,
      prompt,
      flag_values['num_tokens'].value,
      temperature=flag_values['temperature'].value,
      top_k=flag_values['top_k'].value,
      top_p=flag_values['top_p'].value,
      seed=flag_values['seed'].value,
      cached=flag_values['cached'].value,
    )
  except (ValueError, OSError, checkpoint_lib.UnsafeCheckpointError) as e:
    sys.exit(f'generate: error: {e}')
  print(result.text())
  if flag_values['print_tokens'].value:
    print(' '.join(str(t) for t in result.tokens.tolist()))
  new = len(result.tokens) - result.prompt_length
  print(
    f'{new} tokens in {result.seconds:.2f} s ({new / max(result.seconds, 1e-9):.1f} '
    f'tokens/s, {"cached" if flag_values["cached"].value else "full calls"}, '
    'compilation included)',
    file=sys.stderr,
  )


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
