"""Published dense peak FLOP/s of accelerators, and model FLOPs utilisation (MFU).

MFU = (model FLOPs of one train step / step seconds) / (the device's dense peak FLOP/s
for the compute dtype), per device. Model FLOPs are the matmul and convolution FLOPs of
the whole train step (forward and backward) counted on its jaxpr
(`experiments/benchmarks/flops.py`), so recomputation under `remat` would count too:
the benchmarks run with remat off.

Peaks are DENSE figures: vendor datasheets often print tensor-core figures "with
sparsity", which are twice the dense ones; every value below is the dense one (the
datasheet's sparse figure halved where only that is printed). Per dtype:

  'bfloat16': the BF16 tensor-core (GPU) or MXU (TPU) peak.
  'float32': on GPUs the NON-tensor-core FP32 peak (CUDA cores). XLA may run float32
    matmuls as TF32 on tensor cores (Ampere and later), so a float32 MFU can exceed
    1; the TF32 peak is kept beside it ('tensorfloat32') and
    reported as `mfu_tf32`. On TPUs float32 matmuls at JAX's default precision run as
    bfloat16 MXU passes and Google publishes no separate float32 peak, so 'float32' is
    the bf16 peak there.

TFLOP/s per chip (one GPU; one TPU chip), keyed by a pattern of
`jax.devices()[0].device_kind`.
"""

import re
from typing import Dict, NamedTuple, Optional


class Peak(NamedTuple):
  """Dense peak TFLOP/s of one device.

  Attributes:
    name: the product.
    bfloat16: BF16 tensor-core / MXU peak (None: no BF16 matrix units).
    float32: FP32 peak (GPUs: without tensor cores; see the module docstring).
    tensorfloat32: TF32 tensor-core peak (None where the device has none).
    source: the datasheet the figures come from.
  """

  name: str
  bfloat16: Optional[float]
  float32: Optional[float]
  tensorfloat32: Optional[float]
  source: str


_H100_SXM_URL = (
  'https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet'
)
_H200_URL = 'https://www.nvidia.com/en-us/data-center/h200/'
_A100_URL = (
  'https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/'
  'nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf'
)
_V100_URL = (
  'https://images.nvidia.com/content/technologies/volta/pdf/'
  'volta-v100-datasheet-update-us-1165301-r5.pdf'
)

