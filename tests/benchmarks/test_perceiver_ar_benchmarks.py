"""Perceiver AR benchmarks: the scaling study's autoregressive models and generation speed."""

import jax
import jax.numpy as jnp
import pytest

from experiments.benchmarks import flops as benchmark_flops
from experiments.benchmarks import perceiver_ar_generate
from experiments.benchmarks import scaling_study


def test_autoregressive_models_have_the_claimed_complexity():
  """Perceiver AR FLOPs grow linearly in M, the decoder-only Transformer's
  quadratically (causal masks do not remove work from dense attention)."""
  kwargs = dict(num_latents=8, width=16, num_layers=2, num_heads=2)

  def flops(kind, m):
    model = scaling_study.make_ar_model(kind, m, **kwargs)
    tokens = jax.ShapeDtypeStruct((1, m), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)
    return benchmark_flops.count_flops(
      lambda p, t: model.apply(p, None, t), params, tokens
    ).flops

  sizes = (64, 128, 192)
  p = [flops('perceiver_ar', m) for m in sizes]
  assert p[2] - p[1] == p[1] - p[0] > 0
  t = [flops('decoder_transformer', m) for m in sizes]
  # The second difference is the attention's 2 * 2 * width per layer, times 2 layers.
  assert (t[2] - 2 * t[1] + t[0]) / (2 * 64**2) == 2 * 2 * 16 * 2
  with pytest.raises(ValueError, match="model kind 'rnn'"):
    scaling_study.make_ar_model('rnn', 64, **kwargs)


def test_autoregressive_study_runs_both_models():
  rows = scaling_study.study(
    [16, 24],
    repeats=1,
    memory_limit_gb=8.0,
    time_limit_s=60.0,
    input_channels=3,
    kinds=scaling_study.AR_MODELS,
    num_latents=4,
    width=8,
    num_layers=1,
    num_heads=2,
  )
  assert [(r['model'], r['num_inputs'], r['status']) for r in rows] == [
    ('perceiver_ar', 16, 'ok'),
    ('perceiver_ar', 24, 'ok'),
    ('decoder_transformer', 16, 'ok'),
    ('decoder_transformer', 24, 'ok'),
  ]
  assert all(r['step_s'] > 0 and r['buffer_bytes'] > 0 for r in rows)


@pytest.mark.slow
def test_generation_benchmark_reports_both_modes():
  row = perceiver_ar_generate.measure(
    64, num_tokens=10, rounds=1, width=32, num_latents=8, num_layers=1
  )
  assert row['context'] == 64 and row['prompt'] == 54
  assert row['cached_tokens_per_s'] > 0 and row['full_calls_tokens_per_s'] > 0
  # The speedup is the ratio of the rates rounded to one decimal.
  assert row['speedup'] == pytest.approx(
    row['cached_tokens_per_s'] / row['full_calls_tokens_per_s'], abs=0.05 + 1e-9
  )
  assert '| 64 | 10 |' in perceiver_ar_generate.markdown([row])
