r"""Generation speed of Perceiver AR: key/value caches against full calls per token.

For each context length C, a prompt of `C - num_tokens` tokens is continued by
`num_tokens` sampled tokens, so the last tokens see a context of C. Cached: a full
call with R = N / 2 latents for the prompt and whenever the latent caches are full,
else one latent per token (`perceiver.perceiver_ar.Sampler`); full calls: one call
with N latents per token. The default `num_tokens` covers two refill cycles, so the
cached figure includes its periodic full calls. Both modes are compiled first (a short
warm-up generation), then timed in alternating rounds; the median tokens/s (wall and
CPU time) is reported. Random parameters: speed does not depend on their values.

  python -m experiments.benchmarks.perceiver_ar_generate --contexts=1024,4096,16384 \
      --output=/tmp/ar_generate.json
"""

import functools
import json
import os
import statistics
import sys
import time
import types

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments.training import cli
from perceiver import perceiver_ar


def define_flags() -> types.SimpleNamespace:
  """The command-line flags (defined only when run as a program)."""
  return types.SimpleNamespace(
    contexts=flags.DEFINE_list(
      'contexts', ['1024', '4096', '16384'], 'Context lengths C.'
    ),
    num_tokens=flags.DEFINE_integer(
      'num_tokens', 0, 'Tokens generated per round (0: two refill cycles).'
    ),
    rounds=flags.DEFINE_integer('rounds', 2, 'Timed rounds per mode (alternating).'),
    width=flags.DEFINE_integer('width', 256, 'Input embedding and latent channels.'),
    num_latents=flags.DEFINE_integer('num_latents', 128, 'Latents N.'),
    num_layers=flags.DEFINE_integer('num_layers', 4, 'Latent self-attention layers.'),
    output=flags.DEFINE_string('output', '', 'Write the results as JSON here.'),
  )


def model_kwargs(context: int, *, width: int, num_latents: int, num_layers: int):
  """A byte-level Perceiver AR of the given size (rotary positions from data)."""
  return dict(
    num_classes=259,
    input_idx_size=[context + 1],
    max_context_length=context,
    position_encoding_type='rotary',
    fraction_to_rotate=0.5,
    max_wavelength=context,
    use_positions_from_data=True,
    input_embed_dim=width,
    num_z_channels=width,
    z_index_dim=num_latents,
    num_transformers_per_block=num_layers,
    num_cross_attend_heads=4,
    num_transformer_heads=8,
    cross_attend_widening_factor=4,
    transformer_widening_factor=4,
    final_layer_init_zeros=False,
  )


def _time(fn):
  start, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - start, time.process_time() - cpu


def measure(context: int, *, num_tokens: int, rounds: int, **size):
  """Median tokens/s of cached and uncached generation at one context length."""
  sampler = perceiver_ar.Sampler(model_kwargs(context, **size))
  if not num_tokens:
    num_tokens = 2 * (sampler.num_latents - sampler.reset_latents + 1)
  params = jax.jit(sampler.init)(
    jax.random.PRNGKey(0),
    jnp.ones((1, context), jnp.int32),
    sampler.default_positions(1),
  )
  prompt = np.random.default_rng(0).integers(3, 259, size=(1, context - num_tokens))
  run = {
    mode: functools.partial(
      sampler.generate, params, prompt, num_tokens, seed=1, cached=mode == 'cached'
    )
    for mode in ('cached', 'full_calls')
  }
  for mode in run:  # Compile every function a mode uses (a refill cycle and a bit).
    sampler.generate(
      params,
      prompt,
      sampler.num_latents - sampler.reset_latents + 3,
      cached=mode == 'cached',
    )
  times = {mode: [] for mode in run}
  for _ in range(rounds):
    for mode, fn in run.items():
      times[mode].append(_time(fn))
  row = dict(context=context, num_tokens=num_tokens, prompt=int(prompt.shape[1]))
  for mode, samples in times.items():
    wall = statistics.median(t for t, _ in samples)
    cpu = statistics.median(c for _, c in samples)
    row[f'{mode}_tokens_per_s'] = round(num_tokens / wall, 2)
    row[f'{mode}_tokens_per_cpu_s'] = round(num_tokens / cpu, 2)
  row['speedup'] = round(row['cached_tokens_per_s'] / row['full_calls_tokens_per_s'], 1)
  return row


def markdown(rows) -> str:
  lines = [
    '| context | generated | cached tokens/s | full calls tokens/s | speedup |',
    '|---:|---:|---:|---:|---:|',
  ]
  for r in rows:
    lines.append(
      f'| {r["context"]:,} | {r["num_tokens"]} | {r["cached_tokens_per_s"]:.1f} | '
      f'{r["full_calls_tokens_per_s"]:.2f} | {r["speedup"]:.1f}x |'
    )
  return '\n'.join(lines)


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  size = dict(
    width=args.width.value,
    num_latents=args.num_latents.value,
    num_layers=args.num_layers.value,
  )
  rows = []
  for context in [int(c) for c in args.contexts.value]:
    rows.append(
      measure(context, num_tokens=args.num_tokens.value, rounds=args.rounds.value, **size)
    )
    print(json.dumps(rows[-1]), flush=True)
  settings = dict(
    size,
    rounds=args.rounds.value,
    backend=jax.default_backend(),
    cpu_count=os.cpu_count(),
    jax=jax.__version__,
    command=' '.join(
      ['python -m experiments.benchmarks.perceiver_ar_generate'] + sys.argv[1:]
    ),
  )
  print(markdown(rows))
  if args.output.value:
    with open(args.output.value, 'w') as f:
      json.dump(dict(settings=settings, rows=rows), f, indent=1)


if __name__ == '__main__':
  cli.run(main, define_flags, name='perceiver_ar_generate')
