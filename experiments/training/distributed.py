"""Joins the processes of a multi-host run: explicit flags, or the cluster's own variables.

`--distributed=auto` (the default) initialises `jax.distributed` when the command line
names a coordinator, or else when the process runs under a cluster manager that JAX
detects by itself:

  slurm: `srun` sets SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID and
    SLURM_LOCALID (the variables JAX's Slurm detection reads).
  openmpi: `mpirun` sets OMPI_MCA_orte_hnp_uri (Open MPI 4; the process count is in
    OMPI_COMM_WORLD_SIZE).
  tpu: a Cloud TPU VM of a pod slice: TPU_WORKER_HOSTNAMES or TPU_PROCESS_ADDRESSES (GKE,
    queued resources), or MEGASCALE_COORDINATOR_ADDRESS (multislice). Workers of a pod
    slice created as TPU VMs without these variables are joined by JAX's TPU runtime
    itself (it reads the slice's topology from the VM metadata), so they need no flag
    either.

A cluster job of one process (e.g. `srun -n 1`) runs alone. `--distributed=off` never
initialises; `--distributed=explicit` requires `--coordinator_address` (and, unless a
cluster supplies them, `--num_processes` and `--process_id`).

Bounded failure: every process waits at most `initialization_timeout_s` for the others
to connect, and once running, the coordination service declares a process dead after
`heartbeat_timeout_s` without a heartbeat and ends every other process, so a lost host
never leaves the job hanging (the timeouts sit in `config.distributed`).
"""

from collections.abc import Mapping
import dataclasses
import socket
import time

import jax

from experiments.training import errors

MODES = ('auto', 'off', 'explicit')

FLAG_HELP = (
  "Multi-host runs. 'auto': join the other processes when --coordinator_address is "
  'given or a Slurm, Open MPI or Cloud TPU pod environment is detected, else run '
  "alone; 'explicit': require --coordinator_address; 'off': always run alone."
)


class DistributedError(errors.UserError):
  """A multi-host run could not start: the message says which setting to change."""


@dataclasses.dataclass(frozen=True)
class Cluster:
  """A cluster environment found in the process's variables.

  Attributes:
    name: 'slurm', 'openmpi' or 'tpu'.
    num_processes: the job's process count when the variables say it, else None.
    process_id: this process's index when the variables say it, else None.
  """

  name: str
  num_processes: int | None
  process_id: int | None


_SLURM_VARIABLES = (
  'SLURM_JOB_ID',
  'SLURM_STEP_NODELIST',
  'SLURM_NTASKS',
  'SLURM_PROCID',
  'SLURM_LOCALID',
)
_TPU_VARIABLES = (
  'TPU_WORKER_HOSTNAMES',
  'TPU_PROCESS_ADDRESSES',
  'MEGASCALE_COORDINATOR_ADDRESS',
)


def _int(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name, '').strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError as e:
    raise DistributedError(
      f'The cluster variable {name}={value!r} is not an integer.'
    ) from e


def detect_cluster(environ: Mapping[str, str]) -> Cluster | None:
  """The cluster environment `environ` describes, or None outside any cluster."""
  if all(name in environ for name in _SLURM_VARIABLES):
    return Cluster('slurm', _int(environ, 'SLURM_NTASKS'), _int(environ, 'SLURM_PROCID'))
  if 'OMPI_MCA_orte_hnp_uri' in environ:
    return Cluster(
      'openmpi',
      _int(environ, 'OMPI_COMM_WORLD_SIZE'),
      _int(environ, 'OMPI_COMM_WORLD_RANK'),
    )
  for name in _TPU_VARIABLES:
    value = environ.get(name, '').strip()
    if value:
      hosts = [h for h in value.split(',') if h.strip()]
      count = len(hosts) if name != 'MEGASCALE_COORDINATOR_ADDRESS' else None
      return Cluster('tpu', count, _int(environ, 'TPU_WORKER_ID'))
  return None


@dataclasses.dataclass(frozen=True)
class Plan:
  """How `initialize` will start the run.

  Attributes:
    kind: 'single' (no jax.distributed), 'explicit' (the command line's coordinator)
      or 'cluster' (the detected cluster supplies coordinator and ids).
    cluster: the detected cluster, if any.
    kwargs: keyword arguments for `jax.distributed.initialize` (empty for 'single').
  """

  kind: str
  cluster: Cluster | None
  kwargs: dict


