r"""This project against Hugging Face's PyTorch Perceiver on the same machine, in turns.

Starts two worker processes, one per framework, each in its own Python environment:
this project's (`experiments.benchmarks.jax_workloads`, with this interpreter) and
transformers' port (`experiments.benchmarks.hf_port`, with `--torch_python`), both
building the same architecture with the same parameter count from this project's
config, with random float32 parameters. Once both have compiled or warmed up, the
command runs `--rounds` rounds; each round times `--runs` runs of one side, then of
the other (the order alternates between rounds, so a drift in the machine's speed
favours neither side), and only one side runs at a time. It prints one JSON object:
per round each side's median run time and the ratio PyTorch / ours (above 1: ours is
faster), the same for process CPU seconds, the 1-minute load average after the round,
and over the rounds the medians of those ratios.

  python -m experiments.benchmarks.side_by_side --workload=train_image64_b8 \
      --torch_python=/path/to/torch-venv/bin/python
  python -m experiments.benchmarks.side_by_side --workload=forward_flow --runs=1
  python -m experiments.benchmarks.side_by_side --workload=forward_imagenet \
      --batch_size=8 --dtype=bfloat16   # ours in bfloat16, PyTorch under torch.autocast
  python -m experiments.benchmarks.side_by_side --workload=train_mlm2048_b4 \
      --profile_pytorch=3   # PyTorch's top operators instead (ours: op_profile)

Workloads (`WORKLOADS`): train steps of configs/benchmark.py's `image64_b8` and
`mlm2048_b4` (PyTorch: AdamW, ours: the config's LAMB), and forward passes of the
released architectures: the Perceiver IO ImageNet classifier (configs/imagenet.py
`io_fourier`, 224 x 224), the byte masked language model (configs/mlm.py, 2,048
bytes) and optical flow (configs/flow.py, one 368 x 496 tile). `--threads` sets
PyTorch's intra-op threads (default: the machine's CPU count, the threads XLA uses).
torch and transformers are needed only in `--torch_python`'s environment
(`pip install -e '.[compare]'` puts them beside this project's).
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import types
from typing import Any, Dict, List, NamedTuple

from absl import app
from absl import flags

from configs import benchmark as benchmark_configs
from configs import flow as flow_configs
from configs import imagenet as imagenet_configs
from configs import mlm as mlm_configs
from experiments.benchmarks import timing_worker
from experiments.training import cli


class Workload(NamedTuple):
  """A config (`module:variant`), the mode, the default batch size, the port's model."""

  config: str
  mode: str
  batch_size: int
  port_model: str


WORKLOADS: Dict[str, Workload] = {
  'train_image64_b8': Workload('configs/benchmark.py:image64_b8', 'train', 8, 'image'),
  'train_mlm2048_b4': Workload('configs/benchmark.py:mlm2048_b4', 'train', 4, 'mlm'),
  'forward_imagenet': Workload('configs/imagenet.py:io_fourier', 'forward', 1, 'image'),
  'forward_mlm': Workload('configs/mlm.py:bytes', 'forward', 1, 'mlm'),
  'forward_flow': Workload('configs/flow.py', 'forward', 1, 'flow'),
}

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(path: str):
  """The config of `configs/<module>.py[:variant]`."""
  module, _, variant = path.partition(':')
  getters = {
    'configs/benchmark.py': benchmark_configs.get_config,
    'configs/imagenet.py': imagenet_configs.get_config,
    'configs/mlm.py': mlm_configs.get_config,
    'configs/flow.py': flow_configs.get_config,
  }
  if module not in getters:
    raise ValueError(f'config {path!r}: expected one of {sorted(getters)}.')
  return getters[module](variant) if variant else getters[module]()


def _encoder_kwargs(encoder) -> Dict[str, Any]:
  """`transformers.PerceiverConfig` keywords of a `PerceiverEncoder` config section."""
  return dict(
    num_latents=int(encoder.z_index_dim),
    d_latents=int(encoder.num_z_channels),
    num_blocks=int(encoder.num_blocks),
    num_self_attends_per_block=int(encoder.num_self_attends_per_block),
    num_self_attention_heads=int(encoder.num_self_attend_heads),
    num_cross_attention_heads=int(encoder.num_cross_attend_heads),
    qk_channels=encoder.get('qk_channels'),
    v_channels=encoder.get('v_channels'),
    cross_attention_shape_for_attention=encoder.get(
      'cross_attention_shape_for_attn', 'kv'
    ),
    self_attention_widening_factor=int(encoder.self_attend_widening_factor),
    cross_attention_widening_factor=int(encoder.cross_attend_widening_factor),
    attention_probs_dropout_prob=float(encoder.dropout_prob),
    use_query_residual=bool(encoder.get('use_query_residual', True)),
  )


