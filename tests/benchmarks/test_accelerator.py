"""Tests of the accelerator benchmark: peaks, MFU, the OOM sweep, no TensorFlow."""

import json
import os
import subprocess
import sys

import jax
import pytest

from experiments.benchmarks import accelerator
from experiments.benchmarks import peak_flops
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize(
  'device_kind,name,bf16,fp32',
  [
    ('NVIDIA H100 80GB HBM3', 'NVIDIA H100 SXM', 989.5, 67.0),
    ('NVIDIA H100 PCIe', 'NVIDIA H100 PCIe', 756.5, 51.0),
    ('NVIDIA H100 NVL', 'NVIDIA H100 NVL', 835.5, 60.0),
    ('NVIDIA H200', 'NVIDIA H200 SXM', 989.5, 67.0),
    ('NVIDIA A100-SXM4-80GB', 'NVIDIA A100', 312.0, 19.5),
    ('NVIDIA A100-PCIE-40GB', 'NVIDIA A100', 312.0, 19.5),
    ('NVIDIA L4', 'NVIDIA L4', 121.0, 30.3),
    ('NVIDIA A10G', 'NVIDIA A10G (A10 datasheet)', 125.0, 31.2),
    ('Tesla V100-SXM2-16GB', 'NVIDIA V100 SXM2', None, 15.7),
    ('TPU v4', 'TPU v4', 275.0, 275.0),
    ('TPU v5 lite', 'TPU v5e', 197.0, 197.0),
    ('TPU v5', 'TPU v5p', 459.0, 459.0),
    ('TPU v6 lite', 'TPU v6e', 918.0, 918.0),
  ],
)
def test_peak_table(device_kind, name, bf16, fp32):
  assert peak_flops.peak_tflops(device_kind, 'bfloat16')['peak_tflops'] == bf16
  found = peak_flops.peak_tflops(device_kind, 'float32')
  assert (found['peak_name'], found['peak_tflops']) == (name, fp32)


def test_peak_table_unknown_devices_and_override():
  for kind in ('cpu', 'NVIDIA L40S', 'NVIDIA GeForce RTX 4090'):
    assert peak_flops.lookup(kind) is None, kind
    assert peak_flops.peak_tflops(kind, 'bfloat16')['peak_tflops'] is None
  assert peak_flops.peak_tflops('cpu', 'float32', 7.0) == {
    'peak_tflops': 7.0,
    'peak_name': 'cpu',
    'peak_source': 'override',
  }
  with pytest.raises(ValueError, match='float16'):
    peak_flops.peak_tflops('NVIDIA L4', 'float16')


def test_peaks_are_dense():
  # Dense BF16 tensor-core throughput is twice dense TF32 on Ampere, Ada and Hopper;
  # a sparse figure in one of the two columns would break the ratio.
  for _, peak in peak_flops.PEAKS:
    if peak.tensorfloat32 is not None:
      assert peak.bfloat16 / peak.tensorfloat32 == pytest.approx(2.0, rel=0.02), peak
    assert peak.source.startswith('https://'), peak


def test_mfu_arithmetic():
  # 3e12 FLOPs in 0.5 s = 6 TFLOP/s, over a 8 TFLOP/s peak.
  assert peak_flops.mfu(3e12, 0.5, 8.0) == pytest.approx(0.75)
  assert peak_flops.mfu(3e12, 0.5, None) is None
  with pytest.raises(ValueError, match='step_s'):
    peak_flops.mfu(3e12, 0.0, 8.0)


def _out_of_memory():
  return jax.errors.JaxRuntimeError(
    'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123 bytes.\nmore'
  )


def test_sweep_stops_at_first_out_of_memory():
  calls = []

  def run(batch_size):
    calls.append(batch_size)
    if batch_size >= 5:
      raise _out_of_memory()
    return {'examples_per_s': 10.0 * batch_size}

  records = accelerator.sweep(run, [7, 3, 5, 11])
  assert calls == [3, 5]
  assert [(r['batch_size'], r['status']) for r in records] == [
    (3, 'ok'),
    (5, 'out_of_memory'),
    (7, 'skipped'),
    (11, 'skipped'),
  ]
  assert records[0]['examples_per_s'] == 30.0
  assert records[1]['error'].startswith('RESOURCE_EXHAUSTED: Out of memory')
  assert records[2]['reason'] == 'batch size 5 ran out of memory'


