"""Recovering a run: no intact checkpoint, consecutive rollbacks, divergence from scratch.

The failures an operator met (issue 24): a workdir whose checkpoints are all damaged
restarted from step 0 silently and mixed its metrics with the old ones; a second
rollback replayed the batches of the first; a run diverging before any good checkpoint
named "step None".
"""

import json
import os
import subprocess
import sys

import pytest

from experiments.training import checkpoint_manager as checkpointing
from experiments.training import trainer
from tests import helpers
from tests.training import test_reliability
from tests.training import test_train

CONFIG = os.path.join(helpers.REPO_ROOT, 'configs', 'digits.py')


def _train(workdir, *flags):
  env = helpers.subprocess_env(PYTHONPATH=helpers.REPO_ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  command = [
    sys.executable,
    '-m',
    'experiments.train',
    f'--config={CONFIG}:tiny',
    f'--workdir={workdir}',
    '--mode=train',
    '--config.training.batch_size=16',
    '--config.training.log_every_steps=1',
    *flags,
  ]
  return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_a_workdir_whose_checkpoints_are_all_damaged(tmp_path):
  workdir = tmp_path / 'run'
  flags = ['--config.training.num_steps=10', '--config.training.checkpoint_every_steps=2']
  first = _train(workdir, *flags)
  assert first.returncode == 0, first.stderr[-3000:]
  steps = checkpointing.CheckpointReader(str(workdir)).all_steps()
  assert steps == [6, 8, 10]
  for step in steps:
    test_reliability._flip_byte(str(workdir / 'checkpoints' / str(step)))  # pylint: disable=protected-access
  metrics_before = (workdir / 'metrics.jsonl').read_text()
  export_before = (workdir / 'export' / 'params.npz').read_bytes()

  # Stops with one line naming the checkpoints and where they went; trains nothing.
  again = _train(workdir, *flags)
  assert again.returncode == 1, again.stderr[-3000:]
  last = again.stderr.strip().splitlines()[-1]
  assert last.startswith('train: error: none of the checkpoints [6, 8, 10]'), last
  assert str(workdir / 'checkpoints_set_aside') in last
  assert '--allow_restart_from_scratch' in last
  assert 'Traceback' not in again.stderr and 'Event loop is closed' not in again.stderr
  assert (workdir / 'metrics.jsonl').read_text() == metrics_before
  assert (workdir / 'export' / 'params.npz').read_bytes() == export_before
  assert len(os.listdir(workdir / 'checkpoints_set_aside')) == 3

  # Asked to, it starts again; the old rows move aside, so no step appears twice.
  restart = _train(workdir, *flags, '--allow_restart_from_scratch')
  assert restart.returncode == 0, restart.stderr[-3000:]
  assert 'Traceback' not in restart.stderr
  rows = _rows(workdir / 'metrics.jsonl')
  assert [r['step'] for r in rows] == list(range(1, 11))
  superseded = _rows(workdir / 'metrics_superseded.jsonl')
  assert [r['step'] for r in superseded] == list(range(1, 11))
  assert {r['superseded_at'] for r in superseded} == {0}


@pytest.mark.slow
def test_each_rollback_skips_every_batch_tried_since_the_good_checkpoint(tmp_path):
  seen = []
  config = test_train.tiny_config(
    num_steps=8, checkpoint_every_steps=2, log_every_steps=1, prefetch_to_device=0
  )
  config.training.rollback_on_nonfinite = 2
  # Position 4 spoils step 4; after the first rollback (to checkpoint 2, skipping 2
  # batches) step 4 reads position 6, spoilt too.
  config.task = test_train.poisoned_task({4, 6}, seen)
  final = trainer.train(config, str(tmp_path))
  assert int(final.step) == 8
  # Attempt 1 trains steps 1-4 on positions 1-4 (4 is bad); back at checkpoint 2,
  # attempt 2 trains steps 3-4 on positions 5-6 (6 is bad); back at checkpoint 2 again,
  # attempt 3 trains steps 3-8 on positions 7-12. No batch is read twice (the second
  # rollback once replayed positions 5 and 6).
  assert seen == list(range(1, 13))
  records = [r for r in test_train.read_metrics(str(tmp_path)) if r['split'] == 'train']
  assert [r['step'] for r in records] == list(range(1, 9))  # Each step once.


def test_divergence_before_any_good_checkpoint_says_what_to_change(tmp_path):
  config = test_train.tiny_config(num_steps=4, checkpoint_every_steps=1)
  config.optimizer.base_lr = 1e30
  config.optimizer.max_norm = 0.0
  with pytest.raises(trainer.NonFiniteError) as info:
    trainer.train(config, str(tmp_path))
  message = str(info.value)
  assert 'step None' not in message
  assert 'No finite checkpoint older than step' in message
  assert 'config.optimizer.base_lr' in message


@pytest.mark.slow
def test_consecutive_rollbacks_of_a_real_run_see_different_batches(tmp_path):
  """The operator's case: 20 good steps, then a learning rate that diverges."""
  workdir = tmp_path / 'run'
  first = _train(
    workdir,
    '--config.training.num_steps=20',
    '--config.training.checkpoint_every_steps=1',
  )
  assert first.returncode == 0, first.stderr[-3000:]
  again = _train(
    workdir,
    '--config.training.num_steps=50',
    '--config.training.checkpoint_every_steps=1',
    '--config.optimizer.base_lr=1e6',
    '--config.training.rollback_on_nonfinite=2',
  )
  assert again.returncode == 1, again.stderr[-3000:]
  rolled = [
    line for line in again.stderr.splitlines() if 'rolled back to checkpoint' in line
  ]
  assert len(rolled) == 2, again.stderr[-3000:]
  skipped_in_all = [int(line.split('batches (')[1].split()[0]) for line in rolled]
  assert skipped_in_all[1] > skipped_in_all[0] > 0  # The second skips further.
  last = again.stderr.strip().splitlines()[-1]
  assert last.startswith('train: error: Non-finite loss or gradient'), last
  # The attempts after the first rollback trained the step after its checkpoint on
  # other batches than the attempt before it.
  good = int(rolled[0].split('rolled back to checkpoint ')[1].split()[0])
  rows = _rows(workdir / 'metrics.jsonl') + _rows(workdir / 'metrics_superseded.jsonl')
  losses = [r['loss'] for r in rows if r['step'] == good + 1 and r['split'] == 'train']
  assert len(losses) >= 2 and len(set(losses)) == len(losses), losses
