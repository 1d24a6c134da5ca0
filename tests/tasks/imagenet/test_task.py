"""Tests of the ImageNet task (experiments/tasks/imagenet/task.py) and its configs."""

import json
import os

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import imagenet as imagenet_config
from experiments.tasks.imagenet import task as imagenet
from experiments.training import trainer
from perceiver import io_processors
from perceiver import perceiver


def _param_shapes(variant):
  config = imagenet_config.get_config(variant)
  model = imagenet.build_model(config)
  batch = {'images': jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)}
  params, state = jax.eval_shape(
    lambda rng, b: model.init(rng, b, is_training=True), jax.random.PRNGKey(0), batch
  )
  flat = {
    f'{module}/{name}': tuple(value.shape)
    for module, name, value in hk.data_structures.traverse(params)
  }
  return flat, state


def test_io_fourier_has_the_release_parameter_count_and_paths():
  shapes, state = _param_shapes('io_fourier')
  assert sum(np.prod(s) for s in shapes.values()) == 48_440_627
  assert not state
  assert shapes['perceiver_encoder/~/cross_attention/attention/linear/w'] == (1024, 261)
  assert shapes['perceiver_encoder/~/trainable_position_encoding/pos_embs'] == (512, 1024)
  assert shapes['classification_decoder/~/basic_decoder/output/w'] == (1024, 1000)
  assert shapes[
    'classification_decoder/~/basic_decoder/~/trainable_position_encoding/pos_embs'
  ] == (1, 1024)
  assert 'perceiver_encoder/~/self_attention_5/mlp/linear_1/w' in shapes
  assert not any('self_attention_6' in k for k in shapes)


def test_perceiver_paper1_variant_is_44_9m_with_shared_cross_attends():
  shapes, _ = _param_shapes('perceiver')
  count = sum(np.prod(s) for s in shapes.values())
  assert abs(count - 44.9e6) / 44.9e6 < 0.01, count
  # One unshared first cross-attend and one shared by the other seven.
  cross = {k.split('/')[2] for k in shapes if '/cross_attention' in k}
  assert cross == {'cross_attention', 'cross_attention_1'}
  assert shapes['projection_decoder/~/logits/w'] == (1024, 1000)


@pytest.mark.parametrize(
  'variant, published', [('io_learned', 62.3e6), ('io_conv', 48.6e6)]
)
def test_other_release_variants_match_the_published_sizes(variant, published):
  shapes, state = _param_shapes(variant)
  count = sum(np.prod(s) for s in shapes.values())
  assert abs(count - published) / published < 0.002, count  # Rounded to 0.1M.
  if variant == 'io_conv':
    assert shapes['image_preprocessor/~/conv2_d_downsample/~/conv/w'] == (7, 7, 3, 64)
    assert jax.tree.leaves(state)  # BatchNorm moving statistics.
  else:
    assert shapes[
      'image_preprocessor/~_build_network_inputs/trainable_position_encoding/pos_embs'
    ] == (224 * 224, 256)


@pytest.mark.parametrize(
  'kwargs',
  [
    dict(prep_type='pixels', spatial_downsample=1),
    dict(prep_type='pixels', spatial_downsample=2),
    dict(prep_type='conv1x1', spatial_downsample=3, num_channels=5),
    dict(prep_type='conv', spatial_downsample=4, num_channels=5),
    dict(prep_type='conv', spatial_downsample=16, num_channels=5),
  ],
)
def test_num_preprocessed_inputs_matches_the_preprocessor(kwargs):
  kwargs = dict(
    kwargs,
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(8, 8)),
  )
  images = jax.ShapeDtypeStruct((1, 13, 9, 3), jnp.float32)
  model = hk.transform_with_state(
    lambda x: io_processors.ImagePreprocessor(**kwargs)(x, is_training=True)[0]
  )
  out = jax.eval_shape(
    lambda x: model.apply(*model.init(jax.random.PRNGKey(0), x), None, x)[0], images
  )
  assert imagenet.num_preprocessed_inputs((13, 9), kwargs) == out.shape[1]


def _debug_batch(config, seed=0):
  size = config.data.image_size
  rng = np.random.RandomState(seed)
  return {
    'images': rng.normal(size=(3, size, size, 3)).astype(np.float32),
    'labels': rng.randint(0, 1000, size=(3,)).astype(np.int32),
  }


