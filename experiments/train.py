r"""Trains or evaluates an experiment: `python -m experiments.train --config=...`.

Examples:

  # Digits (ships with scikit-learn; no download):
  python -m experiments.train --config=configs/digits.py --workdir=/tmp/digits
  # A variant, and an override:
  python -m experiments.train --config=configs/digits.py:permuted \
      --config.training.batch_size=64 --workdir=/tmp/digits_permuted
  # Evaluate the latest checkpoint:
  python -m experiments.train --config=configs/digits.py --workdir=/tmp/digits \
      --mode=eval
  # Host 1 of a two-host job (run the same command with --process_id=0 on host 0):
  python -m experiments.train --config=configs/digits.py --workdir=/shared/digits \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=1

Re-running a command with the same `--workdir` resumes from its latest checkpoint.
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

from experiments.training import host_memory
from experiments.training import preemption
from experiments.training import trainer

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
  jax.distributed.initialize(
    coordinator_address=_COORDINATOR_ADDRESS.value,
    num_processes=_NUM_PROCESSES.value,
    process_id=_PROCESS_ID.value,
  )


class _QuietLibraries(std_logging.Filter):
  """Drops INFO records of checkpointing internals, keeping the run's own log readable."""

  _PATH_PARTS = (os.sep + 'orbax' + os.sep,)

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
      part in record.pathname for part in self._PATH_PARTS
    )


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


if __name__ == '__main__':
  app.run(main)
