"""The command-line programs under experiments/: flags, exit codes and outputs.

Every program is run as `python -m experiments.<name>` in a subprocess, as a user
would, on tiny settings. Importing all of experiments/ into one process must also work:
programs define their flags only when run, so library imports never clash.
"""

import json
import os
import pkgutil
import subprocess
import sys

import pytest

import experiments
from experiments.training import host_memory
from tests import helpers

REPO_ROOT = helpers.REPO_ROOT


def _run(args, cwd=REPO_ROOT, timeout=600):
  env = helpers.subprocess_env(TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run(
    [sys.executable] + args,
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_every_experiments_module_imports_into_one_process():
  names = sorted(
    m.name for m in pkgutil.walk_packages(experiments.__path__, 'experiments.')
  )
  assert {
    'experiments.train',
    'experiments.benchmark',
    'experiments.benchmarks.scaling_study',
    'experiments.training.trainer',
  } <= set(names)
  script = ''.join(f'import {name}\n' for name in names)
  result = _run(['-c', script + f'print("imported", {len(names)})'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'imported {len(names)}' in result.stdout


def test_top_level_holds_only_commands():
  """experiments/ top level: the programs a user runs, each with a main."""
  modules = [m for m in pkgutil.iter_modules(experiments.__path__) if not m.ispkg]
  for module in modules:
    with open(os.path.join(experiments.__path__[0], module.name + '.py')) as f:
      assert "if __name__ == '__main__':" in f.read(), module.name


def _benchmark_tiny(output, *flags):
  """Runs the benchmark command on the tiny digits config; returns (result, report)."""
  result = _run(
    [
      '-m',
      'experiments.benchmark',
      '--config=configs/digits.py:tiny',
      '--matmul_size=64',
      f'--output={output}',
      *flags,
    ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result, json.loads(output.read_text())


def test_benchmark_command_writes_its_report(tmp_path):
  flags = (
    '--config.training.batch_size=6',
    f'--compilation_cache_dir={tmp_path / "cache"}',
  )
  result, report = _benchmark_tiny(tmp_path / 'report.json', *flags, '--steps=2')
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  assert printed == report
  assert report['config'] == 'configs/digits.py:tiny'
  assert report['overrides'] == {'training.batch_size': 6}
  assert report['global_batch_size'] == 6
  assert report['num_timed_steps'] == 2
  assert report['compilation_cache_dir'] == str(tmp_path / 'cache')
  assert report['host_malloc'] == (
    'retain_per_thread' if host_memory.is_glibc() else 'system'
  )
  # The same step again (loaded from the compilation cache), with the system allocator
  # kept when asked.
  _, report = _benchmark_tiny(
    tmp_path / 'report.json', *flags, '--steps=1', '--host_malloc=system'
  )
  assert report['host_malloc'] == 'system'
  assert report['num_timed_steps'] == 1


def test_benchmark_command_rejects_an_unknown_allocator():
  result = _run(
    [
      '-m',
      'experiments.benchmark',
      '--config=configs/digits.py:tiny',
      '--host_malloc=keep',
    ]
  )
  assert result.returncode != 0 and 'host_malloc' in result.stderr


def test_benchmark_command_requires_a_config():
  result = _run(['-m', 'experiments.benchmark', '--steps=1'])
  assert result.returncode != 0
  assert '--config' in result.stderr


@pytest.mark.slow
def test_benchmark_compile_command_compares_block_counts(tmp_path):
  output = tmp_path / 'compile.json'
  result = _run(
    [
      '-m',
      'experiments.benchmarks.compile_time',
      '--config=configs/digits.py:tiny',
      '--blocks_field=model.encoder.num_blocks',
      '--num_blocks=1,3',
      f'--output={output}',
    ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert report['field'] == 'model.encoder.num_blocks'
  assert set(report['results']) == {'1', '3'}
  ratio = report['results']['3']['compile_s'] / report['results']['1']['compile_s']
  assert abs(report['compile_ratio_3_over_1'] - ratio) < 1e-2


@pytest.mark.slow
def test_scaling_study_command_writes_tables(tmp_path):
  result = _run(
    [
      '-m',
      'experiments.benchmarks.scaling_study',
      f'--output_dir={tmp_path}',
      '--sizes=16,48',
      '--num_latents=5',
      '--width=8',
      '--input_channels=3',
      '--num_layers=1',
      '--num_heads=2',
      '--repeats=1',
      '--host_malloc=system',
    ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  data = json.loads((tmp_path / 'scaling.json').read_text())
  assert data['settings']['width'] == 8
  assert data['settings']['host_malloc'] == 'system'
  assert data['settings']['num_latents'] == 5
  rows = {(r['model'], r['num_inputs']): r for r in data['rows']}
  assert set(rows) == {(m, s) for m in ('perceiver', 'transformer') for s in (16, 48)}
  markdown = (tmp_path / 'scaling.md').read_text()
  assert 'python -m experiments.benchmarks.scaling_study' in markdown
  assert '--sizes=16,48' in markdown


def test_imagenet_input_benchmark_command_reports_throughput():
  result = _run(
    [
      '-m',
      'experiments.benchmarks.imagenet_input',
      '--variant=debug',
      '--num_images=4',
      '--height=37',
      '--width=53',
      '--batch_size=2',
      '--num_batches=1',
      '--warmup_batches=1',
      '--mode=eval',
    ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert '4 synthetic 37x53 JPEGs' in result.stdout
  assert 'eval (center crop): ' in result.stdout
  assert 'train (' not in result.stdout


def test_imagenet_prepare_command_names_missing_archives(tmp_path):
  result = _run(['-m', 'experiments.tasks.imagenet.prepare'])
  assert result.returncode != 0
  assert '--manual_dir is required' in result.stderr
  result = _run(['-m', 'experiments.tasks.imagenet.prepare', f'--manual_dir={tmp_path}'])
  assert result.returncode != 0
  assert 'ILSVRC2012_img_train.tar' in result.stderr
  assert 'ILSVRC2012_img_val.tar' in result.stderr
