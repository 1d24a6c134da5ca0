"""The per-kernel profile: HLO parsing, FLOP counts and the table of a profiled run."""

import jax
import jax.numpy as jnp

from experiments.benchmarks import jax_workloads
from experiments.benchmarks import op_profile


def _compiled():
  def f(a, b, c):
    # A product fused with elementwise work, a batched product and a reduction.
    return jnp.tanh(a @ b) + 1.0, jnp.einsum('bij,bjk->bik', c, c), jnp.sum(a)

  args = (
    jnp.ones((35, 7), jnp.float32),
    jnp.ones((7, 11), jnp.float32),
    jnp.ones((3, 5, 5), jnp.float32),
  )
  return jax.jit(f).lower(*args).compile(), args


def test_parse_hlo_counts_the_flops_of_every_product():
  compiled, _ = _compiled()
  instructions, computations = op_profile.parse_hlo(compiled.as_text())
  entry = [c for c in computations if c.startswith('main')]
  assert entry, sorted(computations)
  total = sum(
    op_profile.kernel_flops(name, instructions, computations)
    for name in computations[entry[0]]
  )
  # 2 x 35 x 11 x 7 for the product, 2 x 3 x 5 x 5 x 5 for the batched one.
  assert total == 2 * 35 * 11 * 7 + 2 * 3 * 5 * 5 * 5


def test_profile_runs_tables_the_kernels_of_the_trace():
  compiled, args = _compiled()
  runner = jax_workloads.Runner(
    run_once=lambda: jax.block_until_ready(compiled(*args)),
    num_params=0,
    compile_s=0.0,
    compiled=compiled,
  )
  table = op_profile.profile_runs(runner, num_runs=3)
  rows = table['rows']
  assert rows and table['num_runs'] == 3
  assert sum(r['flops_per_step'] for r in rows) == 2 * 35 * 11 * 7 + 2 * 3 * 5 * 5 * 5
  for row in rows:
    assert row['calls_per_step'] == 1
    assert 0 <= row['best_ms_per_step'] <= row['ms_per_step'] + 1e-9
  assert abs(sum(r['share'] for r in rows) - 1) < 1e-3
  text = op_profile.format_table(table, top=5)
  assert text.count('\n| ') >= 2 and 'best ms/step' in text