def test_sweep_propagates_other_errors_and_honours_deadline():
  def broken(batch_size):
    raise jax.errors.JaxRuntimeError('INTERNAL: something else')

  with pytest.raises(jax.errors.JaxRuntimeError, match='INTERNAL'):
    accelerator.sweep(broken, [3])
  records = accelerator.sweep(lambda b: {}, [3, 5], deadline=0.0)
  assert [r['status'] for r in records] == ['skipped', 'skipped']


def test_best_runs():
  records = [
    {
      'model': 'm',
      'dtype': 'bfloat16',
      'batch_size': b,
      'status': 'ok',
      'mfu': 0.1,
      'examples_per_s': e,
      'step_s_median': b / e,
    }
    for b, e in ((3, 30.0), (5, 70.0), (7, 60.0))
  ] + [{'model': 'm', 'dtype': 'bfloat16', 'batch_size': 9, 'status': 'out_of_memory'}]
  best = accelerator.best_runs(records)
  assert list(best) == ['m/bfloat16']
  assert best['m/bfloat16']['batch_size'] == 5


def test_with_settings_applies_the_bfloat16_recipe():
  base = accelerator.model_config('imagenet:debug')
  config = accelerator.with_settings(base, dtype='bfloat16', batch_size=5)
  assert config.training.batch_size == 5
  assert config.model.encoder.compute_dtype == 'bfloat16'
  assert config.model.decoder.compute_dtype == 'bfloat16'
  f32 = accelerator.with_settings(base, dtype='float32', batch_size=3)
  assert f32.model.encoder.compute_dtype == base.model.encoder.compute_dtype
  with pytest.raises(ValueError, match='unknown model'):
    accelerator.model_config('nope')


# The imagenet debug model with AdamW on 7 x 7 images: a quick compile.
_CONFIG = """
from configs import imagenet


def get_config(arg):
  assert arg == 'tiny'
  config = imagenet.get_config('debug')
  with config.unlocked():
    config.optimizer.name = 'adamw'
    config.data.image_size = 7
  return config
"""

_SCRIPT = """
import json, runpy, sys
sys.argv = ['accelerator', '--models=' + sys.argv[2] + ':tiny', '--dtypes=bfloat16',
            '--batch_sizes=3', '--steps=1', '--matmul_size=32', '--output=' + sys.argv[1]]
try:
  runpy.run_module('experiments.benchmarks.accelerator', run_name='__main__')
except SystemExit as e:
  assert not e.code, e.code
print('MODULES', json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in
      ('tensorflow', 'tensorflow_datasets', 'orbax'))))
"""


@pytest.mark.slow
def test_command_runs_without_tensorflow(tmp_path):
  output = tmp_path / 'out.json'
  config_file = tmp_path / 'tiny_config.py'
  config_file.write_text(_CONFIG)
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS='cpu')
  result = subprocess.run(
    [sys.executable, '-c', _SCRIPT, str(output), str(config_file)],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  line = [x for x in result.stdout.splitlines() if x.startswith('MODULES')][0]
  assert json.loads(line.split(' ', 1)[1]) == []
  report = json.loads(output.read_text())
  (run,) = report['runs']
  assert set(accelerator.RECORD_KEYS) <= set(run)
  assert (run['model'], run['dtype'], run['batch_size'], run['status']) == (
    f'{config_file}:tiny',
    'bfloat16',
    3,
    'ok',
  )
  # On the CPU there is no peak: MFU is null, the measured matmul ratio remains.
  assert run['mfu'] is None and run['peak_source'] == 'unknown device'
  assert run['achieved_over_matmul'] > 0
  assert run['flops_per_step'] > 0
  assert run['examples_per_s'] == pytest.approx(3 / run['step_s_median'], rel=1e-3)
  assert report['best'][f'{config_file}:tiny/bfloat16']['batch_size'] == 3
