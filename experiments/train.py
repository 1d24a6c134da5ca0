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

Re-running a command with the same `--workdir` resumes from its latest checkpoint
(the newest intact one: a damaged one is moved to `<workdir>/checkpoints_set_aside/`).
Only one trainer runs per workdir (`<workdir>/lock`). Errors in the config, the files
or the run end with one line and exit status 1. See docs/reliability.md.
"""

import logging as std_logging
import os
import socket
import sys
import time

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
  300,
  'Multi-host runs: how long to wait for every host to connect to the coordinator '
  'before failing.',
)
_HOST_MALLOC = flags.DEFINE_enum(
  'host_malloc', 'auto', host_memory.MODES, host_memory.FLAG_HELP
)

flags.mark_flags_as_required(['config', 'workdir'])

# What a process killed by SIGTERM reports (128 + 15): schedulers treat it as preempted.
PREEMPTED_EXIT_CODE = 143


def _maybe_initialize_distributed() -> None:
  """Connects to the other hosts when multi-host flags are given."""
  given = {
    name: flag.value
    for name, flag in (
      ('coordinator_address', _COORDINATOR_ADDRESS),
      ('num_processes', _NUM_PROCESSES),
      ('process_id', _PROCESS_ID),
    )
    if flag.value is not None
  }
  if not given:
    return
  if 'coordinator_address' not in given:
    raise app.UsageError(
      f'--coordinator_address is required with {", ".join(sorted(given))}.'
    )
  if _NUM_PROCESSES.value is not None and _NUM_PROCESSES.value < 1:
    raise app.UsageError(f'--num_processes={_NUM_PROCESSES.value} must be >= 1.')
  if (
    _PROCESS_ID.value is not None
    and _NUM_PROCESSES.value is not None
    and not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value
  ):
    raise app.UsageError(
      f'--process_id={_PROCESS_ID.value} must be in '
      f'[0, --num_processes={_NUM_PROCESSES.value}).'
    )
  if _COORDINATOR_TIMEOUT.value < 1:
    raise app.UsageError(
      f'--coordinator_timeout_s={_COORDINATOR_TIMEOUT.value} must be >= 1.'
    )
  logging.warning(
    'Connecting to the coordinator %s as process %s of %s; waiting up to %d s '
    '(--coordinator_timeout_s) for every host.',
    _COORDINATOR_ADDRESS.value,
    _PROCESS_ID.value,
    _NUM_PROCESSES.value,
    _COORDINATOR_TIMEOUT.value,
  )
  if _PROCESS_ID.value:
    # JAX aborts the whole process (no Python exception) when the coordinator does
    # not answer in time: find out first whether anything listens there.
    _wait_for_coordinator(_COORDINATOR_ADDRESS.value, _COORDINATOR_TIMEOUT.value)
  try:
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR_ADDRESS.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
      initialization_timeout=_COORDINATOR_TIMEOUT.value,
    )
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError etc.
    first_line = (str(e).strip().splitlines() or [''])[0][:300]
    sys.exit(
      f'train: error: could not connect to the coordinator '
      f'{_COORDINATOR_ADDRESS.value} with {_NUM_PROCESSES.value} processes within '
      f'{_COORDINATOR_TIMEOUT.value} s (--coordinator_timeout_s): {first_line}'
    )


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Returns once `host:port` accepts connections; exits with one line after timeout_s."""
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit():
    raise app.UsageError(f'--coordinator_address={address!r} is not host:port.')
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip('[]'), int(port)), timeout=1.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        sys.exit(
          f'train: error: the coordinator {address} did not answer within '
          f'{timeout_s} s (--coordinator_timeout_s): {e}. Start process 0 there first.'
        )
      time.sleep(0.5)


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
