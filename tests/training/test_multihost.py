"""Two local processes joined by `jax.distributed.initialize` train in lockstep.

Each process (one CPU device each) parses the same flags as `experiments/train.py`,
loads its half of every global batch and writes its final parameters to an npz file;
both must be identical, and equal (to float tolerance) to a single-process run with
the same global batch.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

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


@pytest.mark.slow
def test_sigterm_to_one_host_stops_both_at_the_same_step(tmp_path):
  """docs/training.md: a preemption notice reaching one host makes every host save the
  same step and exit with status 143; a rerun of both resumes from it."""
  workdir = tmp_path / 'shared'
  port = helpers.free_port()
  env = helpers.subprocess_env(PYTHONPATH=REPO_ROOT)

  def start(process_id, num_steps):
    command = [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/digits.py:tiny',
      f'--workdir={workdir}',
      '--mode=train',
      f'--coordinator_address=localhost:{port}',
      '--num_processes=2',
      f'--process_id={process_id}',
      '--config.training.batch_size=20',
      '--config.training.log_every_steps=1',
      '--config.training.checkpoint_every_steps=100000',
      f'--config.training.num_steps={num_steps}',
    ]
    return subprocess.Popen(
      command,
      cwd=REPO_ROOT,
      env=env,
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )

  procs = [start(i, 100_000) for i in range(2)]
  try:
    deadline = time.time() + 300
    metrics = workdir / 'metrics.jsonl'
    while time.time() < deadline and all(p.poll() is None for p in procs):
      if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
        break
      time.sleep(0.2)
    assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
    procs[1].send_signal(signal.SIGTERM)  # Only host 1 gets the notice.
    outputs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  stops = []
  for p, (_, stderr) in zip(procs, outputs):
    assert p.returncode == 143, stderr[-3000:]
    [line] = [
      x for x in stderr.splitlines() if 'Preempted (SIGTERM): saved checkpoint' in x
    ]
    stops.append(int(line.split('saved checkpoint ')[1].split()[0]))
  assert stops[0] == stops[1]
  saved = sorted(int(s) for s in os.listdir(workdir / 'checkpoints') if s.isdigit())
  assert saved == [stops[0]]
  # Both resume from it and finish a few steps later.
  procs = [start(i, stops[0] + 2) for i in range(2)]
  outputs = [p.communicate(timeout=400) for p in procs]
  for p, (_, stderr) in zip(procs, outputs):
    assert p.returncode == 0, stderr[-3000:]
    assert f'Resumed from checkpoint {stops[0]}' in stderr
