r"""Speed and memory of multimodal autoencoding: full-clip reconstruction against
`num_chunks`, and one training step.

Builds the model of a multimodal config (default: `kinetics`, the release's architecture:
16 frames of 224x224, 30,720 audio samples, 802,816 pixel and 1,920 audio-patch queries),
fills its parameters with random values on the host (nothing is initialised by XLA) and
reconstructs one random clip with `decoding.Reconstructor` (the encoder once, the decoder
in `num_chunks` groups of output points) for each `--num_chunks`. Each setting runs in a
fresh process, so that its peak memory is its own, and prints one JSON line: compile
seconds (encoder and one decoder call, compiled ahead of time), the reconstruction's
wall and process CPU seconds (one run, already compiled), XLA's temporary buffer sizes of the encoder and of one
decoder call, and the process's peak resident memory. A setting whose decoder call XLA
sizes above `--max_memory_fraction` of the memory available when it starts is compiled
but not run (its line says so, with XLA's figure); `--norun` only compiles. XLA's figure
is a lower bound of the process's peak (the full clip's outputs, the parameters and
the runtime come on top).

  python -m experiments.benchmarks.reconstruction --num_chunks=128,16,4
  python -m experiments.benchmarks.reconstruction --num_chunks=1 --norun
  python -m experiments.benchmarks.reconstruction --config=configs/multimodal.py:synthetic \
      --num_chunks=1,4

One training step at batch 1 (the training loop's own step, fake data) is measured by the
general train-step benchmark:

  python -m experiments.benchmark --config=configs/multimodal.py:kinetics \
      --config.training.batch_size=1 --steps=2
"""

import json
import os
import platform
import resource
import subprocess
import sys
import time
import types

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from experiments.benchmarks import train_step
from experiments.tasks.multimodal import decoding
from experiments.tasks.multimodal import model as model_lib
from experiments.training import cli

_DEFAULT_CONFIG = (
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    'configs',
    'multimodal.py',
  )
  + ':kinetics'
)


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags (only when run as a program)."""
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config', _DEFAULT_CONFIG, 'Multimodal config.', lock_config=True
    ),
    num_chunks=flags.DEFINE_string(
      'num_chunks', '1,4,16,128', 'Comma-separated numbers of decoder chunks.'
    ),
    max_memory_fraction=flags.DEFINE_float(
      'max_memory_fraction',
      0.6,
      "Run a setting only if XLA's buffers of the encoder and one decoder call fit in "
      'this fraction of the memory available when it starts (MemAvailable).',
    ),
    run=flags.DEFINE_bool(
      'run', True, 'Reconstruct the clip; --norun only compiles (XLA buffer sizes).'
    ),
  )


def available_memory_bytes() -> int:
  """Memory available to a new process now (`MemAvailable` of /proc/meminfo; the
  machine's total where that is not readable)."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def random_params(init, *args, seed: int = 0, scale: float = 0.02):
  """Parameters shaped as `init(*args)` makes them, N(0, scale^2) filled on the host
  (LayerNorm scales 1 + N(0, scale^2))."""
  abstract, state = jax.eval_shape(init, *args)
  rng = np.random.default_rng(seed)
  params = {}
  for module in sorted(abstract):
    params[module] = {}
    for name in sorted(abstract[module]):
      spec = abstract[module][name]
      value = scale * rng.standard_normal(spec.shape, np.float32)
      params[module][name] = (value + (name == 'scale')).astype(spec.dtype)
  return params, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state)


def _temp_bytes(compiled) -> int:
  return int(train_step.xla_memory(compiled).get('temp_size_in_bytes', 0))


