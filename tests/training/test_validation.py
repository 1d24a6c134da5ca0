"""Config mistakes are caught before anything is compiled or trained, naming the field."""

import os
import socket
import subprocess
import sys
import time

import pytest

from experiments.training import errors
from experiments.training import trainer
from tests import helpers
from tests.training import test_train

REPO_ROOT = helpers.REPO_ROOT


@pytest.mark.parametrize(
  'section, field, value, mode, message',
  [
    ('training', 'log_every_steps', 0, 'train', 'training.log_every_steps=0'),
    ('training', 'checkpoint_every_steps', 0, 'train', 'checkpoint_every_steps=0'),
    ('training', 'keep_checkpoints', 0, 'train', 'keep_checkpoints=0'),
    ('training', 'rollback_on_nonfinite', -1, 'train', 'rollback_on_nonfinite=-1'),
    ('evaluation', 'batch_size', 0, 'train_and_eval', 'evaluation.batch_size=0'),
    ('evaluation', 'batch_size', 0, 'eval', 'evaluation.batch_size=0'),
    (
      'evaluation',
      'split',
      'validation',
      'train_and_eval',
      "evaluation.split='validation' cannot be evaluated .*one of",
    ),
    ('evaluation', 'split', 'validation', 'eval_continuous', 'split=.validation.'),
  ],
)
def test_bad_fields_fail_before_training(tmp_path, section, field, value, mode, message):
  config = test_train.tiny_config()
  config[section][field] = value
  start = time.monotonic()
  with pytest.raises(ValueError, match=message):
    trainer.run(config, str(tmp_path), mode)
  assert time.monotonic() - start < 20  # Nothing compiled or trained.
  assert not (tmp_path / 'checkpoints').exists()
  assert not (tmp_path / 'metrics.jsonl').exists()


def test_eval_batch_that_does_not_divide_over_devices(tmp_path, monkeypatch):
  monkeypatch.setattr(trainer.jax, 'device_count', lambda: 4)
  monkeypatch.setattr(trainer.jax, 'local_device_count', lambda: 4)
  config = test_train.tiny_config()
  config.evaluation.batch_size = 90
  with pytest.raises(ValueError, match=r'evaluation.batch_size=90 .*devices'):
    trainer.run(config, str(tmp_path), 'train_and_eval')


def test_eval_of_a_missing_workdir(tmp_path):
  with pytest.raises(errors.ConfigError, match='does not exist'):
    trainer.run(test_train.tiny_config(), str(tmp_path / 'nowhere'), 'eval')
  assert not (tmp_path / 'nowhere').exists()


def test_command_line_errors_are_one_line(tmp_path):
  env = helpers.subprocess_env(PYTHONPATH=REPO_ROOT)
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]  # Nobody listens there once closed.
  base = [
    sys.executable,
    '-m',
    'experiments.train',
    f'--config={os.path.join(REPO_ROOT, "configs", "digits.py")}:tiny',
    f'--workdir={tmp_path / "run"}',
  ]
  result = subprocess.run(
    base + ['--config.training.log_every_steps=0'],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
    'train: error: config.training.log_every_steps=0 must be a positive integer.'
  )
  # A host whose coordinator never comes gives up after --coordinator_timeout_s.
  start = time.monotonic()
  result = subprocess.run(
    base
    + [
      f'--coordinator_address=localhost:{port}',
      '--num_processes=2',
      '--process_id=1',
      '--coordinator_timeout_s=3',
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'waiting up to 3 s' in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(
    f'train: error: the coordinator localhost:{port} did not answer within 3 s'
  )
  assert time.monotonic() - start < 120


def test_an_unwritable_or_empty_workdir_is_named(tmp_path, monkeypatch):
  from experiments.training import validation  # pylint: disable=g-import-not-at-top

  with pytest.raises(errors.ConfigError, match='--workdir is empty'):
    validation.check_workdir('', mode='train')

  def read_only(*args, **kwargs):
    raise OSError(30, 'Read-only file system', str(tmp_path))

  monkeypatch.setattr(validation.tempfile, 'TemporaryFile', read_only)
  with pytest.raises(
    errors.ConfigError, match=rf"--workdir='{tmp_path}' cannot be written: Read-only"
  ):
    validation.check_workdir(str(tmp_path), mode='train_and_eval')
  validation.check_workdir(str(tmp_path), mode='eval')  # Evaluation only reads.
