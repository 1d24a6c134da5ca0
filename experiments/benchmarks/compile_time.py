r"""Compile time of an experiment's train step against the number of encoder blocks.

With weight-shared latent blocks run in a `hk.scan` (the default), compiling the
train step costs about the same for 1 or 8 blocks; with
`unroll_shared_layers=True` every block is compiled again. Prints one JSON object.

  python -m experiments.benchmarks.compile_time --config=configs/benchmark.py:image64_b8 \
      --num_blocks=1,8
  # The unrolled encoder, for comparison:
  python -m experiments.benchmarks.compile_time --config=configs/benchmark.py:image64_b8 \
      --num_blocks=1,8 --config.model.encoder.unroll_shared_layers=True
"""

import os
import time
import types

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from experiments.benchmarks import train_step
from experiments.training import cli


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags; called only when run as a program, so that
  importing this module never clashes with other programs' flags."""
  namespace = types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      None,
      'Experiment config file, e.g. configs/benchmark.py:image64_b8.',
      lock_config=True,
    ),
    num_blocks=flags.DEFINE_list(
      'num_blocks', ['1', '8'], 'Values of the blocks field to compile with.'
    ),
    field=flags.DEFINE_string(
      'blocks_field',
      'model.encoder.num_blocks',
      'Dotted path of the config field holding num_blocks.',
    ),
    output=flags.DEFINE_string('output', '', 'Also write the JSON object to this file.'),
  )
  flags.mark_flags_as_required(['config'])
  return namespace


def with_field(
  config: ml_collections.ConfigDict, path: str, value
) -> ml_collections.ConfigDict:
  """A copy of `config` with the dotted field `path` set to `value` (it must exist)."""
  config = ml_collections.ConfigDict(config.to_dict())
  *parents, leaf = path.split('.')
  node = config
  for name in parents:
    if name not in node:
      raise ValueError(f'config has no field {path!r} (missing {name!r}).')
    node = node[name]
  if leaf not in node:
    raise ValueError(f'config has no field {path!r}.')
  node[leaf] = value
  config.lock()
  return config


def compile_times(config: ml_collections.ConfigDict, field: str, values) -> dict:
  """`{value: {'trace_s', 'compile_s', 'compile_process_cpu_s'}}` of the train step."""
  results = {}
  for value in values:
    setup = train_step.build_step(with_field(config, field, value))
    cpu_start = time.process_time()
    _, trace_s, compile_s = train_step.compile_step(setup)
    results[str(value)] = {
      'trace_s': round(trace_s, 3),
      'compile_s': round(compile_s, 3),
      'trace_and_compile_process_cpu_s': round(time.process_time() - cpu_start, 3),
    }
  return results


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  values = [int(v) for v in args.num_blocks.value]
  results = compile_times(args.config.value, args.field.value, values)
  first, last = str(values[0]), str(values[-1])
  report = {
    'config': config_flags.get_config_filename(flags.FLAGS['config']),
    'overrides': config_flags.get_override_values(flags.FLAGS['config']),
    'field': args.field.value,
    'load_average_1min': round(os.getloadavg()[0], 2),
    'results': results,
    f'compile_ratio_{last}_over_{first}': round(
      results[last]['compile_s'] / results[first]['compile_s'], 3
    ),
  }
  cli.print_json(report, args.output.value)


if __name__ == '__main__':
  cli.run(main, define_flags, name='compile_time')
