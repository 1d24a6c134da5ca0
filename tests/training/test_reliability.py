"""A trainer's safety nets: damaged checkpoints, the workdir lock, rollback, full disks.

Each test reproduces one failure an operator met (damaging the latest checkpoint,
starting a second trainer, diverging, filling the disk) and checks what now happens.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments.training import checkpoint_manager as checkpointing
from experiments.training import trainer
from experiments.training import workdir_lock
from tests import helpers
from tests.training import test_checkpoint_manager as ckpt_tests
from tests.training import test_train

REPO_ROOT = helpers.REPO_ROOT


def _config(**training):
  return test_train.tiny_config(
    **dict(dict(num_steps=4, checkpoint_every_steps=2, log_every_steps=1), **training)
  )


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished 4-step run with checkpoints 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('finished'))
  final = trainer.train(_config(), workdir)
  return workdir, final


def _largest_data_files(step_dir):
  """The largest array-data file of each of the checkpoint's data folders.

  (Orbax keeps a per-process database and, once merged, a root one.)
  """
  folders = glob.glob(os.path.join(step_dir, 'default', '**', 'd'), recursive=True)
  return [
    max(glob.glob(os.path.join(folder, '*')), key=os.path.getsize) for folder in folders
  ]


def _flip_byte(step_dir):
  for path in _largest_data_files(step_dir):
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    open(path, 'wb').write(bytes(data))


def _truncate(step_dir):
  for path in _largest_data_files(step_dir):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[: len(data) // 2])


def _random_state(step, size=300):
  """A train state of incompressible values (so a flipped byte hits array data)."""
  state = ckpt_tests._state(step, size=size)
  rng = np.random.default_rng(step)
  return state._replace(
    params={
      m: {k: rng.normal(size=v.shape).astype(v.dtype) for k, v in p.items()}
      for m, p in state.params.items()
    }
  )


DAMAGES = {
  'flipped_byte': _flip_byte,
  'truncated_file': _truncate,
  'deleted_metadata': lambda d: os.remove(os.path.join(d, 'default', '_METADATA')),
  'deleted_manifest': lambda d: os.remove(os.path.join(d, 'default', 'manifest.ocdbt')),
}


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_damaged_checkpoint_is_set_aside_and_the_previous_one_restored(tmp_path, damage):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  ckpt.save(1, _random_state(1))
  ckpt.save(2, _random_state(2))
  ckpt.close()
  DAMAGES[damage](str(tmp_path / 'checkpoints' / '2'))

  target = _random_state(0)
  # An evaluator's reader reports the damage (naming step and file), changing nothing.
  with pytest.raises(
    checkpointing.DamagedCheckpointError, match='checkpoint 2 is damaged'
  ):
    checkpointing.CheckpointReader(str(tmp_path)).restore(target, 2)
  assert checkpointing.committed_steps(str(tmp_path / 'checkpoints')) == [1, 2]

  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  step, state = ckpt.restore_latest_intact(target)
  assert step == 1
  ckpt_tests._assert_equal(state, _random_state(1))
  assert ckpt.all_steps() == [1]
  # Moved aside, not deleted.
  (aside,) = os.listdir(tmp_path / checkpointing.SET_ASIDE_SUBDIR)
  assert aside.startswith('2.damaged.')
  assert os.path.isdir(tmp_path / checkpointing.SET_ASIDE_SUBDIR / aside / 'default')
  ckpt.close()


def test_training_resumes_past_a_damaged_checkpoint_with_identical_results(
  finished, tmp_path
):
  workdir, final = finished
  shutil.copytree(workdir, tmp_path / 'run')
  _flip_byte(str(tmp_path / 'run' / 'checkpoints' / '4'))
  resumed = trainer.train(_config(), str(tmp_path / 'run'))
  assert int(resumed.step) == 4
  test_train.assert_trees_equal(resumed.params, final.params)
  assert os.listdir(tmp_path / 'run' / checkpointing.SET_ASIDE_SUBDIR)[0].startswith(
    '4.damaged.'
  )


def test_checkpoint_of_another_model_keeps_its_clear_error(finished, tmp_path):
  workdir, _ = finished
  shutil.copytree(workdir, tmp_path / 'run')
  config = _config()
  config.model.encoder.z_index_dim = 5  # Another latent array shape.
  with pytest.raises(checkpointing.CheckpointMismatchError, match='does not match'):
    trainer.train(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / checkpointing.SET_ASIDE_SUBDIR).exists()
  assert not (tmp_path / 'run' / workdir_lock.LOCK_FILE).exists()  # Released.
  # The same arrays in another tree (no gradient clipping, so no clipping state) is a
  # changed config too, never damage: no checkpoint is set aside.
  config = _config()
  config.optimizer.max_norm = 0.0
  with pytest.raises(checkpointing.CheckpointMismatchError, match='another structure'):
    trainer.train(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / checkpointing.SET_ASIDE_SUBDIR).exists()


def test_checkpoint_metadata_records_loss_and_checksum(finished):
  workdir, final = finished
  reader = checkpointing.CheckpointReader(workdir)
  metadata = reader.metadata(4)
  assert np.isfinite(metadata['loss']) and metadata['params_finite']
  assert metadata['data_offset'] == 0
  assert metadata['checksum'] == checkpointing.state_checksum(final)
  records = [r for r in test_train.read_metrics(workdir) if r['split'] == 'train']
  np.testing.assert_allclose(metadata['loss'], records[-1]['loss'], rtol=1e-3)


_HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from experiments.training import workdir_lock
lock = workdir_lock.WorkdirLock(sys.argv[1])
lock.acquire()
print('locked', flush=True)
time.sleep(120)
"""


