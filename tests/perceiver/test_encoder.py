"""Tests for PerceiverEncoder: official structure, weight sharing, iterative cross-attends."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver
from perceiver._src.encoder import cross_attend_schedule

TINY = dict(
  num_self_attends_per_block=2,
  z_index_dim=3,
  num_z_channels=8,
  num_cross_attend_heads=1,
  num_self_attend_heads=2,
)


def _encoder_fn(**kwargs):
  def fn(x):
    enc = perceiver.PerceiverEncoder(**{**TINY, **kwargs})
    return enc(x, enc.latents(x), is_training=False)

  return hk.transform(fn)


def _inputs(seed=0, b=3, m=7, c=5):
  return jax.random.normal(jax.random.PRNGKey(seed), (b, m, c))


def _count(params):
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))


def _modules(params):
  return sorted({k.split('/')[2] for k in params if k.startswith('perceiver_encoder/~/')})


def test_default_structure_is_official():
  params = _encoder_fn(num_blocks=3).init(jax.random.PRNGKey(0), _inputs())
  assert _modules(params) == [
    'cross_attention',
    'self_attention',
    'self_attention_1',
    'trainable_position_encoding',
  ]
  assert params['perceiver_encoder/~/trainable_position_encoding']['pos_embs'].shape == (
    3,
    8,
  )
  # qk channels default to the kv (input) channels in the cross-attend.
  assert params['perceiver_encoder/~/cross_attention/attention/linear']['w'].shape == (
    8,
    5,
  )


def test_shared_blocks_param_count_independent_of_num_blocks():
  counts = {
    nb: _count(
      jax.eval_shape(_encoder_fn(num_blocks=nb).init, jax.random.PRNGKey(0), _inputs())
    )
    for nb in (1, 3, 5)
  }
  assert counts[1] == counts[3] == counts[5]


@pytest.mark.parametrize(
  'k, blocks, placement, expected',
  [
    (1, 4, 'start', [1, 0, 0, 0]),
    (3, 4, 'start', [3, 0, 0, 0]),
    (4, 4, 'interleaved', [1, 1, 1, 1]),
    (2, 4, 'interleaved', [1, 0, 1, 0]),
    (3, 5, 'interleaved', [1, 1, 0, 1, 0]),
    (2, 0, 'start', [2]),
  ],
)
def test_cross_attend_schedule(k, blocks, placement, expected):
  assert cross_attend_schedule(k, blocks, placement) == expected


def test_cross_attend_schedule_errors():
  with pytest.raises(ValueError, match='num_cross_attends \\(5\\) <= num_blocks \\(3\\)'):
    cross_attend_schedule(5, 3, 'interleaved')
  with pytest.raises(ValueError, match="cross_attend_placement 'middle'"):
    cross_attend_schedule(2, 3, 'middle')
  with pytest.raises(ValueError, match='num_cross_attends must be >= 1, got 0'):
    cross_attend_schedule(0, 3, 'start')


@pytest.mark.parametrize(
  'share_ca, share_sa', [(True, True), (False, True), (True, False), (False, False)]
)
def test_iterative_param_counts_follow_sharing_rules(share_ca, share_sa):
  k, nb, per_block = 4, 4, 2
  fn = _encoder_fn(
    num_blocks=nb,
    num_cross_attends=k,
    cross_attend_placement='interleaved',
    share_cross_attend_weights=share_ca,
    share_self_attend_weights=share_sa,
  )
  params = jax.eval_shape(fn.init, jax.random.PRNGKey(0), _inputs())
  base = jax.eval_shape(_encoder_fn(num_blocks=1).init, jax.random.PRNGKey(0), _inputs())
  ca = _count({k: v for k, v in base.items() if '/cross_attention/' in k})
  sa = _count({k: v for k, v in base.items() if '/self_attention/' in k})
  pos = 3 * 8
  n_ca = 2 if share_ca else k
  n_sa = per_block if share_sa else per_block * nb
  assert _count(params) == pos + n_ca * ca + n_sa * sa
  names = _modules(params)
  assert sum(n.startswith('cross_attention') for n in names) == n_ca
  assert sum(n.startswith('self_attention') for n in names) == n_sa


def _strip(params):
  return {k.replace('perceiver_encoder/~/', ''): v for k, v in params.items()}


@pytest.mark.parametrize('placement', ['interleaved', 'start'])
def test_iterative_encoder_composes_modules_in_order(placement):
  x = _inputs(seed=1)
  fn = _encoder_fn(num_blocks=2, num_cross_attends=2, cross_attend_placement=placement)
  params = fn.init(jax.random.PRNGKey(0), x)
  out = fn.apply(params, None, x)

  def manual_forward(x):
    z = jnp.broadcast_to(
      hk.get_parameter('pos_embs', [3, 8], init=jnp.zeros)[None], (3, 3, 8)
    )
    ca0 = perceiver.CrossAttention(num_heads=1, name='cross_attention')
    ca1 = perceiver.CrossAttention(num_heads=1, name='cross_attention_1')
    sas = [
      perceiver.SelfAttention(num_heads=2, widening_factor=1, name='self_attention'),
      perceiver.SelfAttention(num_heads=2, widening_factor=1, name='self_attention_1'),
    ]
    block = lambda z: sas[1](sas[0](z, is_training=False), is_training=False)
    if placement == 'interleaved':
      z = block(ca1(block(ca0(z, x, is_training=False)), x, is_training=False))
    else:
      z = block(block(ca1(ca0(z, x, is_training=False), x, is_training=False)))
    return z

  mparams = _strip(params)
  mparams['~'] = {'pos_embs': mparams.pop('trainable_position_encoding')['pos_embs']}
  ref = hk.transform(manual_forward).apply(mparams, None, x)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_paper1_imagenet_parameter_counts():
  """The seeds' ablation: weight sharing takes paper 1's model from 326.2M to 44.9M."""
  x = jax.ShapeDtypeStruct((1, 50176, 261), jnp.float32)

  def count(share):
    def fn(x):
      enc = perceiver.PerceiverEncoder(
        num_self_attends_per_block=6,
        num_blocks=8,
        z_index_dim=512,
        num_z_channels=1024,
        num_cross_attend_heads=1,
        num_self_attend_heads=8,
        num_cross_attends=8,
        cross_attend_placement='interleaved',
        share_cross_attend_weights=share,
        share_self_attend_weights=share,
      )
      z = enc(x, enc.latents(x), is_training=False)
      return perceiver.ProjectionDecoder(num_classes=1000)(None, z, is_training=False)

    return _count(jax.eval_shape(hk.transform(fn).init, jax.random.PRNGKey(0), x))

  shared, unshared = count(True), count(False)
  # configs/imagenet.py:perceiver's 44,912,254 (paper 1: 44.9M); unshared, 326.2M.
  assert shared == 44_912_254
  assert abs(unshared - 326.2e6) / 326.2e6 < 0.01, unshared


def test_encoder_errors():
  with pytest.raises(
    ValueError,
    match=r'num_z_channels \(10\) must be divisible by '
    r'num_self_attend_heads \(4\)',
  ):
    hk.transform(
      lambda: perceiver.PerceiverEncoder(num_z_channels=10, num_self_attend_heads=4)
    ).init(None)
  fn = _encoder_fn(num_blocks=1)
  with pytest.raises(ValueError, match=r'inputs of shape \[B, M, C\]'):
    fn.init(jax.random.PRNGKey(0), jnp.zeros((3, 7)))

  def bad_mask(x):
    enc = perceiver.PerceiverEncoder(**TINY, num_blocks=1)
    return enc(x, enc.latents(x), is_training=False, input_mask=jnp.ones((3, 6)))

  with pytest.raises(ValueError, match='input_mask must have shape'):
    hk.transform(bad_mask).init(jax.random.PRNGKey(0), _inputs())


def test_input_mask_hides_inputs():
  x = _inputs(seed=2)
  mask = jnp.array([[1, 1, 1, 0, 0, 1, 0]] * 3)

  def fn(x):
    enc = perceiver.PerceiverEncoder(
      **TINY, num_blocks=1, num_cross_attends=2, cross_attend_placement='start'
    )
    return enc(x, enc.latents(x), is_training=False, input_mask=mask)

  f = hk.transform(fn)
  params = f.init(jax.random.PRNGKey(0), x)
  x2 = x.at[:, 3].set(50.0).at[:, 6].set(-9.0)  # Change only masked inputs.
  np.testing.assert_allclose(
    f.apply(params, None, x), f.apply(params, None, x2), rtol=1e-6, atol=1e-6
  )
