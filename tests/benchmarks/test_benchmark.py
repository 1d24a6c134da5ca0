"""Tests for the benchmark tooling: FLOP counting, the benchmark configs, a smoke run.

No timing is asserted: only that the figures are consistent with each other and with
hand-computed values.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import benchmark as benchmark_configs
from configs import digits as digits_configs
from experiments.benchmarks import compile_time as benchmark_compile
from experiments.benchmarks import flops as benchmark_flops
from experiments.benchmarks import train_step as benchmark_train_step

# ------------------------------------------------------------------ FLOP counting


def test_count_flops_of_dot_conv_scan_cond_while():
  a = jax.ShapeDtypeStruct((3, 5), jnp.float32)
  b = jax.ShapeDtypeStruct((5, 7), jnp.float32)
  assert benchmark_flops.count_flops(jnp.dot, a, b) == (2 * 3 * 5 * 7, 0)
  # A batched contraction over two axes: [2, 3, 4, 5] x [2, 5, 4, 6] -> 2*3*6 outputs,
  # each summing 4 * 5 products.
  lhs = jax.ShapeDtypeStruct((2, 3, 4, 5), jnp.float32)
  rhs = jax.ShapeDtypeStruct((2, 5, 4, 6), jnp.float32)
  einsum = lambda x, y: jnp.einsum('bthd,bdhs->bts', x, y)
  assert benchmark_flops.count_flops(einsum, lhs, rhs).flops == 2 * (2 * 3 * 6) * 20
  # A convolution: NHWC [1, 9, 11, 3] with a 3x5 kernel to 4 channels, VALID.
  images = jax.ShapeDtypeStruct((1, 9, 11, 3), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 5, 3, 4), jnp.float32)
  conv = lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  assert benchmark_flops.count_flops(conv, images, kernel).flops == (
    2 * (7 * 7 * 4) * (3 * 5 * 3)
  )

  def scanned(x, w):  # A weight-shared layer applied 6 times.
    return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=6)[0]

  x, w = (
    jax.ShapeDtypeStruct((3, 7), jnp.float32),
    jax.ShapeDtypeStruct((7, 7), jnp.float32),
  )
  assert benchmark_flops.count_flops(scanned, x, w) == (6 * 2 * 3 * 7 * 7, 0)
  # The backward pass of each matmul costs two more matmuls of the same size.
  grad = jax.grad(lambda x, w: jnp.sum(scanned(x, w)), argnums=1)
  assert benchmark_flops.count_flops(grad, x, w).flops == 3 * 6 * 2 * 3 * 7 * 7

  def branches(p, x, w):
    return jax.lax.cond(p, lambda: x @ w @ w, lambda: x @ w)

  p = jax.ShapeDtypeStruct((), jnp.bool_)
  assert benchmark_flops.count_flops(branches, p, x, w).flops == 2 * 2 * 3 * 7 * 7

  def loop(x, w):
    return jax.lax.while_loop(lambda c: jnp.sum(c) < 10.0, lambda c: c @ w, x)

  assert benchmark_flops.count_flops(loop, x, w) == (2 * 3 * 7 * 7, 1)


def test_count_flops_of_pmap_is_per_device():
  x = jnp.ones((jax.local_device_count(), 3, 4))
  flops = benchmark_flops.count_flops(jax.pmap(lambda a: a @ a.T), x).flops
  assert flops == 2 * 3 * 3 * 4


def _forward_flops(config, batch):
  """Matmul FLOPs of one forward pass of the image64_b8 model, computed by hand."""
  model, enc = config.model, config.model.encoder
  n, d = enc.z_index_dim, enc.num_z_channels
  m, c = 64 * 64, 3 + 2 * (2 * 32 + 1)  # Pixels + 2D Fourier features: 133.
  linear = lambda rows, fan_in, fan_out: 2 * batch * rows * fan_in * fan_out
  # Cross-attend: qk = v = C (shape_for_attn='kv'), one head, output D, MLP D -> D.
  # The key and value projections are folded (`factorized_attend`): the queries are
  # mapped into the input space (C x C) and the pooled inputs through the value
  # projection, instead of projecting all M inputs. The key bias would add the same
  # logit to a whole row, which the softmax cancels: it is not computed.
  cross = (
    linear(n, d, c)
    + 2 * linear(n, c, c)
    + 2 * 2 * batch * n * m * c
    + linear(n, c, d)
    + 2 * linear(n, d, d)
  )
  # Self-attend: q, k, v, output projections, attention, MLP (widening 1).
  self_attend = 4 * linear(n, d, d) + 2 * 2 * batch * n * n * d + 2 * linear(n, d, d)
  num_self = enc.num_blocks * enc.num_self_attends_per_block
  # Decoder: one query of D channels cross-attends to the latents (projections folded
  # as above), then logits.
  k = config.data.num_classes
  decoder = (
    linear(1, d, d)
    + 2 * linear(1, d, d)
    + 2 * 2 * batch * n * d
    + linear(1, d, d)
    + 2 * linear(1, d, d)
    + linear(1, d, k)
  )
  del model
  return cross + num_self * self_attend + decoder


def test_benchmark_image64_b8_is_the_specified_model():
  config = benchmark_configs.get_config('image64_b8')
  from experiments.tasks.imagenet import task as imagenet  # pylint: disable=g-import-not-at-top

  model = imagenet.build_model(config)
  batch = {'images': jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)}
  params = jax.eval_shape(
    lambda b: model.init(jax.random.PRNGKey(0), b, is_training=True)[0], batch
  )
  shapes = {f'{k}/{n}': tuple(v.shape) for k, d in params.items() for n, v in d.items()}
  enc = 'perceiver_encoder/~/'
  assert shapes[enc + 'trainable_position_encoding/pos_embs'] == (256, 512)
  assert shapes[enc + 'cross_attention/attention/linear_1/w'] == (133, 133)
  assert shapes[enc + 'cross_attention/mlp/linear/w'] == (512, 512)  # Widening 1.
  assert shapes[enc + 'self_attention_3/mlp/linear/w'] == (512, 512)
  assert not any(k.startswith(enc + 'self_attention_4/') for k in shapes)  # Shared.
  dec = 'classification_decoder/~/basic_decoder/'
  assert shapes[dec + 'output/w'] == (512, 1000)
  assert shapes[
    'classification_decoder/~/basic_decoder/~/trainable_position_encoding/pos_embs'
  ] == (1, 512)
  assert config.training.batch_size == 8 and config.optimizer.name == 'lamb'
  # The jaxpr count of the forward pass equals the hand count, both blocks included.
  forward = lambda p, b: model.apply(p, {}, None, b, is_training=False)[0]
  counted = benchmark_flops.count_flops(forward, params, batch)
  assert counted == (_forward_flops(config, batch=2), 0)


def test_benchmark_mlm2048_b4_is_the_specified_model():
  config = benchmark_configs.get_config('mlm2048_b4')
  from experiments.tasks.language import mlm  # pylint: disable=g-import-not-at-top

  model = mlm.build_model(config)
  batch = {
    'inputs': jax.ShapeDtypeStruct((1, 2048), jnp.int32),
    'input_mask': jax.ShapeDtypeStruct((1, 2048), jnp.int32),
  }
  params = jax.eval_shape(
    lambda b: model.init(jax.random.PRNGKey(0), b, is_training=True)[0], batch
  )
  shapes = {f'{k}/{n}': tuple(v.shape) for k, d in params.items() for n, v in d.items()}
  enc = 'perceiver_encoder/~/'
  assert shapes['embed/embeddings'][1] == 256
  assert shapes[enc + 'trainable_position_encoding/pos_embs'] == (256, 512)
  assert shapes[enc + 'cross_attention/attention/linear/w'] == (512, 256)  # qk 256.
  assert shapes[enc + 'cross_attention/attention/linear_2/w'] == (256, 512)  # v 512.
  assert shapes[enc + 'self_attention_5/attention/linear/w'] == (512, 256)
  assert not any(k.startswith(enc + 'self_attention_6/') for k in shapes)
  assert not any(k.startswith('basic_decoder/output') for k in shapes)  # No projection.
  assert config.training.batch_size == 4 and config.data.seq_len == 2048


def test_benchmark_config_errors():
  with pytest.raises(ValueError, match="Unknown configs/benchmark.py variant 'x'"):
    benchmark_configs.get_config('x')
  config = benchmark_configs.get_config('image64_b8')
  with pytest.raises(ValueError, match="config has no field 'model.encoder.nope'"):
    benchmark_compile.with_field(config, 'model.encoder.nope', 1)
  changed = benchmark_compile.with_field(config, 'model.encoder.num_blocks', 8)
  assert changed.model.encoder.num_blocks == 8 and config.model.encoder.num_blocks == 2
  with pytest.raises(ValueError, match='num_steps=0 must be >= 1'):
    benchmark_train_step.benchmark(config, num_steps=0)


# ----------------------------------------------------------------------- smoke run


@pytest.mark.slow
def test_benchmark_smoke_run_reports_consistent_figures(monkeypatch):
  config = digits_configs.get_config('tiny')
  # The step the benchmark built (instead of building and initialising another).
  setups = []
  build_step = benchmark_train_step.build_step
  monkeypatch.setattr(
    benchmark_train_step,
    'build_step',
    lambda *args, **kwargs: setups.append(build_step(*args, **kwargs)) or setups[-1],
  )
  report = benchmark_train_step.benchmark(config, num_steps=2, matmul_size=128)
  (setup,) = setups
  # Shapes only: the benchmark's steps consumed (donated) the state's buffers.
  shapes = lambda tree: jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree
  )
  params = shapes(setup.p_state.params)
  assert report['num_params'] == sum(
    int(np.prod(x.shape[1:])) for x in jax.tree.leaves(params)
  )
  flops = benchmark_flops.count_flops(
    setup.p_train_step,
    shapes(setup.p_state),
    shapes(setup.device_batch),
    shapes(setup.p_rng),
  ).flops
  assert report['flops_per_step_per_device'] == flops > 0
  assert report['first_step_s'] >= report['compile_s'] > 0
  assert report['step_s_median'] >= report['step_s_min'] > 0
  assert math.isclose(
    report['examples_per_s'],
    config.training.batch_size / report['step_s_median'],
    rel_tol=0.01,
  )
  assert math.isclose(
    report['achieved_gflop_per_s_per_device'],
    flops / report['step_s_median'] / 1e9,
    rel_tol=0.01,
    abs_tol=0.01,
  )
  assert report['matmul_gflop_per_s_per_device'] > 0
  assert report['peak_memory_bytes'] > 0
  assert report['peak_memory_source'] in (
    'device.memory_stats.peak_bytes_in_use',
    'process_max_rss',
  )
  assert np.isfinite(report['final_loss'])


def test_peak_memory_falls_back_to_max_rss():
  class NoStats:
    def memory_stats(self):
      return None

  value, source = benchmark_train_step.peak_memory(NoStats())
  assert source == 'process_max_rss' and value > 10 * 2**20

  class Stats:
    def memory_stats(self):
      return {'peak_bytes_in_use': 1234}

  assert benchmark_train_step.peak_memory(Stats()) == (
    1234,
    'device.memory_stats.peak_bytes_in_use',
  )


# ------------------------------------------------------------------- scaling study


def test_scaling_study_models_have_the_claimed_complexity():
  """Perceiver FLOPs grow linearly in M, the Transformer's quadratically."""
  from experiments.benchmarks import scaling_study  # pylint: disable=g-import-not-at-top

  kwargs = dict(num_latents=8, width=16, num_layers=2, num_heads=2)

  def flops(kind, m):
    model = scaling_study.make_model(kind, **kwargs)
    x = jax.ShapeDtypeStruct((1, m, 5), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return benchmark_flops.count_flops(
      lambda p, x: model.apply(p, None, x), params, x
    ).flops

  sizes = (64, 128, 192)  # Equally spaced: second differences remove linear terms.
  p = [flops('perceiver', m) for m in sizes]
  assert p[2] - p[1] == p[1] - p[0] > 0  # a + b M.
  t = [flops('transformer', m) for m in sizes]
  # a M + b M^2: b from the second difference is the attention's 2 * 2 * width per
  # layer (logits and weighted values), times 2 layers.
  assert (t[2] - 2 * t[1] + t[0]) / (2 * 64**2) == 2 * 2 * 16 * 2
  with pytest.raises(ValueError, match="model kind 'rnn'"):
    scaling_study.make_model('rnn', **kwargs)


def test_scaling_study_records_sizes_over_the_memory_limit():
  from experiments.benchmarks import scaling_study  # pylint: disable=g-import-not-at-top

  rows = scaling_study.study(
    [16, 32],
    repeats=1,
    memory_limit_gb=1e-9,
    time_limit_s=60.0,
    input_channels=3,
    num_latents=4,
    width=8,
    num_layers=1,
    num_heads=2,
  )
  assert [(r['model'], r['num_inputs']) for r in rows] == [
    ('perceiver', 16),
    ('perceiver', 32),
    ('transformer', 16),
    ('transformer', 32),
  ]
  assert rows[0]['status'].startswith('not run: needs') and rows[0]['buffer_bytes'] > 0
  assert rows[1]['status'] == 'not run (a smaller size hit a limit)'


def test_compiler_options_reach_the_step_compilation():
  config = digits_configs.get_config('tiny')
  option = 'xla_cpu_experimental_ynn_fusion_type'
  with pytest.raises(Exception, match=f'{option}.*NOT_A_FUSION_TYPE'):
    benchmark_train_step.benchmark(
      config, num_steps=1, matmul_size=64, compiler_options={option: 'NOT_A_FUSION_TYPE'}
    )


def test_compiler_option_flags_parse_into_a_dict():
  from absl import app  # noqa: PLC0415

  from experiments import benchmark  # noqa: PLC0415

  assert benchmark.parse_compiler_options(['a=1', 'b = x=y', 'c=']) == {
    'a': '1',
    'b': ' x=y',
    'c': '',
  }
  for entries, message in (
    (['a'], 'not KEY=VALUE'),
    (['=1'], 'not KEY=VALUE'),
    (['a=1', 'a=2'], 'twice'),
  ):
    with pytest.raises(app.UsageError, match=message):
      benchmark.parse_compiler_options(entries)
