r"""Hugging Face's PyTorch Perceiver IO ImageNet model, timed like the accelerator benchmark.

Builds transformers' `PerceiverForImageClassificationFourier` (random initialisation)
with the configuration of configs/imagenet.py:io_fourier (512 x 1024 latents, 8 blocks
of 6 self-attends sharing weights, 1 cross-attend head and 8 self-attend heads,
widening 1, 64 Fourier bands at max resolution 224, 224 x 224 images, one trainable
1024-channel query, 1000 classes) and times the same training step: forward,
cross-entropy, backward and an optimizer update (AdamW: PyTorch has no LAMB; the
update is a small share of the step), in bfloat16 autocast and in float32. Prints one
JSON object with `runs` records of the same keys as `experiments.benchmarks.accelerator`
(framework 'pytorch+transformers'); MFU uses this repository's model FLOPs (counted on
the JAX train step's jaxpr at batch 1, times the batch size: every counted FLOP scales
with it) over the same peak table.

  python experiments/benchmarks/hf_perceiver.py --batch_sizes=64,128 \
      --dtypes=bfloat16,float32 --output=/tmp/hf_perceiver.json

Needs torch and transformers (not requirements of this repository; `pip install -e
'.[compare]'`); JAX runs on the CPU here (parameter and FLOP counts only), so the GPU is
PyTorch's alone. On a CPU, `python -m experiments.benchmarks.side_by_side` times both
frameworks in alternating rounds (docs/performance.md).
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

# Before JAX is imported: it only counts parameters and FLOPs, on the CPU.
os.environ['JAX_PLATFORMS'] = 'cpu'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

from configs import imagenet as imagenet_config  # noqa: E402
from experiments.benchmarks import accelerator  # noqa: E402
from experiments.benchmarks import fake_batches  # noqa: E402
from experiments.benchmarks import flops as benchmark_flops  # noqa: E402
from experiments.benchmarks import peak_flops  # noqa: E402
from experiments.benchmarks import side_by_side  # noqa: E402
from experiments.benchmarks import train_step  # noqa: E402


def hf_config_kwargs(config):
  """`transformers.PerceiverConfig` keywords equal to our io_fourier `config`."""
  pos = config.model.input_preprocessor.fourier_position_encoding_kwargs
  if tuple(pos.max_resolution) != (224, 224) or int(pos.num_bands) != 64:
    # transformers hard-codes these in PerceiverForImageClassificationFourier.
    raise ValueError(f'HF fixes 64 bands at max resolution 224; config has {pos}.')
  return side_by_side.port_spec(config, 'image', mode='train', batch_size=1)['config']


def our_counts(config):
  """`(parameters, model FLOPs per example of one train step)` of our model."""
  setup = train_step.build_step(
    accelerator.with_settings(config, dtype='float32', batch_size=1),
    make_batch=fake_batches.train_batch,
  )
  count = benchmark_flops.count_flops(
    setup.p_train_step, setup.p_state, setup.device_batch, setup.p_rng
  )
  return setup.num_params, count.flops


def run_one(torch, model_cls, hf_config, *, batch_size, dtype, num_steps, device, tf32):
  """Times `num_steps` training steps of a fresh model; returns the record's figures."""
  torch.backends.cuda.matmul.allow_tf32 = tf32
  torch.backends.cudnn.allow_tf32 = tf32
  model = optimizer = None
  try:
    torch.manual_seed(0)
    model = model_cls(hf_config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    size = hf_config.image_size
    pixels = torch.randn(batch_size, 3, size, size, device=device)
    labels = torch.randint(0, hf_config.num_labels, (batch_size,), device=device)
    use_autocast = dtype == 'bfloat16'

    def step():
      optimizer.zero_grad(set_to_none=True)
      with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
        logits = model(inputs=pixels).logits
      loss = torch.nn.functional.cross_entropy(logits.float(), labels)
      loss.backward()
      optimizer.step()
      return loss

    def sync():
      if device.type == 'cuda':
        torch.cuda.synchronize()

    if device.type == 'cuda':
      torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    sync()
    first_step_s = time.perf_counter() - start
    times = []
    for _ in range(num_steps):
      start = time.perf_counter()
      loss = step()
      sync()
      times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.type == 'cuda' else None
    return {
      'step_s_median': float(f'{statistics.median(times):.4g}'),
      'step_s_min': float(f'{min(times):.4g}'),
      'first_step_s': round(first_step_s, 3),
      'peak_memory_bytes': peak,
      'peak_memory_source': 'torch.cuda.max_memory_allocated' if peak else None,
      'final_loss': round(float(loss), 5),
    }
  finally:
    model = optimizer = None  # Frees the GPU memory before the next run.
    gc.collect()
    if device.type == 'cuda':
      torch.cuda.empty_cache()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_sizes', default='64,128,256')
  parser.add_argument('--dtypes', default='bfloat16,float32')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--variant', default='io_fourier')
  parser.add_argument(
    '--tf32', action='store_true', help='Allow TF32 matmuls in float32.'
  )
  parser.add_argument('--peak_tflops', type=float, default=None)
  parser.add_argument('--time_budget_s', type=float, default=0.0)
  parser.add_argument('--output', default='')
  args = parser.parse_args(argv)
  try:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
  except ImportError as error:
    print(f'hf_perceiver: needs torch and transformers ({error}).', file=sys.stderr)
    return 1
  batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
  dtypes = args.dtypes.split(',')
  config = imagenet_config.get_config(args.variant)
  hf_config = transformers.PerceiverConfig(**hf_config_kwargs(config))
  model_cls = transformers.PerceiverForImageClassificationFourier
  hf_params = sum(p.numel() for p in model_cls(hf_config).parameters())
  our_params, flops_per_example = our_counts(config)
  print(f'parameters: ours {our_params:,}, transformers {hf_params:,}', file=sys.stderr)
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  device_kind = torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'
  deadline = time.monotonic() + args.time_budget_s if args.time_budget_s else None
  records = []
  for dtype in dtypes:
    peak = peak_flops.peak_tflops(device_kind, dtype, args.peak_tflops)

    def run(batch_size, dtype=dtype, peak=peak):
      figures = run_one(
        torch,
        model_cls,
        hf_config,
        batch_size=batch_size,
        dtype=dtype,
        num_steps=args.steps,
        device=device,
        tf32=args.tf32,
      )
      flops = flops_per_example * batch_size
      mfu = peak_flops.mfu(flops, figures['step_s_median'], peak['peak_tflops'])
      return dict(
        figures,
        examples_per_s=float(f'{batch_size / figures["step_s_median"]:.4g}'),
        flops_per_step=flops,
        mfu=None if mfu is None else round(mfu, 4),
        **peak,
      )

    for record in accelerator.sweep(run, batch_sizes, deadline=deadline):
      record.update(framework='pytorch+transformers', model=args.variant, dtype=dtype)
      records.append(record)
      print(json.dumps(record), file=sys.stderr, flush=True)
  report = {
    'framework': 'pytorch+transformers',
    'torch_version': torch.__version__,
    'transformers_version': transformers.__version__,
    'device_kind': device_kind,
    'tf32': args.tf32,
    'num_params': hf_params,
    'our_num_params': our_params,
    'runs': records,
    'best': accelerator.best_runs(records),
  }
  text = json.dumps(report)
  print(text, flush=True)
  if args.output:
    with open(args.output, 'w') as f:
      f.write(text + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
