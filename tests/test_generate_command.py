"""`python -m experiments.generate`, run as a user would."""

import re
import subprocess
import sys

import jax
import pytest

from configs import perceiver_ar as perceiver_ar_config
from experiments import generate
from experiments.tasks.perceiver_ar import task
from experiments.training import cli
from experiments.training import task as task_lib
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


def _export(tmp_path):
  config = perceiver_ar_config.get_config('tiny')
  model = task.build_model(config)
  params, state = model.init(
    jax.random.PRNGKey(0), task_lib.example_batch(task, config), is_training=True
  )
  path = str(tmp_path / 'params.npz')
  checkpoint_lib.save_npz(path, params, state)
  return path


def _invoke(*args):
  return cli.invoke(
    generate.main, generate.define_flags, ['generate', *args], name='generate'
  )


def test_bad_requests_end_with_one_line_naming_the_flag(tmp_path, capsys):
  path = _export(tmp_path)
  config_arg = f'--config={helpers.REPO_ROOT}/configs/perceiver_ar.py:tiny'
  for args, message in (
    ([f'--checkpoint={path}', '--prompt=ab'], '--config is required'),
    ([config_arg, f'--checkpoint={path}'], 'exactly one of --prompt and --prompt_tokens'),
    ([config_arg, f'--checkpoint={path}', '--prompt_tokens=3,x'], 'comma-separated'),
    ([config_arg, f'--checkpoint={path}', '--prompt_tokens=3,300'], r'\[1, 259\)'),
    (
      [config_arg, f'--checkpoint={path}', '--prompt=ab', '--top_p=0', '--num_tokens=3'],
      '--top_p=0.0',
    ),
    (
      [config_arg, f'--checkpoint={path}', '--prompt=ab', '--top_k=-1', '--num_tokens=3'],
      '--top_k=-1',
    ),
    (
      [config_arg, f'--checkpoint={tmp_path}', '--prompt=ab', '--num_tokens=3'],
      'export/params.npz',
    ),
    (
      [f'--config={helpers.REPO_ROOT}/configs/digits.py', f'--checkpoint={path}'],
      'needs a Perceiver AR config',
    ),
  ):
    with pytest.raises(SystemExit) as e:
      _invoke(*args)
    assert str(e.value).startswith('generate: error: '), e.value
    assert len(str(e.value).splitlines()) == 1
    assert re.search(message, str(e.value)), (message, e.value)


def test_greedy_generation_in_process(tmp_path, capsys):
  path = _export(tmp_path)
  config_arg = f'--config={helpers.REPO_ROOT}/configs/perceiver_ar.py:tiny'
  _invoke(
    config_arg,
    f'--checkpoint={path}',
    '--prompt_tokens=5,6',
    '--num_tokens=3',
    '--temperature=0',
    '--print_tokens',
  )
  first = capsys.readouterr().out.splitlines()[-1]
  _invoke(
    config_arg,
    f'--checkpoint={path}',
    '--prompt_tokens=5,6',
    '--num_tokens=3',
    '--temperature=0',
    '--print_tokens',
    '--nocached',
  )
  tokens = [int(t) for t in first.split()]
  assert tokens[:3] == [2, 5, 6] and len(tokens) == 6
  assert capsys.readouterr().out.splitlines()[-1] == first  # Caches change no token.


@pytest.mark.slow
def test_generate_from_an_export(tmp_path):
  path = _export(tmp_path)
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