def test_permuted_inputs_reach_the_model_and_leave_logits_unchanged(monkeypatch):
  received = []

  class SpyPerceiver(perceiver.Perceiver):
    def __init__(self, *args, **kwargs):
      received.append(kwargs.get('input_permutation'))
      super().__init__(*args, **kwargs)

  monkeypatch.setattr(imagenet.perceiver, 'Perceiver', SpyPerceiver)
  config = imagenet_config.get_config('debug')
  batch = _debug_batch(config)
  model = imagenet.build_model(config)
  config.model.permute_inputs = True
  permuted = imagenet.build_model(config)

  @jax.jit
  def both_logits(batch):
    params, state = model.init(jax.random.PRNGKey(1), batch, is_training=True)
    rng = jax.random.PRNGKey(2)
    logits, _ = model.apply(params, state, rng, batch, is_training=False)
    permuted_logits, _ = permuted.apply(params, state, rng, batch, is_training=False)
    return logits, permuted_logits

  logits, permuted_logits = both_logits(batch)
  assert received[0] is None
  permutation = received[-1]
  assert sorted(permutation.tolist()) == list(range(16 * 16))
  assert not np.array_equal(permutation, np.arange(16 * 16))
  np.testing.assert_array_equal(permutation, imagenet.input_permutation(256, 0))
  # Attention over the inputs is permutation invariant once positions are attached
  # (paper 1, Table 2: 78.0 on ImageNet and on permuted ImageNet).
  assert not np.allclose(logits[0], logits[1])
  np.testing.assert_allclose(permuted_logits, logits, atol=2e-5)


def test_train_loss_and_eval_metrics_on_hand_computed_values():
  config = imagenet_config.get_config('debug')
  rng = np.random.RandomState(3)
  logits = jnp.asarray(rng.normal(size=(4, 1000)).astype(np.float32))
  soft = np.zeros((4, 1000), np.float32)
  soft[np.arange(4), [1, 2, 3, 4]] = 0.7
  soft[np.arange(4), [9, 8, 7, 6]] = 0.3
  loss, metrics = imagenet.train_loss(logits, {'labels': jnp.asarray(soft)}, config)
  log_probs = jax.nn.log_softmax(logits)
  targets = 0.9 * soft + 0.1 / 1000
  np.testing.assert_allclose(loss, -np.mean(np.sum(targets * log_probs, -1)), rtol=1e-5)
  assert set(metrics) >= {'loss', 'top_1_acc', 'top_5_acc'}

  labels = jnp.asarray(
    np.argsort(-np.asarray(logits), axis=-1)[:, [0, 3, 7, 0]].diagonal().astype(np.int32)
  )  # ranks 1, 4, 8, 1
  outputs = imagenet.eval_outputs(logits, {'labels': labels}, config)
  np.testing.assert_array_equal(outputs['top_1_acc'], [1, 0, 0, 1])
  np.testing.assert_array_equal(outputs['top_5_acc'], [1, 1, 0, 1])
  np.testing.assert_allclose(
    outputs['loss'], -np.asarray(log_probs)[np.arange(4), np.asarray(labels)], rtol=1e-5
  )
  summary = imagenet.summarize_eval(jax.tree.map(np.asarray, outputs), config)
  assert summary['top_1_acc'] == 0.5 and summary['top_5_acc'] == 0.75


def test_configs_are_locked_and_reject_unknown_variants():
  config = imagenet_config.get_config()
  assert config.model.input_preprocessor.prep_type == 'pixels'
  with pytest.raises(AttributeError):
    config.data.mixup = 0.3  # Typo of mixup_alpha.
  with pytest.raises(ValueError, match='io_fourier'):
    imagenet_config.get_config('resnet')
  paper1 = imagenet_config.get_config('perceiver')
  assert paper1.optimizer.schedule.type == 'step'
  np.testing.assert_allclose(
    np.array(paper1.optimizer.schedule.decay_boundaries) * 120, [84, 102, 114]
  )


@pytest.mark.slow
def test_debug_variant_trains_and_evaluates_on_mock_data(tmp_path):
  config = imagenet_config.get_config('debug')
  config.data.fake = True
  config.training.num_steps = 4
  state = trainer.train(config, str(tmp_path), evaluate=True)
  assert int(state.step) == 4
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if r['split'] == 'train']
  evals = [r for r in records if r['split'] != 'train']
  assert [r['step'] for r in train] == [2, 4]
  assert all(np.isfinite(r['loss']) for r in train)
  (final,) = evals
  assert final['num_examples'] == config.data.fake_num_examples
  assert 0.0 <= final['top_1_acc'] <= final['top_5_acc'] <= 1.0
  # Untrained on random labels: close to chance, log(1000) = 6.9.
  assert 5.5 < final['loss'] < 8.5
