r"""Train-step speed and MFU of the benchmark and real models on the local accelerator.

Runs each model in each compute dtype over a list of batch sizes (ascending; a sweep
stops at its first out-of-memory, reported as such) and prints one JSON object:
`runs` (one record per model, dtype and batch size: step time, examples/s, peak device
memory, model FLOPs per step, MFU) and `best` (per model and dtype, the batch size
with the most examples/s). Batches are built with NumPy (`fake_batches`), so nothing
here imports TensorFlow: it runs where only JAX, Haiku, ml_collections and optax are
installed (see experiments/benchmarks/gpu/).

  python -m experiments.benchmarks.accelerator --output=/tmp/accelerator.json
  python -m experiments.benchmarks.accelerator --models=imagenet \
      --batch_sizes=64,128,256,512 --dtypes=bfloat16
  # A device missing from the peak table (experiments/benchmarks/peak_flops.py):
  python -m experiments.benchmarks.accelerator --peak_tflops=312

Models (`--models`): image64_b8 and mlm2048_b4 (configs/benchmark.py), imagenet
(configs/imagenet.py:io_fourier, 224 x 224, the Perceiver IO ImageNet model), mlm
(configs/mlm.py:bytes), or any `<config module>:<variant>` of configs/ whose task has
a NumPy batch builder (e.g. imagenet:debug). bfloat16 is the precision recipe
(`experiments/training/precision.py`: every `compute_dtype` field of config.model);
float32 leaves the config as it is.

MFU = model FLOPs per second per device / the device's dense peak for the dtype (see
`peak_flops`); null on a CPU or a device missing from the table, where
`achieved_over_matmul` (model FLOP/s over a measured dense float32 matmul's) remains.
"""

import gc
import importlib
import importlib.util
import json
import os
import sys
import time
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import jax
import ml_collections

from experiments.benchmarks import fake_batches
from experiments.benchmarks import peak_flops
from experiments.benchmarks import train_step
from experiments.training import cli
from experiments.training import precision

# name: (config module in configs/, variant, default batch sizes).
MODELS = {
  'image64_b8': ('benchmark', 'image64_b8', (8, 32, 128)),
  'mlm2048_b4': ('benchmark', 'mlm2048_b4', (4, 16, 64)),
  'imagenet': ('imagenet', 'io_fourier', (32, 64, 128, 256, 512)),
  'mlm': ('mlm', 'bytes', (8, 16, 32, 64)),
}
DEFAULT_MODELS = ('image64_b8', 'mlm2048_b4', 'imagenet', 'mlm')

# Keys of every run record (also written by experiments/benchmarks/hf_perceiver.py).
RECORD_KEYS = (
  'framework',
  'model',
  'dtype',
  'batch_size',
  'status',
  'step_s_median',
  'examples_per_s',
  'peak_memory_bytes',
  'flops_per_step',
  'mfu',
)


def is_out_of_memory(error: BaseException) -> bool:
  """Whether `error` is the runtime's out-of-memory (XLA's RESOURCE_EXHAUSTED, or
  PyTorch's `torch.cuda.OutOfMemoryError` for experiments/benchmarks/hf_perceiver.py)."""
  if type(error).__name__ == 'OutOfMemoryError':
    return True
  if not isinstance(error, (jax.errors.JaxRuntimeError, MemoryError)):
    return False
  text = str(error)
  return isinstance(error, MemoryError) or any(
    marker in text for marker in ('RESOURCE_EXHAUSTED', 'Out of memory', 'out of memory')
  )


def sweep(
  run: Callable[[int], Dict[str, Any]],
  batch_sizes: Sequence[int],
  *,
  deadline: Optional[float] = None,
) -> List[Dict[str, Any]]:
  """`run(batch_size)` for each batch size in ascending order, until one runs out of
  memory.

  Returns one record per batch size: `run`'s dict with `status='ok'`, or
  `{'batch_size', 'status': 'out_of_memory', 'error'}` for the first batch size that ran
  out of memory, then `status='skipped'` for the larger ones (and for every batch size
  not started before `deadline`, a `time.monotonic()` value). Other errors propagate.
  """
  records = []
  stop = None
  for batch_size in sorted(set(int(b) for b in batch_sizes)):
    if stop is None and deadline is not None and time.monotonic() > deadline:
      stop = 'time budget spent'
    if stop is not None:
      records.append({'batch_size': batch_size, 'status': 'skipped', 'reason': stop})
      continue
    try:
      record = dict(run(batch_size), batch_size=batch_size, status='ok')
    except Exception as error:  # noqa: BLE001 (only out-of-memory is handled)
      if not is_out_of_memory(error):
        raise
      first_line = str(error).strip().splitlines()[0][:500]
      record = {'batch_size': batch_size, 'status': 'out_of_memory', 'error': first_line}
      stop = f'batch size {batch_size} ran out of memory'
      # Drop the failed step's buffers and executables before anything else runs.
      jax.clear_caches()
      gc.collect()
    records.append(record)
  return records


