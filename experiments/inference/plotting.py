"""Training curves from `metrics.jsonl`: reading, and one figure for several runs.

The logic behind `python -m experiments.plot` (see that module for the command).
`metrics.jsonl` (written by `experiments/training/metrics_writer.py`) holds one JSON
object per logged step and per evaluation: `step`, `split` ('train' or 'eval'), for
evaluations `eval_split`, and any number of numeric metrics. Every numeric metric gets
its own panel; each workdir is one colour, training solid, evaluation dashed with dots.
"""

import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from experiments.training import errors

METRICS_FILE = 'metrics.jsonl'
_NOT_METRICS = ('step', 'split', 'eval_split')

Curves = Dict[Tuple[str, str], Tuple[List[int], List[float]]]


def metrics_path(workdir: str) -> str:
  """`workdir/metrics.jsonl`, or `workdir` itself when it is a file."""
  return workdir if os.path.isfile(workdir) else os.path.join(workdir, METRICS_FILE)


def read_curves(workdir: str) -> Curves:
  """`{(series, metric): (steps, values)}` of a run, in file order.

  `series` is 'train' or 'eval' (or 'eval:<split>' when a run evaluated several
  splits). Non-numeric and non-finite values are skipped.

  Raises:
    errors.DataError: no metrics file, or a line that is not a JSON object with an
      integer `step` (the message names the file and the line).
  """
  path = metrics_path(workdir)
  if not os.path.isfile(path):
    raise errors.DataError(f'No {METRICS_FILE} in {workdir!r} (looked for {path!r}).')
  records = []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise errors.DataError(f'{path}, line {number}: not JSON ({e.msg}).') from e
      if not isinstance(record, dict) or not isinstance(record.get('step'), int):
        raise errors.DataError(
          f'{path}, line {number}: expected an object with an integer "step".'
        )
      records.append(record)
  eval_splits = {r.get('eval_split') for r in records if r.get('split') == 'eval'}
  curves: Curves = {}
  for record in records:
    series = record.get('split', 'train')
    if series == 'eval' and len(eval_splits) > 1:
      series = f'eval:{record.get("eval_split")}'
    for name, value in record.items():
      if name in _NOT_METRICS or isinstance(value, bool):
        continue
      if not isinstance(value, (int, float)) or not math.isfinite(value):
        continue
      steps, values = curves.setdefault((series, name), ([], []))
      steps.append(record['step'])
      values.append(float(value))
  return curves


def require_matplotlib():
  """`matplotlib.pyplot` (headless unless a backend is set), or ImportError naming the
  extra to install."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    if 'matplotlib.pyplot' not in sys.modules and not os.environ.get('MPLBACKEND'):
      matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise errors.MissingDependencyError(
      'Plots need matplotlib: install the plot extra, `pip install -e ".[plot]"` '
      '(or `pip install matplotlib`).'
    ) from e
  return plt


def plot_runs(
  workdirs: Sequence[str],
  output: Optional[str] = None,
  *,
  metrics: Optional[Sequence[str]] = None,
  log_y: Sequence[str] = (),
  labels: Optional[Sequence[str]] = None,
  columns: int = 3,
):
  """Draws the curves of several runs into one figure (and a PNG if `output`).

  Args:
    workdirs: run folders (or metrics files); each is one colour.
    output: PNG path to write, or None to only return the figure.
    metrics: metric names to draw (default: every numeric metric, sorted).
    log_y: metrics drawn on a logarithmic axis.
    labels: legend names of the runs (default: the folder names).
    columns: panels per row.

  Returns:
    The matplotlib figure.

  Raises:
    ValueError: no runs, no metric to draw, or an unknown metric in `metrics`.
  """
  if not workdirs:
    raise errors.ConfigError('Give at least one --workdir.')
  plt = require_matplotlib()
  runs = [read_curves(w) for w in workdirs]
  names = sorted({name for curves in runs for _, name in curves})
  if metrics:
    unknown = sorted(set(metrics) - set(names))
    if unknown:
      raise errors.ConfigError(
        f'--metrics {unknown} are in none of the runs; they hold {names}.'
      )
    names = list(metrics)
  if not names:
    raise errors.DataError(f'No numeric metric in {list(workdirs)}.')
  labels = (
    list(labels)
    if labels
    else [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
  )
  rows = -(-len(names) // columns)
  cols = min(columns, len(names))
  figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
  colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for axis, name in zip(axes.ravel(), names):
    for index, (curves, label) in enumerate(zip(runs, labels)):
      colour = colours[index % len(colours)]
      for (series, metric), (steps, values) in sorted(curves.items()):
        if metric != name:
          continue
        style = (
          dict(linestyle='-')
          if series == 'train'
          else dict(linestyle='--', marker='o', markersize=3)
        )
        axis.plot(steps, values, color=colour, label=f'{label} {series}', **style)
    axis.set_title(name, fontsize=10)
    axis.set_xlabel('step')
    if name in log_y:
      axis.set_yscale('log')
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
  for axis in axes.ravel()[len(names) :]:
    axis.axis('off')
  figure.tight_layout()
  if output:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure.savefig(output, format='png', dpi=100)
  return figure
