"""Timing an experiment's real train step on fake data (the library behind
`python -m experiments.benchmark`).

The step is the training loop's own: the task module's model and loss, the config's
optimizer, `steps.init_train_state`, `steps.train_step` and
`parallel.pmap_step` (with the state donated), composed exactly as `trainer.train`
composes them. Usable from a notebook:

    from configs import benchmark
    from experiments.benchmarks import train_step
    report = train_step.benchmark(benchmark.get_config('image64_b8'))

Reported figures (one dict, see `benchmark`): parameters, first step (trace + compile +
run), later steps (median and min), examples/s, matmul FLOPs per step counted on the
jaxpr (loops unrolled, see `benchmark_flops`), the FLOP/s achieved, a dense float32
matmul's FLOP/s measured in the same process on the same device, and memory; with
`input_mode='pipeline'`, also the part of each step spent reading the next batch from
the task's pipeline and copying it to the devices (`input_s_median`,
`input_process_cpu_s_median`).
"""

import contextlib
import functools
import gc
import os
import platform
import resource
import statistics
import time
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.benchmarks import flops as benchmark_flops
from experiments.training import optimizers
from experiments.training import parallel
from experiments.training import prefetch
from experiments.training import steps as steps_lib
from experiments.training import strategies
from experiments.training import task as task_lib

INPUT_MODES = ('fixed', 'pipeline', 'prefetch')


def _block(tree):
  return jax.tree.map(
    lambda x: x.block_until_ready() if hasattr(x, 'block_until_ready') else x, tree
  )


