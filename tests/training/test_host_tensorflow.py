"""TensorFlow, which feeds the input pipelines, never sees a GPU."""

import importlib
import types

from absl import logging
import pytest

from experiments.training import host_tensorflow
from experiments.training import metrics_writer


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


@pytest.mark.parametrize(
  'module',
  [
    'experiments.tasks.imagenet.input_pipeline',
    'experiments.tasks.language.masking',
    'experiments.tasks.language.mlm_pipeline',
  ],
)
def test_pipelines_hide_gpus_on_import(not_hidden, module):
  importlib.reload(importlib.import_module(module))
  assert host_tensorflow.is_kept_on_host()
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  assert tf.config.get_visible_devices('GPU') == []


def test_summary_writer_hides_gpus(not_hidden, tmp_path):
  writer = metrics_writer.MetricsWriter(str(tmp_path), total_steps=3, batch_size=5)
  assert host_tensorflow.is_kept_on_host()
  writer.close()
