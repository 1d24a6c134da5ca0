r"""Where a train step's or a forward pass's time goes, per compiled XLA kernel (CPU).

Compiles a workload of `experiments.benchmarks.jax_workloads` (the training loop's train
step, or the evaluation-mode forward pass of a task's model), runs it under JAX's
profiler and matches the trace's per-kernel events (XLA's CPU runtime records one per
executed thunk: a fusion, a library matrix product, a copy) with the compiled HLO
module. Prints a summary by kind and a table of the kernels that took the most time:
their time per run, the matrix-product FLOPs they contain and the rate those reached,
the shape of their result and where in the model they come from (the JAX name stack of
their HLO metadata). With `--json`, one JSON object instead.

  python -m experiments.benchmarks.op_profile --config=configs/benchmark.py:image64_b8
  python -m experiments.benchmarks.op_profile --config=configs/benchmark.py:mlm2048_b4 \
      --runs=3 --top=30
  python -m experiments.benchmarks.op_profile --config=configs/benchmark.py:image64_b8 \
      --group   # the same work in every layer summed into one row
  python -m experiments.benchmarks.op_profile --config=configs/flow.py --mode=forward \
      --batch_size=1 --runs=1

Kernel times are summed over the threads that ran them (XLA runs some independent
kernels side by side, so the sum can exceed a run's wall time). On a CPU shared with
other processes every kernel is slowed by them at times; the table ranks kernels by
their best time (each kernel's shortest call times its calls per run), the figure least
affected.
"""

import collections
import dataclasses
import glob
import json
import math
import os
import re
import tempfile
import time
import types
from typing import Dict, Iterable, List, Optional, Tuple

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from experiments.benchmarks import jax_workloads
from experiments.training import cli
from experiments.training import host_memory

_INSTRUCTION = re.compile(
  r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(?[a-z0-9]+\[[^=]*?\](?:\{[^}]*\})?[^=]*?)\s+'
  r'([a-z\-]+)\((.*)$'
)
_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_SHAPE = re.compile(r'[a-z0-9]+\[([0-9,]*)\]')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_LHS_CONTRACTING = re.compile(r'lhs_contracting_dims=\{([0-9,]*)\}')
# Trace events that are not kernels: the runtime's own spans and control flow.
_CONTAINERS = ('while', 'call', 'conditional')


@dataclasses.dataclass
class Instruction:
  """One HLO instruction: its opcode, result dims, operands, called computation."""

  name: str
  opcode: str
  dims: Tuple[int, ...]
  operands: Tuple[str, ...]
  calls: Optional[str]
  op_name: str
  text: str


def _dims(shape_text: str) -> Tuple[int, ...]:
  match = _SHAPE.search(shape_text)
  if not match or not match.group(1):
    return ()
  return tuple(int(d) for d in match.group(1).split(','))


def parse_hlo(text: str) -> Tuple[Dict[str, Instruction], Dict[str, List[str]]]:
  """`(instructions by name, instruction names by computation)` of an HLO module's text."""
  instructions: Dict[str, Instruction] = {}
  computations: Dict[str, List[str]] = collections.defaultdict(list)
  current = None
  for line in text.splitlines():
    match = _INSTRUCTION.match(line)
    if match and current is not None:
      name, shape_text, opcode, rest = match.groups()
      operand_text = rest.split(')', 1)[0]
      operands = tuple(re.findall(r'%([\w.\-]+)', operand_text))
      calls = _CALLS.search(rest)
      op_name = _OP_NAME.search(rest)
      instructions[name] = Instruction(
        name=name,
        opcode=opcode,
        dims=_dims(shape_text),
        operands=operands,
        calls=calls.group(1) if calls else None,
        op_name=op_name.group(1) if op_name else '',
        text=line.strip(),
      )
      computations[current].append(name)
      continue
    match = _COMPUTATION.match(line)
    if match:
      current = match.group(1)
  return instructions, computations


