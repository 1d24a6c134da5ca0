r"""Per-device bytes of parameters and optimizer state, replicated and with FSDP.

Shapes the train state of a config without computing it (`jax.eval_shape` of the
init), lays it out as `config.parallel.strategy='sharded'` does on every visible
device, replicated and with `config.parallel.fsdp=True`, and prints one JSON object:
bytes per device of parameters, optimizer state and model state under each layout,
and the largest arrays FSDP leaves replicated (no dimension divisible by the device
count). Nothing is allocated, so a 201M-parameter model is measured on a laptop:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
      python -m experiments.benchmarks.fsdp_memory --config=configs/mlm.py
"""

import json
import types

import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments.training import cli
from experiments.training import optimizers
from experiments.training import steps as steps_lib
from experiments.training import strategies
from experiments.training import task as task_lib


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags; called only when run as a program, so that
  importing this module never clashes with other programs' flags."""
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file, e.g. configs/mlm.py.', lock_config=True
    ),
  )


def abstract_state(config: ml_collections.ConfigDict) -> steps_lib.TrainState:
  """Zeros shaped like the train state of `config` (nothing is initialised)."""
  task = task_lib.load_task(config.task)
  optimizer, _ = optimizers.make_optimizer(
    config.optimizer,
    num_steps=max(int(config.training.num_steps or 0), 10**6),
    batch_size=config.training.batch_size,
  )
  return steps_lib.abstract_train_state(
    task.build_model(config), optimizer, task_lib.example_batch(task, config)
  )


def memory_report(state: steps_lib.TrainState) -> dict:
  """Bytes per device of each part of `state`, replicated and with FSDP."""
  mesh = strategies.data_mesh()
  report = {
    'num_devices': int(mesh.devices.size),
    'num_params': int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))),
  }
  for fsdp in (False, True):
    shardings = strategies.state_shardings(state, mesh, fsdp=fsdp)
    layout = 'fsdp' if fsdp else 'replicated'
    for part in ('params', 'opt_state', 'state'):
      report[f'{layout}_{part}_bytes_per_device'] = strategies.bytes_per_device(
        getattr(state, part), getattr(shardings, part)
      )
    report[f'{layout}_total_bytes_per_device'] = strategies.bytes_per_device(
      state, shardings
    )
  unsplit = [
    (jax.tree_util.keystr(path), tuple(x.shape))
    for path, x in jax.tree_util.tree_flatten_with_path(state.params)[0]
    if strategies.fsdp_spec(x.shape, mesh.devices.size) == jax.sharding.PartitionSpec()
  ]
  unsplit.sort(key=lambda item: -int(np.prod(item[1])))
  report['fsdp_replicated_params'] = len(unsplit)
  report['fsdp_largest_replicated_params'] = [f'{p} {s}' for p, s in unsplit[:5]]
  return report


def main(argv, *, args: types.SimpleNamespace):
  del argv
  print(json.dumps(memory_report(abstract_state(args.config.value)), indent=1))


if __name__ == '__main__':
  cli.run(main, define_flags, name='fsdp_memory')
