r"""Benchmarks an experiment's train step on fake data and prints one JSON object.

  python -m experiments.benchmark --config=configs/benchmark.py:image64_b8
  python -m experiments.benchmark --config=configs/benchmark.py:mlm2048_b4 --steps=5
  # A large model on CPU: keep freed blocks of any size (see experiments/training/host_memory.py).
  python -m experiments.benchmark --config=configs/benchmark.py:image64_b8 --host_malloc=retain
  # Any experiment config works (its data.fake is switched on):
  python -m experiments.benchmark --config=configs/imagenet.py:debug
  # Warm start: run twice with a persistent compilation cache.
  python -m experiments.benchmark --config=configs/benchmark.py:image64_b8 \
      --compilation_cache_dir=/tmp/jax_cache

Figures (see `experiments/benchmarks/train_step.py`): `num_params`, `first_step_s`
(trace + compile + run; also split into `trace_s` and `compile_s`), `step_s_median` and
`step_s_min` over `--steps` steps, `examples_per_s`, `flops_per_step` (matmul and
convolution FLOPs of the whole train step, forward and backward, counted on the jaxpr
with weight-shared loops unrolled), `achieved_gflop_per_s_per_device`, the dense float32
matmul rate measured in the same process on the same device
(`matmul_gflop_per_s_per_device`), their ratio `achieved_over_matmul`, and memory:
`peak_memory_bytes` (device peak where the runtime reports it, else the process's max
RSS; `peak_memory_source` says which) and XLA's static buffer sizes of the step;
`host_malloc`, the host-memory mode in effect (`--host_malloc`, see
`experiments/training/host_memory.py`: on the CPU backend it changes the step time, not results).
On a CPU shared with other processes, wall-clock figures drift with the load
(`load_average_1min` is reported); `step_process_cpu_s_median` and
`achieved_over_matmul_cpu` (FLOPs per CPU second of the process, over the matmul's) are
steadier.
"""

import types

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from experiments.benchmarks import train_step as benchmark_train_step
from experiments.training import cli
from experiments.training import host_memory


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
    steps=flags.DEFINE_integer(
      'steps', 10, 'Timed steps after the first (compiling) one.'
    ),
    input=flags.DEFINE_enum(
      'input',
      'fixed',
      benchmark_train_step.INPUT_MODES,
      "'fixed': one device-resident batch for every step (the step alone); 'pipeline': "
      "a fresh batch from the input pipeline before every step; 'prefetch': as "
      'training runs, batches copied to the devices ahead of the step and the next '
      'step dispatched before the previous one ends (the input shows when it is the '
      'bottleneck).',
    ),
    matmul_size=flags.DEFINE_integer(
      'matmul_size', 2048, 'Side of the reference float32 matmul.'
    ),
    output=flags.DEFINE_string('output', '', 'Also write the JSON object to this file.'),
    cache_dir=flags.DEFINE_string(
      'compilation_cache_dir',
      '',
      "JAX's persistent compilation cache: a second run with the same directory loads the "
      'compiled step instead of compiling it (its first_step_s shows the warm start).',
    ),
    compiler_options=flags.DEFINE_multi_string(
      'compiler_option',
      [],
      "KEY=VALUE: an XLA option for the train step's compilation alone (repeatable), "
      'e.g. xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE.',
    ),
    host_malloc=host_memory.define_flag(),
  )
  flags.mark_flags_as_required(['config'])
  return namespace


def parse_compiler_options(entries) -> dict:
  """`{key: value}` from `KEY=VALUE` strings.

  Raises:
    app.UsageError: an entry without `=` or with an empty key, or a key given twice.
  """
  options = {}
  for entry in entries:
    key, sep, value = entry.partition('=')
    key = key.strip()
    if not sep or not key:
      raise app.UsageError(f'--compiler_option={entry!r} is not KEY=VALUE.')
    if key in options:
      raise app.UsageError(f'--compiler_option gives {key!r} twice.')
    options[key] = value
  return options


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Before JAX starts its backend: the malloc settings must reach XLA's threads.
  host_malloc = host_memory.configure(args.host_malloc.value)
  if args.cache_dir.value:
    jax.config.update('jax_compilation_cache_dir', args.cache_dir.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  compiler_options = parse_compiler_options(args.compiler_options.value)
  report = {
    'config': config_flags.get_config_filename(flags.FLAGS['config']),
    'compiler_options': compiler_options,
    'overrides': config_flags.get_override_values(flags.FLAGS['config']),
    'compilation_cache_dir': args.cache_dir.value,
    'host_malloc': host_malloc,
  }
  report.update(
    benchmark_train_step.benchmark(
      args.config.value,
      num_steps=args.steps.value,
      input_mode=args.input.value,
      matmul_size=args.matmul_size.value,
      compiler_options=compiler_options,
    )
  )
  cli.print_json(report, args.output.value)


if __name__ == '__main__':
  cli.run(main, define_flags, name='benchmark')
