"""Tests of the masked-LM task (experiments/tasks/language/mlm.py, configs/mlm.py)."""

import functools
import math
import os

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mlm as mlm_config
from experiments.tasks.language import corpora as text_input
from experiments.tasks.language import mlm
from experiments.training import trainer


def tiny_config(**data):
  """configs/mlm.py:debug shrunk further: 32-byte sequences, one self-attend."""
  config = mlm_config.get_config('debug')
  config.model = mlm_config.model_fields(
    max_seq_len=64,
    d_model=32,
    num_latents=8,
    num_z_channels=32,
    num_self_attends=1,
    cross_heads=2,
    self_heads=2,
    qk_channels=16,
    decoder_heads=2,
    decoder_qk_channels=16,
  )
  config.data.seq_len = 32
  config.data.shuffle_buffer = 16
  config.data.document_shuffle_buffer = 16
  config.data.heldout_fraction = 0.2
  for key, value in data.items():
    config.data[key] = value
  return config


def _batch(config, batch=3, length=None):
  length = length or config.data.seq_len
  rng = np.random.default_rng(0)
  return dict(
    inputs=rng.integers(6, 262, [batch, length]).astype(np.int32),
    input_mask=np.ones([batch, length], np.int32),
  )


def test_bytes_variant_is_the_release_architecture():
  config = mlm_config.get_config('bytes')
  batch = dict(
    inputs=np.zeros([1, 2048], np.int32), input_mask=np.ones([1, 2048], np.int32)
  )
  params, state = jax.eval_shape(
    lambda: mlm.build_model(config).init(jax.random.PRNGKey(0), batch, is_training=True)
  )
  shapes = {f'{m}/{n}': tuple(v.shape) for m, d in params.items() for n, v in d.items()}
  assert sum(math.prod(s) for s in shapes.values()) == 201_108_230
  assert len(shapes) == 457 and not state
  expected = {
    'embed/embeddings': (262, 768),
    'trainable_position_encoding/pos_embs': (2048, 768),
    'embedding_decoder/bias': (262,),
    'basic_decoder/~/trainable_position_encoding/pos_embs': (2048, 768),
    'basic_decoder/cross_attention/attention/linear/w': (768, 256),
    'basic_decoder/cross_attention/attention/linear_2/w': (1280, 768),
    'perceiver_encoder/~/trainable_position_encoding/pos_embs': (256, 1280),
    'perceiver_encoder/~/cross_attention/attention/linear_1/w': (768, 256),
    'perceiver_encoder/~/cross_attention/attention/linear_2/w': (768, 1280),
    'perceiver_encoder/~/self_attention_25/attention/linear/w': (1280, 256),
    'perceiver_encoder/~/self_attention_25/mlp/linear_1/w': (1280, 1280),
  }
  for path, shape in expected.items():
    assert shapes[path] == shape, path
  assert 'perceiver_encoder/~/self_attention_26/attention/linear/w' not in shapes
  assert not any(k.startswith('basic_decoder/output') for k in shapes)


def test_loss_ignores_unmasked_positions_and_matches_hand_value():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=[3, 5, 262]).astype(np.float32)
  targets = rng.integers(6, 262, [3, 5]).astype(np.int32)
  weights = np.zeros([3, 5], np.float32)
  weights[0, 1] = weights[2, 3] = weights[2, 4] = 1.0
  batch = dict(targets=targets, weights=weights, input_mask=np.ones([3, 5], np.int32))
  loss, metrics = mlm.train_loss(jnp.asarray(logits), batch, None)
  log_probs = jax.nn.log_softmax(logits)
  picked = [(0, 1), (2, 3), (2, 4)]
  expected = -np.mean([log_probs[b, t, targets[b, t]] for b, t in picked])
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(metrics['bits_per_byte']) == pytest.approx(
    expected / math.log(2), rel=1e-5
  )
  assert float(metrics['masked_fraction']) == pytest.approx(3 / 15)
  changed = logits.copy()
  changed[weights == 0] = rng.normal(size=[12, 262]) * 10
  assert float(mlm.train_loss(jnp.asarray(changed), batch, None)[0]) == pytest.approx(
    float(loss), rel=1e-6
  )
  changed = logits.copy()
  changed[2, 3] += 5 * rng.normal(size=262)
  assert float(mlm.train_loss(jnp.asarray(changed), batch, None)[0]) != pytest.approx(
    float(loss), rel=1e-3
  )
  # Making the masked targets the argmax gives accuracy 1.
  perfect = logits.copy()
  for b, t in picked:
    perfect[b, t, targets[b, t]] = 100.0
  assert (
    float(mlm.train_loss(jnp.asarray(perfect), batch, None)[1]['masked_accuracy']) == 1.0
  )


