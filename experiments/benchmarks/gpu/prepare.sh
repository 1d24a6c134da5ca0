#!/usr/bin/env bash
# Downloads the small wheels the accelerator benchmark needs beyond JAX into
# experiments/benchmarks/gpu/wheels/ (ignored by git; carry it to the GPU machine).
#
#   bash experiments/benchmarks/gpu/prepare.sh            # from a machine with PyPI
#
# The GPU machine has JAX (with CUDA), NumPy, torch and transformers but neither
# dm-haiku nor ml-collections, and no internet; run.sh installs these wheels there with
# `pip install --no-index --find-links`. The import graph of
# `python -m experiments.benchmarks.accelerator` beyond JAX and NumPy is exactly this
# list (no TensorFlow, TFDS, orbax or chex). Versions are those of requirements.txt's
# environment. Binary wheels (dm-tree, wrapt, PyYAML) are fetched for CPython
# 3.10-3.13 on manylinux x86_64.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/wheels}"
mkdir -p "$dest"
pure=(
  dm-haiku==0.0.17
  jmp==0.0.4
  ml-collections==1.1.0
  optax==0.2.8
  absl-py==2.5.1
  etils==1.15.0
  tabulate==0.10.0
  attrs==26.1.0
  typing-extensions==4.16.0
)
binary=(
  dm-tree==0.1.10
  wrapt==2.5.2
  PyYAML==6.0.4
)
python -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" "${pure[@]}"
for version in 3.10 3.11 3.12 3.13; do
  python -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --python-version "$version" --implementation cp "${binary[@]}"
done
ls -l "$dest"
du -sh "$dest"
