"""The Perceiver AR task: contract, loss by hand, and every variant end to end (tiny)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import perceiver_ar as perceiver_ar_config
from experiments.tasks.perceiver_ar import task
from experiments.training import task as task_lib
from experiments.training import trainer


def test_task_satisfies_the_contract_and_describes_its_inputs():
  task_lib.check_task(task)
  config = perceiver_ar_config.get_config('tiny')
  spec = task.batch_spec(config)
  batch = next(task.load('train', is_training=True, batch_dims=[2], config=config))
  assert set(batch) == set(spec) == {'inputs', 'input_idxs', 'targets', 'weights'}
  for name, want in spec.items():
    assert batch[name].shape[1:] == want.shape and batch[name].dtype == want.dtype
  model = task.build_model(config)
  params, state = jax.eval_shape(
    lambda: model.init(
      jax.random.PRNGKey(0), task_lib.example_batch(task, config), is_training=True
    )
  )
  assert 'perceiver_ar/~/embed' in params


def test_loss_and_evaluation_by_hand():
  """Uniform logits: every target costs log K nats; two latents, one before the start."""
  config = perceiver_ar_config.get_config('tiny')
  k = 259
  outputs = {
    'logits': jnp.zeros((1, 2, k)),
    'latent_last_steps': jnp.array([[-1, 1]]),
  }
  batch = {
    'inputs': jnp.array([[2, 7, 0]]),
    'targets': jnp.array([[7, 9, 0]]),
    'weights': jnp.array([[1.0, 1.0, 0.0]]),
  }
  loss, metrics = task.train_loss(outputs, batch, config)
  # Only the latent at position 1 counts: nll log K plus z-loss 1e-4 (log K)^2.
  assert float(metrics['nll']) == pytest.approx(math.log(k), rel=1e-6)
  assert float(loss) == pytest.approx(math.log(k) + 1e-4 * math.log(k) ** 2, rel=1e-6)
  assert float(metrics['bits_per_token']) == pytest.approx(math.log2(k), rel=1e-6)
  per_example = jax.device_get(task.eval_outputs(outputs, batch, config))
  np.testing.assert_allclose(per_example['num_scored'], [1.0])
  # The weighted target at position 0 has no latent: reported, and refused.
  np.testing.assert_allclose(per_example['num_unreached'], [1.0])
  with pytest.raises(ValueError, match='1 scored targets had no latent'):
    task.summarize_eval(per_example, config)
  per_example['num_unreached'] = np.zeros(1)
  summary = task.summarize_eval(per_example, config)
  assert summary['bits_per_token'] == pytest.approx(math.log2(k), rel=1e-6)


def test_bad_settings_are_named():
  config = perceiver_ar_config.get_config('tiny')
  config.evaluation.eval_block_size = 17
  with pytest.raises(ValueError, match='eval_block_size=17 must be in'):
    task.num_examples('validation', config)
  config = perceiver_ar_config.get_config('tiny')
  config.data.source = 'audio'
  with pytest.raises(ValueError, match="source='audio' is not one of"):
    task.build_model(config)
  config = perceiver_ar_config.get_config('tiny')
  config.data.max_context_length = 20
  with pytest.raises(ValueError, match='shorter than data.sequence_length=32'):
    task.num_examples('validation', config)
  config = perceiver_ar_config.get_config('tiny')
  config.data.update(source='text', curriculum_contexts=(16,), curriculum_stage_steps=1)
  with pytest.raises(
    ValueError, match=r'curriculum_contexts=\(16,\) is for the copy task'
  ):
    task.load('train', is_training=True, batch_dims=[2], config=config)


def _tiny(variant, tmp_path):
  """The variant's data source and pipeline with a tiny model and few steps."""
  config = perceiver_ar_config.get_config(variant)
  model = config.model.perceiver_ar
  model.update(
    input_embed_dim=8,
    num_z_channels=8,
    num_cross_attend_heads=2,
    num_transformer_heads=2,
    num_transformers_per_block=1,
    cross_attention_head_group_size=0,
  )
  if config.data.source == 'copy':
    length = 64 if variant != 'tiny' else 32
    config.data.update(
      max_context_length=length,
      sequence_length=length,
      minimum_crop_length=length // 2,
      eval_sequences=3,
    )
    model.update(z_index_dim=8, max_wavelength=length)
    config.evaluation.eval_block_size = 8
    if config.data.curriculum_contexts:  # One window stage, then the whole crops.
      config.data.update(curriculum_contexts=(16,), curriculum_stage_steps=1)
  elif config.data.source == 'text':
    for i in range(12):
      (tmp_path / f'{i}.txt').write_bytes(f'line {i} of some text\n'.encode() * 20)
    config.data.update(
      files=str(tmp_path / '*.txt'),
      max_context_length=48,
      eval_bytes=100,
      heldout_fraction=0.3,
    )
    model.update(z_index_dim=12, max_wavelength=48)
    config.evaluation.eval_block_size = 12
  else:
    config.data.update(fake=True, fake_num_examples=2, max_context_length=12416)
    model.update(z_index_dim=8, max_wavelength=12416)
    config.evaluation.eval_block_size = 8
    config.data.eval_images = 1
  config.optimizer.schedule.warmup_steps = 1
  config.training.update(
    batch_size=2, num_steps=2, log_every_steps=1, checkpoint_every_steps=2
  )
  config.evaluation.batch_size = 4
  return config


def test_tiny_copy_trains_and_evaluates(tmp_path):
  config = _tiny('tiny', tmp_path)
  final = trainer.train(config, str(tmp_path / 'work'))
  assert int(final.step) == 2
  summary = trainer.run(config, str(tmp_path / 'work'), 'eval')
  assert summary['num_scored'] == 3 * 15
  assert 0.0 <= summary['accuracy'] <= 1.0 and summary['bits_per_token'] > 4.0


@pytest.mark.slow
@pytest.mark.parametrize(
  'variant', ['copy_32', 'copy_long', 'bytes', 'imagenet64', 'copy_131072']
)
def test_variant_trains_and_evaluates(variant, tmp_path):
  config = _tiny(variant, tmp_path)
  final = trainer.train(config, str(tmp_path / 'work'))
  assert int(final.step) == 2
  summary = trainer.run(config, str(tmp_path / 'work'), 'eval')
  bits = {'text': 'bits_per_byte', 'imagenet64': 'bits_per_dim'}.get(
    config.data.source, 'bits_per_token'
  )
  assert np.isfinite(summary[bits]) and summary[bits] > 0
  if config.data.source == 'text':
    assert summary['bigram_bits_per_byte'] < summary['unigram_bits_per_byte']
  if config.data.source == 'imagenet64':
    assert summary['num_scored'] == 12288