def test_eval_summary_and_frequency_baseline():
  # Two sequences, 4 positions, V = 262; masked targets: 10, 10, 11 (and 10 again).
  targets = np.array([[10, 10, 12, 11], [10, 13, 13, 13]], np.int32)
  weights = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], np.float32)
  logits = np.zeros([2, 4, 262], np.float32)
  logits[..., 10] = 1.0  # predicts byte id 10 everywhere
  out = mlm.eval_outputs(
    jnp.asarray(logits), dict(targets=targets, weights=weights), None
  )
  out = {k: np.asarray(v) for k, v in out.items()}
  np.testing.assert_allclose(out['num_masked'], [3, 1])
  np.testing.assert_allclose(out['correct_sum'], [2, 1])
  summary = mlm.summarize_eval(out, None)
  assert summary['masked_accuracy'] == pytest.approx(3 / 4)
  assert summary['baseline_accuracy'] == pytest.approx(3 / 4)  # byte 10: 3 of 4
  entropy = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
  assert summary['baseline_bits_per_byte'] == pytest.approx(entropy)
  p10 = math.e / (math.e + 261)
  p11 = 1 / (math.e + 261)
  expected = -(3 * math.log(p10) + math.log(p11)) / 4
  assert summary['loss'] == pytest.approx(expected, rel=1e-5)
  assert summary['bits_per_byte'] == pytest.approx(expected / math.log(2), rel=1e-5)


@pytest.mark.slow
def test_shorter_sequences_equal_padded_full_length():
  config = tiny_config()
  model = mlm.build_model(config)
  full = _batch(config, batch=2, length=64)
  params, state = jax.jit(model.init, static_argnames='is_training')(
    jax.random.PRNGKey(0), full, is_training=False
  )
  apply = jax.jit(model.apply, static_argnames='is_training')
  short = {k: v[:, :23] for k, v in full.items()}
  padded = {k: v.copy() for k, v in full.items()}
  padded['inputs'][:, 23:] = 0
  padded['input_mask'][:, 23:] = 0
  rng = jax.random.PRNGKey(1)
  out_short, _ = apply(params, state, rng, short, is_training=False)
  out_padded, _ = apply(params, state, rng, padded, is_training=False)
  assert out_short.shape == (2, 23, 262)
  np.testing.assert_allclose(out_short, out_padded[:, :23], atol=2e-5, rtol=2e-5)
  with pytest.raises(ValueError, match='max_seq_len'):
    jax.eval_shape(
      lambda: model.apply(
        params, state, rng, _batch(config, length=65), is_training=False
      )
    )


@pytest.mark.slow
def test_scan_layers_gives_the_same_logits():
  config = tiny_config()
  config.model.encoder.num_self_attends_per_block = 3
  batch = _batch(config)
  model = mlm.build_model(config)
  params, state = jax.jit(model.init, static_argnames='is_training')(
    jax.random.PRNGKey(0), batch, is_training=False
  )
  config.model.encoder.scan_layers = True
  scanned = mlm.build_model(config)
  logits = {}
  for name, m in (('plain', model), ('scanned', scanned)):
    apply = functools.partial(m.apply, params, state, None, batch, is_training=False)
    scans = [e for e in jax.make_jaxpr(apply)().jaxpr.eqns if e.primitive.name == 'scan']
    assert [e.params['length'] for e in scans] == ([3] if name == 'scanned' else [])
    logits[name] = jax.jit(apply)()[0]
  np.testing.assert_allclose(logits['scanned'], logits['plain'], rtol=1e-5, atol=1e-5)