def dot_flops(instruction: Instruction, instructions: Dict[str, Instruction]) -> int:
  """2 x output elements x contracted size of a `dot` (0 if its operands are unknown)."""
  lhs = instructions.get(instruction.operands[0]) if instruction.operands else None
  contracting = _LHS_CONTRACTING.search(instruction.text)
  if lhs is None or contracting is None:
    return 0
  size = 1
  for axis in contracting.group(1).split(','):
    if axis:
      size *= lhs.dims[int(axis)]
  return 2 * math.prod(instruction.dims) * size


def kernel_flops(
  name: str,
  instructions: Dict[str, Instruction],
  computations: Dict[str, List[str]],
) -> int:
  """Matrix-product FLOPs of the kernel `name` (a dot, or a fusion containing dots)."""
  instruction = instructions[name]
  if instruction.opcode == 'dot':
    return dot_flops(instruction, instructions)
  total = 0
  if instruction.calls:
    for inner in computations.get(instruction.calls, ()):
      total += kernel_flops(inner, instructions, computations)
  return total


def _where(op_name: str) -> str:
  """The model part and operation of a JAX name stack, e.g.
  'bwd perceiver_encoder/while/body/.../self_attention/attention/bhts,bhsd->bhtd'."""
  direction = 'bwd ' if 'transpose(' in op_name else ''
  parts = [
    p
    for p in op_name.split('/')
    if p
    and not p.startswith(('jit(', 'jvp(', 'transpose(', 'pmap('))
    and p != 'closed_call'
  ]
  return direction + '/'.join(parts[-4:])


def kernel_times(
  xplane_path: str,
) -> Tuple[Dict[str, int], Dict[str, int], Dict[str, int]]:
  """`(total ns, event count, shortest event ns)` per event name on the XLA CPU
  runtime's threads."""
  data = jax.profiler.ProfileData.from_file(xplane_path)
  totals: Dict[str, int] = collections.Counter()
  counts: Dict[str, int] = collections.Counter()
  shortest: Dict[str, int] = {}
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_XLA'):
        continue
      for event in line.events:
        totals[event.name] += event.duration_ns
        counts[event.name] += 1
        shortest[event.name] = min(
          shortest.get(event.name, event.duration_ns), event.duration_ns
        )
  return totals, counts, shortest


def profile_table(
  totals: Dict[str, int],
  counts: Dict[str, int],
  shortest: Dict[str, int],
  hlo_text: str,
  *,
  num_steps: int,
) -> dict:
  """The per-kernel table (per step) of a trace matched with the compiled HLO.

  Each kernel gets its mean time per step (`ms_per_step`) and `best_ms_per_step`, its
  shortest call times its calls per step: on a CPU shared with other processes, a
  kernel's shortest call is the one least slowed by them, so the best figures rank
  the kernels by their own work. Rows are sorted by it.
  """
  instructions, computations = parse_hlo(hlo_text)
  rows, best_s = [], []  # Shares and sums come from the unrounded times.
  for name, total_ns in totals.items():
    instruction = instructions.get(name)
    if instruction is None or instruction.opcode in _CONTAINERS:
      continue
    calls = counts[name] / num_steps
    seconds = total_ns / 1e9 / num_steps
    best = shortest[name] / 1e9 * calls
    flops = kernel_flops(name, instructions, computations) * calls
    best_s.append(best)
    rows.append(
      {
        'kernel': name,
        'opcode': instruction.opcode,
        'ms_per_step': round(seconds * 1e3, 3),
        'best_ms_per_step': round(best * 1e3, 3),
        'calls_per_step': calls,
        'flops_per_step': int(flops),
        'gflop_per_step': round(flops / 1e9, 3),
        'best_gflop_per_s': round(flops / best / 1e9, 1) if flops and best else None,
        'shape': list(instruction.dims),
        'where': _where(instruction.op_name),
      }
    )
  total_best = sum(best_s)
  by_kind = collections.Counter()
  for row, best in zip(rows, best_s):
    row['share'] = round(best / total_best, 6) if total_best else 0.0
    by_kind[_kind(row)] += best * 1e3
  order = sorted(range(len(rows)), key=lambda i: -best_s[i])
  rows = [rows[i] for i in order]
  best_ms = total_best * 1e3
  return {
    'kernel_ms_per_step': round(sum(r['ms_per_step'] for r in rows), 1),
    'best_kernel_ms_per_step': round(best_ms, 1),
    'num_kernels': len(rows),
    'best_ms_per_step_by_kind': {k: round(v, 1) for k, v in by_kind.most_common()},
    'rows': rows,
  }


