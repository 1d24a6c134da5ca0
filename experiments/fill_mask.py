r"""Fills masked spans of a text with a byte-level Perceiver IO language model.

  python -m experiments.fill_mask \
      --checkpoint=/path/language_perceiver_io_bytes.pickle \
      --text='This is an incomplete sentence where some words are{{ missing.}}'

Span markers:
  {{original}}  masks the UTF-8 bytes of `original` (as many MASK ids as it
                has bytes), so the prediction can be compared with it;
  [MASK:n]      inserts n MASK ids.
A text may hold several spans. The ids are padded with PAD to the model's
`max_seq_len` (input_mask 0 there), the model runs once, and every masked
position takes its most likely byte (greedy; reserved ids are never chosen).
The completed text goes to stdout, followed by one line per span.

With `--top_k=k` (k > 1) it also lists, per span, the k most likely spans and, per
masked byte, the k most likely bytes, with their probabilities (one forward pass;
spans by exact beam search over its factorised distribution, see
experiments/tasks/language/fill_mask.py); `--json` prints all of it as one JSON line.

  python -m experiments.fill_mask --checkpoint=language_bytes --top_k=5 \
      --text='The capital of France is{{ Paris}}.'

`--checkpoint` takes the released model's name `language_bytes` (downloaded once into
$PERCEIVER_CACHE and verified), the official `.pickle` (read by the safe loader, which
refuses files holding code), this project's `.npz` exports or a training workdir (e.g.
one of `configs/mlm.py:debug`); `--config` names the architecture (default
`configs/mlm.py:bytes`, the official one). Bad input (no
span, a text longer than the model, a file that is not a parameter file or
does not fit the architecture) ends with a message and exit status 1.
"""

import json
import types

from absl import flags
from ml_collections import config_flags

from experiments.tasks.language import fill_mask
from experiments.training import cli
from experiments.training import errors
from experiments.training import precision
from experiments.training import registry

DEFAULT_CONFIG = 'configs/mlm.py:bytes'


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      registry.config_file(DEFAULT_CONFIG),
      'MLM config naming the architecture.',
      lock_config=True,
      flag_values=flag_values,
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint',
      None,
      "language_bytes, the official .pickle, this project's .npz or a training workdir.",
      required=True,
      flag_values=flag_values,
    ),
    text=flags.DEFINE_string(
      'text',
      None,
      'Text with {{span}} or [MASK:n] markers to fill.',
      required=True,
      flag_values=flag_values,
    ),
    top_k=flags.DEFINE_integer(
      'top_k',
      1,
      'List the k most likely spans and bytes (1: greedy fill only).',
      flag_values=flag_values,
    ),
    beam=flags.DEFINE_integer(
      'beam', 0, 'Beam width of the span search (min. top_k).', flag_values=flag_values
    ),
    json=flags.DEFINE_bool(
      'json', False, 'Print the result as one JSON line.', flag_values=flag_values
    ),
    compute_dtype=flags.DEFINE_enum(
      'compute_dtype',
      None,
      precision.DTYPES,
      precision.COMMAND_FLAG_HELP,
      flag_values=flag_values,
    ),
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {argv[1:]}')
  config = args.config.value
  if args.compute_dtype.value:
    precision.set_compute_dtype(config, args.compute_dtype.value)
  top_k = args.top_k.value
  result = fill_mask.fill_mask_top_k(
    args.checkpoint.value, args.text.value, config, top_k, args.beam.value
  )
  if args.json.value:
    print(json.dumps(fill_mask.top_k_as_dict(result), ensure_ascii=False))
    return
  print(result.completed)
  for i, span in enumerate(result.spans, start=1):
    print(f'span {i}: {span!r}')
  if top_k > 1:
    print(fill_mask.format_top_k(result))


if __name__ == '__main__':
  cli.run(main, define_flags, name='fill_mask')