def test_second_trainer_stops_at_once_naming_the_holder(tmp_path, caplog):
  holder = subprocess.Popen(
    [sys.executable, '-c', _HOLDER.format(repo=REPO_ROOT), str(tmp_path)],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == 'locked'
    start = time.monotonic()
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f'process {holder.pid} on'):
      trainer.train(_config(), str(tmp_path))
    assert time.monotonic() - start < 10  # Before compiling or loading anything.
    assert not (tmp_path / 'checkpoints').exists()
  finally:
    holder.kill()
    holder.wait()
  # The holder died without releasing: its lock is stale and is taken over.
  record = workdir_lock.read_holder(str(tmp_path / workdir_lock.LOCK_FILE))
  assert record['pid'] == holder.pid
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  with caplog.at_level('WARNING'):
    lock.acquire()
  assert f'process {holder.pid}' in caplog.text and 'stale' in caplog.text
  assert workdir_lock.read_holder(lock.path)['pid'] == os.getpid()
  lock.release()
  assert not os.path.exists(lock.path)


def test_lock_naming_a_live_process_counts_as_held_without_flock(tmp_path):
  # What a file system that ignores flock leaves: a record of a live process.
  path = tmp_path / workdir_lock.LOCK_FILE
  path.write_text(
    json.dumps({'host': socket.gethostname(), 'pid': os.getppid(), 'started': 0})
  )
  with pytest.raises(workdir_lock.WorkdirBusyError, match=f'process {os.getppid()}'):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()


