"""Bad inputs to the language tasks: caught before any work, with a clear message."""

import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mlm as mlm_config
from experiments import fill_mask as fill_mask_command
from experiments.tasks.language import fill_mask
from experiments.tasks.language import mlm
from experiments.training import cli
from perceiver import checkpoint as checkpoint_lib
from tests import helpers


def test_huge_mask_count_fails_before_allocating():
  config = mlm_config.get_config('debug')
  start = time.monotonic()
  with pytest.raises(ValueError, match='at least 500000003 bytes .*at most 64'):
    fill_mask.fill_mask('/nonexistent.npz', 'abc[MASK:500000000]', config)
  assert time.monotonic() - start < 1.0  # 2 GB of int32 would take far longer.


def _embed(inputs, jit):
  config = mlm_config.get_config('debug')
  model = hk.transform(lambda x: mlm.embed_inputs(x, config.model)[0])
  params = model.init(jax.random.PRNGKey(0), jnp.zeros([1, 5], jnp.int32))
  apply = jax.jit(model.apply) if jit else model.apply
  return apply(params, None, inputs)


def test_byte_ids_outside_the_vocabulary_are_never_clipped():
  good = np.array([[0, 5, 100, 261, 7]], np.int32)
  assert np.isfinite(_embed(good, jit=False)).all()
  bad = np.array([[0, 5, 262, 261, 7]], np.int32)
  with pytest.raises(ValueError, match=r'1 id\(s\) outside \[0, 262\) .*262'):
    _embed(bad, jit=False)
  with pytest.raises(ValueError, match='-1'):
    _embed(np.array([[-1, 5, 6, 7, 8]], np.int32), jit=False)
  # Inside jit the value cannot raise: its embedding is NaN (the loss guard stops),
  # for ids past the end and for negative ids alike (jnp.take would wrap -1 to 261).
  embedded = np.asarray(_embed(bad, jit=True))
  assert np.isnan(embedded[0, 2]).all()
  assert np.isfinite(np.delete(embedded[0], 2, axis=0)).all()
  negative = np.asarray(_embed(np.array([[-1, 5, 6, 7, 8]], np.int32), jit=True))
  assert np.isnan(negative[0, 0]).all() and np.isfinite(negative[0, 1:]).all()


def test_missing_tfds_corpus_fails_up_front(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  config = mlm_config.get_config('debug')
  config.data.tfds_data_dir = str(tmp_path / 'empty')
  with pytest.raises(ValueError, match=r"TFDS dataset 'c4/en:3.1.0' .*data.files"):
    mlm.load('train', is_training=True, batch_dims=[1, 2], config=config)
  assert not (tmp_path / 'empty' / 'downloads').exists()  # Nothing was downloaded.


def _run_command(checkpoint, text):
  argv = [
    'fill_mask',
    f'--checkpoint={checkpoint}',
    f'--config={helpers.REPO_ROOT}/configs/mlm.py:debug',
    f'--text={text}',
  ]
  with pytest.raises(SystemExit) as exit_info:
    cli.invoke(
      fill_mask_command.main, fill_mask_command.define_flags, argv, name='fill_mask'
    )
  message = str(exit_info.value.code)
  assert message.startswith('fill_mask: error: ') and '\n' not in message
  return message


def test_fill_mask_command_one_line_errors_for_malformed_files(tmp_path):
  path = str(tmp_path / 'params.npz')
  checkpoint_lib.save_npz(path, {'linear': {'w': np.zeros((3, 5), np.float32)}})
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[: len(data) // 2])
  assert path in _run_command(path, 'a[MASK:1]')
  deep = tmp_path / 'deep.pickle'
  deep.write_bytes(
    b'\x80\x02' + b'}X\x01\x00\x00\x00a' * 50_000 + b'}' + b's' * 50_000 + b'.'
  )
  assert 'nested more than' in _run_command(str(deep), 'a[MASK:1]')
  # The command (its top-k path) checks the length while parsing, before any array of
  # that size exists (it once reached 10 GB in 33 s before the same message).
  start = time.monotonic()
  assert 'at most 64 bytes' in _run_command(path, 'abc[MASK:500000000]')
  assert 'at most 64 bytes' in _run_command(path, '{{abc}}' + 'x' * 200)
  assert time.monotonic() - start < 10.0
