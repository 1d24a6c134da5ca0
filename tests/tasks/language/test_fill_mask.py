"""Tests of fill-mask (experiments/tasks/language/fill_mask.py and its command): marker parsing, export -> fill-mask, errors, CLI."""

import functools
import os
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import mlm as mlm_config
from experiments import fill_mask as fill_mask_command
from experiments.tasks.language import fill_mask
from experiments.tasks.language import mlm
from experiments.training import cli
from experiments.training import errors
from perceiver import checkpoint as checkpoint_lib
from tests import helpers

REPO = helpers.REPO_ROOT
MASK = 3


def _ids(text):
  return [b + 6 for b in text.encode('utf-8')]


def test_parse_markers():
  ids, original, spans = fill_mask.parse_masked_text('ab{{cd}}e[MASK:3]f')
  np.testing.assert_array_equal(
    ids, _ids('ab') + [MASK] * 2 + _ids('e') + [MASK] * 3 + _ids('f')
  )
  np.testing.assert_array_equal(original, _ids('abcde') + [MASK] * 3 + _ids('f'))
  assert spans == [(2, 4), (5, 8)]
  ids, _, spans = fill_mask.parse_masked_text('{{é}}')  # 2 UTF-8 bytes
  assert ids.tolist() == [MASK, MASK] and spans == [(0, 2)]


@pytest.mark.parametrize(
  'text,message',
  [
    ('nothing marked', 'No span is marked'),
    ('a{{}}b', 'Empty span'),
    ('a[MASK:0]', r'\[MASK:n\]'),
    ('a[MASK:x]', r'\[MASK:n\]'),
    ('a{{b', 'Unbalanced'),
    ('a}}b[MASK:1]', 'Unbalanced'),
  ],
)
def test_parse_errors(text, message):
  with pytest.raises(ValueError, match=message):
    fill_mask.parse_masked_text(text)


@functools.lru_cache(maxsize=1)
def _debug_params():
  config = mlm_config.get_config('debug')
  batch = dict(inputs=np.zeros([1, 64], np.int32), input_mask=np.ones([1, 64], np.int32))
  return jax.device_get(
    jax.jit(
      lambda: mlm.build_model(config).init(
        jax.random.PRNGKey(3), batch, is_training=False
      )
    )()
  )


def _debug_export(tmp_path, favourite_byte=None):
  """Random `configs/mlm.py:debug` parameters, exported like the trainer does."""
  config = mlm_config.get_config('debug')
  params, state = _debug_params()
  params = {m: dict(d) for m, d in params.items()}
  if favourite_byte is not None:
    # A large output bias makes that byte the prediction everywhere.
    bias = np.zeros([262], np.float32)
    bias[ord(favourite_byte) + 6] = 1e4
    params['embedding_decoder']['bias'] = bias
  path = str(tmp_path / 'export' / 'params.npz')
  checkpoint_lib.save_npz(path, params, state)
  return config, path, params


@pytest.mark.slow
def test_export_then_fill_mask_end_to_end(tmp_path):
  config, path, params = _debug_export(tmp_path, favourite_byte='q')
  completed, spans = fill_mask.fill_mask(path, 'One {{two}} three[MASK:2].', config)
  assert completed == 'One qqq threeqq.'
  assert spans == ['qqq', 'qq']
  # The same parameters as an official-style pickle give the same answer.
  pickle_path = str(tmp_path / 'params.pickle')
  with open(pickle_path, 'wb') as f:
    pickle.dump(params, f)
  assert fill_mask.fill_mask(pickle_path, 'One {{two}} three[MASK:2].', config)[0] == (
    completed
  )


def test_unbiased_model_keeps_unmasked_bytes(tmp_path):
  config, path, _ = _debug_export(tmp_path)
  text = 'Keep {{this}} and that.'
  completed, spans = fill_mask.fill_mask(path, text, config)
  raw = completed.encode('utf-8')
  assert raw[:5] == b'Keep ' and raw[-10:] == b' and that.'
  assert len(spans) == 1


def test_bad_inputs_get_clear_errors(tmp_path):
  config, path, _ = _debug_export(tmp_path)
  with pytest.raises(ValueError, match='at most 64 bytes'):
    fill_mask.fill_mask(path, 'x' * 60 + '[MASK:9]', config)
  not_params = tmp_path / 'notes.txt'
  not_params.write_text('just some text, not parameters')
  with pytest.raises(
    errors.DataError, match='--checkpoint=.*notes.txt.*not a readable checkpoint'
  ):
    fill_mask.fill_mask(str(not_params), 'a[MASK:1]', config)
  with pytest.raises(errors.DataError, match='missing.npz.* is neither a file'):
    fill_mask.fill_mask(str(tmp_path / 'missing.npz'), 'a[MASK:1]', config)
  smaller = mlm_config.get_config('debug')
  smaller.model.encoder.z_index_dim = 16  # Fewer latents than the export.
  with pytest.raises(errors.DataError, match="does not fit the config's architecture"):
    fill_mask.fill_mask(path, 'a[MASK:1]', smaller)


@pytest.mark.slow
def test_command_line(tmp_path):
  _, path, _ = _debug_export(tmp_path, favourite_byte='z')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  ok = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.fill_mask',
      f'--checkpoint={path}',
      '--config=configs/mlm.py:debug',
      '--text=a {{bc}} d',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert ok.returncode == 0, ok.stderr
  assert ok.stdout.splitlines()[:2] == ['a zz d', "span 1: 'zz'"]
  # Errors end the program with status 1 and a message (SystemExit(str)).
  argv = [
    'fill_mask',
    f'--checkpoint={path}',
    f'--config={REPO}/configs/mlm.py:debug',
    '--text=no marker here',
  ]
  with pytest.raises(SystemExit, match='fill_mask: error: No span is marked'):
    cli.invoke(
      fill_mask_command.main, fill_mask_command.define_flags, argv, name='fill_mask'
    )