@pytest.mark.slow
def test_rollback_skips_the_batches_after_the_good_checkpoint(tmp_path):
  config = _config(num_steps=6, checkpoint_every_steps=2, log_every_steps=1)
  config.task = test_train.poisoned_task({4})
  # Without rollback: stops, naming the good step and the option.
  with pytest.raises(trainer.NonFiniteError, match='at step 4 .*step 2 .*rollback'):
    trainer.train(config, str(tmp_path / 'stop'))

  config.training.rollback_on_nonfinite = 1
  final = trainer.train(config, str(tmp_path / 'rollback'))
  assert int(final.step) == 6
  assert checkpointing.params_are_finite(final.params)
  reader = checkpointing.CheckpointReader(str(tmp_path / 'rollback'))
  # Back to step 2, skipping the batches of steps 3 and 4 (positions 3, 4).
  assert reader.metadata(6)['data_offset'] == 2
  assert reader.all_steps() == [2, 4, 6]

  # A clean run resumed from the same step-2 state with batches 3 and 4 skipped by
  # hand (data_offset=2) ends with the same parameters.
  clean = _config(num_steps=6, checkpoint_every_steps=2, log_every_steps=1)
  clean.task = test_train.poisoned_task({10**9})
  reference_dir = str(tmp_path / 'reference')
  step_2 = reader.restore(jax.tree.map(np.asarray, final), 2)  # Only the structure.
  ckpt = checkpointing.Checkpointer(reference_dir, keep=3)
  ckpt.save(2, step_2, data_offset=2)
  ckpt.close()
  reference = trainer.train(clean, reference_dir)
  test_train.assert_trees_equal(reference.params, final.params)


def test_disk_full_during_a_save_is_one_clear_error(tmp_path, monkeypatch):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  ckpt.save(1, ckpt_tests._state(1))
  ckpt.wait()

  def no_space(*args, **kwargs):
    raise ValueError(
      'RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database: Failed to write '
      "235280 bytes to file 11: No space left on device [os_error_code='28']"
    )

  monkeypatch.setattr(ckpt._manager, 'save', no_space)
  with pytest.raises(checkpointing.CheckpointWriteError) as error:
    ckpt.save(2, ckpt_tests._state(2))
  message = str(error.value)
  assert message.startswith('no space left on device while writing checkpoint 2 in ')
  assert str(tmp_path / 'checkpoints') in message and '\n' not in message
  monkeypatch.undo()
  ckpt.close()
  assert checkpointing.committed_steps(str(tmp_path / 'checkpoints')) == [1]


def test_disk_full_on_a_real_small_file_system(tmp_path):
  mount = tmp_path / 'small'
  mount.mkdir()
  result = subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mount)],
    capture_output=True,
  )
  if result.returncode != 0:
    pytest.skip('cannot mount a small tmpfs here (needs root)')
  try:
    ckpt = checkpointing.Checkpointer(str(mount), keep=3)
    ckpt.save(1, ckpt_tests._state(1, size=7))
    ckpt.wait()
    with pytest.raises(checkpointing.CheckpointWriteError, match='no space left'):
      ckpt.save(2, _random_state(2, size=30_000))  # 360 KB of random float32.
      ckpt.wait()
    ckpt.close()
    assert checkpointing.committed_steps(str(mount / 'checkpoints')) == [1]
    restored = checkpointing.CheckpointReader(str(mount)).restore(
      ckpt_tests._state(0, size=7)
    )
    ckpt_tests._assert_equal(restored, ckpt_tests._state(1, size=7))
  finally:
    subprocess.run(['umount', '-l', str(mount)], capture_output=True)


def test_good_step_skips_checkpoints_with_non_finite_loss_or_parameters(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=5)
  ckpt.save(1, ckpt_tests._state(1), loss=2.5)
  ckpt.save(2, ckpt_tests._state(2), loss=float('inf'))
  ckpt.save(3, ckpt_tests._state(3, value=float('nan')), loss=1.0)
  ckpt.save(4, ckpt_tests._state(4), loss=1.0)
  ckpt.wait()
  assert ckpt.metadata(2)['loss'] is None and not ckpt.metadata(2)['loss_finite']
  assert not ckpt.metadata(3)['params_finite']
  # A non-finite step 6: step 5's parameters caused it, so the newest candidate is 4.
  assert trainer.good_step(ckpt, 6 - 1) == 4
  # A non-finite step 5: step 4's parameters caused it; 3 and 2 are not good.
  assert trainer.good_step(ckpt, 5 - 1) == 1
  assert trainer.good_step(ckpt, 1) is None
  ckpt.close()
