r"""Draws the training and evaluation curves of one or several runs from `metrics.jsonl`.

  python -m experiments.plot --workdir=/tmp/digits
  python -m experiments.plot --workdir=/tmp/run_a --workdir=/tmp/run_b \
      --metrics=loss,top_1_acc --log_y=loss --output=/tmp/compare.png

Every numeric metric of the runs' `metrics.jsonl` gets a panel (or those named by
`--metrics`); each run is one colour, training solid and evaluation dashed. The PNG
goes to `--output` (default: `<first workdir>/curves.png`). Needs matplotlib, the
`plot` extra: `pip install -e ".[plot]"`. A missing or malformed metrics file ends with
a one-line message naming it and exit status 1.
"""

import functools
import os
import sys

from absl import app
from absl import flags

from experiments.inference import plotting


def define_flags():
  """Defines the command-line flags (only when run as a program)."""
  return dict(
    workdir=flags.DEFINE_multi_string('workdir', [], 'Run folder (repeatable).'),
    output=flags.DEFINE_string('output', None, 'PNG to write.'),
    metrics=flags.DEFINE_list('metrics', [], 'Metrics to draw (default: all).'),
    log_y=flags.DEFINE_list('log_y', [], 'Metrics drawn on a log axis.'),
  )


def main(argv, *, flag_values):
  workdirs = list(flag_values['workdir'].value) + list(argv[1:])
  if not workdirs:
    raise app.UsageError('Give at least one --workdir.')
  output = flag_values['output'].value or os.path.join(
    workdirs[0] if os.path.isdir(workdirs[0]) else os.path.dirname(workdirs[0]),
    'curves.png',
  )
  try:
    plotting.plot_runs(
      workdirs,
      output,
      metrics=flag_values['metrics'].value,
      log_y=flag_values['log_y'].value,
    )
  except (ValueError, OSError, ImportError) as e:
    sys.exit(f'plot: error: {e}')
  print(output)


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
