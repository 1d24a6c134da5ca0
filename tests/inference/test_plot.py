"""Training curves from metrics.jsonl: parsing, the figure, the command."""

import json
import os
import subprocess
import sys

import pytest

from experiments.inference import plotting
from experiments.training import errors
from tests import helpers


def _write_run(folder, records):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
    for record in records:
      f.write(json.dumps(record) + '\n')
  return str(folder)


RUN_A = [
  {'step': 1, 'split': 'train', 'loss': 2.5, 'learning_rate': 0.1, 'steps_per_sec': 3.0},
  {'step': 2, 'split': 'train', 'loss': 1.5, 'learning_rate': 0.1},
  {'step': 2, 'split': 'eval', 'eval_split': 'test', 'loss': 1.75, 'top_1_acc': 0.5},
  {'step': 3, 'split': 'train', 'loss': float('nan'), 'note': 'text is skipped'},
  {'step': 4, 'split': 'eval', 'eval_split': 'test', 'loss': 1.25, 'top_1_acc': 0.75},
]


def test_read_curves(tmp_path):
  curves = plotting.read_curves(_write_run(tmp_path / 'a', RUN_A))
  assert curves[('train', 'loss')] == ([1, 2], [2.5, 1.5])  # NaN skipped.
  assert curves[('eval', 'loss')] == ([2, 4], [1.75, 1.25])
  assert curves[('eval', 'top_1_acc')] == ([2, 4], [0.5, 0.75])
  assert curves[('train', 'steps_per_sec')] == ([1], [3.0])
  assert ('train', 'note') not in curves
  two_splits = RUN_A[:2] + [
    {'step': 2, 'split': 'eval', 'eval_split': 'test', 'loss': 1.0},
    {'step': 2, 'split': 'eval', 'eval_split': 'validation', 'loss': 2.0},
  ]
  curves = plotting.read_curves(_write_run(tmp_path / 'b', two_splits))
  assert curves[('eval:validation', 'loss')] == ([2], [2.0])


def test_bad_files_are_named(tmp_path):
  with pytest.raises(errors.DataError, match='No metrics.jsonl'):
    plotting.read_curves(str(tmp_path))
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss"\n')
  with pytest.raises(ValueError, match='line 2: not JSON'):
    plotting.read_curves(str(tmp_path))
  path.write_text('{"loss": 1.0}\n')
  with pytest.raises(
    ValueError, match='line 1: expected an object with an integer "step"'
  ):
    plotting.read_curves(str(tmp_path))


def test_plot_two_runs_writes_a_png(tmp_path):
  a = _write_run(tmp_path / 'run_a', RUN_A)
  b = _write_run(
    tmp_path / 'run_b', [{'step': 1, 'split': 'train', 'loss': 3.0, 'extra': 1}]
  )
  output = str(tmp_path / 'out' / 'curves.png')
  figure = plotting.plot_runs([a, b], output, log_y=['loss'])
  titles = sorted(axis.get_title() for axis in figure.axes if axis.get_title())
  assert titles == ['extra', 'learning_rate', 'loss', 'steps_per_sec', 'top_1_acc']
  loss_axis = next(axis for axis in figure.axes if axis.get_title() == 'loss')
  assert sorted(line.get_label() for line in loss_axis.get_lines()) == [
    'run_a eval',
    'run_a train',
    'run_b train',
  ]
  assert loss_axis.get_yscale() == 'log'
  with open(output, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(ValueError, match='in none of the runs'):
    plotting.plot_runs([a], None, metrics=['bleu'])


def test_command_writes_the_png(tmp_path):
  run = _write_run(tmp_path / 'run', RUN_A)
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.plot',
      f'--workdir={run}',
      '--metrics=loss,top_1_acc',
    ],
    cwd=helpers.REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert os.path.isfile(os.path.join(run, 'curves.png'))
  missing = subprocess.run(
    [sys.executable, '-m', 'experiments.plot', f'--workdir={tmp_path / "nothing"}'],
    cwd=helpers.REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert missing.returncode == 1
  assert (
    missing.stderr.strip().splitlines()[-1].startswith('plot: error: No metrics.jsonl')
  )


def test_missing_matplotlib_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # `import matplotlib` fails.
  monkeypatch.delitem(sys.modules, 'matplotlib.pyplot', raising=False)
  with pytest.raises(ImportError, match=r'pip install -e "\.\[plot\]"'):
    plotting.require_matplotlib()