def _corpus(tmp_path, count=120):
  path = tmp_path / 'corpus.txt'
  path.write_bytes(b'\n\n'.join(text_input.fake_documents(seed=4, count=count)))
  return str(path)


def test_load_local_files(tmp_path):
  config = tiny_config(files=_corpus(tmp_path))
  train = mlm.load('train', is_training=True, batch_dims=[1, 3], config=config)
  first = [next(train) for _ in range(3)]
  batch = first[0]
  assert set(batch) == {'inputs', 'input_mask', 'targets', 'weights'}
  assert batch['inputs'].shape == (1, 3, 32) and batch['inputs'].dtype == np.int32
  assert batch['weights'].dtype == np.float32
  unmasked = batch['weights'] == 0
  np.testing.assert_array_equal(batch['inputs'][unmasked], batch['targets'][unmasked])
  assert np.all(batch['inputs'][batch['weights'] > 0] != 0)
  # A resumed iterator continues with the batch of that step.
  resumed = mlm.load(
    'train', is_training=True, batch_dims=[1, 3], config=config, start_step=2
  )
  resumed_batch = next(resumed)
  for key in batch:
    np.testing.assert_array_equal(resumed_batch[key], first[2][key])

  num = mlm.num_examples('validation', config)
  documents = list(
    text_input.split_documents(
      text_input.iter_file_documents([config.data.files]), 'validation', 0.2
    )
  )
  assert num == text_input.count_sequences(documents, 32) > 0
  batches = list(
    mlm.load('validation', is_training=False, batch_dims=[1, 4], config=config)
  )
  assert len(batches) == math.ceil(num / 4)
  mask = np.concatenate([b['mask'].reshape(-1) for b in batches])
  assert mask.sum() == num
  targets = np.concatenate([b['targets'].reshape(-1, 32) for b in batches])[mask > 0]
  input_mask = np.concatenate([b['input_mask'].reshape(-1, 32) for b in batches])
  assert text_input.unpack_sequences(targets, input_mask[mask > 0]) == documents
  again = list(
    mlm.load('validation', is_training=False, batch_dims=[1, 4], config=config)
  )
  np.testing.assert_array_equal(again[0]['inputs'], batches[0]['inputs'])


def test_tfds_mixture_with_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  config = tiny_config()
  config.data.weights = (0.7, 0.3)
  with tfds.testing.mock_data(num_examples=12):
    batch = next(mlm.load('train', is_training=True, batch_dims=[2, 2], config=config))
    assert batch['inputs'].shape == (2, 2, 32)
    num = mlm.num_examples('validation', config)
    batches = list(
      mlm.load('validation', is_training=False, batch_dims=[1, 8], config=config)
    )
  assert sum(b['mask'].sum() for b in batches) == num > 0
  with pytest.raises(ValueError, match='num_steps'):
    mlm.num_examples('train', config)


def test_config_errors():
  with pytest.raises(ValueError, match='variant'):
    mlm_config.get_config('large')
  config = tiny_config()
  config.data.seq_len = 65
  with pytest.raises(ValueError, match='seq_len'):
    mlm.load('train', is_training=True, batch_dims=[1, 2], config=config)


@pytest.mark.slow
def test_train_steps_on_a_local_text_file(tmp_path):
  config = tiny_config(files=_corpus(tmp_path))
  config.training.num_steps = 3
  config.training.batch_size = 4
  config.evaluation.batch_size = 8
  config.training.log_every_steps = 1
  config.optimizer.schedule.warmup_steps = 1
  workdir = str(tmp_path / 'work')
  state = trainer.train(config, workdir, evaluate=True)
  assert int(state.step) == 3
  assert os.path.isfile(os.path.join(workdir, 'export', 'params.npz'))
  params = hk.data_structures.to_haiku_dict(state.params)
  assert params['embed']['embeddings'].shape == (262, 32)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    text = f.read()
  assert 'masked_accuracy' in text and 'baseline_accuracy' in text
