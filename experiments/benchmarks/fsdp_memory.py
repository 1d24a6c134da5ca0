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

import functools
import json
import types

from absl import app
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments.benchmarks import train_step as benchmark_train_step
from experiments.training import optimizers
from experiments.training import parallel
from experiments.training import strategies
from experiments.training import task as task_lib
from experiments.training import train_state as train_state_lib


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags; called only when run as a program, so that
  importing this module never clashes with other programs' flags."""
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file, e.g. configs/mlm.py.', lock_config=True
    ),
  )


def abstract_state(config: ml_collections.ConfigDict) -> train_state_lib.TrainState:
  """`jax.ShapeDtypeStruct`s of the train state of `config` (fake data shapes it)."""
  config = benchmark_train_step.fake_data_config(config)
  task = task_lib.load_task(config.task)
  model = task.build_model(config)
  optimizer, _ = optimizers.make_optimizer(
    config.optimizer,
    num_steps=max(int(config.training.num_steps or 0), 10**6),
    batch_size=config.training.batch_size,
  )
  batch_dims = parallel.local_batch_dims(
    config.training.batch_size, name='training.batch_size'
  )
  batch = next(task_lib.train_iterator(task, config, batch_dims=batch_dims, start_step=0))
  example = {k: v[0] for k, v in batch.items()}

  def init(rng, example):
    params, state = model.init(rng, example, is_training=True)
    return train_state_lib.TrainState(
      step=np.zeros((), np.int32),
      params=params,
      state=state,
      opt_state=optimizer.init(params),
    )

  return jax.eval_shape(init, jax.random.PRNGKey(0), example)


def memory_report(state: train_state_lib.TrainState) -> dict:
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
  app.run(functools.partial(main, args=define_flags()))