def port_spec(config, port_model: str, *, mode: str, batch_size: int) -> Dict[str, Any]:
  """The `experiments.benchmarks.hf_port` spec of the architecture of `config`."""
  model = config.model
  spec = {'mode': mode, 'batch_size': batch_size}
  kwargs = _encoder_kwargs(model.encoder)
  if port_model == 'image':
    pre = model.input_preprocessor
    pos = pre.fourier_position_encoding_kwargs
    if pre.prep_type != 'pixels' or model.decoder_type != 'classification':
      raise ValueError('the image port takes raw pixels and a classification decoder.')
    resolution = [int(r) for r in pos.max_resolution]
    # Pixels + sin and cos of every band per axis + the positions themselves.
    d_model = 3 + 2 * len(resolution) * int(pos.num_bands) + len(resolution)
    size = int(config.data.image_size)
    kwargs.update(
      d_model=d_model, image_size=size, num_labels=int(config.data.num_classes)
    )
    spec.update(
      model='image_classifier',
      image_size=size,
      num_bands=int(pos.num_bands),
      max_resolution=resolution,
    )
  elif port_model == 'mlm':
    decoder = model.decoder
    # transformers fixes the decoder's attention at 8 heads of 32 qk channels.
    if int(decoder.num_heads) != 8 or int(decoder.qk_channels) != 256:
      raise ValueError(
        f'the MLM port needs 8 decoder heads of 256 qk channels: {decoder}.'
      )
    kwargs.update(
      d_model=int(model.d_model),
      vocab_size=262,
      max_position_embeddings=int(model.max_seq_len),
    )
    spec.update(model='mlm', seq_len=int(model.max_seq_len))
  elif port_model == 'flow':
    kwargs.update(train_size=[int(s) for s in model.image_size])
    spec.update(model='flow')
  else:
    raise ValueError(f'unknown port model {port_model!r}.')
  spec['config'] = kwargs
  return spec


