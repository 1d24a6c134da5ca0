"""The NumPy batches give exactly the keys, shapes and dtypes of the real tasks."""

import ml_collections
import numpy as np
import pytest

from configs import imagenet as imagenet_config
from configs import mlm as mlm_config
from experiments.benchmarks import fake_batches
from experiments.benchmarks import train_step
from experiments.training import task as task_lib


def _layout(batch):
  return {k: (v.shape, v.dtype) for k, v in batch.items()}


def _real_batch(config, batch_dims):
  task = task_lib.load_task(config.task)
  iterator = task.load('train', is_training=True, batch_dims=batch_dims, config=config)
  return next(iterator)


def _imagenet(mixing: bool) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(imagenet_config.get_config('debug').to_dict())
  config.data.fake_num_examples = 7
  config.data.randaugment_layers = 0
  if not mixing:
    config.data.mixup_alpha = 0.0
    config.data.cutmix = False
  return train_step.fake_data_config(config)


def _mlm() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(mlm_config.get_config('debug').to_dict())
  config.data.seq_len = 7
  config.data.fake_documents = 8
  config.data.shuffle_buffer = 4
  config.data.document_shuffle_buffer = 4
  return train_step.fake_data_config(config)


@pytest.mark.parametrize(
  'make_config',
  [lambda: _imagenet(False), lambda: _imagenet(True), _mlm],
  ids=['imagenet', 'imagenet_mixing', 'mlm'],
)
def test_fake_batch_matches_task_pipeline(make_config):
  config = make_config()
  batch_dims = [1, 3]
  built = fake_batches.train_batch(config, batch_dims)
  assert _layout(built) == _layout(_real_batch(config, batch_dims))


def test_fake_batch_values_are_seeded_and_in_range():
  config = _imagenet(True)
  first = fake_batches.train_batch(config, [1, 5], seed=3)
  again = fake_batches.train_batch(config, [1, 5], seed=3)
  other = fake_batches.train_batch(config, [1, 5], seed=4)
  np.testing.assert_array_equal(first['images'], again['images'])
  assert not np.array_equal(first['images'], other['images'])
  assert 0.0 <= first['images'].min() and first['images'].max() < 1.0
  batch = fake_batches.train_batch(_mlm(), [1, 5])
  np.testing.assert_array_equal(batch['input_mask'], np.ones([1, 5, 7], np.int32))