def model_config(name: str) -> ml_collections.ConfigDict:
  """The config of model `name`: a key of MODELS, `<module of configs/>:<variant>` or
  `<path to a config file>.py:<variant>`."""
  if name in MODELS:
    module, variant, _ = MODELS[name]
  elif ':' in name:
    module, variant = name.rsplit(':', 1)
  else:
    raise ValueError(
      f'--models: unknown model {name!r}; expected one of {sorted(MODELS)}, '
      '<config module>:<variant> (e.g. imagenet:debug) or <file>.py:<variant>.'
    )
  if module.endswith('.py'):
    if not os.path.isfile(module):
      raise ValueError(f'--models: config file {module!r} does not exist.')
    spec = importlib.util.spec_from_file_location('_benchmark_config', module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded.get_config(variant)
  return importlib.import_module(f'configs.{module}').get_config(variant)


def with_settings(
  config: ml_collections.ConfigDict, *, dtype: str, batch_size: int
) -> ml_collections.ConfigDict:
  """A copy of `config` with `batch_size` and the compute dtype `dtype`."""
  if dtype not in peak_flops.DTYPES:
    raise ValueError(f'--dtypes: {dtype!r} is not one of {peak_flops.DTYPES}.')
  config = ml_collections.ConfigDict(config.to_dict())
  config.training.batch_size = int(batch_size)
  if dtype == 'bfloat16':
    precision.set_compute_dtype(config, 'bfloat16')
  config.lock()
  return config


def run_record(
  config: ml_collections.ConfigDict,
  *,
  name: str,
  dtype: str,
  num_steps: int,
  matmul_size: int,
  peak_override: Optional[float],
) -> Dict[str, Any]:
  """Benchmarks one setting and returns its record (see RECORD_KEYS and the extras)."""
  report = train_step.benchmark(
    config,
    num_steps=num_steps,
    matmul_size=matmul_size,
    make_batch=fake_batches.train_batch,
  )
  device_kind = report['device_kind']
  peak = peak_flops.peak_tflops(device_kind, dtype, peak_override)
  step_s = report['step_s_median']
  per_device = report['flops_per_step_per_device']
  mfu = peak_flops.mfu(per_device, step_s, peak['peak_tflops'])
  record = {
    'framework': 'jax+haiku',
    'model': name,
    'dtype': dtype,
    'step_s_median': step_s,
    'examples_per_s': report['examples_per_s'],
    'peak_memory_bytes': report['peak_memory_bytes'],
    'flops_per_step': report['flops_per_step'],
    'mfu': None if mfu is None else round(mfu, 4),
  }
  table = peak_flops.lookup(device_kind)
  if dtype == 'float32' and peak_override is None and table and table.tensorfloat32:
    record['mfu_tf32'] = round(peak_flops.mfu(per_device, step_s, table.tensorfloat32), 4)
  record.update(peak)
  xla = report['xla_memory_bytes_per_device']
  if xla:
    record['step_memory_bytes'] = (
      xla.get('temp_size_in_bytes', 0)
      + xla.get('argument_size_in_bytes', 0)
      + xla.get('output_size_in_bytes', 0)
      - xla.get('alias_size_in_bytes', 0)
    )
  for key in (
    'num_params',
    'num_devices',
    'step_s_min',
    'first_step_s',
    'compile_s',
    'peak_memory_source',
    'achieved_gflop_per_s_per_device',
    'matmul_gflop_per_s_per_device',
    'achieved_over_matmul',
    'final_loss',
  ):
    record[key] = report[key]
  return record


def best_runs(records: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
  """`{'<model>/<dtype>': record}`: the ok record with the most examples/s of each."""
  best = {}
  for record in records:
    if record.get('status') != 'ok':
      continue
    key = f'{record["model"]}/{record["dtype"]}'
    if key not in best or record['examples_per_s'] > best[key]['examples_per_s']:
      best[key] = record
  return {
    key: {k: r[k] for k in ('batch_size', 'examples_per_s', 'step_s_median', 'mfu')}
    for key, r in best.items()
  }


def run_all(
  models: Sequence[str],
  dtypes: Sequence[str],
  batch_sizes: Optional[Sequence[int]],
  *,
  num_steps: int = 5,
  matmul_size: int = 4096,
  peak_override: Optional[float] = None,
  time_budget_s: Optional[float] = None,
) -> Dict[str, Any]:
  """Every model x dtype x batch-size run; returns the report (see the module docstring)."""
  deadline = None if not time_budget_s else time.monotonic() + time_budget_s
  records: List[Dict[str, Any]] = []
  for name in models:
    base = model_config(name)
    sizes = batch_sizes or (
      MODELS[name][2] if name in MODELS else (base.training.batch_size,)
    )
    for dtype in dtypes:

      def run(batch_size, base=base, name=name, dtype=dtype):
        config = with_settings(base, dtype=dtype, batch_size=batch_size)
        return run_record(
          config,
          name=name,
          dtype=dtype,
          num_steps=num_steps,
          matmul_size=matmul_size,
          peak_override=peak_override,
        )

      for record in sweep(run, sizes, deadline=deadline):
        record.setdefault('framework', 'jax+haiku')
        record.setdefault('model', name)
        record.setdefault('dtype', dtype)
        records.append(record)
        print(json.dumps(record), file=sys.stderr, flush=True)
      gc.collect()
  device = jax.local_devices()[0]
  return {
    'backend': jax.default_backend(),
    'device_kind': device.device_kind,
    'num_devices': jax.local_device_count(),
    'jax_version': jax.__version__,
    'load_average_1min': round(os.getloadavg()[0], 2),
    'num_timed_steps': num_steps,
    'runs': records,
    'best': best_runs(records),
  }


def _parse_ints(values: Sequence[str], name: str) -> Tuple[int, ...]:
  try:
    parsed = tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f'--{name}: expected integers, got {list(values)}.') from None
  if any(v < 1 for v in parsed):
    raise app.UsageError(f'--{name}: values must be >= 1, got {list(parsed)}.')
  return parsed


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags; called only when run as a program, so that
  importing this module never clashes with other programs' flags."""
  return types.SimpleNamespace(
    models=flags.DEFINE_list('models', list(DEFAULT_MODELS), 'Models to run.'),
    dtypes=flags.DEFINE_list(
      'dtypes', list(peak_flops.DTYPES), 'Compute dtypes: bfloat16, float32.'
    ),
    batch_sizes=flags.DEFINE_list(
      'batch_sizes', [], 'Global batch sizes (default: per model, see MODELS).'
    ),
    steps=flags.DEFINE_integer('steps', 5, 'Timed steps after the compiling one.'),
    matmul_size=flags.DEFINE_integer(
      'matmul_size', 4096, 'Side of the reference float32 matmul.'
    ),
    peak_tflops=flags.DEFINE_float(
      'peak_tflops', None, 'Dense peak TFLOP/s of one device (replaces the table).'
    ),
    time_budget_s=flags.DEFINE_float(
      'time_budget_s', 0.0, 'Start no run after this many seconds (0: no limit).'
    ),
    output=flags.DEFINE_string('output', '', 'Also write the JSON object to this file.'),
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  batch_sizes = _parse_ints(args.batch_sizes.value, 'batch_sizes') or None
  try:
    report = run_all(
      args.models.value,
      args.dtypes.value,
      batch_sizes,
      num_steps=args.steps.value,
      matmul_size=args.matmul_size.value,
      peak_override=args.peak_tflops.value,
      time_budget_s=args.time_budget_s.value,
    )
  except (ValueError, FloatingPointError) as error:
    print(f'accelerator benchmark: {error}', file=sys.stderr)
    sys.exit(1)
  cli.print_json(report, args.output.value)


if __name__ == '__main__':
  # Let XLA use most of the GPU's memory (the default pool is 75%), before JAX starts.
  os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.95')
  cli.run(main, define_flags, name='accelerator')
