"""The multimodal task: data contract, training targets, a few training steps on each
data source, evaluation summary, and the kinetics variant's release shapes."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import multimodal as multimodal_config
from experiments.tasks.multimodal import task
from tests.tasks.multimodal import fixtures


def test_train_targets_gather_the_decoded_points():
  video = np.arange(2 * 3 * 2 * 2 * 3, dtype=np.float32).reshape(2, 3, 2, 2, 3)
  audio = np.arange(2 * 8, dtype=np.float32).reshape(2, 8)
  outputs = {'image_points': jnp.array([0, 5, 11]), 'audio_points': jnp.array([3, 1])}
  got = task.train_targets(
    outputs, {'video': video, 'audio': audio, 'label': np.array([4, 2])}, 2
  )
  # Pixel 5 of the flat [T, H, W] = frame 1, row 0, column 1.
  np.testing.assert_array_equal(got['image'][0, 1], video[0, 1, 0, 1])
  np.testing.assert_array_equal(got['image'][1, 2], video[1, 2, 1, 1])
  np.testing.assert_array_equal(got['audio'], [[6, 7, 2, 3], [14, 15, 10, 11]])


def test_moving_digits_batches_follow_the_contract():
  config = multimodal_config.get_config('debug')  # 64 train, 12 test clips.
  assert (
    task.num_examples('train', config) == 64 and task.num_examples('test', config) == 12
  )
  it = task.load('train', is_training=True, batch_dims=(1, 5), config=config)
  batches = [next(it) for _ in range(3)]
  resumed = next(
    task.load('train', is_training=True, batch_dims=(1, 5), config=config, start_step=2)
  )
  np.testing.assert_array_equal(resumed['video'], batches[2]['video'])
  evals = list(task.load('test', is_training=False, batch_dims=(1, 5), config=config))
  assert len(evals) == 3
  np.testing.assert_array_equal(evals[-1]['mask'], [[1, 1, 0, 0, 0]])
  assert not np.any(evals[-1]['video'][0, 2:]) and not np.any(evals[-1]['audio'][0, 2:])
  labels = np.concatenate([b['label'][0] for b in evals])[:12]
  np.testing.assert_array_equal(
    labels, task.moving_digits.labels(task.clip_spec(config), 'test', range(12), seed=0)
  )


def _step_fn(model, config, optimizer):
  def loss(params, batch, rng):
    outputs, _ = model.apply(params, {}, rng, batch, is_training=True)
    return task.train_loss(outputs, batch, config)

  @jax.jit
  def step(params, opt_state, batch, rng):
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  return step


@pytest.mark.slow
def test_a_few_training_steps_on_each_data_source():
  """Five Adam steps on one batch lower the loss, from generated digits and from a
  folder of written video files (both at the debug sizes, so one compiled step)."""
  digits = multimodal_config.get_config('debug')
  folder = multimodal_config.get_config('debug')
  with folder.unlocked():
    folder.data.dataset = 'video_folder'
    folder.data.fake = True  # A generated Kinetics-layout folder of mp4 files.
    folder.data.video_folder.num_workers = 0
  model = task.build_model(digits)
  optimizer = optax.adam(3e-3)
  step = _step_fn(model, digits, optimizer)
  for config in (digits, folder):
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      batch = next(task.load('train', is_training=True, batch_dims=(3,), config=config))
    params, _ = fixtures.random_params(
      functools.partial(model.init, is_training=True), jax.random.PRNGKey(0), batch
    )
    opt_state = optimizer.init(params)
    losses = []
    for i in range(6):
      params, opt_state, value = step(params, opt_state, batch, jax.random.PRNGKey(i))
      losses.append(float(value))
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], (
      config.data.dataset,
      losses,
    )


def test_summary_reports_metrics_and_baselines():
  config = multimodal_config.get_config('debug')
  n = task.num_examples('test', config)
  labels = task.moving_digits.labels(task.clip_spec(config), 'test', range(n), seed=0)
  per_example = {'video_psnr': np.arange(n, dtype=np.float32), 'label': labels}
  summary = task.summarize_eval(per_example, config)
  assert summary['video_psnr'] == (n - 1) / 2
  train = task.train_labels(config)
  majority = np.bincount(train, minlength=10).argmax()
  assert summary['baseline_majority_top_1_acc'] == np.mean(labels == majority)
  assert 'label' not in summary and 'baseline_majority_top_5_acc' in summary


def test_mean_frame_baseline_averages_the_training_clips():
  config = multimodal_config.get_config('debug')
  with config.unlocked():
    config.evaluation.mean_frame_clips = 5
  clips = task.moving_digits.make_clips(task.clip_spec(config), 'train', range(5), seed=0)
  np.testing.assert_allclose(
    task.train_mean_frame(config), clips['video'].mean(axis=(0, 1)), rtol=1e-6
  )
  batch = task.moving_digits.make_clips(task.clip_spec(config), 'test', range(2), seed=0)
  batch = {k: batch[k] for k in ('video', 'audio', 'label')}
  outputs = {
    'image': batch['video'],
    'audio': batch['audio'],
    'label': np.zeros((2, 10), np.float32),
  }
  per_example = task.eval_outputs(outputs, batch, config)
  frame = task.train_mean_frame(config)
  want = 10 * np.log10(1 / np.mean((batch['video'] - frame) ** 2, axis=(1, 2, 3, 4)))
  np.testing.assert_allclose(
    per_example['baseline_mean_frame_video_psnr'], want, rtol=1e-5
  )


def test_kinetics_variant_has_the_release_shapes():
  config = multimodal_config.get_config('kinetics')
  model = task.build_model(config)
  batch = {
    'video': jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32),
    'audio': jax.ShapeDtypeStruct((1, 30720), jnp.float32),
    'label': jax.ShapeDtypeStruct((1,), jnp.int32),
  }
  params, _ = jax.eval_shape(
    functools.partial(model.init, is_training=True), jax.random.PRNGKey(0), batch
  )
  shape = lambda m, n: tuple(params[m][n].shape)  # noqa: E731
  # Inputs: image 48 + 3 * 65 = 243, audio 16 + 385 = 401, label 700 channels -> 704.
  assert shape('multimodal_preprocessor/image_padding', 'pos_embs') == (1, 704 - 243)
  assert shape('multimodal_preprocessor/audio_padding', 'pos_embs') == (1, 704 - 401)
  assert shape('multimodal_preprocessor/label_padding', 'pos_embs') == (1, 4)
  assert shape('encoder/~/trainable_position_encoding', 'pos_embs') == (784, 512)
  assert shape('encoder/~/cross_attention/attention/linear_1', 'w') == (704, 704)
  # Queries: image 195, audio 385, label 1,024 channels -> 1,026.
  assert shape('multimodal_decoder/~decoder_query/image_padding', 'pos_embs') == (1, 831)
  assert shape('multimodal_decoder/~decoder_query/audio_padding', 'pos_embs') == (1, 641)
  assert shape('multimodal_decoder/~/basic_decoder/output', 'w') == (1026, 512)
  assert shape('classification_postprocessor/linear', 'w') == (512, 700)
  assert shape('audio_postprocessor/linear', 'w') == (512, 16)
  assert shape('projection_postprocessor/linear', 'w') == (512, 3)
  # 8 self-attends of 8 modules each (4 attention linears, 2 MLP linears, 2 norms).
  assert len([k for k in params if k.startswith('encoder/~/self_attention')]) == 8 * 8
  assert 'encoder/~/self_attention_7/attention/linear' in params