def measure(
  config, num_chunks: int, *, max_memory_fraction: float = 0.6, run: bool = True
) -> dict:
  """Reconstructs one random clip of `config`'s sizes in `num_chunks` chunks (with
  `run`; otherwise only compiles and reports XLA's buffer sizes)."""
  d = config.data
  shapes = model_lib.Shapes(
    d.num_frames,
    d.image_size,
    d.image_size,
    d.num_frames * d.samples_per_frame,
    d.num_classes,
  )
  rng = np.random.default_rng(0)
  batch = {
    'video': rng.uniform(0, 1, (1, d.num_frames, d.image_size, d.image_size, 3)),
    'audio': rng.uniform(-1, 1, (1, shapes.num_samples)),
  }
  batch = {k: v.astype(np.float32) for k, v in batch.items()}
  rec = decoding.Reconstructor(config, shapes, num_chunks=num_chunks)
  params, state = random_params(rec.init, jax.random.PRNGKey(0), batch)
  key = jax.random.PRNGKey(1)
  sizes = rec.modality_sizes(params, state, batch)
  start = time.perf_counter()
  encoder, decoder = rec.compile(params, state, key, batch)
  compile_s = time.perf_counter() - start
  spp = config.model.audio_preprocessor.samples_per_patch
  points = model_lib.chunk_points(model_lib.all_points(shapes, spp), num_chunks, 0)
  budget = int(max_memory_fraction * available_memory_bytes())
  xla_bytes = _temp_bytes(encoder) + _temp_bytes(decoder)
  report = {
    'config_image': [d.num_frames, d.image_size, d.image_size],
    'audio_samples': shapes.num_samples,
    'num_chunks': num_chunks,
    'pixel_queries_per_chunk': int(points['image'].shape[0]),
    'parameters': int(sum(np.size(x) for x in jax.tree.leaves(params))),
    'modality_sizes': sizes,
    'compile_s': round(compile_s, 2),
    'xla_encoder_temp_bytes': _temp_bytes(encoder),
    'xla_decoder_call_temp_bytes': _temp_bytes(decoder),
    'memory_budget_bytes': budget,
  }
  if not run:
    report['ran'] = False
    report['why_not'] = '--norun: compiled only'
  elif xla_bytes > budget:
    report['ran'] = False
    report['why_not'] = (
      f"XLA's buffers ({xla_bytes / 2**30:.1f} GiB) exceed {max_memory_fraction:.0%} "
      f'of the available memory ({budget / 2**30:.1f} GiB)'
    )
  else:
    start, cpu_start = time.perf_counter(), time.process_time()
    out = rec(params, state, key, batch)
    report['ran'] = True
    report['reconstruct_s'] = round(time.perf_counter() - start, 2)
    report['reconstruct_process_cpu_s'] = round(time.process_time() - cpu_start, 2)
    report['encoder_calls_per_clip'] = rec.encoder_calls
    report['decoder_calls_per_clip'] = rec.decoder_calls
    assert out['image'].shape == (1, d.num_frames, d.image_size, d.image_size, 3)
  max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  report['peak_rss_bytes'] = int(max_rss) * (1 if platform.system() == 'Darwin' else 1024)
  report['device'] = str(jax.devices()[0].device_kind)
  report['cpu_count'] = os.cpu_count()
  report['load_average_1min'] = os.getloadavg()[0]
  return report


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    counts = [int(c) for c in args.num_chunks.value.split(',') if c.strip()]
  except ValueError:
    raise app.UsageError(
      f'--num_chunks={args.num_chunks.value!r} must be comma-separated integers.'
    ) from None
  if len(counts) == 1:
    result = measure(
      args.config.value,
      counts[0],
      max_memory_fraction=args.max_memory_fraction.value,
      run=args.run.value,
    )
    print(json.dumps(result), flush=True)
    return
  # One process per setting, so that each peak memory is that setting's own.
  passthrough = [a for a in sys.argv[1:] if not a.startswith('--num_chunks')]
  for count in counts:
    result = subprocess.run(
      [
        sys.executable,
        '-m',
        'experiments.benchmarks.reconstruction',
        f'--num_chunks={count}',
        *passthrough,
      ],
      capture_output=True,
      text=True,
      check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith('{')]
    if result.returncode or not lines:
      sys.exit(
        f'reconstruction: error: num_chunks={count} failed: '
        + (result.stderr.strip().splitlines() or ['no output'])[-1]
      )
    print(lines[-1], flush=True)


if __name__ == '__main__':
  cli.run(main, define_flags, name='reconstruction')
