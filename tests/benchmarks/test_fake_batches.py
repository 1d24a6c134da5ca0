"""The NumPy batch builders give exactly the keys, shapes and dtypes of the real tasks."""

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
def test_builder_matches_task_pipeline(make_config):
  config = make_config()
  batch_dims = [1, 3]
  built = fake_batches.train_batch(config, batch_dims)
  assert _layout(built) == _layout(_real_batch(config, batch_dims))
  assert fake_batches.BUILDERS[config.task]  # Every builder is keyed by its task.


def test_builder_values():
  config = _mlm()
  batch = fake_batches.train_batch(config, [1, 5], seed=3)
  masked = batch['weights'] == 1.0
  np.testing.assert_array_equal(batch['inputs'][~masked], batch['targets'][~masked])
  assert np.all(batch['inputs'][masked] == 3)  # MASK.
  assert batch['targets'].min() >= 6 and batch['targets'].max() < 262
  images = fake_batches.train_batch(_imagenet(True), [1, 5])
  np.testing.assert_allclose(images['labels'].sum(-1), 1.0)
  with pytest.raises(ValueError, match='experiments.tasks.digits.task'):
    fake_batches.train_batch(
      ml_collections.ConfigDict({'task': 'experiments.tasks.digits.task'}), [1, 3]
    )
