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
(the newest intact one: a damaged one is moved to `<workdir>/checkpoints_set_aside/`;
when none is intact the run stops unless `--allow_restart_from_scratch`). Only one
trainer runs per workdir (`<workdir>/lock`). Mistakes in the command line, the config,
the files or the run's situation end with one line and exit status 1; anything else
is a bug and keeps its traceback. See docs/reliability.md.
"""

import os

# Before TensorFlow (input pipelines, summaries) is first imported: keep its C++ INFO
# banners out of the training log unless asked for.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
import logging as std_logging
import sys
import types

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from experiments.training import cli
from experiments.training import distributed
from experiments.training import errors
from experiments.training import host_memory
from experiments.training import preemption
from experiments.training import trainer

# pylint: enable=g-import-not-at-top,wrong-import-position

# What a process killed by SIGTERM reports (128 + 15): schedulers treat it as preempted.
PREEMPTED_EXIT_CODE = 143


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      None,
      'Experiment config file, e.g. configs/digits.py[:variant].',
      lock_config=True,
      flag_values=flag_values,
    ),
    workdir=flags.DEFINE_string(
      'workdir',
      None,
      'Directory for checkpoints, metrics and the exported params.',
      flag_values=flag_values,
    ),
    mode=flags.DEFINE_enum(
      'mode', 'train_and_eval', trainer.MODES, 'What to run.', flag_values=flag_values
    ),
    allow_restart_from_scratch=flags.DEFINE_bool(
      'allow_restart_from_scratch',
      False,
      'When the workdir has checkpoints but none can be restored (all damaged), train '
      'from step 0 (moving the old metrics aside) instead of stopping.',
      flag_values=flag_values,
    ),
    coordinator_address=flags.DEFINE_string(
      'coordinator_address',
      None,
      'host:port of process 0, for multi-host runs (jax.distributed.initialize).',
      flag_values=flag_values,
    ),
    num_processes=flags.DEFINE_integer(
      'num_processes',
      None,
      'Number of hosts (processes) in a multi-host run.',
      flag_values=flag_values,
    ),
    process_id=flags.DEFINE_integer(
      'process_id',
      None,
      'Index of this host in [0, num_processes).',
      flag_values=flag_values,
    ),
    coordinator_timeout_s=flags.DEFINE_integer(
      'coordinator_timeout_s',
      None,
      'Multi-host runs: how long to wait for every host to connect to the coordinator '
      'before failing (default: config.distributed.initialization_timeout_s).',
      flag_values=flag_values,
    ),
    distributed=flags.DEFINE_enum(
      'distributed',
      'auto',
      distributed.MODES,
      distributed.FLAG_HELP,
      flag_values=flag_values,
    ),
    host_malloc=host_memory.define_flag(flag_values),
  )


def _initialize_distributed(args: types.SimpleNamespace) -> None:
  """Joins the other processes of a multi-host run (see training/distributed.py).

  Raises:
    distributed.DistributedError: a bad combination of flags, or the coordinator
      cannot be reached.
  """
  config = args.config.value
  timeout = args.coordinator_timeout_s.value
  if timeout is None:
    timeout = config.distributed.initialization_timeout_s
  plan = distributed.plan(
    args.distributed.value,
    coordinator_address=args.coordinator_address.value,
    num_processes=args.num_processes.value,
    process_id=args.process_id.value,
    environ=os.environ,
    initialization_timeout_s=timeout,
    heartbeat_timeout_s=config.distributed.heartbeat_timeout_s,
    shutdown_timeout_s=config.distributed.shutdown_timeout_s,
  )
  (logging.info if plan.kind == 'single' else logging.warning)(
    '%s', distributed.describe(plan)
  )
  distributed.initialize(plan)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO records of checkpointing internals, keeping the run's own log readable.

  Also drops orbax's own reports of what the run reports itself in one line: a full
  disk (with tracebacks; the run says which checkpoint could not be written) and the
  files it misses while reading a damaged checkpoint (the run names the damage and
  where it moved the checkpoint).
  """

  _PATH_PARTS = (os.sep + 'orbax' + os.sep,)
  _REPORTED = (
    'No space left on device',
    'Metadata file does not exist',
    'Failed to get item metadata',
  )

  def filter(self, record: std_logging.LogRecord) -> bool:
    if not any(part in record.pathname for part in self._PATH_PARTS):
      return True
    if record.levelno < std_logging.WARNING:
      return False
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return not any(reported in text for reported in self._REPORTED)


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {argv[1:]}')
  for name in ('config', 'workdir'):
    if getattr(args, name).value is None:
      raise errors.ConfigError(f'--{name} is required.')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Before JAX starts its backend: the malloc settings must reach XLA's threads.
  logging.info('Host malloc: %s.', host_memory.configure(args.host_malloc.value))
  _initialize_distributed(args)
  logging.info(
    'JAX %s: process %d of %d, %d local / %d global device(s) (%s).',
    jax.__version__,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.default_backend(),
  )
  logging.info('Config:\n%s', args.config.value)
  try:
    trainer.run(
      args.config.value,
      args.workdir.value,
      args.mode.value,
      allow_restart_from_scratch=args.allow_restart_from_scratch.value,
    )
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
  cli.run(main, define_flags, name='train')
