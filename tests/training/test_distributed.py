"""Multi-host start-up: the plan for each flag and cluster environment, and real joins.

The subprocess tests start two local processes (one CPU device each) through
`experiments/train.py`'s flag parsing and `_initialize_distributed`, then run a
cross-process `psum`: once joined by a Slurm environment the test sets (no multi-host
flag given), and once to check that a frozen process ends the other within the
configured heartbeat timeout instead of leaving it hanging.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from experiments.training import distributed
from tests import helpers

TIMEOUTS = dict(initialization_timeout_s=30, heartbeat_timeout_s=7, shutdown_timeout_s=11)
SLURM = dict(
  SLURM_JOB_ID='1234',
  SLURM_STEP_NODELIST='node[001-002]',
  SLURM_NTASKS='2',
  SLURM_PROCID='1',
  SLURM_LOCALID='0',
)


def _plan(mode='auto', environ=None, **flags):
  flags = dict(
    dict(coordinator_address=None, num_processes=None, process_id=None), **flags
  )
  return distributed.plan(mode, environ=environ or {}, **flags, **TIMEOUTS)


def test_detect_cluster_from_variables():
  assert distributed.detect_cluster({}) is None
  assert distributed.detect_cluster(SLURM) == distributed.Cluster('slurm', 2, 1)
  # One Slurm variable missing (e.g. `salloc` without `srun`): not a Slurm step.
  partial = {k: v for k, v in SLURM.items() if k != 'SLURM_STEP_NODELIST'}
  assert distributed.detect_cluster(partial) is None
  ompi = dict(
    OMPI_MCA_orte_hnp_uri='1531576320.0;tcp://10.96.0.1:34911',
    OMPI_COMM_WORLD_SIZE='5',
    OMPI_COMM_WORLD_RANK='3',
  )
  assert distributed.detect_cluster(ompi) == distributed.Cluster('openmpi', 5, 3)
  tpu = dict(TPU_WORKER_HOSTNAMES='w-0,w-1,w-2', TPU_WORKER_ID='2')
  assert distributed.detect_cluster(tpu) == distributed.Cluster('tpu', 3, 2)
  multislice = dict(MEGASCALE_COORDINATOR_ADDRESS='10.0.0.7:8080')
  assert distributed.detect_cluster(multislice) == distributed.Cluster('tpu', None, None)
  with pytest.raises(distributed.DistributedError, match="SLURM_NTASKS='two'"):
    distributed.detect_cluster(dict(SLURM, SLURM_NTASKS='two'))


def test_plan_auto_chooses_by_flags_then_environment():
  timeouts = dict(
    initialization_timeout=30, heartbeat_timeout_seconds=7, shutdown_timeout_seconds=11
  )
  assert _plan() == distributed.Plan('single', None, {})
  plan = _plan(environ=SLURM)
  assert plan == distributed.Plan('cluster', distributed.Cluster('slurm', 2, 1), timeouts)
  assert 'slurm environment detected: joining 2 processes' in distributed.describe(plan)
  # A cluster job of one process runs alone.
  plan = _plan(environ=dict(SLURM, SLURM_NTASKS='1', SLURM_PROCID='0'))
  assert plan.kind == 'single' and plan.kwargs == {}
  assert 'slurm job of one process' in distributed.describe(plan)
  # Explicit flags win over the environment and pass through unchanged.
  plan = _plan(environ=SLURM, coordinator_address='h0:5', num_processes=3, process_id=2)
  assert plan.kind == 'explicit'
  assert plan.kwargs == dict(
    coordinator_address='h0:5', num_processes=3, process_id=2, **timeouts
  )
  assert 'as process 2 of 3; waiting up to 30 s' in distributed.describe(plan)
  # Inside a cluster, the coordinator alone may be given; JAX takes the ids from it.
  plan = _plan('explicit', environ=SLURM, coordinator_address='h0:5')
  assert plan.kwargs == dict(coordinator_address='h0:5', **timeouts)


def test_plan_off_and_explicit():
  assert _plan('off', environ=SLURM) == distributed.Plan('single', None, {})
  with pytest.raises(distributed.DistributedError, match='off contradicts --coordinator'):
    _plan('off', coordinator_address='h0:5')
  with pytest.raises(
    distributed.DistributedError, match='required with --distributed=explicit'
  ):
    _plan('explicit')
  with pytest.raises(distributed.DistributedError, match='required with num_processes'):
    _plan(num_processes=2)
  with pytest.raises(
    distributed.DistributedError, match='--num_processes and --process_id'
  ):
    _plan(coordinator_address='h0:5')
  with pytest.raises(
    distributed.DistributedError, match=r'--process_id=2 must be in \[0, --num'
  ):
    _plan(coordinator_address='h0:5', num_processes=2, process_id=2)
  with pytest.raises(
    distributed.DistributedError, match='--num_processes=0 must be >= 1'
  ):
    _plan(coordinator_address='h0:5', num_processes=0, process_id=0)
  with pytest.raises(distributed.DistributedError, match="'mpi' is not one of"):
    _plan('mpi')
  with pytest.raises(distributed.DistributedError, match='heartbeat_timeout_s=0 must be'):
    distributed.plan(
      'auto',
      coordinator_address=None,
      num_processes=None,
      process_id=None,
      environ={},
      initialization_timeout_s=3,
      heartbeat_timeout_s=0,
      shutdown_timeout_s=3,
    )


# Joins as train.py does, then runs cross-process sums until killed.
_HOST = textwrap.dedent("""
    import sys, time
    import jax, jax.numpy as jnp
    from absl import flags
    from experiments import train
    args = train.define_flags()
    flags.FLAGS(sys.argv)
    train._initialize_distributed(args)
    total = jax.pmap(lambda x: jax.lax.psum(x, 'i'), 'i')
    x = jnp.full((1,), jax.process_index() + 1.0)
    print('joined', jax.process_index(), jax.process_count(), float(total(x)[0]), flush=True)
    for _ in range(600):
      total(x).block_until_ready()
      time.sleep(0.1)
