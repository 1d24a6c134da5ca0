"""`adam_updates.clipped_adam` against optax's chain, and the norm helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.training import fused_updates as adam_updates
from experiments.training import optimizers


# Odd, distinct sizes; a norm parameter and biases (no weight decay), a 3-D weight,
# and a parameter that starts at zero (LAMB's trust ratio falls back to 1 there).
def _params():
  rng = np.random.RandomState(0)
  return {
    'encoder/linear': {
      'w': rng.randn(3, 5).astype(np.float32),
      'b': rng.randn(5).astype(np.float32),
    },
    'encoder/linear_1': {
      'w': rng.randn(5, 7).astype(np.float32),
      'b': np.zeros(7, np.float32),
    },
    'encoder/layer_norm': {
      'scale': rng.randn(7).astype(np.float32),
      'offset': rng.randn(7).astype(np.float32),
    },
    'decoder': {'w': rng.randn(7, 3, 5).astype(np.float32)},
  }


def _mask(params):
  return optimizers.weight_decay_mask(params)


def _grads(params, step):
  rng = np.random.RandomState(100 + step)
  # Alternate small gradients (below the clipping norm) and large ones (above it).
  scale = 0.01 if step % 2 == 0 else 30.0
  return jax.tree.map(lambda x: (scale * rng.randn(*x.shape)).astype(np.float32), params)


def _assert_close(got, want):
  # Only the summation order of norms differs from optax: a few float32 ulps, which
  # cancellation in the moments can raise relative to small elements, so the
  # tolerance is relative to each array's largest element.
  want = np.asarray(want)
  np.testing.assert_allclose(
    got, want, rtol=2e-6, atol=2e-6 * float(np.max(np.abs(want), initial=0.0))
  )


def _reference(trust_ratio, max_norm, schedule, weight_decay):
  core = (optax.lamb if trust_ratio else optax.adamw)(
    learning_rate=schedule,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    weight_decay=weight_decay,
    mask=_mask,
  )
  if max_norm is None:
    return core
  return optax.chain(optax.clip_by_global_norm(max_norm), core)


@pytest.mark.parametrize('trust_ratio', [True, False])
@pytest.mark.parametrize('max_norm', [1.0, None])
@pytest.mark.parametrize('weight_decay', [0.1, 0.0])
def test_matches_optax_chain(trust_ratio, max_norm, weight_decay):
  schedule = optax.cosine_decay_schedule(1e-2, decay_steps=7)
  ours = adam_updates.clipped_adam(
    schedule,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    weight_decay=weight_decay,
    mask=_mask,
    trust_ratio=trust_ratio,
    max_norm=max_norm,
  )
  ref = _reference(trust_ratio, max_norm, schedule, weight_decay)
  params_ours = params_ref = _params()
  state_ours, state_ref = ours.init(params_ours), ref.init(params_ref)
  # The same state layout as optax's chain, so checkpoints load in either.
  assert jax.tree.structure(state_ours) == jax.tree.structure(state_ref)
  update_ours, update_ref = jax.jit(ours.update), jax.jit(ref.update)
  for step in range(6):
    grads = _grads(params_ref, step)
    u_ours, state_ours = update_ours(grads, state_ours, params_ours)
    u_ref, state_ref = update_ref(grads, state_ref, params_ref)
    assert jax.tree.structure(state_ours) == jax.tree.structure(state_ref)
    for got, want in zip(
      jax.tree.leaves((u_ours, state_ours)), jax.tree.leaves((u_ref, state_ref))
    ):
      _assert_close(got, want)
    params_ours = optax.apply_updates(params_ours, u_ours)
    params_ref = optax.apply_updates(params_ref, u_ref)
  assert int(state_ours[-1][0].count if max_norm else state_ours[0].count) == 6


def test_continues_from_an_optax_state():
  # A state written by optax's chain (an older checkpoint) continues here unchanged.
  schedule = optax.constant_schedule(1e-2)
  ours = adam_updates.clipped_adam(schedule, weight_decay=0.1, mask=_mask, max_norm=1.0)
  ref = _reference(True, 1.0, schedule, 0.1)
  params = _params()
  state = ref.init(params)
  for step in range(2):
    _, state = ref.update(_grads(params, step), state, params)
  grads = _grads(params, 2)
  got, _ = jax.jit(ours.update)(grads, state, params)
  want, _ = jax.jit(ref.update)(grads, state, params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _assert_close(g, w)


def test_lamb_hand_computed_first_step():
  # One parameter, no clipping, no decay: Adam's first update is g / (|g| + eps)
  # elementwise; LAMB rescales it to the parameter's norm and multiplies by -lr.
  params = {'w': jnp.array([3.0, 4.0])}  # Norm 5.
  grads = {'w': jnp.array([2.0, -0.5])}
  opt = adam_updates.clipped_adam(0.1, eps=0.0, trust_ratio=True)
  updates, state = opt.update(grads, opt.init(params), params)
  adam = np.array([1.0, -1.0])  # mu_hat / sqrt(nu_hat) = g / |g|.
  want = -0.1 * adam * 5.0 / np.sqrt(2.0)
  np.testing.assert_allclose(updates['w'], want, rtol=1e-6)
  np.testing.assert_allclose(state[0].mu['w'], 0.1 * np.array([2.0, -0.5]), rtol=1e-6)


def test_mask_given_as_tree_and_all_false():
  params = _params()
  no_decay = jax.tree.map(lambda _: False, params)
  grads = _grads(params, 0)
  opt = adam_updates.clipped_adam(1e-2, weight_decay=0.5, mask=no_decay)
  plain = adam_updates.clipped_adam(1e-2, weight_decay=0.0)
  got, _ = opt.update(grads, opt.init(params), params)
  want, _ = plain.update(grads, plain.init(params), params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(g, w)


def test_one_norm_per_parameter():
  # optax's trust ratio computes each norm twice (`safe_norm`); here each parameter's
  # gradient (clipping), value and update are each reduced once, plus the two
  # reductions of `sum_scalars`.
  params = _params()
  opt = adam_updates.clipped_adam(1e-2, weight_decay=0.1, mask=_mask, max_norm=1.0)
  jaxpr = jax.make_jaxpr(opt.update)(_grads(params, 0), opt.init(params), params)
  reductions = sum(eqn.primitive.name == 'reduce_sum' for eqn in jaxpr.jaxpr.eqns)
  assert reductions == 3 * len(jax.tree.leaves(params)) + 2


def test_sum_scalars_hand_computed():
  for n in (1, 5, 16, 17, 37):
    values = [jnp.float32(i + 0.5) for i in range(n)]
    np.testing.assert_allclose(
      adam_updates.sum_scalars(values), sum(i + 0.5 for i in range(n)), rtol=1e-6
    )
  assert float(adam_updates.sum_scalars([])) == 0.0
  assert np.isnan(adam_updates.sum_scalars([jnp.float32(1.0), jnp.float32(np.nan)]))


def test_global_norm_accumulates_low_precision_in_float32():
  tree = {'a': jnp.full((3, 5), 0.1, jnp.bfloat16), 'b': [jnp.arange(7.0)]}
  want = np.sqrt(15 * float(jnp.bfloat16(0.1)) ** 2 + np.sum(np.arange(7.0) ** 2))
  got = adam_updates.global_norm(tree)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(max_norm=0.0), 'max_norm=0.0'),
    (dict(max_norm=-1.0), 'max_norm=-1.0'),
    (dict(weight_decay=optax.constant_schedule(0.1)), 'weight_decay=.* float'),
  ],
)
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    adam_updates.clipped_adam(1e-3, **kwargs)


def test_update_needs_params():
  params = _params()
  opt = adam_updates.clipped_adam(1e-3)
  with pytest.raises(ValueError, match='needs params'):
    opt.update(params, opt.init(params))
