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

import os
import types

from absl import app
from absl import flags

from experiments.inference import plotting
from experiments.training import cli


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  return types.SimpleNamespace(
    workdir=flags.DEFINE_multi_string(
      'workdir', [], 'Run folder (repeatable).', flag_values=flag_values
    ),
    output=flags.DEFINE_string('output', None, 'PNG to write.', flag_values=flag_values),
    metrics=flags.DEFINE_list(
      'metrics', [], 'Metrics to draw (default: all).', flag_values=flag_values
    ),
    log_y=flags.DEFINE_list(
      'log_y', [], 'Metrics drawn on a log axis.', flag_values=flag_values
    ),
  )


def main(argv, *, args: types.SimpleNamespace):
  workdirs = list(args.workdir.value) + list(argv[1:])
  if not workdirs:
    raise app.UsageError('Give at least one --workdir.')
  output = args.output.value or os.path.join(
    workdirs[0] if os.path.isdir(workdirs[0]) else os.path.dirname(workdirs[0]),
    'curves.png',
  )
  plotting.plot_runs(workdirs, output, metrics=args.metrics.value, log_y=args.log_y.value)
  print(output)


if __name__ == '__main__':
  cli.run(main, define_flags, name='plot')
