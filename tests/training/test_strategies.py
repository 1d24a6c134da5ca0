"""The 'sharded' strategy (jit over a mesh, optionally FSDP) against 'pmap'.

`strategy_worker.py` trains a small model with BatchNorm and dropout, and one without,
for 3 steps under each strategy in subprocesses: 4 forced CPU devices in one process,
and 2 processes x 2 devices joined by `jax.distributed`. Same global batches, same
keys: every variant must end with the same parameters to float32 tolerance.
"""

import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

REPO_ROOT = helpers.REPO_ROOT
BN_VARIANTS = ('bn_sharded', 'bn_fsdp', 'bn_pmap_then_fsdp', 'bn_fsdp_then_pmap')


def _start(output, which, num_devices, *distributed):
  env = helpers.subprocess_env(
    f'--xla_force_host_platform_device_count={num_devices}', PYTHONPATH=REPO_ROOT
  )
  return subprocess.Popen(
    [sys.executable, '-m', 'tests.training.strategy_worker', str(output), which]
    + [str(a) for a in distributed],
    cwd=REPO_ROOT,
    env=env,
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )


def _wait(procs):
  try:
    outputs = [proc.communicate(timeout=400) for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, (_, stderr) in zip(procs, outputs):
    assert proc.returncode == 0, stderr[-3000:]


def _variant(results, name):
  prefix = name + '/'
  return {k[len(prefix) :]: v for k, v in results.items() if k.startswith(prefix)}


def _assert_same(results, name, reference, *, atol=2e-6):
  got, want = _variant(results, name), _variant(results, reference)
  assert got.keys() == want.keys() and got, (name, sorted(got), sorted(want))
  for key in want:
    np.testing.assert_allclose(got[key], want[key], atol=atol, rtol=0, err_msg=name + key)


def test_strategies_agree_on_four_devices(tmp_path):
  _wait([_start(tmp_path / 'four.npz', 'all', 4)])
  results = dict(np.load(tmp_path / 'four.npz'))

  for name in BN_VARIANTS:
    _assert_same(results, name, 'bn_pmap')
  # Training moved the parameters and the BatchNorm statistics.
  assert np.abs(results["bn_pmap/['linear']['w']"]).max() > 0
  assert np.abs(results["bn_pmap/state['batch_norm/~/mean_ema']['average']"]).max() > 0
  # FSDP: [7, 8] split along its 8 (4 devices), [8, 3] along its 8, the [3] bias and
  # the step replicated; the Adam moments follow their parameters.
  shards = {k[len('shard/') :]: tuple(v) for k, v in results.items() if k[:6] == 'shard/'}
  assert shards[".params['linear']['w']"] == (7, 2)
  assert shards[".params['linear_1']['w']"] == (2, 3)
  assert shards[".params['linear_1']['b']"] == (3,)
  assert shards[".params['batch_norm']['scale']"] == (1, 2)
  assert shards[".opt_state[1][0].mu['linear']['w']"] == (7, 2)
  assert shards['.step'] == ()
  # Gradient accumulation (3 micro-batches of 2 per device) equals the whole batch.
  _assert_same(results, 'mlp_pmap_k3', 'mlp_pmap_k1')
  _assert_same(results, 'mlp_sharded_k3', 'mlp_pmap_k1')


@pytest.mark.slow
def test_strategies_agree_on_two_processes(tmp_path):
  address = f'localhost:{helpers.free_port()}'
  procs = [_start(tmp_path / f'host{i}.npz', 'bn', 2, address, 2, i) for i in range(2)]
  _wait(procs)
  first = dict(np.load(tmp_path / 'host0.npz'))
  for i in range(2):
    results = dict(np.load(tmp_path / f'host{i}.npz'))
    assert results.keys() == first.keys()
    # Every host holds the whole state, the same on both.
    for key in results:
      np.testing.assert_array_equal(results[key], first[key], err_msg=key)
    for name in BN_VARIANTS:
      _assert_same(results, name, 'bn_pmap')
  shards = {k[len('shard/') :]: tuple(v) for k, v in first.items() if k[:6] == 'shard/'}
  assert shards[".params['linear']['w']"] == (7, 2)