def _kind(row: dict) -> str:
  """A coarse class of a kernel for the summary: products, softmax, copies, other."""
  if row['flops_per_step']:
    return 'matrix products (and what is fused into them)'
  if row['opcode'] in ('copy', 'transpose') or 'copy' in row['kernel']:
    return 'copies and transposes'
  if 'dynamic' in row['kernel'] or 'dynamic' in row['opcode']:
    return 'dynamic slices and updates (scan stacking)'
  if 'broadcast' in row['kernel']:
    return 'broadcasts (buffer fills)'
  return 'other elementwise and reductions'


def profile_runs(runner: jax_workloads.Runner, *, num_runs: int, warmup: int = 1) -> dict:
  """Profiles `num_runs` runs of a compiled workload (after `warmup` runs)."""
  for _ in range(warmup):
    runner.run_once()
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    jax.profiler.start_trace(trace_dir)
    for _ in range(num_runs):
      runner.run_once()
    run_s = (time.perf_counter() - start) / num_runs
    jax.profiler.stop_trace()
    paths = sorted(
      glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)
    )
    if not paths:
      raise RuntimeError(f'the profiler wrote no trace under {trace_dir}.')
    totals, counts, shortest = kernel_times(paths[-1])
  table = profile_table(
    totals, counts, shortest, runner.compiled.as_text(), num_steps=num_runs
  )
  table.update(
    num_runs=num_runs,
    run_s_profiled=round(run_s, 3),
    compile_s=round(runner.compile_s, 2),
    load_average_1min=round(os.getloadavg()[0], 2),
  )
  return table


_LAYER_NUMBER = re.compile(r'(?<=[a-z])_\d+(?=/|$)')


def group_rows(table: dict) -> dict:
  """The table with the kernels that do the same work in different layers summed.

  Kernels are grouped by their `where` with Haiku's layer numbers removed
  (`self_attention_3/attention` -> `self_attention/attention`), their opcode and
  result shape; a group's `kernel` is the number of kernels in it, its times, calls,
  FLOPs and share are their sums and its rate is recomputed from them. Rows are
  sorted by the summed best time.
  """
  groups: Dict[Tuple[str, str, Tuple[int, ...]], dict] = {}
  for row in table['rows']:
    where = _LAYER_NUMBER.sub('', row['where'])
    key = (where, row['opcode'], tuple(row['shape']))
    group = groups.setdefault(
      key,
      {
        'kernel': 0,
        'opcode': row['opcode'],
        'ms_per_step': 0.0,
        'best_ms_per_step': 0.0,
        'calls_per_step': 0.0,
        'flops_per_step': 0,
        'shape': list(row['shape']),
        'where': where,
        'share': 0.0,
      },
    )
    group['kernel'] += 1
    for field in ('ms_per_step', 'best_ms_per_step', 'calls_per_step', 'flops_per_step'):
      group[field] += row[field]
    group['share'] += row['share']
  rows = sorted(groups.values(), key=lambda g: -g['best_ms_per_step'])
  for group in rows:
    best_s = group['best_ms_per_step'] / 1e3
    flops = group['flops_per_step']
    group['gflop_per_step'] = round(flops / 1e9, 3)
    group['best_gflop_per_s'] = (
      round(flops / best_s / 1e9, 1) if flops and best_s else None
    )
    for field in ('ms_per_step', 'best_ms_per_step', 'share'):
      group[field] = round(group[field], 6 if field == 'share' else 3)
    group['kernel'] = f'{group["kernel"]} kernels'
  return dict(table, rows=rows)


