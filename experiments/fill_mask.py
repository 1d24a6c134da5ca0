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

`--checkpoint` takes the official `.pickle` (read by the safe loader, which
refuses files holding code) or this project's `.npz` exports (e.g.
`<workdir>/export/params.npz` of `configs/mlm.py:debug`); `--config` names the
architecture (default `configs/mlm.py:bytes`, the official one). Bad input (no
span, a text longer than the model, a file that is not a parameter file or
does not fit the architecture) ends with a message and exit status 1.
"""

import functools
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

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
  )


def main(argv, *, flag_values):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flag_values['checkpoint'].value:
    raise app.UsageError('--checkpoint is required.')
  if flag_values['text'].value is None:
    raise app.UsageError('--text is required.')
  try:
    completed, spans = fill_mask.fill_mask(
      flag_values['checkpoint'].value,
      flag_values['text'].value,
      flag_values['config'].value,
    )
  except (ValueError, OSError, checkpoint_lib.UnsafeCheckpointError) as e:
    sys.exit(f'fill_mask: error: {e}')
  print(completed)
  for i, span in enumerate(spans, start=1):
    print(f'span {i}: {span!r}')


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
