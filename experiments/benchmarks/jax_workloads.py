r"""This project's side of `experiments.benchmarks.side_by_side`: workloads and their worker.

A workload is a config, a mode ('train': the training loop's own train step, as
`python -m experiments.benchmark` times it; 'forward': the jitted evaluation-mode
forward pass of the task's model) and a batch size. `build_runner` compiles it and
returns one run; run as a program, this module serves runs over the line protocol of
`experiments.benchmarks.timing_worker`:

  python -m experiments.benchmarks.jax_workloads --config=configs/flow.py \
      --mode=forward --batch_size=1

`--dtype=bfloat16` sets every `compute_dtype` field of the model
(`experiments.training.precision`): parameters stay float32, matrix products run in
bfloat16.
"""

import functools
import time
import types
from typing import Any, Callable, Dict, NamedTuple

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments.benchmarks import fake_batches
from experiments.benchmarks import timing_worker
from experiments.benchmarks import train_step
from experiments.training import cli
from experiments.training import host_memory
from experiments.training import precision
from experiments.training import task as task_lib

MODES = ('train', 'forward')
DTYPES = ('float32', 'bfloat16')


class Runner(NamedTuple):
  """A compiled workload.

  Attributes:
    run_once: runs it once and waits for the result.
    num_params: the model's parameter count.
    compile_s: seconds its compilation took.
    compiled: the compiled XLA executable (e.g. for its HLO text).
  """

  run_once: Callable[[], Any]
  num_params: int
  compile_s: float
  compiled: Any


def with_batch_and_dtype(
  config: ml_collections.ConfigDict, *, batch_size: int, dtype: str
) -> ml_collections.ConfigDict:
  """An unlocked copy of `config` training at `batch_size` in compute `dtype`."""
  if dtype not in DTYPES:
    raise ValueError(f'dtype={dtype!r} is not one of {DTYPES}.')
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be >= 1.')
  config = ml_collections.ConfigDict(config.to_dict())
  config.training.batch_size = batch_size
  if dtype != 'float32':
    precision.set_compute_dtype(config, dtype)
  return config


def forward_batch(config: ml_collections.ConfigDict, batch_size: int) -> Dict[str, Any]:
  """The model inputs of one forward pass of `config.task` (NumPy, fixed seed)."""
  rng = np.random.RandomState(0)
  if config.task == 'experiments.tasks.flow.task':
    tile = tuple(config.model.image_size)
    frames = rng.uniform(-1, 1, (batch_size, 2) + tile + (3,)).astype(np.float32)
    return {'frames': frames}
  batch = fake_batches.train_batch(config, (1, batch_size))
  return {k: v[0] for k, v in batch.items()}


def build_forward(config: ml_collections.ConfigDict, batch_size: int) -> Runner:
  """The evaluation-mode forward pass of `config`'s model on `batch_size` examples."""
  model = task_lib.load_task(config.task).build_model(config)
  batch = jax.device_put(forward_batch(config, batch_size))
  rng = jax.random.PRNGKey(0)
  params, state = jax.jit(functools.partial(model.init, is_training=True))(rng, batch)
  forward = jax.jit(functools.partial(model.apply, is_training=False))
  start = time.perf_counter()
  compiled = forward.lower(params, state, rng, batch).compile()
  compile_s = time.perf_counter() - start

  def run_once():
    out, _ = compiled(params, state, rng, batch)
    return jax.block_until_ready(out)

  num_params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
  return Runner(run_once, num_params, compile_s, compiled)


def build_train(config: ml_collections.ConfigDict) -> Runner:
  """The training loop's train step of `config` (state updated at every run)."""
  setup = train_step.build_step(config, make_batch=fake_batches.train_batch)
  compiled, _, compile_s = train_step.compile_step(setup)
  state = [setup.p_state]

  def run_once():
    state[0], metrics = compiled(state[0], setup.device_batch, setup.p_rng)
    return jax.block_until_ready(metrics)

  return Runner(run_once, setup.num_params, compile_s, compiled)


def build_runner(
  config: ml_collections.ConfigDict, *, mode: str, batch_size: int, dtype: str
) -> Runner:
  """The compiled workload: a train step or a forward pass of `config`."""
  if mode not in MODES:
    raise ValueError(f'mode={mode!r} is not one of {MODES}.')
  config = with_batch_and_dtype(config, batch_size=batch_size, dtype=dtype)
  if mode == 'train':
    return build_train(config)
  return build_forward(config, batch_size)


def define_flags(flag_values=flags.FLAGS) -> types.SimpleNamespace:
  """Defines the command-line flags (only when run as a program)."""
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config', None, 'Experiment config.', flag_values=flag_values
    ),
    mode=flags.DEFINE_enum(
      'mode', 'train', MODES, 'Train step or forward pass.', flag_values=flag_values
    ),
    batch_size=flags.DEFINE_integer(
      'batch_size', 1, 'Examples per run.', flag_values=flag_values
    ),
    dtype=flags.DEFINE_enum(
      'dtype', 'float32', DTYPES, 'Compute dtype.', flag_values=flag_values
    ),
    host_malloc=host_memory.define_flag(flag_values),
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if args.config.value is None:
    raise app.UsageError('--config is required.')
  host_malloc = host_memory.configure(args.host_malloc.value)
  start = time.perf_counter()
  runner = build_runner(
    args.config.value,
    mode=args.mode.value,
    batch_size=args.batch_size.value,
    dtype=args.dtype.value,
  )
  build_s = time.perf_counter() - start
  first_s = timing_worker.time_calls(runner.run_once, 1)[0]
  timing_worker.serve(
    runner.run_once,
    {
      'framework': 'jax+haiku (this project)',
      'jax_version': jax.__version__,
      'backend': jax.default_backend(),
      'host_malloc': host_malloc,
      'num_params': runner.num_params,
      'build_s': round(build_s, 3),
      'compile_s': round(runner.compile_s, 3),
      'first_run_s': round(first_s, 3),
    },
  )


if __name__ == '__main__':
  cli.run(main, define_flags, name='jax_workloads')