def format_table(table: dict, top: int) -> str:
  """The table as Markdown: the summary by kind, then the `top` kernels."""
  lines = [
    f'run (profiled) {table["run_s_profiled"]} s; {table["num_kernels"]} kernels, '
    f'{table["kernel_ms_per_step"]} ms/step in all (mean), '
    f"{table['best_kernel_ms_per_step']} ms/step at each kernel's best; "
    f'load average {table["load_average_1min"]}',
    '',
    '| kind | best ms/step |',
    '|---|---:|',
  ]
  lines += [f'| {k} | {v} |' for k, v in table['best_ms_per_step_by_kind'].items()]
  lines += [
    '',
    '| kernel | best ms/step | mean ms/step | share | calls | GFLOP | GFLOP/s (best) '
    '| result | where |',
    '|---|---:|---:|---:|---:|---:|---:|---|---|',
  ]
  for row in table['rows'][:top]:
    rate = '' if row['best_gflop_per_s'] is None else row['best_gflop_per_s']
    gflop = row['gflop_per_step'] or ''
    lines.append(
      f'| {row["kernel"]} | {row["best_ms_per_step"]} | {row["ms_per_step"]} | '
      f'{row["share"]:.1%} | {row["calls_per_step"]:g} | {gflop} | {rate} | '
      f'{"x".join(map(str, row["shape"]))} | {row["where"]} |'
    )
  return '\n'.join(lines)


def define_flags(flag_values=flags.FLAGS) -> types.SimpleNamespace:
  """Defines the command-line flags (only when run as a program)."""
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      None,
      'Experiment config, e.g. configs/benchmark.py:image64_b8.',
      flag_values=flag_values,
    ),
    mode=flags.DEFINE_enum(
      'mode',
      'train',
      jax_workloads.MODES,
      'Train step or forward pass.',
      flag_values=flag_values,
    ),
    batch_size=flags.DEFINE_integer(
      'batch_size',
      0,
      "Examples per run (0: the config's training batch size).",
      flag_values=flag_values,
    ),
    dtype=flags.DEFINE_enum(
      'dtype',
      'float32',
      jax_workloads.DTYPES,
      'Compute dtype of the model.',
      flag_values=flag_values,
    ),
    runs=flags.DEFINE_integer(
      'runs', 3, 'Profiled runs (after one warm-up run).', flag_values=flag_values
    ),
    top=flags.DEFINE_integer('top', 25, 'Kernels listed.', flag_values=flag_values),
    json=flags.DEFINE_bool(
      'json', False, 'Print one JSON object instead of tables.', flag_values=flag_values
    ),
    group=flags.DEFINE_bool(
      'group',
      False,
      'Sum the kernels that do the same work in different layers (see group_rows).',
      flag_values=flag_values,
    ),
    host_malloc=host_memory.define_flag(flag_values),
  )


def main(argv: Iterable[str], *, args: types.SimpleNamespace):
  if len(list(argv)) > 1:
    raise app.UsageError('Unexpected arguments.')
  if args.config.value is None:
    raise app.UsageError('--config is required.')
  host_memory.configure(args.host_malloc.value)
  config = args.config.value
  runner = jax_workloads.build_runner(
    config,
    mode=args.mode.value,
    batch_size=args.batch_size.value or int(config.training.batch_size),
    dtype=args.dtype.value,
  )
  table = profile_runs(runner, num_runs=args.runs.value)
  if args.group.value:
    table = group_rows(table)
  if args.json.value:
    table['rows'] = table['rows'][: args.top.value]
    print(json.dumps(table))
  else:
    print(format_table(table, args.top.value))


if __name__ == '__main__':
  cli.run(main, define_flags, name='op_profile')
