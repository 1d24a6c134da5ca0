"""Learning-rate schedules, the weight-decay mask and the optimizer chain."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from experiments.training import optimizers


def _optimizer_config(**schedule):
  config = common.get_base_config().optimizer
  config.base_lr = 0.1
  config.scale_by_batch = False
  for k, v in schedule.items():
    config.schedule[k] = v
  return config


def _values(schedule, num):
  return np.array([float(schedule(i)) for i in range(num)])


def test_constant_cosine_hand_computed():
  config = _optimizer_config(type='constant_cosine', constant_fraction=0.5)
  sched = optimizers.learning_rate_schedule(config, num_steps=10, batch_size=256)
  want = [0.1] * 5 + [0.1 * 0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(5)]
  want.append(0.0)  # Step 10: the end of the cosine.
  np.testing.assert_allclose(_values(sched, 11), want, rtol=1e-5, atol=1e-8)


def test_constant_cosine_end_value_and_batch_scaling():
  config = _optimizer_config(
    type='constant_cosine', constant_fraction=0.3, end_value=0.01
  )
  config.scale_by_batch = True
  sched = optimizers.learning_rate_schedule(config, num_steps=10, batch_size=512)
  # Everything doubles at batch 512: peak 0.2, end 0.02; 3 constant steps, 7 cosine.
  want = [0.2] * 3 + [
    0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi * k / 7)) for k in range(8)
  ]
  np.testing.assert_allclose(_values(sched, 11), want, rtol=1e-5)


def test_warmup_cosine_hand_computed():
  config = _optimizer_config(type='warmup_cosine', warmup_steps=2, init_value=0.0)
  sched = optimizers.learning_rate_schedule(config, num_steps=10, batch_size=256)
  want = [0.0, 0.05] + [0.1 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]
  np.testing.assert_allclose(_values(sched, 11), want, rtol=1e-5, atol=1e-8)


def test_warmup_fraction_scales_with_training_length():
  config = _optimizer_config(type='warmup_cosine', warmup_fraction=0.2, init_value=0.0)
  sched = optimizers.learning_rate_schedule(config, num_steps=10, batch_size=256)
  want = [0.0, 0.05] + [0.1 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]
  np.testing.assert_allclose(_values(sched, 11), want, rtol=1e-5, atol=1e-8)
  sched = optimizers.learning_rate_schedule(config, num_steps=20, batch_size=256)
  np.testing.assert_allclose(
    _values(sched, 5), [0.0, 0.025, 0.05, 0.075, 0.1], rtol=1e-5, atol=1e-8
  )


def test_step_decay_hand_computed():
  config = _optimizer_config(type='step', decay_boundaries=(0.5, 0.8), decay_rate=0.1)
  sched = optimizers.learning_rate_schedule(config, num_steps=10, batch_size=256)
  want = [0.1] * 5 + [0.01] * 3 + [0.001] * 2
  np.testing.assert_allclose(_values(sched, 10), want, rtol=1e-5)


def test_constant():
  sched = optimizers.learning_rate_schedule(
    _optimizer_config(type='constant'), num_steps=7, batch_size=256
  )
  np.testing.assert_allclose(_values(sched, 7), [0.1] * 7, rtol=1e-6)


@pytest.mark.parametrize(
  'schedule, match',
  [
    (dict(type='linear'), 'schedule.type'),
    (dict(type='constant_cosine', warmup_steps=3), 'warmup_steps=3'),
    (dict(type='warmup_cosine', warmup_steps=10), 'warmup_steps=10'),
    (dict(type='constant_cosine', constant_fraction=1.5), 'constant_fraction'),
    (dict(type='warmup_cosine', warmup_steps=2, warmup_fraction=0.1), 'only one of'),
    (dict(type='warmup_cosine', warmup_fraction=1.0), 'warmup_fraction=1.0'),
    (dict(type='constant', warmup_fraction=0.1), 'warmup_fraction=0.1'),
    (dict(type='step', decay_boundaries=(0.8, 0.5)), 'decay_boundaries'),
  ],
)
def test_bad_schedules(schedule, match):
  with pytest.raises(ValueError, match=match):
    optimizers.learning_rate_schedule(
      _optimizer_config(**schedule), num_steps=10, batch_size=256
    )


def test_unknown_optimizer():
  config = _optimizer_config()
  config.name = 'sgd'
  with pytest.raises(ValueError, match="optimizer.name='sgd'"):
    optimizers.make_optimizer(config, num_steps=10, batch_size=256)


# Parameter paths as the official modules create them.
PARAMS = {
  'perceiver_encoder/~/cross_attention/layer_norm': {
    'scale': np.ones(3),
    'offset': np.ones(3),
  },
  'perceiver_encoder/~/cross_attention/attention/linear': {
    'w': np.ones((3, 5)),
    'b': np.ones(5),
  },
  'perceiver_encoder/~/trainable_position_encoding': {'pos_embs': np.ones((7, 3))},
  'image_preprocessor/~/conv2_d_downsample/~/batchnorm': {
    'scale': np.ones(5),
    'offset': np.ones(5),
  },
  'image_preprocessor/~/conv2_d_downsample/~/conv': {'w': np.ones((7, 7, 3, 5))},
  'embed': {'embeddings': np.ones((11, 3))},
  'embedding_decoder': {'bias': np.ones(11)},
}


@pytest.mark.parametrize('decay_pos_embs', [True, False])
def test_weight_decay_mask(decay_pos_embs):
  mask = optimizers.weight_decay_mask(PARAMS, decay_pos_embs=decay_pos_embs)
  assert mask == {
    'perceiver_encoder/~/cross_attention/layer_norm': {'scale': False, 'offset': False},
    'perceiver_encoder/~/cross_attention/attention/linear': {'w': True, 'b': False},
    'perceiver_encoder/~/trainable_position_encoding': {'pos_embs': decay_pos_embs},
    'image_preprocessor/~/conv2_d_downsample/~/batchnorm': {
      'scale': False,
      'offset': False,
    },
    'image_preprocessor/~/conv2_d_downsample/~/conv': {'w': True},
    'embed': {'embeddings': True},
    'embedding_decoder': {'bias': True},
  }


@pytest.mark.parametrize('name', ['lamb', 'adamw'])
@pytest.mark.parametrize('decay_pos_embs', [True, False])
def test_weight_decay_only_touches_masked_params(name, decay_pos_embs):
  # With zero gradients the only update is the weight decay itself.
  config = _optimizer_config(type='constant')
  config.name = name
  config.decay_pos_embs = decay_pos_embs
  config.weight_decay = 0.5
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32) * 2.0, PARAMS)
  opt, _ = optimizers.make_optimizer(config, num_steps=10, batch_size=256)
  updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
  mask = optimizers.weight_decay_mask(PARAMS, decay_pos_embs=decay_pos_embs)
  for decayed, update in zip(jax.tree.leaves(mask), jax.tree.leaves(updates)):
    if decayed:
      assert np.all(np.asarray(update) < 0)  # Shrinks the positive weights.
    else:
      np.testing.assert_array_equal(update, 0.0)


def test_global_norm_clipping():
  config = _optimizer_config(type='constant')
  config.name = 'adamw'
  config.weight_decay = 0.0
  config.eps = 1e-3  # Makes Adam's first step depend on the gradient scale.
  params = {'linear': {'w': jnp.arange(6.0).reshape(2, 3)}}
  grads = {'linear': {'w': jnp.array([[30.0, -40.0, 0.0], [0.0, 0.0, 0.0]])}}  # norm 50
  config.max_norm = 5.0
  clipped, _ = optimizers.make_optimizer(config, num_steps=10, batch_size=256)
  config.max_norm = 0.0
  plain, _ = optimizers.make_optimizer(config, num_steps=10, batch_size=256)
  got, _ = clipped.update(grads, clipped.init(params), params)
  scaled = jax.tree.map(lambda g: g / 10.0, grads)
  want, _ = plain.update(scaled, plain.init(params), params)
  np.testing.assert_allclose(got['linear']['w'], want['linear']['w'], rtol=1e-6)
  unclipped, _ = plain.update(grads, plain.init(params), params)
  assert not np.allclose(unclipped['linear']['w'], want['linear']['w'])


@pytest.mark.parametrize('name', ['lamb', 'adamw'])
@pytest.mark.parametrize('max_norm', [10.0, 0.0])
def test_state_layout_is_optax_chain(name, max_norm):
  # Checkpoints written with optax's chain (earlier versions of this project) restore
  # into the optimizer's state, and the updates agree.
  config = _optimizer_config(type='constant')
  config.name = name
  config.max_norm = max_norm
  opt, schedule = optimizers.make_optimizer(config, num_steps=10, batch_size=256)
  mask = lambda p: optimizers.weight_decay_mask(p, decay_pos_embs=config.decay_pos_embs)
  core = (optax.lamb if name == 'lamb' else optax.adamw)(
    learning_rate=schedule,
    b1=config.b1,
    b2=config.b2,
    eps=config.eps,
    weight_decay=config.weight_decay,
    mask=mask,
  )
  ref = optax.chain(optax.clip_by_global_norm(max_norm), core) if max_norm > 0 else core
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32) * 0.5, PARAMS)
  grads = jax.tree.map(lambda x: jnp.full(x.shape, 3.0, jnp.float32), PARAMS)
  state, ref_state = opt.init(params), ref.init(params)
  assert jax.tree.structure(state) == jax.tree.structure(ref_state)
  got, _ = jax.jit(opt.update)(grads, ref_state, params)
  want, _ = jax.jit(ref.update)(grads, ref_state, params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-9)
