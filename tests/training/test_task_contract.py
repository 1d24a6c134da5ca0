"""The task contract (`experiments.training.task.Task`) holds for every task module."""

import glob
import importlib.util
import os
import sys
import types

import jax
import numpy as np
import pytest

from experiments.training import task as task_lib
from tests import helpers


def _config_tasks():
  """`config.task` of every config file's default variant."""
  names = set()
  for path in sorted(glob.glob(os.path.join(helpers.REPO_ROOT, 'configs', '*.py'))):
    if os.path.basename(path) in ('__init__.py', 'common.py'):
      continue
    spec = importlib.util.spec_from_file_location(
      'contract_' + os.path.basename(path)[:-3], path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names.add(module.get_config().task)
  return sorted(names)


@pytest.mark.parametrize('name', _config_tasks())
def test_every_configured_task_satisfies_the_protocol(name):
  module = task_lib.load_task(name)
  assert isinstance(module, task_lib.Task)


def _fake_task(name, **replace):
  module = types.ModuleType(name)
  for fn in task_lib.REQUIRED_FUNCTIONS:
    setattr(module, fn, lambda *a, **k: None)

  def load(split, *, is_training, batch_dims, config, start_step=0):
    del split, is_training, batch_dims, config, start_step

  module.load = load
  for key, value in replace.items():
    setattr(module, key, value)
  return module


def test_a_task_without_start_step_is_refused(monkeypatch):
  def load(split, *, is_training, batch_dims, config):
    del split, is_training, batch_dims, config

  monkeypatch.setitem(sys.modules, 'fake_task_no_start', _fake_task('fake', load=load))
  with pytest.raises(ValueError, match="'start_step'"):
    task_lib.load_task('fake_task_no_start')


def test_a_task_missing_a_function_is_named(monkeypatch):
  module = _fake_task('fake')
  del module.summarize_eval
  monkeypatch.setitem(sys.modules, 'fake_task_missing', module)
  with pytest.raises(ValueError, match='summarize_eval'):
    task_lib.load_task('fake_task_missing')


def test_a_complete_task_is_accepted(monkeypatch):
  monkeypatch.setitem(sys.modules, 'fake_task_ok', _fake_task('fake'))
  assert task_lib.load_task('fake_task_ok') is sys.modules['fake_task_ok']


def test_example_batch_follows_the_batch_spec():
  module = _fake_task(
    'fake',
    batch_spec=lambda config: {
      'x': jax.ShapeDtypeStruct((3, 5), np.float32),
      'label': jax.ShapeDtypeStruct((), np.int32),
    },
  )
  batch = task_lib.example_batch(module, config=None, batch_size=7)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
    'x': ((7, 3, 5), np.float32),
    'label': ((7,), np.int32),
  }
  assert not any(v.any() for v in batch.values())  # Zeros: no data is read.


def test_empty_and_unimportable_names_are_clear_errors():
  with pytest.raises(ValueError, match='config.task is empty'):
    task_lib.load_task('')
  with pytest.raises(ValueError, match='cannot be imported'):
    task_lib.load_task('experiments.tasks.no_such_family.task')
