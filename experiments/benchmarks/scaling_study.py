r"""Scaling study: train-step time and memory against the number of inputs M.

Reproduces the complexity argument of the Perceiver paper (Jaegle et al. 2021): with a
fixed latent array of N elements, a Perceiver step costs O(M N + L N^2) while a plain
Transformer encoder of the same width costs O(L M^2). Both models below have width D,
L self-attention layers and H heads; the Perceiver adds one cross-attend from N latents
to the M inputs. One forward + backward pass (a gradient step's work) on batch 1 is
timed for each M; memory is XLA's buffer plan for that step (temporaries + arguments +
outputs), read from the compiled executable, so a size can be reported before it is
run. The Transformer stops at the first M whose plan exceeds the memory limit or whose
predicted time (FLOPs / the FLOP rate of the largest size run so far) exceeds the time
limit; the reason is recorded.

  python -m experiments.benchmarks.scaling_study --output_dir=docs

writes `docs/scaling.json`, `docs/scaling.md` (tables) and `docs/scaling.png` (log-log
plot, when matplotlib is installed). `--flow_memory` adds the memory plan of the
optical-flow model's attention at 368 x 496 (182,528 inputs and queries), dense and
chunked.

`--autoregressive` runs the same study for Perceiver AR's claim (Hawthorne et al. 2022)
instead: byte sequences of M tokens, a Perceiver AR (one causal cross-attend from N
latents at the last positions, then L causal latent self-attends) against a
decoder-only Transformer (L causal self-attends over all M positions), same width D,
depth L, heads H and MLPs; the step is a next-token cross-entropy's forward + backward
(at the N latents, or at every position for the Transformer). It writes
`scaling_ar.json`, `scaling_ar.md` and `scaling_ar.png`.

  python -m experiments.benchmarks.scaling_study --autoregressive --output_dir=docs
"""

import json
import os
import statistics
import sys
import time
import types
from typing import Any, Dict, List, Optional

from absl import app
from absl import flags
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import flops as benchmark_flops
from experiments.training import cli
from experiments.training import host_memory
from perceiver import perceiver
from perceiver import perceiver_ar


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags; called only when run as a program, so that
  importing this module never clashes with other programs' flags."""
  namespace = types.SimpleNamespace(
    output_dir=flags.DEFINE_string('output_dir', 'docs', 'Where the results go.'),
    sizes=flags.DEFINE_list(
      'sizes',
      ['1024', '2048', '4096', '8192', '16384', '32768', '65536'],
      'Numbers of inputs M.',
    ),
    num_latents=flags.DEFINE_integer('num_latents', 256, 'Perceiver latents N.'),
    width=flags.DEFINE_integer('width', 256, 'Width D of both models.'),
    input_channels=flags.DEFINE_integer(
      'input_channels', 64, 'Channels C of the inputs.'
    ),
    num_layers=flags.DEFINE_integer('num_layers', 4, 'Self-attention layers L.'),
    num_heads=flags.DEFINE_integer('num_heads', 8, 'Self-attention heads H.'),
    repeats=flags.DEFINE_integer('repeats', 3, 'Timed steps per size (median).'),
    memory_limit_gb=flags.DEFINE_float(
      'memory_limit_gb', 8.0, 'Do not run a size whose XLA buffer plan exceeds this.'
    ),
    time_limit_s=flags.DEFINE_float(
      'time_limit_s', 30.0, 'Do not run a size whose predicted step time exceeds this.'
    ),
    flow_memory=flags.DEFINE_bool(
      'flow_memory', False, 'Also plan the optical-flow attention at 368 x 496.'
    ),
    host_malloc=host_memory.define_flag(),
    autoregressive=flags.DEFINE_bool(
      'autoregressive',
      False,
      'Perceiver AR vs a decoder-only Transformer on token sequences instead.',
    ),
  )
  return namespace


MODELS = ('perceiver', 'transformer')
AR_MODELS = ('perceiver_ar', 'decoder_transformer')
_VOCAB = 259  # Bytes + 3 reserved ids, as Perceiver AR's byte models.


