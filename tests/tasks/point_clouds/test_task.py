"""The point-cloud task: input pipeline, training of every variant, permutation invariance."""

import functools

import h5py
import haiku as hk
import jax
import numpy as np
import pytest

from configs import modelnet40 as modelnet40_config
from experiments.tasks.point_clouds import task
from experiments.training import trainer
from perceiver import io_processors
from perceiver import perceiver


def _write_h5_dataset(root, num_points=9):
  """3 classes; train: 7 clouds in 2 files, test: 5 clouds. Cloud i is i + offsets."""
  (root / 'shape_names.txt').write_text('cone\ncube\nsphere\n')
  offsets = np.arange(num_points * 3, dtype=np.float32).reshape(num_points, 3) / 10
  sizes = {'ply_data_train0.h5': 4, 'ply_data_train1.h5': 3, 'ply_data_test0.h5': 5}
  for name, n in sizes.items():
    with h5py.File(root / name, 'w') as f:
      f['data'] = np.stack([offsets * (i + 1) for i in range(n)]).astype(np.float32)
      f['label'] = (np.arange(n) % 3).astype(np.uint8)[:, None]
  return str(root)


def _config(variant='debug', **data):
  config = modelnet40_config.get_config(variant)
  config.unlock()
  for key, value in data.items():
    config.data[key] = value
  return config


def test_h5_pipeline_subsamples_normalises_and_pads(tmp_path):
  config = _config(
    dataset='modelnet40_h5',
    data_dir=_write_h5_dataset(tmp_path),
    num_points=5,
    num_classes=3,
    normalization='unit_cube',
  )
  assert task.num_examples('train', config) == 7
  batches = list(task.load('test', is_training=False, batch_dims=[1, 3], config=config))
  assert len(batches) == 2
  mask = np.concatenate([b['mask'].ravel() for b in batches])
  np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(batches[0]['labels'], [[0, 1, 2]])
  points = batches[0]['points'][0, 1]  # Cloud 1: its first 5 points, unit cube.
  raw = np.arange(15, dtype=np.float32).reshape(5, 3) / 10 * 2
  expected = (raw - (raw.min(0) + raw.max(0)) / 2) / ((raw.max(0) - raw.min(0)).max() / 2)
  np.testing.assert_allclose(points, expected, rtol=1e-5, atol=1e-6)

  train = task.load('train', is_training=True, batch_dims=[1, 4], config=config)
  first, second = next(train), next(train)
  assert first['points'].shape == (1, 4, 5, 3) and first['points'].dtype == np.float32
  assert first['labels'].shape == (1, 4)
  assert np.abs(first['points']).max() <= 1 + 1e-6
  # A resumed iterator starts where a fresh one is at that step.
  resumed = next(
    task.load('train', is_training=True, batch_dims=[1, 4], config=config, start_step=1)
  )
  np.testing.assert_array_equal(resumed['points'], second['points'])
  np.testing.assert_array_equal(resumed['labels'], second['labels'])


def test_bad_label_in_h5_fails_naming_the_file(tmp_path):
  root = _write_h5_dataset(tmp_path)
  with h5py.File(tmp_path / 'ply_data_test0.h5', 'r+') as f:
    f['label'][2, 0] = 3
  config = _config(dataset='modelnet40_h5', data_dir=root, num_points=5, num_classes=3)
  with pytest.raises(ValueError, match='ply_data_test0.h5: label 3 of cloud 2'):
    task.load('test', is_training=False, batch_dims=[1, 2], config=config)
  config.data.num_classes = 40
  with pytest.raises(ValueError, match='lists 3 classes but data.num_classes=40'):
    task.load('train', is_training=False, batch_dims=[1, 2], config=config)


def test_summarize_eval():
  config = _config()
  per_example = {
    'labels': np.array([0, 0, 1, 1, 1]),
    'predictions': np.array([0, 0, 1, 0, 0]),
    'loss': np.array([1.0, 2, 3, 4, 5]),
    'top_1_acc': np.array([1.0, 1, 1, 0, 0]),
  }
  summary = task.summarize_eval(per_example, config)
  assert summary['overall_accuracy'] == pytest.approx(0.6)
  assert summary['mean_class_accuracy'] == pytest.approx((1 + 1 / 3) / 2)
  assert summary['loss'] == pytest.approx(3.0)


