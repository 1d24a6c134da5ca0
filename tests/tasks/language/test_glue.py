"""Tests of the GLUE task (experiments/tasks/language/glue.py): model, pretrained init, losses, training."""

import copy
import functools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import glue as glue_config
from configs import mlm as mlm_config
from experiments.tasks.language import glue
from experiments.tasks.language import mlm
from experiments.training import errors
from experiments.training import steps
from experiments.training import trainer
from experiments.training import weights
from perceiver import checkpoint as checkpoint_lib


def tiny_glue_config(task='mrpc', **model):
  """configs/glue.py:<task>,debug with a smaller encoder and 40-byte inputs."""
  config = glue_config.get_config(f'{task},debug')
  m = config.model
  m.max_seq_len, m.d_model = 48, 24
  m.encoder.update(
    z_index_dim=6,
    num_z_channels=32,
    num_self_attends_per_block=1,
    num_cross_attend_heads=2,
    num_self_attend_heads=2,
    qk_channels=16,
    v_channels=32,
  )
  m.decoder.update(num_z_channels=32, num_heads=2, qk_channels=16, v_channels=32)
  m.decoder.trainable_position_encoding_kwargs.num_channels = 32
  for key, value in model.items():
    m[key] = value
  config.data.seq_len = 40
  config.data.shuffle_buffer = 8
  return config


def tiny_mlm_config():
  """configs/mlm.py:debug with the embedding and encoder of `tiny_glue_config`."""
  source = tiny_glue_config().model
  config = mlm_config.get_config('debug')
  m = config.model
  m.max_seq_len, m.d_model = source.max_seq_len, source.d_model
  m.encoder = copy.deepcopy(source.encoder)
  m.decoder.update(
    output_num_channels=24, num_z_channels=32, num_heads=2, qk_channels=16, v_channels=24
  )
  m.decoder.trainable_position_encoding_kwargs.num_channels = 24
  config.data.seq_len = 40
  return config


def _batch(length=40, batch=3):
  rng = np.random.default_rng(0)
  return dict(
    inputs=rng.integers(6, 262, [batch, length]).astype(np.int32),
    input_mask=np.ones([batch, length], np.int32),
  )


@functools.lru_cache(maxsize=1)
def _cached_mlm_params():
  config = tiny_mlm_config()
  params, _ = jax.jit(
    lambda: mlm.build_model(config).init(
      jax.random.PRNGKey(7), _batch(), is_training=False
    )
  )()
  return jax.device_get(params)


def _mlm_params():
  """Parameters of the MLM with the tiny GLUE configs' encoder fields (a copy)."""
  return {m: dict(d) for m, d in _cached_mlm_params().items()}


def test_classifier_paths_share_the_mlm_encoder():
  config = tiny_glue_config('mnli')
  model = glue.build_model(config)
  params, _ = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), _batch(), is_training=False)
  )
  mlm_params = jax.eval_shape(
    lambda: mlm.build_model(tiny_mlm_config()).init(
      jax.random.PRNGKey(0), _batch(), is_training=False
    )
  )[0]
  pretrained = weights.select_modules(config.model.init_modules)
  encoder = {m for m in params if pretrained(m)}
  assert encoder == {m for m in mlm_params if pretrained(m)}
  assert {
    'embed',
    'trainable_position_encoding',
    'perceiver_encoder/~/self_attention/mlp/linear',
  } <= encoder
  decoder = set(params) - encoder
  assert decoder and all(
    m.startswith('classification_decoder/~/basic_decoder') for m in decoder
  )
  out = params['classification_decoder/~/basic_decoder/output']['w']
  assert out.shape == (32, 3)
  query = params['classification_decoder/~/basic_decoder/~/trainable_position_encoding']
  assert query['pos_embs'].shape == (1, 32)


@pytest.mark.slow
@pytest.mark.parametrize('file_format', ['npz', 'pickle'])
def test_pretrained_init_takes_the_input_side_only(tmp_path, file_format):
  """The config's `init_modules` (embedding, positions, encoder) come from the MLM
  file, as arguments of the jitted initialisation; the classifier head starts fresh."""
  config = tiny_glue_config('stsb')
  source = _mlm_params()
  path = str(tmp_path / f'mlm.{file_format}')
  if file_format == 'npz':
    checkpoint_lib.save_npz(path, source)
  else:  # The official files are pickles of the params mapping.
    with open(path, 'wb') as f:
      pickle.dump({m: dict(d) for m, d in source.items()}, f)
  model = glue.build_model(config)
  select = weights.select_modules(config.model.init_modules)
  initial = weights.load(
    model, _batch(), path, arg_name='config.model.init_checkpoint', select=select
  )
  optimizer = optax.adamw(1e-3)
  state = steps.init_train_state(
    model, optimizer, _batch(), jax.random.PRNGKey(1), initial=initial
  )
  for module, entries in state.params.items():
    for name, value in entries.items():
      if select(module):
        np.testing.assert_array_equal(value, source[module][name])
      else:
        assert module not in source and module.startswith('classification_decoder')
  logits, _ = jax.jit(model.apply, static_argnames='is_training')(
    state.params, {}, jax.random.PRNGKey(2), _batch(), is_training=False
  )
  assert logits.shape == (3,)  # STS-B: one real value per example