def matmul_flops_per_second(
  size: int = 2048,
  *,
  repeats: int = 5,
  dtype: Any = jnp.float32,
  device: Optional[jax.Device] = None,
) -> Tuple[float, float]:
  """FLOP/s of a jitted dense `[size, size] @ [size, size]` product on `device`.

  Returns `(per wall second, per process CPU second)`, each from the median over
  `repeats` timed products (after one warm-up): the rate the device's matmul reaches,
  the yardstick for the model's achieved FLOP/s. The CPU-second rate stays meaningful
  on a CPU shared with other processes.
  """
  if size < 1 or repeats < 1:
    raise ValueError(f'size={size} and repeats={repeats} must be >= 1.')
  device = device or jax.local_devices()[0]
  rng = np.random.RandomState(0)
  a = jax.device_put(rng.standard_normal((size, size)).astype(dtype), device)
  b = jax.device_put(rng.standard_normal((size, size)).astype(dtype), device)
  matmul = jax.jit(jnp.dot)
  matmul(a, b).block_until_ready()
  times, cpu_times = [], []
  for _ in range(repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    matmul(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
  flops = 2.0 * size**3
  return flops / statistics.median(times), flops / max(statistics.median(cpu_times), 1e-9)


def peak_memory(device: Optional[jax.Device] = None) -> Tuple[int, str]:
  """`(bytes, source)`: the device's peak allocation where the runtime reports one
  (GPU, TPU: `memory_stats()['peak_bytes_in_use']`), else the process's peak resident
  set size (CPU: `getrusage` max RSS, which includes Python, the input pipeline and
  everything else the process holds)."""
  device = device or jax.local_devices()[0]
  stats = None
  with contextlib.suppress(Exception):
    stats = device.memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device.memory_stats.peak_bytes_in_use'
  max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # Linux reports kilobytes, macOS bytes.
  scale = 1 if platform.system() == 'Darwin' else 1024
  return int(max_rss) * scale, 'process_max_rss'


def xla_memory(compiled) -> Dict[str, int]:
  """XLA's static buffer sizes of a compiled step (bytes per device), where available."""
  analysis = None
  with contextlib.suppress(Exception):
    analysis = compiled.memory_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if analysis is None:
    return {}
  fields = (
    'temp_size_in_bytes',
    'argument_size_in_bytes',
    'output_size_in_bytes',
    'alias_size_in_bytes',
    'generated_code_size_in_bytes',
  )
  return {f: int(getattr(analysis, f)) for f in fields if hasattr(analysis, f)}


def _task_train_loss(outputs, batch, *, task, config):
  return task.train_loss(outputs, batch, config)


def fake_data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` reading generated data (`data.fake=True`) where it can."""
  config = ml_collections.ConfigDict(config.to_dict())  # An unlocked copy.
  if 'data' in config and 'fake' in config.data:
    config.data.fake = True
  config.lock()
  return config


def _count_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


class StepSetup(NamedTuple):
  """The pieces of an experiment's pmapped train step, ready to run.

  Attributes:
    config: the config (with `data.fake=True` where the config has it).
    p_train_step: `parallel.pmap_step(steps.train_step, ...)`, state donated.
    p_state: the replicated initial train state (host arrays).
    device_batch: one training batch from the task's iterator, on the devices.
    p_rng: the replicated training key.
    iterator: the task's training iterator (positioned after `device_batch`), or None
      when not kept (its background threads would compete with the step for the CPU).
    num_params: number of model parameters.
    init_s: seconds `steps.init_train_state` took (its compilation included).
  """

  config: ml_collections.ConfigDict
  p_train_step: Any
  p_state: Any
  device_batch: Any
  p_rng: Any
  iterator: Optional[Iterator[Dict[str, np.ndarray]]]
  num_params: int
  init_s: float


def _significant(x: float, digits: int = 4) -> float:
  """`x` rounded to `digits` significant figures (step times range from ms to s)."""
  return float(f'{x:.{digits}g}')


def to_devices(batch):
  """Places a host batch `[D, b, ...]` on the local devices, one `[b, ...]` slice each,
  as the training loop does (`strategies.put_local_batch`)."""
  return strategies.put_local_batch(batch)


def build_step(
  config: ml_collections.ConfigDict,
  *,
  fake_data: bool = True,
  keep_iterator: bool = False,
  make_batch: Optional[Callable[[ml_collections.ConfigDict, Any], Any]] = None,
) -> StepSetup:
  """Builds the train step of `config` as `trainer.train` does, on one training batch.

  Unless `keep_iterator`, the task's training iterator is closed after its first batch:
  input pipelines prefetch in background threads, which on a CPU would take cycles from
  the step being measured. `make_batch(config, batch_dims)`, if given, makes the batch
  instead of the task's iterator (e.g. `fake_batches.train_batch`, without TensorFlow).
  """
  if fake_data:
    config = fake_data_config(config)
  task = task_lib.load_task(config.task)
  model = task.build_model(config)
  total_steps = config.training.num_steps or 1000
  optimizer, _ = optimizers.make_optimizer(
    config.optimizer,
    num_steps=max(int(total_steps), 1),
    batch_size=config.training.batch_size,
  )
  batch_dims = parallel.local_batch_dims(
    config.training.batch_size, name='training.batch_size'
  )
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))

  if make_batch is not None:
    if keep_iterator:
      raise ValueError('keep_iterator needs the task iterator, not make_batch.')
    iterator, host_batch = None, make_batch(config, batch_dims)
  else:
    iterator = task_lib.train_iterator(task, config, batch_dims=batch_dims, start_step=0)
    host_batch = next(iterator)
  parallel.check_batch_dims(host_batch, batch_dims)
  if iterator is not None and not keep_iterator:
    close = getattr(iterator, 'close', None)
    if close is not None:
      close()
    iterator = None
    gc.collect()  # Frees a tf.data iterator (and stops its threads) now.

  start = time.perf_counter()
  host_state = steps_lib.init_train_state(
    model, optimizer, {k: v[0] for k, v in host_batch.items()}, init_rng
  )
  init_s = time.perf_counter() - start

  loss_fn = functools.partial(_task_train_loss, task=task, config=config)
  step_fn = functools.partial(
    steps_lib.train_step, model=model, optimizer=optimizer, loss_fn=loss_fn
  )
  return StepSetup(
    config=config,
    p_train_step=parallel.pmap_step(step_fn, donate_state=True),
    p_state=parallel.replicate(host_state),
    device_batch=to_devices(host_batch),
    p_rng=parallel.replicate(train_rng),
    iterator=iterator,
    num_params=_count_params(host_state.params),
    init_s=init_s,
  )


def compile_step(
  setup: StepSetup, compiler_options: Optional[Dict[str, str]] = None
) -> Tuple[Any, float, float]:
  """`(compiled step, trace seconds, compile seconds)` for `setup`'s arguments.

  `compiler_options`: XLA options of this compilation alone (e.g.
  `{'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}`), as
  `XLA_FLAGS` would set them for the whole process.
  """
  start = time.perf_counter()
  lowered = setup.p_train_step.lower(setup.p_state, setup.device_batch, setup.p_rng)
  trace_s = time.perf_counter() - start
  compiled = lowered.compile(compiler_options=compiler_options or None)
  return compiled, trace_s, time.perf_counter() - start - trace_s


def benchmark(
  config: ml_collections.ConfigDict,
  *,
  num_steps: int = 10,
  input_mode: str = 'fixed',
  matmul_size: int = 2048,
  fake_data: bool = True,
  make_batch: Optional[Callable[[ml_collections.ConfigDict, Any], Any]] = None,
  compiler_options: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
  """Times `num_steps` train steps of `config` after the first (compiling) one.

  Args:
    config: an experiment config (`config.task` names its task module).
    num_steps: timed steps after the first one (>= 1).
    input_mode: 'fixed': one batch from the task's training iterator, placed on the
      devices once and reused, so the figures measure the step alone; 'pipeline': a
      new batch from the iterator before every step (host-to-device transfer and the
      input pipeline's latency included, the step waited for before the next batch
      is read); 'prefetch': as the training loop runs, the next
      `training.prefetch_to_device` batches copied to the devices while a step
      runs (`prefetch.prefetch_to_device`) and each step dispatched before the
      previous one is waited for, so a step's time is the input's when the input is
      the bottleneck and the step's otherwise.
    matmul_size: side of the reference float32 matmul.
    fake_data: set `data.fake=True` (when the config has it).
    make_batch: builds the 'fixed' batch instead of the task's iterator (see
      `build_step`).
    compiler_options: XLA options of the step's compilation (see `compile_step`).

  Returns:
    A JSON-serialisable dict of the figures (see the module docstring).
  """
  if num_steps < 1:
    raise ValueError(f'num_steps={num_steps} must be >= 1.')
  if input_mode not in INPUT_MODES:
    raise ValueError(f'input_mode={input_mode!r} is not one of {INPUT_MODES}.')
  setup = build_step(
    config,
    fake_data=fake_data,
    keep_iterator=input_mode != 'fixed',
    make_batch=make_batch,
  )
  config = setup.config
  p_state, device_batch, p_rng = setup.p_state, setup.device_batch, setup.p_rng

  flop_count = benchmark_flops.count_flops(
    setup.p_train_step, p_state, device_batch, p_rng
  )
  matmul_rates = [matmul_flops_per_second(matmul_size)]

  # First step: trace, compile and run (what a training run waits for).
  start = time.perf_counter()
  compiled, trace_s, compile_s = compile_step(setup, compiler_options)
  p_state, metrics = compiled(p_state, device_batch, p_rng)
  _block((p_state, metrics))
  first_step_s = time.perf_counter() - start
  memory = xla_memory(compiled)

  times, cpu_times = [], []
  input_times, input_cpu_times = [], []  # 'pipeline': reading and placing a batch.
  if input_mode == 'prefetch':
    device_iter = prefetch.prefetch_to_device(
      setup.iterator, config.training.prefetch_to_device, to_devices
    )
    previous = None
  for _ in range(num_steps):
    batch = device_batch
    step_start, cpu_start = time.perf_counter(), time.process_time()
    if input_mode == 'prefetch':
      p_state, metrics = compiled(p_state, next(device_iter), p_rng)
      if previous is not None:
        _block(previous)  # The previous step; this one runs meanwhile.
      previous = metrics
    else:
      if input_mode == 'pipeline':
        batch = to_devices(next(setup.iterator))
        _block(batch)
        input_times.append(time.perf_counter() - step_start)
        input_cpu_times.append(time.process_time() - cpu_start)
      p_state, metrics = compiled(p_state, batch, p_rng)
      _block((p_state, metrics))
    times.append(time.perf_counter() - step_start)
    cpu_times.append(time.process_time() - cpu_start)
  _block((p_state, metrics))
  matmul_rates.append(matmul_flops_per_second(matmul_size))

  metrics = parallel.unreplicate(metrics)
  if float(metrics['finite']) < 1.0:
    raise FloatingPointError(f'the benchmarked step was not finite: {metrics}.')
  step_median = statistics.median(times)
  cpu_median = statistics.median(cpu_times)
  num_devices = jax.local_device_count()
  achieved = flop_count.flops / step_median  # Per device.
  matmul_rate = statistics.median(rate for rate, _ in matmul_rates)
  matmul_cpu_rate = statistics.median(rate for _, rate in matmul_rates)
  achieved_cpu = flop_count.flops * num_devices / max(cpu_median, 1e-9)
  peak_bytes, peak_source = peak_memory()
  device = jax.local_devices()[0]
  report = {
    'task': config.task,
    'backend': jax.default_backend(),
    'device_kind': device.device_kind,
    'num_devices': num_devices,
    'jax_version': jax.__version__,
    'cpu_count': os.cpu_count(),
    'load_average_1min': round(os.getloadavg()[0], 2),
    'global_batch_size': int(config.training.batch_size),
    'input_mode': input_mode,
    'num_params': setup.num_params,
    'init_s': round(setup.init_s, 3),
    'first_step_s': round(first_step_s, 3),
    'trace_s': round(trace_s, 3),
    'compile_s': round(compile_s, 3),
    'num_timed_steps': num_steps,
    'step_s_median': _significant(step_median),
    'step_s_min': _significant(min(times)),
    'step_process_cpu_s_median': _significant(cpu_median),
    'examples_per_s': _significant(config.training.batch_size / step_median),
    'flops_per_step': int(flop_count.flops * num_devices),
    'flops_per_step_per_device': int(flop_count.flops),
    'flops_counted': 'matmul+conv, jaxpr with loops unrolled (fwd+bwd)',
    'flops_lower_bound_while_loops': flop_count.while_loops,
    'achieved_gflop_per_s_per_device': round(achieved / 1e9, 2),
    'matmul_gflop_per_s_per_device': round(matmul_rate / 1e9, 2),
    'matmul_size': matmul_size,
    'achieved_over_matmul': round(achieved / matmul_rate, 3),
    # Per process CPU second (all threads): robust to other processes on the CPU.
    'achieved_gflop_per_process_cpu_s': round(achieved_cpu / 1e9, 2),
    'matmul_gflop_per_process_cpu_s': round(matmul_cpu_rate / 1e9, 2),
    'achieved_over_matmul_cpu': round(achieved_cpu / matmul_cpu_rate, 3),
    'peak_memory_bytes': peak_bytes,
    'peak_memory_source': peak_source,
    'xla_memory_bytes_per_device': memory,
    'final_loss': round(float(metrics['loss']), 5),
  }
  if input_times:
    # Of each timed step: the input alone (next batch from the task's pipeline, copied
    # to the devices); the step alone is the rest.
    report['input_s_median'] = _significant(statistics.median(input_times))
    report['input_process_cpu_s_median'] = _significant(
      statistics.median(input_cpu_times)
    )
  return report