def make_model(
  kind: str, *, num_latents: int, width: int, num_layers: int, num_heads: int
) -> hk.Transformed:
  """`f(inputs [B, M, C]) -> [B, D]`: a Perceiver encoder or a Transformer encoder.

  Both end with a mean over their output elements. The Transformer first projects the
  inputs to the width D, as a Perceiver's cross-attend does with its keys and values.
  """
  if kind not in MODELS:
    raise ValueError(f'model kind {kind!r} is not one of {MODELS}.')

  def forward(inputs):
    if kind == 'perceiver':
      encoder = perceiver.PerceiverEncoder(
        num_self_attends_per_block=num_layers,
        num_blocks=1,
        z_index_dim=num_latents,
        num_z_channels=width,
        qk_channels=width,
        v_channels=width,
        num_cross_attend_heads=1,
        num_self_attend_heads=num_heads,
      )
      x = encoder(inputs, encoder.latents(inputs), is_training=True)
    else:
      x = perceiver.conv_1d(width)(inputs)
      for _ in range(num_layers):
        x = perceiver.SelfAttention(num_heads=num_heads, widening_factor=1)(
          x, is_training=True
        )
    return jnp.mean(x, axis=1)

  return hk.transform(forward)


def make_ar_model(
  kind: str,
  num_inputs: int,
  *,
  num_latents: int,
  width: int,
  num_layers: int,
  num_heads: int,
) -> hk.Transformed:
  """`f(tokens [B, M]) -> scalar`: next-token cross-entropy of a causal model.

  'perceiver_ar': `perceiver_ar.PerceiverAR` with N latents at the last positions
  (rotary positions, widening 4, one cross-attend head per 64 channels).
  'decoder_transformer': a token embedding and L pre-LN causal self-attention layers
  (`perceiver.SelfAttention`, widening 4) over all M positions, then the logits.
  """
  if kind not in AR_MODELS:
    raise ValueError(f'model kind {kind!r} is not one of {AR_MODELS}.')

  def forward(tokens):
    targets = jnp.roll(tokens, -1, axis=1)
    if kind == 'perceiver_ar':
      out = perceiver_ar.PerceiverAR(
        num_classes=_VOCAB,
        input_idx_size=[num_inputs + 1],
        max_context_length=num_inputs,
        position_encoding_type='rotary',
        fraction_to_rotate=0.5,
        max_wavelength=num_inputs,
        input_embed_dim=width,
        num_z_channels=width,
        z_index_dim=num_latents,
        num_transformers_per_block=num_layers,
        num_cross_attend_heads=max(1, width // 64),
        num_transformer_heads=num_heads,
        cross_attend_widening_factor=4,
        transformer_widening_factor=4,
      )(tokens, None, is_training=True)
      logits = out.input_events_logits
      targets = jnp.take_along_axis(targets, out.latent_last_steps, axis=1)
    else:
      x = hk.Embed(_VOCAB, width)(tokens)
      causal = jnp.tril(jnp.ones((num_inputs, num_inputs), jnp.bool_))[None]
      for _ in range(num_layers):
        x = perceiver.SelfAttention(num_heads=num_heads, widening_factor=4)(
          x, attention_mask=causal, is_training=True
        )
      logits = hk.Linear(_VOCAB)(perceiver.layer_norm(x))
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, targets[..., None], axis=-1))

  return hk.transform(forward)


def _is_ar(kind: str) -> bool:
  return kind in AR_MODELS


def _step_fn(model: hk.Transformed, kind: str = 'perceiver'):
  if _is_ar(kind):
    return jax.jit(jax.grad(lambda params, tokens: model.apply(params, None, tokens)))

  def loss(params, inputs):
    return jnp.mean(jnp.square(model.apply(params, None, inputs)))

  return jax.jit(jax.grad(loss))


def _input_spec(kind: str, num_inputs: int, input_channels: int):
  if _is_ar(kind):
    return jax.ShapeDtypeStruct((1, num_inputs), jnp.int32)
  return jax.ShapeDtypeStruct((1, num_inputs, input_channels), jnp.float32)


def _random_inputs(kind: str, num_inputs: int, input_channels: int):
  rng = np.random.RandomState(0)
  if _is_ar(kind):
    return jnp.asarray(rng.randint(3, _VOCAB, size=(1, num_inputs)), jnp.int32)
  return jnp.asarray(rng.standard_normal((1, num_inputs, input_channels)), jnp.float32)