def test_pretrained_init_rejects_a_mismatched_checkpoint(tmp_path):
  config = tiny_glue_config()
  source = _mlm_params()
  source['perceiver_encoder/~/self_attention/mlp/linear']['w'] = np.zeros([3, 3])
  del source['embed']
  path = str(tmp_path / 'bad.npz')
  checkpoint_lib.save_npz(path, source)
  with pytest.raises(
    errors.DataError,
    match=r'init_checkpoint=.*bad.npz.* 1 missing .*embed/embeddings.*1 parameter.s. '
    r'with other shapes .*self_attention/mlp/linear/w',
  ):
    weights.load(
      glue.build_model(config),
      _batch(),
      path,
      arg_name='config.model.init_checkpoint',
      select=weights.select_modules(config.model.init_modules),
    )


def test_losses_and_summary_by_hand():
  config = tiny_glue_config('mrpc')
  logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
  batch = dict(
    label=np.array([0, 0, 1], np.int32), truncated=np.array([0, 1, 0], np.int32)
  )
  loss, metrics = glue.train_loss(logits, batch, config)
  expected = -np.mean(
    np.log([np.exp(2) / (np.exp(2) + 1), 1 / (1 + np.e), np.exp(3) / (np.e + np.exp(3))])
  )
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert float(metrics['accuracy']) == pytest.approx(2 / 3)
  assert float(metrics['truncated_fraction']) == pytest.approx(1 / 3)
  out = {k: np.asarray(v) for k, v in glue.eval_outputs(logits, batch, config).items()}
  np.testing.assert_array_equal(out['prediction'], [0, 1, 1])
  summary = glue.summarize_eval(out, config)
  assert summary['accuracy'] == pytest.approx(2 / 3)
  assert summary['f1'] == pytest.approx(2 * 1 / (2 * 1 + 1))  # tp 1, fp 1, fn 0
  assert summary['loss'] == pytest.approx(expected, rel=1e-6)

  config = tiny_glue_config('stsb')
  preds = jnp.array([1.0, 2.0, 4.5])
  batch = dict(
    label=np.array([1.5, 2.0, 4.0], np.float32), truncated=np.zeros([3], np.int32)
  )
  loss, _ = glue.train_loss(preds, batch, config)
  assert float(loss) == pytest.approx((0.25 + 0 + 0.25) / 3)
  out = {k: np.asarray(v) for k, v in glue.eval_outputs(preds, batch, config).items()}
  summary = glue.summarize_eval(out, config)
  assert summary['spearman'] == pytest.approx(1.0)
  assert summary['pearson'] == pytest.approx(np.corrcoef([1, 2, 4.5], [1.5, 2, 4])[0, 1])


@pytest.mark.slow
def test_fine_tunes_on_tfds_mock_data_from_a_checkpoint(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  config = tiny_glue_config('rte')
  path = str(tmp_path / 'mlm.npz')
  checkpoint_lib.save_npz(path, _mlm_params())
  config.model.init_checkpoint = path
  config.training.num_steps = 3
  config.training.batch_size = 4
  config.evaluation.batch_size = 8
  config.optimizer.schedule.warmup_steps = 1
  config.training.log_every_steps = 1
  with tfds.testing.mock_data(num_examples=10):
    # Evaluation through the trainer is covered by tests/tasks/language/test_mlm.py; the GLUE
    # evaluation batches by tests/tasks/language/test_glue_data.py.
    state = trainer.train(config, str(tmp_path / 'work'), evaluate=False)
  assert int(state.step) == 3
  source = _cached_mlm_params()
  moved = [
    not np.array_equal(state.params[m]['w'], source[m]['w'])
    for m in state.params
    if m.startswith('perceiver_encoder/') and 'w' in state.params[m]
  ]
  assert moved and all(moved)  # fine-tuning updated the pretrained encoder
  with open(tmp_path / 'work' / 'metrics.jsonl') as f:
    text = f.read()
  assert '"accuracy"' in text and 'truncated_fraction' in text
