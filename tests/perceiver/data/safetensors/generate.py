r"""Regenerates `reference.safetensors`, written by the `safetensors` package itself.

tests/perceiver/test_safetensors.py reads it with this project's NumPy reader and
compares every tensor with `expected_tensors()` (the same function, imported), so the
reader is checked against the reference writer without the package in the test
environment. Needs `safetensors`, `torch` (for bfloat16) and NumPy, which this project
does not install: run it in a virtual environment of its own, from the repository root
(see tests/inference/data/transformers/generate.py for one way to make it):

  /tmp/venv-torch/bin/python tests/perceiver/data/safetensors/generate.py
"""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
METADATA = {'format': 'pt', 'source': 'safetensors.torch.save_file'}


def expected_tensors(bfloat16=None):
  """`{name: array}` of the file; `bfloat16`: the NumPy dtype to build 'bf16' with."""
  ramp = lambda shape: np.arange(np.prod(shape, dtype=int)).reshape(shape)
  tensors = {
    'f64': ramp((2, 3)) / 7.0,
    'f32': (ramp((3, 5)) / 9.0 - 0.75).astype(np.float32),
    'f16': (ramp((5,)) / 4.0 - 0.5).astype(np.float16),
    'i64': ramp((7,)) * 1_000_000_007 - 3,
    'i32': (ramp((2, 2)) - 2).astype(np.int32),
    'i16': (ramp((3,)) * 1000 - 1500).astype(np.int16),
    'i8': (ramp((4,)) * 50 - 100).astype(np.int8),
    'u8': (ramp((3,)) * 100).astype(np.uint8),
    'bool': ramp((5,)) % 2 == 1,
    'one': np.array([2.5], np.float32),
    'empty': np.zeros((0, 3), np.float32),
  }
  if bfloat16 is not None:
    tensors['bf16'] = (ramp((2, 3)) / 8.0 - 0.25).astype(bfloat16)
  return tensors


def main():
  import safetensors.torch  # noqa: PLC0415
  import torch  # noqa: PLC0415

  tensors = {
    k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in expected_tensors().items()
  }
  bf16 = (torch.arange(6, dtype=torch.float32).reshape(2, 3) / 8.0 - 0.25).to(
    torch.bfloat16
  )
  tensors['bf16'] = bf16
  safetensors.torch.save_file(
    tensors, os.path.join(HERE, 'reference.safetensors'), metadata=METADATA
  )


if __name__ == '__main__':
  main()
