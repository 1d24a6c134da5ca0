"""The device-prefetching iterator and the scale options' config checks."""

import jax
import numpy as np
import pytest

from experiments.training import prefetch
from experiments.training import validation
from tests.training import test_train


class _Recorder:
  """A `put` that records when each batch was placed."""

  def __init__(self):
    self.placed = []

  def __call__(self, batch):
    self.placed.append(batch)
    return ('on device', batch)


def test_order_and_lookahead():
  put = _Recorder()
  iterator = prefetch.prefetch_to_device(range(7), 2, put)
  assert put.placed == []  # Nothing is read before the first request.
  assert next(iterator) == ('on device', 0)
  assert put.placed == [0, 1, 2]  # Two batches travel while step 0 runs.
  assert [b for _, b in iterator] == [1, 2, 3, 4, 5, 6]
  assert put.placed == list(range(7))


@pytest.mark.parametrize('size', [0, 1, 3, 10])
def test_finite_source_ends_cleanly(size):
  put = _Recorder()
  got = list(prefetch.prefetch_to_device(iter(range(5)), size, put))
  assert got == [('on device', i) for i in range(5)]
  assert list(prefetch.prefetch_to_device([], size, put)) == []


def test_source_error_is_raised_after_the_batches_before_it():
  def source():
    yield from range(3)
    raise OSError('disk gone at batch 3')

  iterator = prefetch.prefetch_to_device(source(), 2, _Recorder())
  assert [next(iterator)[1] for _ in range(3)] == [0, 1, 2]
  with pytest.raises(OSError, match='disk gone at batch 3'):
    next(iterator)


def test_real_device_put_keeps_values():
  batches = [{'x': np.full((1, 3), i, np.float32)} for i in range(4)]
  got = list(prefetch.prefetch_to_device(batches, 2, jax.device_put))
  assert [float(b['x'][0, 0]) for b in got] == [0.0, 1.0, 2.0, 3.0]
  assert all(isinstance(b['x'], jax.Array) for b in got)


def test_negative_size_is_refused():
  with pytest.raises(ValueError, match='prefetch_to_device=-1 must be >= 0'):
    prefetch.prefetch_to_device([], -1, _Recorder())


@pytest.mark.parametrize(
  'field, value, message',
  [
    (
      'training.grad_accum_steps',
      3,
      r'per-device batch 20 \(config.training.batch_size=20 over 1 device\(s\)\) '
      r'is not divisible by config.training.grad_accum_steps=3',
    ),
    ('training.grad_accum_steps', 0, 'grad_accum_steps=0 must be a positive integer'),
    ('training.prefetch_to_device', -2, 'prefetch_to_device=-2 must be an integer >= 0'),
    ('parallel.strategy', 'mesh', "strategy='mesh' is not one of"),
    ('parallel.fsdp', True, 'fsdp=True needs config.parallel.strategy=sharded'),
  ],
)
def test_scale_options_are_checked(field, value, message):
  config = test_train.tiny_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    validation.check_training(config, None)