def plan(
  kind: str, num_inputs: int, *, input_channels: int, **model_kwargs
) -> Dict[str, Any]:
  """Compiles one forward + backward step; returns its FLOPs, buffers and executable."""
  if _is_ar(kind):
    model = make_ar_model(kind, num_inputs, **model_kwargs)
  else:
    model = make_model(kind, **model_kwargs)
  inputs = _input_spec(kind, num_inputs, input_channels)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)
  step = _step_fn(model, kind)
  start = time.perf_counter()
  compiled = step.lower(params, inputs).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  buffers = (
    memory.temp_size_in_bytes
    + memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    - memory.alias_size_in_bytes
  )
  return dict(
    kind=kind,
    model=model,
    compiled=compiled,
    compile_s=compile_s,
    flops=benchmark_flops.count_flops(step, params, inputs).flops,
    buffer_bytes=int(buffers),
    temp_bytes=int(memory.temp_size_in_bytes),
  )


def run_point(
  num_inputs: int, planned: Dict[str, Any], *, input_channels: int, repeats: int
) -> Dict[str, Any]:
  """Times `repeats` steps of a planned model on random inputs."""
  inputs = _random_inputs(planned['kind'], num_inputs, input_channels)
  params = jax.jit(planned['model'].init)(jax.random.PRNGKey(0), inputs)
  compiled = planned['compiled']
  jax.block_until_ready(compiled(params, inputs))
  times, cpu_times = [], []
  for _ in range(repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(params, inputs))
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
  return dict(step_s=statistics.median(times), step_cpu_s=statistics.median(cpu_times))


def study(
  sizes: List[int],
  *,
  repeats: int,
  memory_limit_gb: float,
  time_limit_s: float,
  input_channels: int,
  kinds=MODELS,
  **model_kwargs,
) -> List[Dict[str, Any]]:
  """One row per (model kind, M): figures, or the reason the size was not run."""
  rows = []
  for kind in kinds:
    stopped: Optional[str] = None
    rate = None  # FLOP/s of the largest size run so far.
    for m in sizes:
      row = dict(model=kind, num_inputs=m)
      if stopped:
        row['status'] = stopped
        rows.append(row)
        continue
      planned = plan(kind, m, input_channels=input_channels, **model_kwargs)
      row.update(
        flops=planned['flops'],
        buffer_bytes=planned['buffer_bytes'],
        temp_bytes=planned['temp_bytes'],
        compile_s=round(planned['compile_s'], 2),
      )
      predicted = planned['flops'] / rate if rate else None
      if planned['buffer_bytes'] > memory_limit_gb * 2**30:
        row['status'] = (
          f'not run: needs {planned["buffer_bytes"] / 2**30:.1f} GiB '
          f'> {memory_limit_gb:g} GiB limit'
        )
        stopped = 'not run (a smaller size hit a limit)'
      elif predicted is not None and predicted > time_limit_s:
        row['status'] = (
          f'not run: predicted {predicted:.0f} s per step > {time_limit_s:g} s limit'
        )
        row['predicted_step_s'] = round(predicted, 1)
        stopped = 'not run (a smaller size hit a limit)'
      else:
        row.update(
          {
            k: round(v, 4)
            for k, v in run_point(
              m, planned, input_channels=input_channels, repeats=repeats
            ).items()
          }
        )
        row['status'] = 'ok'
        rate = planned['flops'] / row['step_s']
      rows.append(row)
      print(json.dumps(row), flush=True)
  return rows


