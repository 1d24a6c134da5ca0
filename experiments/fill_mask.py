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
$PERCEIVER_CACHE and verified, see experiments/inference/pretrained.py), the official
`.pickle` (read by the safe loader, which
refuses files holding code) or this project's `.npz` exports (e.g.
`<workdir>/export/params.npz` of `configs/mlm.py:debug`); `--config` names the
architecture (default `configs/mlm.py:bytes`, the official one). Bad input (no
span, a text longer than the model, a file that is not a parameter file or
does not fit the architecture) ends with a message and exit status 1.
"""

import functools
import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.inference import pretrained
from experiments.tasks.language import fill_mask
from perceiver import checkpoint as checkpoint_lib

_DEFAULT_CONFIG = (
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'mlm.py'
  )
  + ':bytes'
)


def define_flags():
  """Defines the command-line flags (only when run as a program, so that
  importing this module never clashes with other programs' flags)."""
  return dict(
    config=config_flags.DEFINE_config_file(
      'config', _DEFAULT_CONFIG, 'MLM config naming the architecture.', lock_config=True
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint', None, "Official .pickle or this project's .npz parameter file."
    ),
    text=flags.DEFINE_string(
      'text', None, 'Text with {{span}} or [MASK:n] markers to fill.'
    ),
    top_k=flags.DEFINE_integer(
      'top_k', 1, 'List the k most likely spans and bytes (1: greedy fill only).'
    ),
    beam=flags.DEFINE_integer('beam', 0, 'Beam width of the span search (min. top_k).'),
    json=flags.DEFINE_bool('json', False, 'Print the result as one JSON line.'),
  )


def _optional(flag_values, name, default):
  """The value of an optional flag (callers may pass only the original three)."""
  return flag_values[name].value if name in flag_values else default


def main(argv, *, flag_values):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flag_values['checkpoint'].value:
    raise app.UsageError('--checkpoint is required.')
  if flag_values['text'].value is None:
    raise app.UsageError('--text is required.')
  top_k = _optional(flag_values, 'top_k', 1)
  if top_k < 1:
    raise app.UsageError(f'--top_k must be >= 1, got {top_k}.')
  try:
    checkpoint = flag_values['checkpoint'].value
    if checkpoint in pretrained.RELEASES and not os.path.isfile(checkpoint):
      checkpoint = pretrained.checkpoint_path(checkpoint)
    result = fill_mask.fill_mask_top_k(
      checkpoint,
      flag_values['text'].value,
      flag_values['config'].value,
      top_k,
      _optional(flag_values, 'beam', 0),
    )
  except (ValueError, OSError, checkpoint_lib.UnsafeCheckpointError) as e:
    sys.exit(f'fill_mask: error: {e}')
  if _optional(flag_values, 'json', False):
    print(json.dumps(fill_mask.top_k_as_dict(result), ensure_ascii=False))
    return
  print(result.completed)
  for i, span in enumerate(result.spans, start=1):
    print(f'span {i}: {span!r}')
  if top_k > 1:
    print(fill_mask.format_top_k(result))


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
