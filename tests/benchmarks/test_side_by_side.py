"""The side-by-side comparison: its worker protocol, the ratios it reports, and the
PyTorch port's configuration derived from ours."""

import importlib.util
import io
import json
import os
import types

import pytest

from experiments.benchmarks import side_by_side
from experiments.benchmarks import timing_worker


def test_worker_protocol_answers_runs_and_stops_at_quit():
  calls = []
  stdin = io.StringIO('run 3\n\nrun 1\nquit\nrun 5\n')
  stdout = io.StringIO()
  timing_worker.serve(
    lambda: calls.append(1), {'num_params': 7}, stdin=stdin, stdout=stdout
  )
  lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
  assert lines[0] == {'num_params': 7, 'ready': True}
  assert [len(line['times']) for line in lines[1:]] == [3, 1]
  assert [len(line['cpu_times']) for line in lines[1:]] == [3, 1]
  assert len(calls) == 4  # Nothing after quit.
  assert all(t >= 0 for line in lines[1:] for t in line['times'])
  with pytest.raises(ValueError, match='run <n>'):
    timing_worker.serve(lambda: None, {}, stdin=io.StringIO('go\n'), stdout=io.StringIO())
  with pytest.raises(RuntimeError, match='the ours worker exited'):
    timing_worker.read_reply(io.StringIO(''), 'ours')


class _FakeWorker:
  def __init__(self, name, times):
    self.name = name
    self._times = iter(times)
    self.order = []

  def run(self, count):
    times = [next(self._times) for _ in range(count)]
    return {'times': times, 'cpu_times': [2 * t for t in times]}


def test_compare_alternates_and_takes_median_ratios():
  ours = _FakeWorker('ours', [1.0, 3.0, 2.0, 2.0, 4.0, 4.0])
  theirs = _FakeWorker('pytorch', [3.0, 3.0, 2.0, 2.0, 6.0, 10.0])
  result = side_by_side.compare(ours, theirs, rounds=3, runs=2)
  rounds = result['rounds']
  assert [r['first'] for r in rounds] == ['ours', 'pytorch', 'ours']
  # Per-round medians: ours 2, 2, 4; PyTorch 3, 2, 8 -> ratios 1.5, 1, 2.
  assert [r['ours_s'] for r in rounds] == [2.0, 2.0, 4.0]
  assert [r['pytorch_s'] for r in rounds] == [3.0, 2.0, 8.0]
  assert [r['ratio'] for r in rounds] == [1.5, 1.0, 2.0]
  assert result['ratio_median'] == 1.5 and result['cpu_ratio_median'] == 1.5
  assert [r['ours_cpu_s'] for r in rounds] == [4.0, 4.0, 8.0]
  assert result['ours_s_median'] == 2.0 and result['pytorch_s_median'] == 3.0


def test_port_specs_match_our_architectures():
  image = side_by_side.port_spec(
    side_by_side.load_config('configs/benchmark.py:image64_b8'),
    'image',
    mode='train',
    batch_size=8,
  )
  assert image['model'] == 'image_classifier' and image['num_bands'] == 32
  assert image['max_resolution'] == [64, 64] and image['image_size'] == 64
  assert image['config'] == dict(
    num_latents=256,
    d_latents=512,
    num_blocks=2,
    num_self_attends_per_block=4,
    num_self_attention_heads=8,
    num_cross_attention_heads=1,
    qk_channels=None,
    v_channels=None,
    cross_attention_shape_for_attention='kv',
    self_attention_widening_factor=1,
    cross_attention_widening_factor=1,
    attention_probs_dropout_prob=0.0,
    use_query_residual=True,
    d_model=133,  # 3 pixels + 2 axes x (sin, cos) x 32 bands + 2 positions.
    image_size=64,
    num_labels=1000,
  )
  mlm = side_by_side.port_spec(
    side_by_side.load_config('configs/mlm.py:bytes'), 'mlm', mode='forward', batch_size=1
  )
  assert mlm['seq_len'] == 2048
  assert {k: mlm['config'][k] for k in ('d_model', 'd_latents', 'qk_channels')} == {
    'd_model': 768,
    'd_latents': 1280,
    'qk_channels': 256,
  }
  flow = side_by_side.port_spec(
    side_by_side.load_config('configs/flow.py'), 'flow', mode='forward', batch_size=1
  )
  assert flow['config']['train_size'] == [368, 496]
  assert flow['config']['num_self_attends_per_block'] == 24
  with pytest.raises(ValueError, match='config'):
    side_by_side.load_config('configs/digits.py')


