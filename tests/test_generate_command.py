"""`python -m experiments.generate`, run as a user would."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs import perceiver_ar as perceiver_ar_config
from experiments.tasks.perceiver_ar import task
from perceiver import checkpoint as checkpoint_lib
from tests import helpers


def _run(args):
  return subprocess.run(
    [sys.executable, '-m', 'experiments.generate', *args],
    cwd=helpers.REPO_ROOT,
    env=helpers.subprocess_env(TF_CPP_MIN_LOG_LEVEL='3'),
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.slow
def test_generate_from_an_export(tmp_path):
  config = perceiver_ar_config.get_config('tiny')
  model = task.build_model(config)
  spec = task.input_spec(config)
  params, state = model.init(
    jax.random.PRNGKey(0),
    {k: jnp.ones((1,) + v.shape, v.dtype) for k, v in spec.items()},
    is_training=True,
  )
  path = str(tmp_path / 'params.npz')
  checkpoint_lib.save_npz(path, params, state)
  config_arg = f'--config={helpers.REPO_ROOT}/configs/perceiver_ar.py:tiny'
  result = _run(
    [
      config_arg,
      f'--checkpoint={path}',
      '--prompt=ab',
      '--num_tokens=5',
      '--print_tokens',
      '--temperature=0.7',
      '--top_k=5',
      '--top_p=0.9',
      '--seed=3',
    ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  tokens = [int(t) for t in result.stdout.strip().splitlines()[-1].split()]
  assert tokens[:3] == [2, ord('a') + 3, ord('b') + 3]  # SOS, then the prompt's bytes.
  assert len(tokens) == 8 and min(tokens[3:]) > 0
  assert '5 tokens in' in result.stderr and 'cached' in result.stderr
  # The prompt and the new tokens must fit the 32-token context.
  result = _run(
    [config_arg, f'--checkpoint={path}', '--prompt=' + 'x' * 30, '--num_tokens=5']
  )
  assert result.returncode == 1
  assert 'must fit the context of 32 positions' in result.stderr
  result = _run([f'--checkpoint={path}', '--prompt=ab'])
  assert result.returncode == 1 and '--config is required' in result.stderr
