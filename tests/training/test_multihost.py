"""Two local processes joined by `jax.distributed.initialize` train in lockstep.

Each process (one CPU device each) parses the same flags as `experiments/train.py`,
loads its half of every global batch and writes its final parameters to an npz file;
both must be identical, and equal (to float tolerance) to a single-process run with
the same global batch.
"""

import json
import os
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

_HOST = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from absl import flags
    from experiments import train
    from experiments.training import trainer
    output = sys.argv.pop()
    args = train.define_flags()
    flags.FLAGS(sys.argv)
    train._initialize_distributed(args)
    assert jax.process_count() == 2 and jax.device_count() == 2
    state = trainer.run(args.config.value, args.workdir.value, args.mode.value)
    flat = {jax.tree_util.keystr(path): np.asarray(value) for path, value in
            jax.tree_util.tree_flatten_with_path(state.params)[0]}
    np.savez(output, **flat)
""")

OVERRIDES = dict(num_steps=4, batch_size=20, checkpoint_every_steps=2, log_every_steps=2)
EVAL_BATCH = 26  # Not a divisor of the 360 test images: the last batch is padded.


@pytest.mark.slow
def test_two_processes_train_in_lockstep(tmp_path):
  workdir = tmp_path / 'shared'
  port = helpers.free_port()
  env = helpers.subprocess_env(PYTHONPATH=REPO_ROOT)
  procs = []
  for process_id in range(2):
    args = [
      sys.executable,
      '-c',
      _HOST,
      'train',
      '--config=configs/digits.py:tiny',
      f'--workdir={workdir}',
      '--mode=train_and_eval',
      f'--coordinator_address=localhost:{port}',
      '--num_processes=2',
      f'--process_id={process_id}',
      f'--config.evaluation.batch_size={EVAL_BATCH}',
    ]
    args += [f'--config.training.{k}={v}' for k, v in OVERRIDES.items()]
    args.append(str(tmp_path / f'params_{process_id}.npz'))
    procs.append(
      subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
      )
    )
  outputs = []
  try:
    # The single-process reference trains here meanwhile.
    config = digits_config.get_config('tiny')
    for key, value in OVERRIDES.items():
      config.training[key] = value
    config.evaluation.batch_size = EVAL_BATCH
    single = trainer.train(config, str(tmp_path / 'single'), evaluate=True)
    for proc in procs:
      outputs.append(proc.communicate(timeout=400))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, (_, stderr) in zip(procs, outputs):
    assert proc.returncode == 0, stderr[-3000:]

  host0 = dict(np.load(tmp_path / 'params_0.npz'))
  host1 = dict(np.load(tmp_path / 'params_1.npz'))
  assert host0.keys() == host1.keys()
  for key in host0:
    np.testing.assert_array_equal(host0[key], host1[key], err_msg=key)

  flat = {
    jax.tree_util.keystr(path): np.asarray(value)
    for path, value in jax.tree_util.tree_flatten_with_path(single.params)[0]
  }
  assert flat.keys() == host0.keys()
  for key in flat:
    np.testing.assert_allclose(host0[key], flat[key], atol=1e-5, rtol=0, err_msg=key)

  # Host 0 wrote the outputs: checkpoints, metrics (evaluation gathered from both
  # hosts covers the 360 test images once) and the export.
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  with open(workdir / 'metrics.jsonl') as f:
    evals = [r for r in map(json.loads, f) if r['split'] == 'eval']
  with open(tmp_path / 'single' / 'metrics.jsonl') as f:
    single_evals = [r for r in map(json.loads, f) if r['split'] == 'eval']
  assert evals[-1]['num_examples'] == 360
  np.testing.assert_allclose(evals[-1]['top_1_acc'], single_evals[-1]['top_1_acc'])
  assert (workdir / 'export' / 'params.npz').exists()


def test_multihost_flags_are_checked(tmp_path):
  env = helpers.subprocess_env(PYTHONPATH=REPO_ROOT)
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/digits.py:tiny',
      f'--workdir={tmp_path}',
      '--num_processes=2',
      '--process_id=1',
    ],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode != 0
  assert '--coordinator_address is required with num_processes, process_id' in (
    result.stderr
  )
  assert not (tmp_path / 'checkpoints').exists()
