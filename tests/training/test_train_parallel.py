"""Data parallelism on 4 forced CPU devices, compared with a single device.

The device count is fixed when JAX starts, so the 4-device runs are subprocesses with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`; the reference runs in this
process on one device with the same global batch.
"""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import digits as digits_config
from experiments.training import trainer
from tests import helpers

REPO_ROOT = helpers.REPO_ROOT


def _four_device_env():
  return helpers.subprocess_env(
    '--xla_force_host_platform_device_count=4', PYTHONPATH=REPO_ROOT
  )


def _run(args, **kwargs):
  return subprocess.run(
    [sys.executable] + args,
    env=_four_device_env(),
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    **kwargs,
  )


OVERRIDES = dict(num_steps=4, batch_size=20, log_every_steps=2, checkpoint_every_steps=4)
EVAL_BATCH = 28  # 360 test images: 12 full batches and one with 24 padding rows.


@pytest.mark.slow
def test_four_devices_match_one_device(tmp_path):
  config = digits_config.get_config('tiny')
  for key, value in OVERRIDES.items():
    config.training[key] = value
  config.evaluation.batch_size = EVAL_BATCH
  assert jax.local_device_count() == 1

  workdir = tmp_path / 'four'
  # The 4-device run, in a subprocess, trains while the reference trains here.
  four = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/digits.py:tiny',
      f'--workdir={workdir}',
      '--mode=train_and_eval',
      f'--config.evaluation.batch_size={EVAL_BATCH}',
    ]
    + [f'--config.training.{k}={v}' for k, v in OVERRIDES.items()],
    env=_four_device_env(),
    cwd=REPO_ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    single = trainer.train(config, str(tmp_path / 'one'), evaluate=True)
    initial_params = _initial_params(config)
    _, stderr = four.communicate(timeout=300)
  finally:
    if four.poll() is None:
      four.kill()
  assert four.returncode == 0, stderr[-3000:]
  assert 'over 1 host(s) x 4 device(s) (per-device batch 5)' in stderr

  from perceiver import checkpoint as npz_format  # pylint: disable=g-import-not-at-top

  params, _ = npz_format.load_npz(str(workdir / 'export' / 'params.npz'))
  assert jax.tree.structure(params) == jax.tree.structure(single.params)
  changed = 0
  for got, want, init in zip(
    jax.tree.leaves(params),
    jax.tree.leaves(single.params),
    jax.tree.leaves(initial_params),
  ):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    changed += not np.allclose(want, init)
  assert changed > len(jax.tree.leaves(params)) // 2  # Training did move the params.

  def evals(path):
    with open(path / 'metrics.jsonl') as f:
      return [r for r in map(json.loads, f) if r['split'] == 'eval']

  four_eval, one_eval = evals(workdir)[-1], evals(tmp_path / 'one')[-1]
  assert four_eval['num_examples'] == one_eval['num_examples'] == 360
  np.testing.assert_allclose(four_eval['top_1_acc'], one_eval['top_1_acc'])
  np.testing.assert_allclose(four_eval['loss'], one_eval['loss'], rtol=1e-4)


def _initial_params(config):
  """The parameters the one-device run started from (its init: cached, compiled)."""
  from experiments.training import experiment  # pylint: disable=g-import-not-at-top
  from experiments.training import steps  # pylint: disable=g-import-not-at-top
  from experiments.training import task as task_lib  # pylint: disable=g-import-not-at-top

  exp = experiment.build(config)
  init_rng, _, _ = experiment.rngs(config)
  state = steps.init_train_state(
    exp.model, exp.optimizer, task_lib.example_batch(exp.task, config), init_rng
  )
  return state.params


_DEVICE_CHECKS = textwrap.dedent("""
    import jax, numpy as np
    from experiments.training import parallel
    assert jax.local_device_count() == 4
    # Each device and each step gets its own key (and so its own dropout mask).
    keys = parallel.pmap_step(
        lambda state, step: parallel.device_rng(state, step), donate_state=False)
    base = parallel.replicate(jax.random.PRNGKey(0))
    got = np.concatenate([np.asarray(keys(base, np.full((4,), s, np.int32)))
                          for s in (0, 1)])
    assert len({tuple(k) for k in got.reshape(8, -1).tolist()}) == 8, got
    masks = parallel.pmap_step(
        lambda key, step: jax.random.bernoulli(parallel.device_rng(key, step), 0.5, (64,)),
        donate_state=False)(base, np.zeros((4,), np.int32))
    assert len({tuple(m) for m in np.asarray(masks).tolist()}) == 4
    # Cross-device means run over all devices.
    mean = parallel.pmap_step(lambda x: parallel.cross_device_mean(x),
                              donate_state=False)(np.arange(4.0))
    assert np.allclose(np.asarray(mean), 1.5)
    assert parallel.local_batch_dims(20) == (4, 5)
    try:
      parallel.per_device_batch_size(30, name='training.batch_size')
    except ValueError as e:
      print('ERROR:', e)
""")


def test_per_device_keys_and_batch_checks():
  result = _run(['-c', _DEVICE_CHECKS])
  assert result.returncode == 0, result.stderr[-3000:]
  assert (
    'ERROR: training.batch_size=30 is not divisible by the number of devices (4'
    in result.stdout
  )
