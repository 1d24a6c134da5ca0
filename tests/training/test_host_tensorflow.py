"""TensorFlow, which feeds the input pipelines, never sees a GPU."""

import os
import subprocess
import sys
import textwrap
import types

from absl import logging
import pytest

from experiments.training import host_tensorflow
from experiments.training import metrics_writer
from tests import helpers


class _FakeConfig:
  """tf.config with one GPU; `initialised` makes set_visible_devices fail as TF does."""

  def __init__(self, initialised=False):
    self.initialised = initialised
    self.visible = ['GPU:0']
    self.calls = []

  def list_physical_devices(self, kind):
    assert kind == 'GPU'
    return ['GPU:0']

  def get_visible_devices(self, kind):
    assert kind == 'GPU'
    return list(self.visible)

  def set_visible_devices(self, devices, kind):
    self.calls.append((devices, kind))
    if self.initialised:
      raise RuntimeError('Visible devices cannot be modified after being initialized')
    self.visible = list(devices)


@pytest.fixture
def not_hidden(monkeypatch):
  monkeypatch.setattr(host_tensorflow, '_hidden', False)


def test_keep_on_host_hides_gpus_once(not_hidden):
  fake = types.SimpleNamespace(config=_FakeConfig())
  host_tensorflow.keep_on_host(fake)
  assert fake.config.calls == [([], 'GPU')]
  assert fake.config.visible == []
  assert host_tensorflow.is_kept_on_host()
  host_tensorflow.keep_on_host(fake)  # Idempotent: no second call.
  assert fake.config.calls == [([], 'GPU')]


def test_too_late_is_reported(not_hidden, monkeypatch):
  warnings = []
  monkeypatch.setattr(logging, 'warning', lambda msg, *a: warnings.append(msg % a))
  fake = types.SimpleNamespace(config=_FakeConfig(initialised=True))
  host_tensorflow.keep_on_host(fake)
  assert not host_tensorflow.is_kept_on_host()
  assert len(warnings) == 1 and "initialised GPUs ['GPU:0']" in warnings[0]


_IMPORTS = textwrap.dedent("""
    import importlib, sys
    import tensorflow as tf
    from experiments.training import host_tensorflow
    for name in sys.argv[1:]:
      host_tensorflow._hidden = False
      importlib.import_module(name)  # First import: runs the module's own call.
      assert host_tensorflow.is_kept_on_host(), name
    assert tf.config.get_visible_devices('GPU') == []
    print('ok')
""")


def test_pipelines_hide_gpus_on_import():
  # A fresh process, so that each module's first import is the one observed.
  modules = [
    'experiments.tasks.language.masking',
    'experiments.tasks.language.mlm_pipeline',
    'experiments.tasks.imagenet.input_pipeline',
  ]
  result = subprocess.run(
    [sys.executable, '-c', _IMPORTS, *modules],
    cwd=helpers.REPO_ROOT,
    env=dict(os.environ, PYTHONPATH=helpers.REPO_ROOT),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-2000:]


def test_summary_writer_hides_gpus(not_hidden, tmp_path):
  writer = metrics_writer.MetricsWriter(str(tmp_path), total_steps=3, batch_size=5)
  assert host_tensorflow.is_kept_on_host()
  writer.close()