def flow_attention_memory() -> List[Dict[str, Any]]:
  """XLA buffer plans of the optical-flow model's two big attentions at 368 x 496.

  Encoder cross-attend: 2048 latents x 512 channels attend to 182,528 inputs of 322
  channels (64 conv features + 258 Fourier features). Decoder: 182,528 queries of 322
  channels attend to the latents. Inference (forward only), batch 1, compile only.
  """
  num_points, channels, latents, width = 368 * 496, 322, 2048, 512
  rows = []
  for name, chunks in [
    ('dense', {}),
    ('chunked', dict(query_chunk_size=8192, key_chunk_size=8192)),
  ]:

    def encode(x, z, chunks=chunks):
      return perceiver.CrossAttention(num_heads=1, widening_factor=1, **chunks)(
        z, x, is_training=False
      )

    def decode(q, z, chunks=chunks):
      return perceiver.CrossAttention(
        num_heads=1,
        widening_factor=1,
        qk_channels=width,
        use_query_residual=False,
        **chunks,
      )(q, z, is_training=False)

    x = jax.ShapeDtypeStruct((1, num_points, channels), jnp.float32)
    z = jax.ShapeDtypeStruct((1, latents, width), jnp.float32)
    for part, fn, args in [
      ('encoder cross-attend', encode, (x, z)),
      ('decoder cross-attend', decode, (x, z)),
    ]:
      model = hk.transform(fn)
      params = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
      compiled = jax.jit(model.apply).lower(params, None, *args).compile()
      memory = compiled.memory_analysis()
      rows.append(
        dict(
          attention=part,
          mode=name,
          chunks=chunks,
          temp_bytes=int(memory.temp_size_in_bytes),
        )
      )
      print(json.dumps(rows[-1]), flush=True)
  return rows


def _gib(n):
  return f'{n / 2**30:.2f}'


def growth(rows, kind: str, key: str) -> Optional[float]:
  """The factor by which `key` grows per doubling of M between the two largest sizes
  where `key` is known (e.g. 2 for linear cost, 4 for quadratic)."""
  known = [r for r in rows if r['model'] == kind and key in r]
  if len(known) < 2:
    return None
  a, b = known[-2], known[-1]
  doublings = np.log2(b['num_inputs'] / a['num_inputs'])
  return float((b[key] / a[key]) ** (1.0 / doublings))


_DESCRIPTIONS = {
  MODELS: (
    '# Scaling study: Perceiver vs Transformer encoder',
    'One forward + backward pass on batch 1 (a gradient step without the optimizer), '
    'float32. Perceiver: one cross-attend from N latents to the M inputs, then L '
    'self-attends on the latents; Transformer: a projection of the inputs to the '
    'same width, then L self-attends on all M elements.',
  ),
  AR_MODELS: (
    '# Scaling study: Perceiver AR vs decoder-only Transformer',
    'One forward + backward pass of a next-token cross-entropy on batch 1 (a gradient '
    'step without the optimizer), float32, over M byte tokens. Perceiver AR: one '
    'causal cross-attend from N latents at the last positions to the M inputs, then L '
    'causal self-attends on the latents, the loss at the N latents; decoder-only '
    'Transformer: L causal self-attends on all M positions, the loss at every '
    'position. Same width, depth, heads and MLP widening (4).',
  ),
}


