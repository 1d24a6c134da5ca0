"""Evaluation jobs beside training: read-only `--mode=eval` and `--mode=eval_continuous`.

The concurrent test runs a real trainer and a real continuous evaluator (two
processes) on one workdir, as jaxline runs an evaluation job beside training.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import digits as digits_config
from experiments.training import checkpoint_manager as checkpointing
from experiments.training import metrics_writer
from experiments.training import trainer
from perceiver import checkpoint as npz_format
from tests import helpers
from tests.training import test_train

REPO_ROOT = helpers.REPO_ROOT
NUM_STEPS = 9
EVERY = 2


# The command's config overrides (also applied in process below).
OVERRIDES = {
  'training.num_steps': NUM_STEPS,
  'training.batch_size': 16,
  'training.checkpoint_every_steps': EVERY,
  'training.keep_checkpoints': 2,
  'training.log_every_steps': 1,
  'training.compilation_cache': False,
  'evaluation.batch_size': 96,
  'evaluation.poll_every_s': 0.1,
  'evaluation.idle_timeout_s': 240,
  'evaluation.best_metric': 'top_1_acc',
}


def _command(workdir, mode, *extra):
  return [
    sys.executable,
    '-m',
    'experiments.train',
    f'--config={os.path.join(REPO_ROOT, "configs", "digits.py")}:tiny',
    f'--workdir={workdir}',
    f'--mode={mode}',
    *[f'--config.{name}={value}' for name, value in OVERRIDES.items()],
    *extra,
  ]


def _env():
  return helpers.subprocess_env(PYTHONPATH=REPO_ROOT)


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_trainer_and_continuous_evaluator_run_together(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  procs = {}
  try:
    # The evaluator starts first and waits for checkpoints.
    for mode in ('eval_continuous', 'train'):
      procs[mode] = subprocess.Popen(
        _command(workdir, mode),
        cwd=str(tmp_path),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    outputs = {mode: proc.communicate(timeout=420) for mode, proc in procs.items()}
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
  for mode, proc in procs.items():
    assert proc.returncode == 0, f'{mode}: {outputs[mode][1][-3000:]}'
  assert f'[train] step {NUM_STEPS}/{NUM_STEPS}' in outputs['train'][1]

  out_dir = workdir / 'eval_test'
  records = [r for r in _records(out_dir / 'metrics.jsonl') if r['split'] == 'eval']
  steps = [r['step'] for r in records]
  # Each checkpoint evaluated at most once, in order, ending with the final step;
  # checkpoints deleted by the trainer's keep policy before being read are skipped.
  assert steps == sorted(set(steps)) and steps[-1] == NUM_STEPS
  assert set(steps) <= set(range(EVERY, NUM_STEPS, EVERY)) | {NUM_STEPS}
  assert all(r['num_examples'] == 360 for r in records)

  # The best checkpoint by top_1_acc, kept in its own folder.
  best = json.loads((out_dir / 'best' / 'best.json').read_text())
  accuracies = {r['step']: r['top_1_acc'] for r in records}
  assert best['metric'] == 'top_1_acc'
  assert best['value'] == max(accuracies.values())
  assert best['step'] == min(s for s, a in accuracies.items() if a == best['value'])
  params, _ = npz_format.load_npz(str(out_dir / 'best' / 'params.npz'))
  assert params  # The library's format, loadable without the training code.
  assert os.listdir(out_dir / 'best' / 'checkpoints') == [str(best['step'])]
  # The final step's evaluation equals what `--mode=eval` computes afterwards (the
  # command's own entry point, in this process, with the command's flags).
  config = digits_config.get_config('tiny')
  for name, value in OVERRIDES.items():
    section, field = name.split('.')
    config[section][field] = value
  metrics = trainer.run(config, str(workdir), 'eval')
  assert metrics['step'] == NUM_STEPS
  again = [r for r in _records(out_dir / 'metrics.jsonl') if r['split'] == 'eval'][-1]
  assert again['step'] == NUM_STEPS
  np.testing.assert_allclose(again['top_1_acc'], accuracies[NUM_STEPS])
  np.testing.assert_allclose(metrics['top_1_acc'], accuracies[NUM_STEPS])
  # Nothing was set aside, and the trainer released its lock.
  assert not (workdir / checkpointing.SET_ASIDE_SUBDIR).exists()
  assert not (workdir / 'lock').exists()


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('trained')
  config = test_train.tiny_config(num_steps=4, checkpoint_every_steps=2)
  trainer.train(config, str(workdir))
  return config, workdir


def _listing(directory):
  return sorted(
    (
      os.path.relpath(os.path.join(root, name), directory),
      os.path.getmtime(os.path.join(root, name)),
    )
    for root, dirs, files in os.walk(directory)
    for name in dirs + files
  )


def test_eval_mode_leaves_the_checkpoints_untouched(trained):
  config, workdir = trained
  checkpoints = workdir / 'checkpoints'
  # What a running trainer's unfinished save looks like: it must survive.
  unfinished = checkpoints / '6.orbax-checkpoint-tmp-1234'
  unfinished.mkdir(exist_ok=True)
  (unfinished / 'partial').write_text('half a checkpoint')
  before = _listing(checkpoints)
  metrics = trainer.evaluate_checkpoint(config, str(workdir))
  assert metrics['step'] == 4 and metrics['num_examples'] == 360
  assert _listing(checkpoints) == before
  records = _records(workdir / 'eval_test' / 'metrics.jsonl')
  assert records[-1]['step'] == 4
  np.testing.assert_allclose(records[-1]['top_1_acc'], metrics['top_1_acc'])


def test_eval_of_a_read_only_workdir_still_reports(trained, monkeypatch, caplog):
  config, workdir = trained

  def read_only(*args, **kwargs):
    raise PermissionError(13, 'Read-only file system', str(workdir / 'eval_test'))

  monkeypatch.setattr(metrics_writer, 'MetricsWriter', read_only)
  with caplog.at_level('INFO'):
    metrics = trainer.evaluate_checkpoint(config, str(workdir), step=2)
  assert metrics['step'] == 2
  assert '[eval test] step 2: ' in caplog.text  # Logged before the write failed.
  assert f'top_1_acc {metrics["top_1_acc"]:.6g}' in caplog.text
  assert 'Cannot write evaluation metrics' in caplog.text


def test_continuous_evaluator_resumes_and_stops_when_idle(trained, tmp_path):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.training.num_steps = 6  # Step 6 never comes: stop after idle_timeout_s.
  config.evaluation.poll_every_s = 0.05
  config.evaluation.idle_timeout_s = 0.5
  config.evaluation.best_metric = 'loss'
  config.evaluation.best_metric_higher_is_better = False
  out = tmp_path / 'copy'
  import shutil  # pylint: disable=g-import-not-at-top

  shutil.copytree(workdir / 'checkpoints', out / 'checkpoints')
  start = time.monotonic()
  best = trainer.run(config, str(out), 'eval_continuous')
  assert time.monotonic() - start < 120
  records = _records(out / 'eval_test' / 'metrics.jsonl')
  assert [r['step'] for r in records] == [2, 4]
  losses = {r['step']: r['loss'] for r in records}
  assert best['value'] == min(losses.values())
  # A restarted evaluator does not evaluate them again.
  again = trainer.run(config, str(out), 'eval_continuous')
  assert again == best
  assert len(_records(out / 'eval_test' / 'metrics.jsonl')) == 2

  config.evaluation.best_metric = 'top_3_acc'
  shutil.rmtree(out / 'eval_test')
  with pytest.raises(ValueError, match="best_metric='top_3_acc' .*top_1_acc"):
    trainer.run(config, str(out), 'eval_continuous')


def test_continuous_evaluator_past_its_own_num_steps_says_so(trained, tmp_path, caplog):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.training.num_steps = 3  # The trainer went to 4.
  import shutil  # pylint: disable=g-import-not-at-top

  out = tmp_path / 'copy'
  shutil.copytree(workdir / 'checkpoints', out / 'checkpoints')
  with caplog.at_level('WARNING'):
    trainer.run(config, str(out), 'eval_continuous')
  assert "Checkpoint 4 is past this config's training.num_steps=3" in caplog.text
  assert [r['step'] for r in _records(out / 'eval_test' / 'metrics.jsonl')] == [2, 4]
  caplog.clear()
  with caplog.at_level('WARNING'):
    trainer.run(config, str(out), 'eval_continuous')
  assert 'Nothing to evaluate' in caplog.text and 'holds step 4' in caplog.text
