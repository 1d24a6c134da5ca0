"""How the commands read flags and report errors (`experiments/training/cli.py`).

A mistake in the command line or a `UserError` ends with one line and status 1; any
other exception is a bug and keeps its traceback.
"""

import os
import subprocess
import sys
import types

from absl import flags
from ml_collections import config_flags
import pytest

from experiments.training import cli
from experiments.training import errors
from tests import helpers

CONFIG = os.path.join(helpers.REPO_ROOT, 'configs', 'digits.py')


def _define(flag_values=flags.FLAGS):
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config', None, 'config', lock_config=True, flag_values=flag_values
    ),
    count=flags.DEFINE_integer('count', 1, 'a number', flag_values=flag_values),
  )


def _invoke(main, *argv):
  return cli.invoke(main, _define, ['prog', *argv], name='prog')


def _one_line_exit(main, *argv) -> str:
  with pytest.raises(SystemExit) as info:
    _invoke(main, *argv)
  message = str(info.value.code)
  assert message.startswith('prog: error: ') and '\n' not in message, message
  return message


def _steps(argv, *, args):
  del argv
  return args.config.value.training.num_steps


def test_flags_reach_main():
  assert _invoke(_steps, f'--config={CONFIG}:tiny') == 5
  assert _invoke(_steps, f'--config={CONFIG}:tiny', '--config.training.num_steps=3') == 3


def test_command_line_mistakes_are_one_line():
  message = _one_line_exit(_steps, f'--config={CONFIG}', '--config.training.num_stepz=3')
  assert "'num_stepz'" in message and 'Did you mean "num_steps"' in message
  message = _one_line_exit(_steps, f'--config={CONFIG}:tinyy')
  assert "variant 'tinyy' is not one of ('permuted', 'tiny')" in message
  assert "Unknown command line flag 'cuont'. Did you mean: count" in _one_line_exit(
    _steps, '--cuont=3'
  )
  assert 'count' in _one_line_exit(_steps, '--count=three')


def test_user_errors_are_one_line_and_bugs_keep_their_traceback():
  def config_mistake(argv, *, args):
    raise errors.ConfigError('config.training.batch_size=7\nis not divisible by 2.')

  def bug(argv, *, args):
    raise ValueError('operands could not be broadcast together with shapes (3,) (5,)')

  assert _one_line_exit(config_mistake) == (
    'prog: error: config.training.batch_size=7 is not divisible by 2.'
  )
  with pytest.raises(ValueError, match='could not be broadcast'):
    _invoke(bug)


def _train(*flag_args):
  env = helpers.subprocess_env(PYTHONPATH=helpers.REPO_ROOT)
  return subprocess.run(
    [sys.executable, '-m', 'experiments.train', *flag_args],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_train_command_mistakes_end_with_one_line(tmp_path):
  """Issue 24: a misspelt field, an unknown variant, a read-only or empty workdir."""
  workdir = f'--workdir={tmp_path / "run"}'
  cases = [
    (
      [f'--config={CONFIG}:tiny', workdir, '--config.training.num_stepz=3'],
      'Did you mean "num_steps"',
    ),
    ([f'--config={CONFIG}:tinyy', workdir], "variant 'tinyy' is not one of"),
    ([f'--config={CONFIG}:tiny', '--workdir='], '--workdir is empty'),
  ]
  if os.geteuid() != 0:  # root writes through permission bits.
    read_only = tmp_path / 'read_only'
    read_only.mkdir()
    read_only.chmod(0o500)
    cases.append(
      (
        [f'--config={CONFIG}:tiny', f'--workdir={read_only}', '--mode=train'],
        f"--workdir='{read_only}' cannot be written",
      )
    )
  for args, message in cases:
    result = _train(*args)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('train: error: ') and message in last, last
    assert 'Traceback' not in result.stderr, result.stderr[-2000:]