@pytest.mark.skipif(
  importlib.util.find_spec('torch') is None
  or importlib.util.find_spec('transformers') is None,
  reason="torch and transformers are not installed (pip install -e '.[compare]')",
)
@pytest.mark.parametrize(
  'workload,expected',
  [('train_image64_b8', 9_235_635), ('forward_flow', 41_057_134)],
)
def test_port_has_our_parameter_count(workload, expected):
  import transformers  # noqa: PLC0415

  from experiments.benchmarks import hf_port  # noqa: PLC0415

  entry = side_by_side.WORKLOADS[workload]
  spec = side_by_side.port_spec(
    side_by_side.load_config(entry.config),
    entry.port_model,
    mode=entry.mode,
    batch_size=1,
  )
  model, _, _ = hf_port.build_model(transformers, spec)
  assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize('flag', ['--profile=-1', '--top=0'])
def test_port_profile_flags_are_checked_before_torch_is_needed(flag, capsys):
  from experiments.benchmarks import hf_port  # noqa: PLC0415

  with pytest.raises(SystemExit) as raised:
    hf_port.main(['--spec={}', flag])
  assert raised.value.code == 2
  assert flag.split('=')[0] in capsys.readouterr().err


class _FakeProfile:
  """Stands in for `torch.profiler.profile`: counts the runs made under it."""

  runs_inside = 0
  active = False

  def __init__(self, activities, record_shapes):
    assert record_shapes and activities == ['cpu']

  def __enter__(self):
    _FakeProfile.active = True
    return self

  def __exit__(self, *exc):
    _FakeProfile.active = False

  def key_averages(self, group_by_input_shape):
    assert group_by_input_shape
    return self

  def table(self, sort_by, row_limit, **_):
    return f'sorted by {sort_by}, {row_limit} rows'


def test_port_profile_table_profiles_the_requested_runs():
  from experiments.benchmarks import hf_port  # noqa: PLC0415

  calls = []
  torch = types.SimpleNamespace(
    profiler=types.SimpleNamespace(
      profile=_FakeProfile, ProfilerActivity=types.SimpleNamespace(CPU='cpu')
    )
  )
  text = hf_port.profile_table(
    torch, lambda: calls.append(_FakeProfile.active), num_runs=3, top=7
  )
  # One warm-up run outside the profiler, then the three profiled ones.
  assert calls == [False, True, True, True]
  assert text.splitlines() == [
    '3 runs profiled; times are totals over them.',
    'sorted by self_cpu_time_total, 7 rows',
  ]


def test_profile_pytorch_runs_the_port_profiler_instead_of_comparing(monkeypatch):
  from absl import flags  # noqa: PLC0415

  flag_values = flags.FlagValues()
  args = side_by_side.define_flags(flag_values)
  flag_values(
    [
      'side_by_side',
      '--workload=train_mlm2048_b4',
      '--torch_python=/venv/python',
      '--profile_pytorch=3',
      '--threads=2',
    ]
  )
  commands = []
  monkeypatch.setattr(
    side_by_side.subprocess,
    'run',
    lambda command, cwd, check: commands.append((command, cwd, check)),
  )
  monkeypatch.setattr(
    side_by_side, 'Worker', lambda *a: pytest.fail('no worker may be started')
  )
  side_by_side.main(['side_by_side'], args=args)
  ((command, cwd, check),) = commands
  assert command[:3] == ['/venv/python', '-m', 'experiments.benchmarks.hf_port']
  assert command[-1] == '--profile=3' and check
  spec = json.loads(command[3].removeprefix('--spec='))
  assert spec['model'] == 'mlm' and spec['mode'] == 'train'
  assert spec['batch_size'] == 4 and spec['threads'] == 2
  assert os.path.isdir(os.path.join(cwd, 'experiments', 'benchmarks'))