def plan(
  mode: str,
  *,
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  environ: Mapping[str, str],
  initialization_timeout_s: int,
  heartbeat_timeout_s: int,
  shutdown_timeout_s: int,
) -> Plan:
  """Decides, without side effects, whether and how to call `jax.distributed.initialize`.

  Args:
    mode: one of `MODES` (the `--distributed` flag).
    coordinator_address: `--coordinator_address` (host:port of process 0) or None.
    num_processes: `--num_processes` or None.
    process_id: `--process_id` or None.
    environ: the process's environment variables.
    initialization_timeout_s: how long each process waits for all to connect.
    heartbeat_timeout_s: after how long without a heartbeat a process is dead.
    shutdown_timeout_s: how long the processes wait for each other at exit.

  Returns:
    The plan.

  Raises:
    DistributedError: on inconsistent flags, naming them and their values.
  """
  if mode not in MODES:
    raise DistributedError(f'--distributed={mode!r} is not one of {MODES}.')
  for name, value in (
    ('initialization_timeout_s', initialization_timeout_s),
    ('heartbeat_timeout_s', heartbeat_timeout_s),
    ('shutdown_timeout_s', shutdown_timeout_s),
  ):
    if value < 1:
      raise DistributedError(f'config.distributed.{name}={value} must be >= 1.')
  given = {
    name: value
    for name, value in (
      ('coordinator_address', coordinator_address),
      ('num_processes', num_processes),
      ('process_id', process_id),
    )
    if value is not None
  }
  if mode == 'off':
    if given:
      raise DistributedError(
        f'--distributed=off contradicts --{", --".join(sorted(given))}.'
      )
    return Plan('single', None, {})
  if num_processes is not None and num_processes < 1:
    raise DistributedError(f'--num_processes={num_processes} must be >= 1.')
  if (
    process_id is not None
    and num_processes is not None
    and not 0 <= process_id < num_processes
  ):
    raise DistributedError(
      f'--process_id={process_id} must be in [0, --num_processes={num_processes}).'
    )
  cluster = detect_cluster(environ)
  timeouts = dict(
    initialization_timeout=initialization_timeout_s,
    heartbeat_timeout_seconds=heartbeat_timeout_s,
    shutdown_timeout_seconds=shutdown_timeout_s,
  )
  if given or mode == 'explicit':
    if 'coordinator_address' not in given:
      raise DistributedError(
        '--coordinator_address is required'
        + (
          f' with {", ".join(sorted(given))}.'
          if given
          else ' with --distributed=explicit.'
        )
      )
    if cluster is None and (num_processes is None or process_id is None):
      raise DistributedError(
        '--num_processes and --process_id are required with --coordinator_address '
        'outside a Slurm, Open MPI or Cloud TPU environment.'
      )
    return Plan('explicit', cluster, dict(given, **timeouts))
  if cluster is None or cluster.num_processes == 1:
    return Plan('single', cluster, {})
  return Plan('cluster', cluster, timeouts)


def describe(p: Plan) -> str:
  """One line for the log saying how the run starts."""
  if p.kind == 'single':
    where = f' (a {p.cluster.name} job of one process)' if p.cluster else ''
    return f'Single process{where}: jax.distributed not initialised.'
  if p.kind == 'explicit':
    return (
      f'Connecting to the coordinator {p.kwargs["coordinator_address"]} as process '
      f'{p.kwargs.get("process_id", "(from the cluster)")} of '
      f'{p.kwargs.get("num_processes", "(from the cluster)")}; waiting up to '
      f'{p.kwargs["initialization_timeout"]} s for every process.'
    )
  count = p.cluster.num_processes or '(count from the cluster)'
  return (
    f'{p.cluster.name} environment detected: joining {count} processes '
    f'(jax.distributed.initialize with cluster auto-detection); waiting up to '
    f'{p.kwargs["initialization_timeout"]} s for every process.'
  )


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Returns once `host:port` accepts connections.

  A non-coordinator process calls this first because JAX aborts the whole process (no
  Python exception) when the coordinator does not answer in time.

  Raises:
    DistributedError: when `address` is not host:port, or nothing answers in time.
  """
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit():
    raise DistributedError(f'--coordinator_address={address!r} is not host:port.')
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip('[]'), int(port)), timeout=1.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedError(
          f'the coordinator {address} did not answer within {timeout_s} s '
          f'(config.distributed.initialization_timeout_s): {e}. '
          'Start process 0 there first.'
        ) from e
      time.sleep(0.5)


def initialize(p: Plan) -> None:
  """Carries out plan `p` (no-op for a single process).

  Raises:
    DistributedError: when the processes cannot connect in time.
  """
  if p.kind == 'single':
    return
  address = p.kwargs.get('coordinator_address')
  if address and p.kwargs.get('process_id'):
    wait_for_coordinator(address, p.kwargs['initialization_timeout'])
  try:
    jax.distributed.initialize(**p.kwargs)
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError etc.
    first_line = (str(e).strip().splitlines() or [''])[0][:300]
    where = address or f'the {p.cluster.name} coordinator'
    raise DistributedError(
      f'could not connect to {where} within {p.kwargs["initialization_timeout"]} s '
      f'(config.distributed.initialization_timeout_s): {first_line}'
    ) from e