def write_markdown(
  path: str, rows, flow_rows, settings, command: str, kinds=MODELS
) -> None:
  """The tables of `rows` (and `flow_rows`) with the command and settings."""
  title, description = _DESCRIPTIONS[tuple(kinds)]
  lines = [
    title,
    '',
    f'Command (from the repository root): `{command}`',
    '',
    description + ' Memory is the XLA buffer '
    'plan of the step (temporaries + arguments + outputs), read from the compiled '
    'executable; sizes over the limit are planned, not run.',
    '',
    'Settings: ' + ', '.join(f'{k}={v}' for k, v in settings.items()),
    '',
    '| model | M | step s (median) | step CPU s | GFLOP | XLA buffers GiB | status |',
    '|---|---:|---:|---:|---:|---:|---|',
  ]
  for r in rows:
    lines.append(
      '| {model} | {m} | {t} | {c} | {f} | {b} | {s} |'.format(
        model=r['model'],
        m=r['num_inputs'],
        t=f'{r["step_s"]:.3f}' if 'step_s' in r else '-',
        c=f'{r["step_cpu_s"]:.3f}' if 'step_cpu_s' in r else '-',
        f=f'{r["flops"] / 1e9:.1f}' if 'flops' in r else '-',
        b=_gib(r['buffer_bytes']) if 'buffer_bytes' in r else '-',
        s=r['status'],
      )
    )
  lines.append('')
  for kind in kinds:
    factors = {
      key: growth(rows, kind, key) for key in ('step_s', 'flops', 'buffer_bytes')
    }
    lines.append(
      f'- {kind}: per doubling of M at the largest sizes run or planned, '
      + ', '.join(
        f'{name} x{value:.2f}'
        for name, value in (
          ('time', factors['step_s']),
          ('FLOPs', factors['flops']),
          ('memory', factors['buffer_bytes']),
        )
        if value
      )
      + '.'
    )
  if flow_rows:
    lines += [
      '',
      '## Optical-flow attention at 368 x 496 (182,528 points), inference',
      '',
      "The release's flow model cross-attends from 2,048 latents (512 channels) to "
      '182,528 inputs of 322 channels, and decodes 182,528 queries against the '
      'latents: each attention has 182,528 x 2,048 weights (1.39 GiB in float32). '
      'Compile-only plans of one cross-attend module each, batch 1. With chunks, what '
      'remains grows only linearly with the number of points (the inputs, their '
      'key/value or query projections and the outputs).',
      '',
      '| attention | mode | XLA temporaries GiB |',
      '|---|---|---:|',
    ]
    for r in flow_rows:
      chunks = r['chunks']
      mode = r['mode'] + (
        f' (query_chunk_size={chunks["query_chunk_size"]}, '
        f'key_chunk_size={chunks["key_chunk_size"]})'
        if chunks
        else ''
      )
      lines.append(f'| {r["attention"]} | {mode} | {_gib(r["temp_bytes"])} |')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def write_plot(path: str, rows, kinds=MODELS) -> bool:
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for kind, marker in zip(kinds, ('o', 's')):
    ran = [r for r in rows if r['model'] == kind and r['status'] == 'ok']
    planned = [r for r in rows if r['model'] == kind and 'buffer_bytes' in r]
    axes[0].plot(
      [r['num_inputs'] for r in ran],
      [r['step_s'] for r in ran],
      marker=marker,
      label=kind,
    )
    axes[1].plot(
      [r['num_inputs'] for r in planned],
      [r['buffer_bytes'] / 2**30 for r in planned],
      marker=marker,
      label=kind,
    )
  axes[0].set_ylabel('forward + backward step (s)')
  axes[1].set_ylabel('XLA buffers (GiB)')
  for ax in axes:
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('tokens M' if tuple(kinds) == AR_MODELS else 'inputs M')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
  fig.suptitle(
    'Perceiver AR vs decoder-only Transformer, same width and depth'
    if tuple(kinds) == AR_MODELS
    else 'Perceiver (fixed latents) vs Transformer encoder, same width'
  )
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return True


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  host_malloc = host_memory.configure(args.host_malloc.value)  # Before JAX's backend.
  sizes = [int(s) for s in args.sizes.value]
  model_kwargs = dict(
    num_latents=args.num_latents.value,
    width=args.width.value,
    num_layers=args.num_layers.value,
    num_heads=args.num_heads.value,
  )
  start = time.perf_counter()
  kinds = AR_MODELS if args.autoregressive.value else MODELS
  rows = study(
    sizes,
    repeats=args.repeats.value,
    memory_limit_gb=args.memory_limit_gb.value,
    time_limit_s=args.time_limit_s.value,
    input_channels=args.input_channels.value,
    kinds=kinds,
    **model_kwargs,
  )
  flow_rows = flow_attention_memory() if args.flow_memory.value else []
  settings = dict(
    model_kwargs,
    input_channels=args.input_channels.value,
    batch=1,
    repeats=args.repeats.value,
    memory_limit_gb=args.memory_limit_gb.value,
    time_limit_s=args.time_limit_s.value,
    backend=jax.default_backend(),
    cpu_count=os.cpu_count(),
    jax=jax.__version__,
    host_malloc=host_malloc,
    load_average_1min=round(os.getloadavg()[0], 2),
    total_s=round(time.perf_counter() - start, 1),
  )
  os.makedirs(args.output_dir.value, exist_ok=True)
  command = ' '.join(['python -m experiments.benchmarks.scaling_study'] + sys.argv[1:])
  stem = os.path.join(
    args.output_dir.value, 'scaling_ar' if args.autoregressive.value else 'scaling'
  )
  with open(stem + '.json', 'w') as f:
    json.dump(dict(settings=settings, rows=rows, flow_attention=flow_rows), f, indent=1)
  write_markdown(stem + '.md', rows, flow_rows, settings, command, kinds)
  plotted = write_plot(stem + '.png', rows, kinds)
  print(json.dumps(dict(settings=settings, plotted=plotted)))


if __name__ == '__main__':
  cli.run(main, define_flags, name='scaling_study')