class Worker:
  """One worker process speaking `timing_worker`'s protocol."""

  def __init__(self, name: str, command: List[str]):
    self.name = name
    self.process = subprocess.Popen(
      command, cwd=_REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    self.ready = timing_worker.read_reply(self.process.stdout, name)

  def run(self, count: int) -> Dict[str, List[float]]:
    """`{'times': wall seconds, 'cpu_times': process CPU seconds}` of `count` runs."""
    self.process.stdin.write(f'run {count}\n')
    self.process.stdin.flush()
    return timing_worker.read_reply(self.process.stdout, self.name)

  def close(self):
    if self.process.poll() is None:
      try:
        self.process.stdin.write('quit\n')
        self.process.stdin.flush()
        self.process.wait(timeout=60)
      except (BrokenPipeError, subprocess.TimeoutExpired):
        self.process.kill()


def compare(ours: Worker, theirs: Worker, *, rounds: int, runs: int) -> Dict[str, Any]:
  """Alternating rounds of `runs` runs each; per-round medians and ratios.

  Each round records both sides' median wall-clock seconds and their ratio (PyTorch /
  ours), and the same for process CPU seconds: on a CPU shared with other processes,
  the CPU time shows each side's own work, the wall time what a user waits for.
  """
  records = []
  for index in range(rounds):
    order = (ours, theirs) if index % 2 == 0 else (theirs, ours)
    wall, cpu = {}, {}
    for worker in order:
      reply = worker.run(runs)
      wall[worker.name] = statistics.median(reply['times'])
      cpu[worker.name] = statistics.median(reply['cpu_times'])
    records.append(
      {
        'ours_s': round(wall['ours'], 4),
        'pytorch_s': round(wall['pytorch'], 4),
        'ratio': round(wall['pytorch'] / wall['ours'], 3),
        'ours_cpu_s': round(cpu['ours'], 4),
        'pytorch_cpu_s': round(cpu['pytorch'], 4),
        'cpu_ratio': round(cpu['pytorch'] / max(cpu['ours'], 1e-9), 3),
        'first': order[0].name,
        'load_average_1min': round(os.getloadavg()[0], 2),
      }
    )

  def median(key):
    return round(statistics.median(r[key] for r in records), 4)

  return {
    'rounds': records,
    'ours_s_median': median('ours_s'),
    'pytorch_s_median': median('pytorch_s'),
    'ratio_median': round(median('ratio'), 3),
    'cpu_ratio_median': round(median('cpu_ratio'), 3),
    'load_average_1min_range': [
      min(r['load_average_1min'] for r in records),
      max(r['load_average_1min'] for r in records),
    ],
  }


def cpu_model() -> str:
  """The CPU's model name (Linux `/proc/cpuinfo`), else `platform.processor()`."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def define_flags(flag_values=flags.FLAGS) -> types.SimpleNamespace:
  """Defines the command-line flags (only when run as a program)."""
  return types.SimpleNamespace(
    workload=flags.DEFINE_enum(
      'workload', None, sorted(WORKLOADS), 'What to time.', flag_values=flag_values
    ),
    torch_python=flags.DEFINE_string(
      'torch_python',
      os.environ.get('TORCH_PYTHON', 'python'),
      'Interpreter with torch and transformers (default: $TORCH_PYTHON, else python).',
      flag_values=flag_values,
    ),
    rounds=flags.DEFINE_integer(
      'rounds', 3, 'Alternating rounds.', flag_values=flag_values
    ),
    runs=flags.DEFINE_integer(
      'runs', 2, 'Timed runs per side per round.', flag_values=flag_values
    ),
    batch_size=flags.DEFINE_integer(
      'batch_size', 0, '0: the workload default.', flag_values=flag_values
    ),
    dtype=flags.DEFINE_enum(
      'dtype',
      'float32',
      ['float32', 'bfloat16'],
      'Compute dtype.',
      flag_values=flag_values,
    ),
    threads=flags.DEFINE_integer(
      'threads', 0, "PyTorch's threads (0: the CPU count).", flag_values=flag_values
    ),
    output=flags.DEFINE_string(
      'output', '', 'Also write the JSON here.', flag_values=flag_values
    ),
    profile_pytorch=flags.DEFINE_integer(
      'profile_pytorch',
      0,
      'Instead of comparing: profile this many runs of the PyTorch side and print '
      'its top operators (hf_port --profile; ours: experiments.benchmarks.op_profile).',
      lower_bound=0,
      flag_values=flag_values,
    ),
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if args.workload.value is None:
    raise app.UsageError(f'--workload is required: one of {sorted(WORKLOADS)}.')
  workload = WORKLOADS[args.workload.value]
  batch_size = args.batch_size.value or workload.batch_size
  threads = args.threads.value or os.cpu_count()
  spec = port_spec(
    load_config(workload.config),
    workload.port_model,
    mode=workload.mode,
    batch_size=batch_size,
  )
  spec.update(threads=threads, dtype=args.dtype.value)
  ours_command = [
    sys.executable,
    '-m',
    'experiments.benchmarks.jax_workloads',
    f'--config={os.path.join(_REPO, workload.config)}',
    f'--mode={workload.mode}',
    f'--batch_size={batch_size}',
    f'--dtype={args.dtype.value}',
  ]
  theirs_command = [
    args.torch_python.value,
    '-m',
    'experiments.benchmarks.hf_port',
    f'--spec={json.dumps(spec)}',
  ]
  if args.profile_pytorch.value:
    subprocess.run(
      theirs_command + [f'--profile={args.profile_pytorch.value}'], cwd=_REPO, check=True
    )
    return
  workers = []
  try:
    # One at a time: each compiles or warms up alone.
    workers.append(Worker('ours', ours_command))
    workers.append(Worker('pytorch', theirs_command))
    ours, theirs = workers
    result = compare(ours, theirs, rounds=args.rounds.value, runs=args.runs.value)
  finally:
    for worker in workers:
      worker.close()
  report = {
    'workload': args.workload.value,
    'config': workload.config,
    'mode': workload.mode,
    'batch_size': batch_size,
    'dtype': args.dtype.value,
    'cpu': cpu_model(),
    'cpu_count': os.cpu_count(),
    'pytorch_threads': threads,
    'runs_per_round': args.runs.value,
    'ours': ours.ready,
    'pytorch': theirs.ready,
    'same_num_params': ours.ready['num_params'] == theirs.ready['num_params'],
  }
  report.update(result)
  cli.print_json(report, args.output.value)


if __name__ == '__main__':
  cli.run(main, define_flags, name='side_by_side')
