r"""Generates tokens with a Perceiver AR model, one latent per token (key/value caches).

  python -m experiments.generate --config=configs/perceiver_ar.py:bytes \
      --checkpoint=/tmp/ar_bytes --prompt='def main(' \
      --num_tokens=200 --temperature=0.8 --top_k=40 --seed=0

  python -m experiments.generate --checkpoint=perceiver_ar_copy_131072 --prompt_tokens=3,4,5

`--checkpoint` takes a training workdir (its `export/params.npz`), a parameter file
(`.npz` export or the release's zipped snapshot), or a release name
(`perceiver_ar_copy_131072`, downloaded once into $PERCEIVER_CACHE and verified; its
config comes from the registry). `--config` names the architecture (required for a
file or workdir). `--prompt` is text (UTF-8 bytes); `--prompt_tokens` comma-separated
token ids (bytes + 3). The prompt and the new tokens must fit the model's context.
`--nocached` runs a full call per token instead (the same distribution from the same
number of latents; slower). The logic is in experiments/tasks/perceiver_ar/generation.py.
The generated text goes to stdout, the speed to stderr; bad input ends with one line and
exit status 1.
"""

import sys
import types

from absl import flags
from ml_collections import config_flags

from experiments.tasks.perceiver_ar import generation
from experiments.training import cli
from experiments.training import errors


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  def define(kind, name, default, help_text):
    return kind(name, default, help_text, flag_values=flag_values)

  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      None,
      'Perceiver AR config (default: the release of --checkpoint).',
      lock_config=True,
      flag_values=flag_values,
    ),
    checkpoint=define(
      flags.DEFINE_string,
      'checkpoint',
      None,
      'Release name, parameter file (.npz, release .zip) or training workdir.',
    ),
    prompt=define(flags.DEFINE_string, 'prompt', None, 'Text prompt.'),
    prompt_tokens=define(flags.DEFINE_list, 'prompt_tokens', [], 'Prompt token ids.'),
    num_tokens=define(flags.DEFINE_integer, 'num_tokens', 100, 'Tokens to generate.'),
    temperature=define(flags.DEFINE_float, 'temperature', 1.0, '0: the likeliest.'),
    top_k=define(flags.DEFINE_integer, 'top_k', 0, 'Sample among the k likeliest.'),
    top_p=define(flags.DEFINE_float, 'top_p', 1.0, 'Nucleus sampling mass (1: all).'),
    seed=define(flags.DEFINE_integer, 'seed', 0, 'Sampling seed.'),
    cached=define(flags.DEFINE_bool, 'cached', True, 'Use the key/value caches.'),
    print_tokens=define(flags.DEFINE_bool, 'print_tokens', False, 'Print token ids.'),
  )


def _prompt_tokens(values):
  try:
    return [int(t) for t in values]
  except ValueError:
    raise errors.ConfigError(
      f'--prompt_tokens={",".join(values)} must be comma-separated integers.'
    ) from None


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {argv[1:]}')
  checkpoint = args.checkpoint.value
  if not checkpoint:
    raise errors.ConfigError(
      '--checkpoint is required: a release name, a parameter file or a workdir.'
    )
  config = generation.config_for(checkpoint, args.config.value)
  prompt = generation.prompt_tokens(
    config, text=args.prompt.value, tokens=_prompt_tokens(args.prompt_tokens.value)
  )
  settings = dict(
    temperature=args.temperature.value, top_k=args.top_k.value, top_p=args.top_p.value
  )
  # Refuse a bad request before any download or compilation.
  generation.check_request(config, prompt, args.num_tokens.value, **settings)
  model = generation.load(config, checkpoint)
  result = generation.generate(
    config,
    model.params,
    prompt,
    args.num_tokens.value,
    seed=args.seed.value,
    cached=args.cached.value,
    **settings,
  )
  print(result.text())
  if args.print_tokens.value:
    print(' '.join(str(t) for t in result.tokens.tolist()))
  new = len(result.tokens) - result.prompt_length
  print(
    f'{new} tokens in {result.seconds:.2f} s ({new / max(result.seconds, 1e-9):.1f} '
    f'tokens/s, {"cached" if args.cached.value else "full calls"}, '
    'compilation included)',
    file=sys.stderr,
  )


if __name__ == '__main__':
  cli.run(main, define_flags, name='generate')
