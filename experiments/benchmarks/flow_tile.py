r"""Speed and memory of the optical-flow model's forward pass on one tile.

Builds the model of a flow config (default: the released `perceiver_io`, one 368x496
tile, 182,528 decoder queries), initialises random parameters and times the jitted
evaluation-mode forward on one frame pair. Prints one JSON object: compile seconds, the
median forward seconds over `--repeats` runs, and the peak memory (device peak where the
runtime reports one, else the process's peak resident set; run one setting per process
to compare peaks).

  python -m experiments.benchmarks.flow_tile
  # Without chunking the decoder's attention over the 182,528 queries:
  python -m experiments.benchmarks.flow_tile --config.model.decoder.attention_query_chunk_size=0
"""

import functools
import json
import os
import platform
import time
import types

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from experiments.benchmarks import train_step
from experiments.tasks.flow import task
from experiments.training import cli

_DEFAULT_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  'configs',
  'flow.py',
)


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags (only when run as a program)."""
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config', _DEFAULT_CONFIG, 'Flow config.', lock_config=True
    ),
    repeats=flags.DEFINE_integer('repeats', 3, 'Timed forward passes.'),
    batch=flags.DEFINE_integer('batch', 1, 'Frame pairs per forward pass.'),
  )


def measure(config, *, repeats: int, batch: int) -> dict:
  """Times the forward of `config`'s model on `batch` frame pairs of its tile size."""
  model = task.build_model(config)
  tile = tuple(config.model.image_size)
  frames = np.random.default_rng(0).uniform(-1, 1, (batch, 2) + tile + (3,))
  batch_dict = {'frames': frames.astype(np.float32)}
  params, state = jax.jit(functools.partial(model.init, is_training=True))(
    jax.random.PRNGKey(0), batch_dict
  )
  forward = jax.jit(functools.partial(model.apply, is_training=False))
  start = time.perf_counter()
  compiled = forward.lower(params, state, jax.random.PRNGKey(1), batch_dict).compile()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out, _ = compiled(params, state, jax.random.PRNGKey(1), batch_dict)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  peak, source = train_step.peak_memory()
  return {
    'tile': list(tile),
    'batch': batch,
    'decoder_query_chunk': config.model.decoder.attention_query_chunk_size or 0,
    'parameters': int(sum(x.size for x in jax.tree.leaves(params))),
    'compile_s': round(compile_s, 2),
    'forward_s_median': round(float(np.median(times)), 3),
    'forward_s_all': [round(t, 3) for t in times],
    'peak_memory_bytes': peak,
    'peak_memory_source': source,
    'device': str(jax.devices()[0].device_kind),
    'cpu_count': os.cpu_count(),
    'load_average': os.getloadavg()[0] if hasattr(os, 'getloadavg') else None,
    'machine': platform.machine(),
  }


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  result = measure(args.config.value, repeats=args.repeats.value, batch=args.batch.value)
  print(json.dumps(result))


if __name__ == '__main__':
  cli.run(main, define_flags, name='flow_tile')
