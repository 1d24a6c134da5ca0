r"""Trains or evaluates an experiment: `python -m experiments.train --config=...`.

Examples:

  # Digits (ships with scikit-learn; no download):
  python -m experiments.train --config=configs/digits.py --workdir=/tmp/digits
  # A variant, and an override:
  python -m experiments.train --config=configs/digits.py:permuted \
      --config.training.batch_size=64 --workdir=/tmp/digits_permuted
  # Evaluate the newest intact checkpoint (read-only; safe beside a running trainer):
  python -m experiments.train --config=configs/digits.py --workdir=/tmp/digits \
      --mode=eval
  # Follow a running trainer, evaluating each new checkpoint and keeping the best:
  python -m experiments.train --config=configs/digits.py --workdir=/tmp/digits \
      --mode=eval_continuous --config.evaluation.best_metric=top_1_acc
  # Host 1 of a two-host job (run the same command with --process_id=0 on host 0):
  python -m experiments.train --config=configs/digits.py --workdir=/shared/digits \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=1
  # Under Slurm (srun), Open MPI (mpirun) or on every worker of a Cloud TPU pod slice,
  # no multi-host flag is needed: the processes find each other (--distributed=auto).

Re-running a command with the same `--workdir` resumes from its latest checkpoint
(the newest intact one: a damaged one is moved to `<workdir>/checkpoints_set_aside/`).
Only one trainer runs per workdir (`<workdir>/lock`). Errors in the config, the files
or the run end with one line and exit status 1. See docs/reliability.md.
"""

import logging as std_logging
import os
import sys

# Before TensorFlow (input pipelines, summaries) is first imported: keep its C++ INFO
# banners out of the training log unless asked for.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from experiments.training import checkpoint_manager
from experiments.training import distributed
from experiments.training import host_memory
from experiments.training import preemption
from experiments.training import trainer
from experiments.training import workdir_lock

# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Experiment config file, e.g. configs/digits.py[:variant].',
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Directory for checkpoints, metrics and the exported params.'
)
_MODE = flags.DEFINE_enum('mode', 'train_and_eval', trainer.MODES, 'What to run.')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
  'coordinator_address',
  None,
  'host:port of process 0, for multi-host runs (jax.distributed.initialize).',
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Number of hosts (processes) in a multi-host run.'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id', None, 'Index of this host in [0, num_processes).'
)
_COORDINATOR_TIMEOUT = flags.DEFINE_integer(
  'coordinator_timeout_s',
  None,
  'Multi-host runs: how long to wait for every host to connect to the coordinator '
  'before failing (default: config.distributed.initialization_timeout_s).',
)
_DISTRIBUTED = flags.DEFINE_enum(
  'distributed', 'auto', distributed.MODES, distributed.FLAG_HELP
)
_HOST_MALLOC = flags.DEFINE_enum(
  'host_malloc', 'auto', host_memory.MODES, host_memory.FLAG_HELP
)

flags.mark_flags_as_required(['config', 'workdir'])

# What a process killed by SIGTERM reports (128 + 15): schedulers treat it as preempted.
PREEMPTED_EXIT_CODE = 143


def _maybe_initialize_distributed() -> None:
  """Joins the other processes of a multi-host run (see training/distributed.py)."""
  config = _CONFIG.value
  timeout = _COORDINATOR_TIMEOUT.value
  if timeout is None:
    timeout = config.distributed.initialization_timeout_s
  try:
    plan = distributed.plan(
      _DISTRIBUTED.value,
      coordinator_address=_COORDINATOR_ADDRESS.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
      environ=os.environ,
      initialization_timeout_s=timeout,
      heartbeat_timeout_s=config.distributed.heartbeat_timeout_s,
      shutdown_timeout_s=config.distributed.shutdown_timeout_s,
    )
  except distributed.DistributedError as e:
    raise app.UsageError(str(e)) from e
  (logging.info if plan.kind == 'single' else logging.warning)(
    '%s', distributed.describe(plan)
  )
  try:
    distributed.initialize(plan)
  except distributed.DistributedError as e:
    sys.exit(f'train: error: {e}')


class _QuietLibraries(std_logging.Filter):
  """Drops INFO records of checkpointing internals, keeping the run's own log readable.

  Also drops orbax's own reports (with tracebacks) of a full disk: the run ends with
  one line saying which checkpoint could not be written.
  """

  _PATH_PARTS = (os.sep + 'orbax' + os.sep,)

  def filter(self, record: std_logging.LogRecord) -> bool:
    if not any(part in record.pathname for part in self._PATH_PARTS):
      return True
    if record.levelno < std_logging.WARNING:
      return False
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return 'No space left on device' not in text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Before JAX starts its backend: the malloc settings must reach XLA's threads.
  logging.info('Host malloc: %s.', host_memory.configure(_HOST_MALLOC.value))
  _maybe_initialize_distributed()
  logging.info(
    'JAX %s: process %d of %d, %d local / %d global device(s) (%s).',
    jax.__version__,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.default_backend(),
  )
  logging.info('Config:\n%s', _CONFIG.value)
  try:
    trainer.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(PREEMPTED_EXIT_CODE)
  except _ONE_LINE_ERRORS as e:
    sys.exit('train: error: ' + ' '.join(str(e).split()))


# Errors that are the user's input or the run's situation, not a bug: one line each.
_ONE_LINE_ERRORS = (
  ValueError,
  FileNotFoundError,
  PermissionError,
  workdir_lock.WorkdirBusyError,
  checkpoint_manager.CheckpointWriteError,
  trainer.NonFiniteError,
)


if __name__ == '__main__':
  app.run(main)
