r"""Hugging Face's PyTorch Perceiver (`transformers`), built and timed for a side-by-side run.

The PyTorch side of `experiments.benchmarks.side_by_side`: a worker process (see
`experiments.benchmarks.timing_worker`) that builds transformers' port of a workload
from a JSON spec (random initialisation, float32 parameters), warms it up and then
times train steps or forward passes on request. It imports torch, transformers and the
standard library only, so it runs in a virtual environment without JAX:

  /path/to/torch-venv/bin/python -m experiments.benchmarks.hf_port --spec='{...}'

(from the repository root; `side_by_side` writes the spec from this project's config).

Spec keys: `model` ('image_classifier', 'mlm' or 'flow'), `mode` ('train' or
'forward'), `batch_size`, `config` (`transformers.PerceiverConfig` keywords),
`threads` (torch's intra-op threads), `dtype` ('float32', or 'bfloat16' for
`torch.autocast` on the CPU), and per model: `image_size`, `num_bands`,
`max_resolution` (image_classifier: pixels + 2D Fourier features, a
one-query classification decoder); `seq_len` (mlm). A train step is forward,
cross-entropy, backward and an AdamW update (PyTorch has no LAMB).

`--profile=N` serves no runs: it runs the workload N times under `torch.profiler` and
prints the operators that took the most CPU time, grouped by input shapes (the
counterpart of `experiments.benchmarks.op_profile` for this project's side).
"""

import argparse
import json
import sys
import time

from experiments.benchmarks import timing_worker

MODELS = ('image_classifier', 'mlm', 'flow')
MODES = ('train', 'forward')


def build_model(transformers, spec):
  """`(model, make_inputs(torch) -> dict of forward kwargs, labels(torch, logits))`."""
  modeling = transformers.models.perceiver.modeling_perceiver
  config = transformers.PerceiverConfig(**spec['config'])
  batch = int(spec['batch_size'])
  kind = spec['model']
  if kind == 'image_classifier':
    size = int(spec['image_size'])
    fourier = dict(
      concat_pos=True,
      max_resolution=tuple(spec['max_resolution']),
      num_bands=int(spec['num_bands']),
      sine_only=False,
    )
    model = modeling.PerceiverModel(
      config,
      input_preprocessor=modeling.PerceiverImagePreprocessor(
        config,
        prep_type='pixels',
        spatial_downsample=1,
        fourier_position_encoding_kwargs=fourier,
      ),
      decoder=modeling.PerceiverClassificationDecoder(
        config,
        num_channels=config.d_latents,
        trainable_position_encoding_kwargs=dict(
          num_channels=config.d_latents, index_dims=1
        ),
        use_query_residual=True,
      ),
    )

    def make_inputs(torch):
      return {'inputs': torch.randn(batch, 3, size, size)}

    def labels(torch, logits):
      return torch.randint(0, config.num_labels, logits.shape[:1])

  elif kind == 'mlm':
    seq_len = int(spec['seq_len'])
    model = transformers.PerceiverForMaskedLM(config)

    def make_inputs(torch):
      return {
        'inputs': torch.randint(6, 262, (batch, seq_len)),
        'attention_mask': torch.ones(batch, seq_len),
      }

    def labels(torch, logits):
      return torch.randint(0, config.vocab_size, logits.shape[:2])

  elif kind == 'flow':
    height, width = config.train_size

    def make_inputs(torch):
      # The port takes 3x3 patches of both frames, extracted beforehand.
      return {'inputs': torch.randn(batch, 2, 27, height, width)}

    model = transformers.PerceiverForOpticalFlow(config)
    labels = None
  else:
    raise ValueError(f'spec model {kind!r} is not one of {MODELS}.')
  return model, make_inputs, labels


def build_runner(torch, transformers, spec):
  """`(run_once, num_params)` for `spec`: one train step or one forward pass."""
  mode = spec['mode']
  if mode not in MODES:
    raise ValueError(f'spec mode {mode!r} is not one of {MODES}.')
  torch.manual_seed(0)
  model, make_inputs, labels_for = build_model(transformers, spec)
  num_params = sum(p.numel() for p in model.parameters())
  inputs = make_inputs(torch)
  use_autocast = spec.get('dtype', 'float32') == 'bfloat16'

  def autocast():
    return torch.autocast('cpu', dtype=torch.bfloat16, enabled=use_autocast)

  if mode == 'forward':
    model.eval()

    def run_once():
      with torch.inference_mode(), autocast():
        return model(**inputs).logits

    return run_once, num_params

  if labels_for is None:
    raise ValueError(f'spec model {spec["model"]!r} has no train step here.')
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
  with torch.no_grad():
    labels = labels_for(torch, model(**inputs).logits)

  def run_once():
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      logits = model(**inputs).logits
    loss = torch.nn.functional.cross_entropy(
      logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1)
    )
    loss.backward()
    optimizer.step()
    return float(loss.detach())

  return run_once, num_params


def profile_table(torch, run_once, num_runs: int, top: int) -> str:
  """torch.profiler's table of the `top` operators by self CPU time over `num_runs`
  runs (after one more to warm up), grouped by operator and input shapes."""
  run_once()
  activities = [torch.profiler.ProfilerActivity.CPU]
  with torch.profiler.profile(activities=activities, record_shapes=True) as profile:
    for _ in range(num_runs):
      run_once()
  averages = profile.key_averages(group_by_input_shape=True)
  header = f'{num_runs} runs profiled; times are totals over them.'
  return (
    header
    + '\n'
    + averages.table(
      sort_by='self_cpu_time_total',
      row_limit=top,
      max_name_column_width=32,
      max_shapes_column_width=64,
    )
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--spec', required=True, help='The workload as a JSON object.')
  parser.add_argument(
    '--profile',
    type=int,
    default=0,
    help='Profile this many runs and print the top operators instead of serving runs.',
  )
  parser.add_argument(
    '--top', type=int, default=30, help='Operators listed by --profile.'
  )
  args = parser.parse_args(argv)
  if args.profile < 0 or args.top < 1:
    parser.error(f'--profile={args.profile} must be >= 0 and --top={args.top} >= 1.')
  spec = json.loads(args.spec)
  import torch  # noqa: PLC0415
  import transformers  # noqa: PLC0415

  torch.set_num_threads(int(spec.get('threads', 2)))
  start = time.perf_counter()
  run_once, num_params = build_runner(torch, transformers, spec)
  build_s = time.perf_counter() - start
  first_s = timing_worker.time_calls(run_once, 1)[0]
  if args.profile:
    print(profile_table(torch, run_once, args.profile, args.top))
    return 0
  timing_worker.serve(
    run_once,
    {
      'framework': 'pytorch+transformers',
      'torch_version': torch.__version__,
      'transformers_version': transformers.__version__,
      'threads': torch.get_num_threads(),
      'num_params': num_params,
      'build_s': round(build_s, 3),
      'first_run_s': round(first_s, 3),
    },
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
