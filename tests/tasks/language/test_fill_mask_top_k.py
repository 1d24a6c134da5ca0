"""Fill-mask top-k: per-byte alternatives and span beam search, on a hand-made model."""

import itertools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import mlm as mlm_config
from experiments.tasks.language import fill_mask
from experiments.tasks.language import mlm
from perceiver import checkpoint as checkpoint_lib
from tests import helpers


def _brute_force(log_probs, k):
  scored = [
    (values, sum(log_probs[i, v] for i, v in enumerate(values)))
    for values in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0])
  ]
  scored.sort(key=lambda c: (-c[1], c[0]))
  return scored[:k]


@pytest.mark.parametrize('k', [1, 4, 7])
def test_beam_search_is_exact_on_a_factorised_distribution(k):
  rng = np.random.RandomState(k)
  logits = rng.randn(3, 5) * 2
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  got = fill_mask.top_k_sequences(log_probs, k)
  want = _brute_force(log_probs, k)
  assert [v for v, _ in got] == [v for v, _ in want]
  np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-12)


@pytest.fixture(scope='module')
def hand_made_model(tmp_path_factory):
  """A debug-sized model whose decoder outputs are exactly 0, so every position's
  logits are the output bias: P(a) = 0.5, P(b) = 0.3, P(c) = 0.2 at every position."""
  config = mlm_config.get_config('debug')
  batch = dict(inputs=np.zeros([1, 64], np.int32), input_mask=np.ones([1, 64], np.int32))
  shapes, state = jax.eval_shape(
    lambda: mlm.build_model(config).init(jax.random.PRNGKey(0), batch, is_training=False)
  )
  rng = np.random.RandomState(0)
  params = {
    m: {n: (0.1 * rng.randn(*v.shape)).astype(v.dtype) for n, v in d.items()}
    for m, d in shapes.items()
  }
  # Decoder output = attention output (no query residual) + MLP: zero both last layers.
  for module in (
    'basic_decoder/cross_attention/attention/linear_3',
    'basic_decoder/cross_attention/mlp/linear_1',
  ):
    params[module] = {n: np.zeros_like(v) for n, v in params[module].items()}
  bias = np.full([262], -40.0, np.float32)
  for char, prob in (('a', 0.5), ('b', 0.3), ('c', 0.2)):
    bias[ord(char) + 6] = np.log(prob)
  bias[:6] = 50.0  # Reserved ids are never proposed, however likely.
  params['embedding_decoder'] = {'bias': bias}
  path = str(tmp_path_factory.mktemp('mlm') / 'hand.npz')
  checkpoint_lib.save_npz(path, params, {})
  return config, path


def test_top_k_on_the_hand_made_model(hand_made_model):
  config, path = hand_made_model
  result = fill_mask.fill_mask_top_k(path, 'x{{yz}}w[MASK:1]', config, k=3)
  assert result.completed == 'xaawa'
  assert result.spans == ['aa', 'a']
  texts = [t for t, _ in result.span_alternatives[0]]
  assert texts == ['aa', 'ab', 'ba']
  np.testing.assert_allclose(
    [p for _, p in result.span_alternatives[0]], [0.25, 0.15, 0.15], atol=1e-6
  )
  assert len(result.byte_alternatives[0]) == 2  # Two masked bytes in span 1.
  for choices in result.byte_alternatives[0] + result.byte_alternatives[1]:
    assert [t for t, _ in choices] == ['a', 'b', 'c']
    np.testing.assert_allclose([p for _, p in choices], [0.5, 0.3, 0.2], atol=1e-6)
  text = fill_mask.format_top_k(result)
  assert "span 1 top-3:\n  0.2500 'aa'\n  0.1500 'ab'" in text
  assert "  byte 1: 'a' 0.5000, 'b' 0.3000, 'c' 0.2000" in text


@pytest.mark.slow
def test_command_top_k_json(hand_made_model):
  _, path = hand_made_model
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.fill_mask',
      f'--checkpoint={path}',
      '--config=configs/mlm.py:debug',
      '--text=x{{yz}}w',
      '--top_k=2',
      '--json',
    ],
    cwd=helpers.REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  data = json.loads(result.stdout.strip().splitlines()[-1])
  assert data['completed'] == 'xaaw'
  [span] = data['spans']
  assert span['greedy'] == 'aa' and [e['text'] for e in span['top_k']] == ['aa', 'ab']
  assert [[e['byte'] for e in b] for b in span['bytes']] == [['a', 'b'], ['a', 'b']]