""")


def _start(process_id, flags, extra_env, log):
  env = helpers.subprocess_env(PYTHONPATH=helpers.REPO_ROOT, **extra_env)
  args = [sys.executable, '-c', _HOST, 'train', '--config=configs/digits.py:tiny']
  args += ['--workdir=unused'] + flags
  return subprocess.Popen(
    args, cwd=helpers.REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
  )


def _wait_for(path, text, procs, timeout=240):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    with open(path) as f:
      if text in f.read():
        return
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.2)
  with open(path) as f:
    pytest.fail(f'no {text!r} in {path}:\n{f.read()[-3000:]}')


def test_slurm_environment_joins_and_lost_process_ends_the_other(tmp_path):
  # Slurm derives the coordinator port from the job id: pick an id whose port is free.
  job_id = next(
    j for j in range(os.getpid() % 4096, 8192) if _port_is_free(j % 4096 + 61440)
  )
  procs, logs = [], []
  try:
    for process_id in range(2):
      env = dict(
        SLURM,
        SLURM_JOB_ID=str(job_id),
        SLURM_STEP_NODELIST='localhost',
        SLURM_PROCID=str(process_id),
        SLURM_LOCALID=str(process_id),
      )
      logs.append(tmp_path / f'host{process_id}.log')
      flags = ['--config.distributed.heartbeat_timeout_s=4']
      procs.append(_start(process_id, flags, env, open(logs[-1], 'w')))
    # No multi-host flag: both joined through the Slurm variables; 1 + 2 summed.
    for process_id in range(2):
      _wait_for(logs[process_id], f'joined {process_id} 2 3.0', procs)
    assert 'slurm environment detected: joining 2 processes' in logs[0].read_text()
    # Process 1 freezes (a host that stops answering): process 0 must not hang.
    procs[1].send_signal(signal.SIGSTOP)
    start = time.monotonic()
    procs[0].wait(timeout=120)
    elapsed = time.monotonic() - start
    assert procs[0].returncode != 0
    log = logs[0].read_text()
    assert 'stopped sending heartbeats' in log, log[-3000:]
    assert 'another task died' in log
    assert elapsed < 4 + 30, elapsed
  finally:
    for p in procs:
      p.kill()
      p.wait()


def _port_is_free(port):
  with socket.socket() as s:
    try:
      s.bind(('localhost', port))
    except OSError:
      return False
  return True
