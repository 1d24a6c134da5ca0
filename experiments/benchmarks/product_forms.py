r"""How fast XLA's CPU backend runs the matrix products of attention, by form and library.

A self-attention layer's forward and backward passes take two kinds of products: dense
projections (`[P, C] x [C, K]`, P = batch x positions) and, per head, small batched
products of the logits and weights (`[T, D] x [D, S]` and `[T, S] x [S, D]`, batched
over batch x heads). Their operands come in three forms: NN (`a @ b`), NT (`a @ b^T`,
the logits `q k^T` and the weights' gradient `g v^T`) and TN (`a^T @ b`, the values' and
keys' gradients `p^T g`, `ds^T q`, and every weight gradient `x^T dy`).

XLA's CPU backend (JAX 0.10-0.12) hands NN and NT products to YNNPACK and TN ones to its
Eigen runtime; the `xla_cpu_experimental_ynn_fusion_type` option decides which fusions
YNNPACK may take. This command compiles each product twice in one process, with the
default option and with YNNPACK's dot fusions off (`eltwise,reduce` only, so every
product runs on Eigen), alternates their runs, and prints the median time and FLOP rate
of each: which library runs which shape best on this CPU.

  python -m experiments.benchmarks.product_forms
  python -m experiments.benchmarks.product_forms --batch=64 --length=256 --head=64 \
      --rows=2048 --width=512 --runs=15

Products (G = `--batch` heads x examples, T = S = `--length`, D = `--head`,
P = `--rows`, C = K = `--width`):
  batched NN `[G, T, S] x [G, S, D]`, batched NT `[G, T, D] x [G, S, D]^T`,
  batched TN `[G, T, S]^T x [G, T, D]`; dense NN `[P, C] x [C, K]`,
  dense NT `[P, K] x [C, K]^T` (an input gradient), dense TN `[P, C]^T x [P, K]`
  (a weight gradient).
"""

import time
import types
from typing import Dict, Iterable, List

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments.training import cli
from experiments.training import host_memory

# Compiler options per library setting: YNNPACK's fusions as XLA chooses them, or
# elementwise and reduction fusions only (products then run on XLA's Eigen runtime).
LIBRARIES = {
  'default': None,
  'eigen_dots': {
    'xla_cpu_experimental_ynn_fusion_type': (
      'LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE'
    )
  },
}


def product_cases(*, batch: int, length: int, head: int, rows: int, width: int) -> Dict:
  """`{name: (einsum equation, operand shapes, FLOPs)}` of the six products."""
  g, t, d, p, c = batch, length, head, rows, width
  return {
    'batched NN': ('gts,gsd->gtd', ((g, t, t), (g, t, d)), 2 * g * t * t * d),
    'batched NT': ('gtd,gsd->gts', ((g, t, d), (g, t, d)), 2 * g * t * t * d),
    'batched TN': ('gts,gtd->gsd', ((g, t, t), (g, t, d)), 2 * g * t * t * d),
    'dense NN': ('pc,ck->pk', ((p, c), (c, c)), 2 * p * c * c),
    'dense NT': ('pk,ck->pc', ((p, c), (c, c)), 2 * p * c * c),
    'dense TN': ('pc,pk->ck', ((p, c), (p, c)), 2 * p * c * c),
  }


def _compile(equation: str, shapes, options):
  specs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  lowered = jax.jit(lambda a, b: jnp.einsum(equation, a, b)).lower(*specs)
  return lowered.compile(compiler_options=options) if options else lowered.compile()


def measure(cases: Dict, *, runs: int, warmup: int = 3, seed: int = 0) -> List[Dict]:
  """One record per product and library: median and best seconds, GFLOP/s (at the
  median) and the largest difference from NumPy's float64 product, relative to its
  largest magnitude. The libraries' runs alternate, after `warmup` runs of each."""
  rng = np.random.RandomState(seed)
  records = []
  for name, (equation, shapes, flops) in cases.items():
    operands = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    expected = np.einsum(equation, *[o.astype(np.float64) for o in operands])
    args = [jax.device_put(o) for o in operands]
    compiled = {lib: _compile(equation, shapes, opts) for lib, opts in LIBRARIES.items()}
    times = {lib: [] for lib in compiled}
    errors = {}
    for lib, call in compiled.items():
      out = np.asarray(call(*args))
      errors[lib] = float(np.max(np.abs(out - expected)) / np.max(np.abs(expected)))
      for _ in range(warmup):
        jax.block_until_ready(call(*args))
    for index in range(runs):
      order = list(compiled) if index % 2 == 0 else list(compiled)[::-1]
      for lib in order:
        start = time.perf_counter()
        jax.block_until_ready(compiled[lib](*args))
        times[lib].append(time.perf_counter() - start)
    for lib, seconds in times.items():
      median = float(np.median(seconds))
      records.append(
        {
          'product': name,
          'library': lib,
          'shapes': [list(s) for s in shapes],
          'flops': int(flops),
          'median_s': median,
          'min_s': float(min(seconds)),
          'gflop_per_s': flops / median / 1e9,
          'max_rel_error': errors[lib],
        }
      )
  return records


def format_table(records: List[Dict]) -> str:
  """A Markdown table: one row per product, the libraries' rates side by side."""
  libraries = list(LIBRARIES)
  lines = [
    '| product | shapes | ' + ' | '.join(f'{lib} GFLOP/s' for lib in libraries) + ' |',
    '|---|---|' + '---:|' * len(libraries),
  ]
  by_product: Dict[str, Dict[str, Dict]] = {}
  for record in records:
    by_product.setdefault(record['product'], {})[record['library']] = record
  for product, libs in by_product.items():
    shapes = ' x '.join(str(tuple(s)) for s in next(iter(libs.values()))['shapes'])
    rates = ' | '.join(f'{libs[lib]["gflop_per_s"]:.0f}' for lib in libraries)
    lines.append(f'| {product} | {shapes} | {rates} |')
  return '\n'.join(lines)


def define_flags(flag_values=flags.FLAGS) -> types.SimpleNamespace:
  """Defines the command-line flags (only when run as a program)."""
  integer = lambda name, default, text: flags.DEFINE_integer(
    name, default, text, lower_bound=1, flag_values=flag_values
  )
  return types.SimpleNamespace(
    batch=integer('batch', 64, 'Batched products: batch x heads.'),
    length=integer('length', 256, 'Batched products: queries = keys.'),
    head=integer('head', 64, 'Batched products: channels per head.'),
    rows=integer('rows', 2048, 'Dense products: rows (batch x positions).'),
    width=integer('width', 512, 'Dense products: input = output channels.'),
    runs=integer('runs', 15, 'Timed runs per product and library (alternating).'),
    host_malloc=host_memory.define_flag(flag_values),
  )


def main(argv: Iterable[str], *, args: types.SimpleNamespace):
  if len(list(argv)) > 1:
    raise app.UsageError('Unexpected arguments.')
  host_memory.configure(args.host_malloc.value)
  cases = product_cases(
    batch=args.batch.value,
    length=args.length.value,
    head=args.head.value,
    rows=args.rows.value,
    width=args.width.value,
  )
  print(format_table(measure(cases, runs=args.runs.value)))


if __name__ == '__main__':
  cli.run(main, define_flags, name='product_forms')
