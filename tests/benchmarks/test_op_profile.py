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


def _row(kernel, where, shape, best, flops, opcode='fusion', share=0.25):
  return {
    'kernel': kernel,
    'opcode': opcode,
    'ms_per_step': best + 1.0,
    'best_ms_per_step': best,
    'calls_per_step': 1.0,
    'flops_per_step': flops,
    'gflop_per_step': flops / 1e9,
    'best_gflop_per_s': None,
    'shape': shape,
    'where': where,
    'share': share,
  }


def test_group_rows_sums_the_same_work_of_every_layer():
  table = {
    'run_s_profiled': 0.02,
    'num_kernels': 4,
    'kernel_ms_per_step': 15.0,
    'best_kernel_ms_per_step': 11.0,
    'load_average_1min': 0.5,
    'best_ms_per_step_by_kind': {'matrix products': 11.0},
    'rows': [
      _row('a', 'bwd enc/self_attention/attention/dot', [7, 5], 3.0, 3_000_000_000),
      _row('b', 'bwd enc/self_attention_3/attention/dot', [7, 5], 1.0, 1_000_000_000),
      # Another shape, and a layer number inside a name that is not a layer's.
      _row('c', 'enc/self_attention_3/attention/dot', [5, 7], 5.0, 0),
      _row('d', 'bwd enc/self_attention_12/attention/dot', [7, 5], 2.0, 0, 'dot'),
    ],
  }
  grouped = op_profile.group_rows(table)
  assert table['rows'][0]['kernel'] == 'a'  # The input is left as it was.
  rows = grouped['rows']
  assert [r['kernel'] for r in rows] == ['1 kernels', '2 kernels', '1 kernels']
  assert [r['where'] for r in rows] == [
    'enc/self_attention/attention/dot',
    'bwd enc/self_attention/attention/dot',
    'bwd enc/self_attention/attention/dot',
  ]
  pair = rows[1]
  assert pair['best_ms_per_step'] == 4.0 and pair['ms_per_step'] == 6.0
  assert pair['calls_per_step'] == 2.0 and pair['share'] == 0.5
  # 4 GFLOP in 4 ms: 1,000 GFLOP/s.
  assert pair['gflop_per_step'] == 4.0 and pair['best_gflop_per_s'] == 1000.0
  assert rows[2]['opcode'] == 'dot' and rows[0]['best_gflop_per_s'] is None
  assert '| 2 kernels | 4.0 |' in op_profile.format_table(grouped, top=3)