class _LatentsDecoder(perceiver.ProjectionDecoder):
  """The classifier's decoder (same name and parameters) returning the latents."""

  def __call__(self, query, z, *, is_training, query_mask=None):
    return z  # [B, N, D]


def _latents_model(config):
  """The task's model up to the encoder output, with the task model's parameter paths."""
  m = config.model

  def forward(batch):
    model = perceiver.Perceiver(
      input_preprocessor=io_processors.PointCloudPreprocessor(
        **m.input_preprocessor.to_dict()
      ),
      encoder=perceiver.PerceiverEncoder(**m.encoder.to_dict()),
      decoder=_LatentsDecoder(task.num_classes(config), **m.decoder.to_dict()),
    )
    return model(batch['points'], is_training=False)

  return hk.transform_with_state(forward)


@pytest.fixture(scope='module')
def trained_debug(tmp_path_factory):
  """The debug variant after 60 real training steps, and a test batch."""
  config = _config()
  config.training.num_steps = 60
  config.training.checkpoint_every_steps = 60
  config.optimizer.base_lr = 1e-2
  config.data.synthetic.rotation = 'none'
  final = trainer.train(config, str(tmp_path_factory.mktemp('pc_debug')))
  batch = next(task.load('test', is_training=False, batch_dims=[17], config=config))
  assert batch['mask'].sum() == 17  # The whole test split.
  permutation = np.random.default_rng(3).permutation(config.data.num_points)
  shuffled = dict(batch, points=batch['points'][:, permutation])
  return config, final, batch, shuffled


def test_encoder_output_ignores_point_order(trained_debug):
  """Holds for any parameters: checked on trained and on randomly perturbed ones."""
  config, final, batch, shuffled = trained_debug
  apply = jax.jit(_latents_model(config).apply)
  leaves, treedef = jax.tree.flatten(final.params)
  keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
  noisy = jax.tree.unflatten(
    treedef, [x + jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  )
  for params in (final.params, noisy):
    latents, _ = apply(params, final.state, None, batch)
    assert latents.shape == (17, 5, 8)
    latents_perm, _ = apply(params, final.state, None, shuffled)
    # Float32 sums in another order: rounding relative to the latents' scale (up to
    # ~200 with the perturbed weights); an order-dependent encoder differs by O(1).
    scale = float(np.abs(latents).max())
    np.testing.assert_allclose(latents, latents_perm, rtol=1e-4, atol=1e-5 * scale)
  assert not np.allclose(batch['points'][:, 0], shuffled['points'][:, 0])


def test_trained_predictions_ignore_point_order(trained_debug):
  config, final, batch, shuffled = trained_debug
  apply = jax.jit(functools.partial(task.build_model(config).apply, is_training=False))
  logits, _ = apply(final.params, final.state, None, batch)
  accuracy = np.mean(np.argmax(logits, -1) == batch['labels'])
  assert accuracy > 2 / 12  # Really trained: chance is 1/12.
  logits_perm, _ = apply(final.params, final.state, None, shuffled)
  np.testing.assert_allclose(logits, logits_perm, atol=1e-5)
  np.testing.assert_array_equal(logits.argmax(-1), logits_perm.argmax(-1))


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['perceiver', 'synthetic'])
def test_variant_trains_a_few_steps(variant, tmp_path):
  """Each variant's pipeline, loss and optimiser (the perceiver model shrunk)."""
  config = _config(variant)
  if variant == 'perceiver':
    (tmp_path / 'data').mkdir()
    config.data.data_dir = _write_h5_dataset(tmp_path / 'data', num_points=9)
    config.data.num_points = 7
    config.data.num_classes = 3
    encoder = config.model.encoder
    encoder.num_blocks, encoder.num_self_attends_per_block = 2, 1
    encoder.num_cross_attends, encoder.z_index_dim, encoder.num_z_channels = 2, 5, 8
    config.model.input_preprocessor.num_bands = 3
  else:
    config.data.synthetic.num_train = 24
    config.data.synthetic.num_test = 5
  config.training.num_steps = 2
  config.training.num_epochs = None
  config.training.batch_size = 4
  config.training.checkpoint_every_steps = 2
  config.evaluation.batch_size = 4
  final = trainer.train(config, str(tmp_path / 'work'))
  assert int(final.step) == 2
