#!/usr/bin/env bash
# The accelerator benchmark on a GPU machine without internet, TensorFlow, dm-haiku or
# ml-collections (but with JAX for CUDA, and torch + transformers for the comparison):
#
#   bash experiments/benchmarks/gpu/prepare.sh   # first, where PyPI is reachable
#   bash experiments/benchmarks/gpu/run.sh [OUTPUT_DIR]   # on the GPU machine, ~5 min
#
# It installs experiments/benchmarks/gpu/wheels/ offline into a virtual environment
# that sees the machine's packages (--system-site-packages), then runs
#   1. the Perceiver IO ImageNet model (configs/imagenet.py:io_fourier, 224 x 224) in
#      bfloat16 and float32 over batch sizes 64-512 (a sweep stops at its first
#      out-of-memory);
#   2. the benchmark variants and the byte MLM model (default batch sizes);
#   3. Hugging Face's PerceiverForImageClassificationFourier with the same
#      configuration and training step, if torch and transformers import.
# Each step writes one JSON file into OUTPUT_DIR ($OUT, else ./accelerator_results).
# Time budgets (seconds; a run is not started after its budget):
#   IMAGENET_BUDGET_S (150), OTHERS_BUDGET_S (90), HF_BUDGET_S (60).
# SMOKE=1 installs and runs only a tiny model (imagenet:debug, batch 3, one step).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
out="${1:-${OUT:-$repo/accelerator_results}}"
wheels="$repo/experiments/benchmarks/gpu/wheels"
python="${PYTHON:-python3}"
mkdir -p "$out"
cd "$repo"

if ! "$python" -c 'import jax' 2>/dev/null; then
  echo "run.sh: $python cannot import jax; install jax[cuda12] first." >&2
  exit 1
fi
"$python" -c 'import jax; print("jax", jax.__version__, jax.devices())' | tee "$out/devices.txt"

venv="${BENCH_VENV:-/tmp/perceiver-bench-venv}"
site=""
if "$venv/bin/python" -m pip --version > /dev/null 2>&1 \
  || "$python" -m venv --system-site-packages "$venv"; then
  py="$venv/bin/python"
else
  # No venv module (e.g. Debian without python3-venv): install into a folder instead.
  py="$python"
  site="/tmp/perceiver-bench-site"
fi
export PYTHONPATH="${site:+$site:}${PYTHONPATH:-}"
if ! "$py" -c 'import haiku, ml_collections, optax, jmp' 2>/dev/null; then
  if [ ! -d "$wheels" ]; then
    echo "run.sh: $wheels is missing: run prepare.sh where PyPI is reachable." >&2
    exit 1
  fi
  # --no-deps: JAX and NumPy come from the machine; the wheels hold everything else.
  "$py" -m pip install --quiet --no-index --find-links "$wheels" --no-deps \
    ${site:+--target "$site"} \
    dm-haiku jmp ml-collections optax absl-py etils tabulate attrs typing-extensions \
    dm-tree wrapt PyYAML || exit 1
fi
export PYTHONPATH="$repo:$PYTHONPATH"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
status=0
if [ -n "${SMOKE:-}" ]; then
  # SMOKE=1: the install and a tiny model only (checks the machine in seconds).
  "$py" -m experiments.benchmarks.accelerator --models=imagenet:debug \
    --dtypes=bfloat16 --batch_sizes=3 --steps=1 --matmul_size=64 \
    --output="$out/accelerator_smoke.json"
  exit $?
fi
"$py" -m experiments.benchmarks.accelerator --models=imagenet \
  --dtypes=bfloat16,float32 --batch_sizes=64,128,256,512 \
  --time_budget_s="${IMAGENET_BUDGET_S:-150}" --output="$out/accelerator_imagenet.json" \
  > "$out/accelerator_imagenet.log" 2>&1 || status=1
"$py" -m experiments.benchmarks.accelerator \
  --models=image64_b8,mlm2048_b4,mlm --dtypes=bfloat16,float32 \
  --time_budget_s="${OTHERS_BUDGET_S:-90}" --output="$out/accelerator_others.json" \
  > "$out/accelerator_others.log" 2>&1 || status=1
if "$py" -c 'import torch, transformers' 2>/dev/null; then
  "$py" experiments/benchmarks/hf_perceiver.py --batch_sizes=64,128,256,512 \
    --dtypes=bfloat16,float32 --time_budget_s="${HF_BUDGET_S:-60}" \
    --output="$out/hf_perceiver.json" > "$out/hf_perceiver.log" 2>&1 || status=1
else
  echo "run.sh: torch or transformers missing; no Hugging Face comparison." | tee "$out/hf_perceiver.log"
fi
tail -n 3 "$out"/*.log
exit $status