# (regular expression on the lower-cased device_kind, Peak); the first match wins, so
# the more specific patterns come first.
PEAKS = (
  # H200 datasheet: SXM BF16 1,979 / TF32 989 TFLOPS "with sparsity", FP32 67;
  # NVL BF16 1,671 / TF32 835 with sparsity, FP32 60.
  (r'h200.*nvl', Peak('NVIDIA H200 NVL', 835.5, 60.0, 417.5, _H200_URL)),
  (r'h200', Peak('NVIDIA H200 SXM', 989.5, 67.0, 494.5, _H200_URL)),
  # H100 datasheet: SXM BF16 1,979 / TF32 989 with sparsity, FP32 67; PCIe BF16 1,513 /
  # TF32 756 with sparsity, FP32 51; NVL BF16 1,671 / TF32 835, FP32 60.
  (r'h100.*nvl', Peak('NVIDIA H100 NVL', 835.5, 60.0, 417.5, _H100_SXM_URL)),
  (r'h100.*pcie', Peak('NVIDIA H100 PCIe', 756.5, 51.0, 378.0, _H100_SXM_URL)),
  (r'h100', Peak('NVIDIA H100 SXM', 989.5, 67.0, 494.5, _H100_SXM_URL)),
  # A100 datasheet (SXM and PCIe, 40 and 80 GB): BF16 312 (624 with sparsity), TF32 156
  # (312 with sparsity), FP32 19.5.
  (r'a100', Peak('NVIDIA A100', 312.0, 19.5, 156.0, _A100_URL)),
  # L4 datasheet: BF16 242.5 and TF32 120 "with sparsity" (dense: half), FP32 30.3.
  (
    r'^nvidia l4$',
    Peak('NVIDIA L4', 121.0, 30.3, 60.0, 'https://www.nvidia.com/en-us/data-center/l4/'),
  ),
  # A10G (AWS G5): NVIDIA publishes no A10G datasheet; these are the A10 datasheet's
  # figures (BF16 125 dense / 250 sparse, TF32 62.5 / 125, FP32 31.2). The A10G's
  # clocks differ: pass --peak_tflops when a better figure is known.
  (
    r'a10g',
    Peak(
      'NVIDIA A10G (A10 datasheet)',
      125.0,
      31.2,
      62.5,
      'https://www.nvidia.com/en-us/data-center/products/a10-gpu/',
    ),
  ),
  # V100 datasheet: SXM2 FP32 15.7, PCIe FP32 14 (tensor cores: FP16 only, 125 / 112).
  # No BF16 or TF32 units, so bf16 MFU is not defined (None).
  (r'v100.*pcie', Peak('NVIDIA V100 PCIe', None, 14.0, None, _V100_URL)),
  (r'v100', Peak('NVIDIA V100 SXM2', None, 15.7, None, _V100_URL)),
  # Cloud TPU system architecture pages, per chip, BF16: v4 275, v5e 197, v5p 459,
  # v6e (Trillium) 918. device_kind: 'TPU v4', 'TPU v5 lite', 'TPU v5', 'TPU v6 lite'.
  (
    r'^tpu v4$',
    Peak('TPU v4', 275.0, 275.0, None, 'https://cloud.google.com/tpu/docs/v4'),
  ),
  (
    r'^tpu v5(e| ?lite)$',
    Peak('TPU v5e', 197.0, 197.0, None, 'https://cloud.google.com/tpu/docs/v5e'),
  ),
  (
    r'^tpu v5p?$',
    Peak('TPU v5p', 459.0, 459.0, None, 'https://cloud.google.com/tpu/docs/v5p'),
  ),
  (
    r'^tpu v6(e| ?lite)$',
    Peak('TPU v6e', 918.0, 918.0, None, 'https://cloud.google.com/tpu/docs/v6e'),
  ),
)

DTYPES = ('bfloat16', 'float32')


def lookup(device_kind: str) -> Optional[Peak]:
  """The peak of `device_kind` (as `jax.Device.device_kind` spells it), or None."""
  kind = ' '.join(device_kind.lower().split())
  for pattern, peak in PEAKS:
    if re.search(pattern, kind):
      return peak
  return None


def peak_tflops(
  device_kind: str, dtype: str, override: Optional[float] = None
) -> Dict[str, object]:
  """`{'peak_tflops', 'peak_name', 'peak_source'}` for `dtype` on `device_kind`.

  Args:
    device_kind: `jax.Device.device_kind`.
    dtype: 'bfloat16' or 'float32' (the compute dtype of the model's matmuls).
    override: a peak in TFLOP/s that replaces the table (`--peak_tflops`).
  """
  if dtype not in DTYPES:
    raise ValueError(f'dtype={dtype!r} is not one of {DTYPES}.')
  if override is not None:
    if not override > 0:
      raise ValueError(f'peak_tflops={override} must be > 0.')
    return {
      'peak_tflops': float(override),
      'peak_name': device_kind,
      'peak_source': 'override',
    }
  peak = lookup(device_kind)
  if peak is None:
    return {'peak_tflops': None, 'peak_name': None, 'peak_source': 'unknown device'}
  value = peak.bfloat16 if dtype == 'bfloat16' else peak.float32
  return {'peak_tflops': value, 'peak_name': peak.name, 'peak_source': peak.source}


def mfu(flops_per_step_per_device: float, step_s: float, peak: Optional[float]):
  """Model FLOPs utilisation: `flops / step_s / (peak TFLOP/s * 1e12)`, or None when the
  peak is unknown (None)."""
  if step_s <= 0:
    raise ValueError(f'step_s={step_s} must be > 0.')
  if peak is None:
    return None
  return flops_per_step_per_device / step_s / (peak * 1e12)
