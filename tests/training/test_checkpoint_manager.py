"""Checkpoints: round trip, retention, interrupted saves, and the npz export."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from experiments.training import checkpoint_manager as checkpointing
from experiments.training import steps
from tests import helpers

REPO_ROOT = helpers.REPO_ROOT


def _state(step, value=1.0, size=5):
  params = {
    'encoder/~/linear': {
      'w': np.full((3, size), value, np.float32),
      'b': np.full((size,), -value, np.float32),
    }
  }
  return steps.TrainState(
    step=np.array(step, np.int32),
    params=params,
    state={'norm': {'counter': np.array(step, np.int32)}},
    opt_state=(
      {'mu': {'encoder/~/linear': {'w': np.full((3, size), value / 2, np.float32)}}},
      np.array(step, np.int32),
    ),
  )


def _assert_equal(a, b):
  import jax  # pylint: disable=g-import-not-at-top

  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def test_round_trip_and_keep_last(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  assert ckpt.latest_step() is None
  for step in (3, 6, 9):
    ckpt.save(step, _state(step, value=float(step)))
  ckpt.close()

  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  assert ckpt.all_steps() == [6, 9]
  assert ckpt.latest_step() == 9
  _assert_equal(ckpt.restore(_state(0)), _state(9, value=9.0))
  _assert_equal(ckpt.restore(_state(0), step=6), _state(6, value=6.0))
  with pytest.raises(FileNotFoundError, match='no checkpoint 3'):
    ckpt.restore(_state(0), step=3)
  ckpt.close()


def test_restore_into_mismatched_structure_is_a_clear_error(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  ckpt.save(1, _state(1))
  ckpt.wait()
  with pytest.raises(ValueError, match='does not match'):
    ckpt.restore(_state(0, size=7))
  ckpt.close()


def test_keep_must_be_positive(tmp_path):
  with pytest.raises(ValueError, match='keep_checkpoints=0'):
    checkpointing.Checkpointer(str(tmp_path), keep=0)


# The child saves step 1, then dies while saving step 2: either in the middle of
# writing a large array (SIGKILL once the temporary directory exists) or after every
# file is written but before the commit (the final rename).
_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    from experiments.training import checkpoint_manager as checkpointing
    from tests.training.test_checkpoint_manager import _state
    workdir, mode = sys.argv[1], sys.argv[2]
    ckpt = checkpointing.Checkpointer(workdir, keep=3)
    ckpt.save(1, _state(1, value=1.0))
    ckpt.wait()
    big = _state(2, value=2.0, size=4_000_000)  # 48 MB of float32 in params alone.
    if mode == 'before_commit':
      from orbax.checkpoint._src.path import async_path
      async def die(*args, **kwargs):
        os._exit(17)
      async_path.rename = die
      ckpt.save(2, big)
      ckpt.wait()
      os._exit(0)  # Not reached: the rename kills the process.
    ckpt.save(2, big)
    root = os.path.join(workdir, 'checkpoints')
    deadline = time.time() + 60
    while time.time() < deadline:
      if any(name.startswith('2') and 'tmp' in name for name in os.listdir(root)):
        os.kill(os.getpid(), signal.SIGKILL)
      time.sleep(0.001)
    os._exit(3)
""")


@pytest.mark.parametrize('mode, exit_code', [('mid_write', -9), ('before_commit', 17)])
def test_interrupted_save_keeps_previous_checkpoint(tmp_path, mode, exit_code):
  script = _CHILD.format(repo=REPO_ROOT, tests=os.path.join(REPO_ROOT, 'tests'))
  result = subprocess.run(
    [sys.executable, '-c', script, str(tmp_path), mode],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == exit_code, result.stderr[-3000:]
  root = tmp_path / 'checkpoints'
  leftovers = [p.name for p in root.iterdir() if p.name.startswith('2')]
  assert leftovers and all('tmp' in name for name in leftovers), leftovers

  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  assert ckpt.all_steps() == [1]
  _assert_equal(ckpt.restore(_state(0)), _state(1, value=1.0))
  # Saving resumes normally, and the leftover temporary directory is gone.
  ckpt.save(2, _state(2, value=2.0))
  ckpt.close()
  assert sorted(p.name for p in root.iterdir() if p.name.startswith('2')) == ['2']
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  _assert_equal(ckpt.restore(_state(0)), _state(2, value=2.0))
  ckpt.close()


def test_export_npz_round_trip(tmp_path):
  from perceiver import checkpoint as npz_format  # pylint: disable=g-import-not-at-top

  state = _state(4, value=3.0)
  path = checkpointing.export_npz(str(tmp_path), state.params, state.state)
  assert path == os.path.join(str(tmp_path), 'export', 'params.npz')
  params, model_state = npz_format.load_npz(path)
  _assert_equal(params, state.params)
  _assert_equal(model_state, state.state)
