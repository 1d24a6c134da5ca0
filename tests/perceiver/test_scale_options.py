"""Speed changes keep the numerics; scale options (off by default) keep their promises.

Covered: the flat `PositionwiseLinear` and the softmax VJP (same values as `hk.Linear`
and `jax.nn.softmax`), weight-shared layers run in a scan (same outputs, gradients and
dropout draws as unrolled, a jaxpr that does not grow with `num_blocks`), the
self-attends of a block scanned over their stacked parameters (`scan_layers`), chunked
attention (equal to dense attention, masks included, with bounded memory), per-layer
rematerialisation and bfloat16 compute with float32 parameters.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver
from perceiver._src import attention
from perceiver._src import dot_product_attention
from perceiver._src.encoder import group_repeats

B, T, S, H = 3, 11, 13, 2


def _qkv(seed=0, dqk=5, dv=3):
  rs = np.random.RandomState(seed)
  return (
    jnp.asarray(rs.randn(B, T, H, dqk), jnp.float32),
    jnp.asarray(rs.randn(B, S, H, dqk), jnp.float32),
    jnp.asarray(rs.randn(B, S, H, dv), jnp.float32),
  )


def _masks():
  rs = np.random.RandomState(1)
  full = rs.rand(B, T, S) > 0.5
  full[0, 3, :] = False  # A fully masked query row.
  full[1, :, :7] = False  # Whole key blocks masked for every query.
  return {
    'none': None,
    'full': jnp.asarray(full),
    'keys': jnp.asarray(rs.rand(B, 1, S) > 0.3),  # Shared by all queries.
    'queries': jnp.asarray((rs.rand(B, T, 1) > 0.3).astype(np.int32)),
  }


def _assert_trees_close(a, b, rel=1e-5, atol=1e-5):
  """Every leaf of `a` within `rel` of `b` (relative to the leaf's largest value)."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    scale = float(jnp.max(jnp.abs(y)))
    assert float(jnp.max(jnp.abs(x - y))) <= rel * scale + atol, (x, y)


# ------------------------------------------------------------ speed, same numerics


def test_positionwise_linear_equals_hk_linear():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 7))
  ours = hk.transform(
    lambda x: (
      attention.PositionwiseLinear(4)(x)
      + attention.PositionwiseLinear(4, with_bias=False)(x)
    )
  )
  ref = hk.transform(lambda x: hk.Linear(4)(x) + hk.Linear(4, with_bias=False)(x))
  params = ours.init(jax.random.PRNGKey(1), x)
  ref_params = ref.init(jax.random.PRNGKey(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(ref_params)
  assert sorted(params) == ['linear', 'linear_1']
  np.testing.assert_array_equal(params['linear']['w'], ref_params['linear']['w'])
  np.testing.assert_allclose(
    ours.apply(params, None, x), ref.apply(params, None, x), rtol=1e-6, atol=1e-6
  )
  grad = lambda f: jax.grad(lambda p: jnp.sum(jnp.sin(f.apply(p, None, x))))(params)
  _assert_trees_close(grad(ours), grad(ref))


def test_softmax_vjp_matches_autodiff_of_jax_softmax():
  logits = jnp.asarray(np.random.RandomState(0).randn(3, 4, 7) * 3, jnp.float32)
  g = jnp.asarray(np.random.RandomState(1).randn(3, 4, 7), jnp.float32)
  np.testing.assert_array_equal(
    dot_product_attention._softmax(logits), jax.nn.softmax(logits)
  )
  ours = jax.vjp(dot_product_attention._softmax, logits)[1](g)[0]
  ref = jax.vjp(jax.nn.softmax, logits)[1](g)[0]
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  'ops, expected',
  [
    ('abbb', [('a', 1), ('b', 3)]),
    ('abcbcb', [('a', 1), ('bc', 2), ('b', 1)]),
    ('accbbbb', [('a', 1), ('c', 2), ('b', 4)]),
    ('abab', [('ab', 2)]),
    ('a', [('a', 1)]),
    ('', []),
  ],
)
def test_group_repeats(ops, expected):
  items = {c: [c] for c in 'abc'}  # Distinct objects, compared by identity.
  groups = group_repeats([items[c] for c in ops])
  assert [(''.join(x[0] for x in unit), n) for unit, n in groups] == expected
  # Equal but distinct objects are not merged.
  assert group_repeats([['a'], ['a']]) == [((['a'],), 1), ((['a'],), 1)]


def _encoder_fn(**kwargs):
  config = dict(
    num_self_attends_per_block=1,
    num_blocks=3,
    z_index_dim=5,
    num_z_channels=8,
    num_self_attend_heads=2,
    dropout_prob=0.2,
  )
  config.update(kwargs)

  def fn(x, is_training, input_mask=None):
    enc = perceiver.PerceiverEncoder(**config)
    return enc(x, enc.latents(x), is_training=is_training, input_mask=input_mask)

  return hk.transform(fn)


def _inputs(seed=0, m=7, c=5):
  return jax.random.normal(jax.random.PRNGKey(seed), (3, m, c))


def _training_outputs_and_grads(f, params, x):
  """Outputs in training (dropout draws from a fixed key) and the gradients there."""
  rng = jax.random.PRNGKey(2)

  def loss(p):
    out = f.apply(p, rng, x, True)
    return jnp.sum(jnp.sin(out)), out

  (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
  return out, grads


def _outputs_and_grads_impl(f, params, x):
  # Evaluation; training; gradients in training.
  return (f.apply(params, None, x, False),) + _training_outputs_and_grads(f, params, x)


_outputs_and_grads = jax.jit(_outputs_and_grads_impl, static_argnums=0)
_training_outputs_and_grads_jit = jax.jit(_training_outputs_and_grads, static_argnums=0)


def _init(f, rng, x, is_training):
  return jax.jit(f.init, static_argnums=2)(rng, x, is_training)


def _assert_same_params_outputs_and_grads(f, ref, x):
  """`f` and `ref` initialise the same parameters and agree on them (evaluation,
  training with dropout, gradients). Returns the parameters."""
  params = _init(f, jax.random.PRNGKey(1), x, True)
  ref_params = _init(ref, jax.random.PRNGKey(1), x, True)
  assert jax.tree.all(
    jax.tree.map(lambda a, b: bool(jnp.all(a == b)), params, ref_params)
  )
  _assert_trees_close(
    _outputs_and_grads(f, params, x), _outputs_and_grads(ref, params, x)
  )
  return params


@pytest.mark.slow
def test_scanned_shared_layers_match_unrolled():
  """Paper 1's interleaved encoder: [ca0, b, ca1, b, ca1, b] runs (b, ca1) in a scan.

  (The official pattern [ca0, b, b, b] is checked against a hand-unrolled forward in
  tests/perceiver/test_encoder.py.)
  """
  x = _inputs()
  kwargs = dict(num_cross_attends=3, cross_attend_placement='interleaved')
  _assert_same_params_outputs_and_grads(
    _encoder_fn(**kwargs), _encoder_fn(unroll_shared_layers=True, **kwargs), x
  )


def test_shared_blocks_trace_once():
  """The jaxpr of the scanned encoder does not grow with num_blocks; unrolled does."""
  x = _inputs()
  params = _init(_encoder_fn(num_blocks=2), jax.random.PRNGKey(0), x, False)

  def num_eqns(**kwargs):
    f = _encoder_fn(**kwargs)
    jaxpr = jax.make_jaxpr(lambda p: f.apply(p, None, x, False))(params)
    return len(jaxpr.jaxpr.eqns), {e.primitive.name for e in jaxpr.jaxpr.eqns}

  n2, prims = num_eqns(num_blocks=2)
  n7, _ = num_eqns(num_blocks=7)
  assert 'scan' in prims
  assert n2 == n7
  u2, _ = num_eqns(num_blocks=2, unroll_shared_layers=True)
  u7, _ = num_eqns(num_blocks=7, unroll_shared_layers=True)
  assert u7 > u2 > n2


@pytest.mark.slow
@pytest.mark.parametrize(
  'kwargs',
  [
    # (One block alone: tests/tasks/language/test_mlm.py and the bfloat16 test below.)
    dict(num_blocks=2, remat=True),  # The layer scan runs inside the block scan.
    dict(
      num_blocks=2,
      num_cross_attends=2,
      cross_attend_placement='interleaved',
      share_self_attend_weights=False,
    ),
  ],
)
def test_scanned_layers_match_unscanned(kwargs):
  """`scan_layers`: same parameters, outputs, dropout draws and gradients."""
  x = _inputs()
  kwargs = dict(num_self_attends_per_block=3, **kwargs)
  scanned = _encoder_fn(scan_layers=True, **kwargs)
  plain = _encoder_fn(**kwargs)
  params = _assert_same_params_outputs_and_grads(scanned, plain, x)
  # Each layer reads its own weights: zeroing one layer's MLP output changes the result.
  name = 'perceiver_encoder/~/self_attention_2/mlp/linear_1'
  changed = dict(params, **{name: jax.tree.map(jnp.zeros_like, params[name])})
  evaluate = jax.jit(lambda f, p: f.apply(p, None, x, False), static_argnums=0)
  _assert_trees_close(evaluate(scanned, changed), evaluate(plain, changed))
  assert not np.allclose(evaluate(scanned, changed), evaluate(scanned, params), atol=1e-4)


def test_scanned_layers_name_missing_parameters():
  x = _inputs()
  f = _encoder_fn(num_self_attends_per_block=3, num_blocks=1, scan_layers=True)
  params = _init(f, jax.random.PRNGKey(1), x, False)
  del params['perceiver_encoder/~/self_attention_1/mlp/linear']
  with pytest.raises(ValueError, match=r'self_attention_1 do not match .*mlp/linear/b'):
    jax.eval_shape(lambda: f.apply(params, None, x, False))


@pytest.mark.slow
def test_scanned_layers_keep_bfloat16_compute():
  x = _inputs()
  kwargs = dict(num_self_attends_per_block=3, num_blocks=1, compute_dtype='bfloat16')
  scanned = _encoder_fn(scan_layers=True, **kwargs)
  params = _init(scanned, jax.random.PRNGKey(1), x, False)
  jaxpr = jax.make_jaxpr(lambda p: scanned.apply(p, None, x, False))(params)
  (scan,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == 'scan']
  assert _dot_dtypes(scan.params['jaxpr'].jaxpr) == {jnp.dtype(jnp.bfloat16)}
  assert jax.tree.all(jax.tree.map(lambda p: p.dtype == jnp.float32, params))
  out = scanned.apply(params, None, x, False)
  ref = _encoder_fn(**kwargs).apply(params, None, x, False)
  assert out.dtype == jnp.float32
  _assert_trees_close(out, ref, rel=2e-2, atol=0)  # bfloat16 rounding.


@pytest.mark.slow
def test_scanned_layers_trace_once():
  """With `scan_layers` the jaxpr does not grow with the number of self-attends."""
  x = _inputs()

  params = {
    layers: _init(
      _encoder_fn(num_self_attends_per_block=layers, num_blocks=1),
      jax.random.PRNGKey(0),
      x,
      False,
    )
    for layers in (2, 5)
  }

  def num_eqns(layers, **kwargs):
    f = _encoder_fn(num_self_attends_per_block=layers, num_blocks=1, **kwargs)
    jaxpr = jax.make_jaxpr(lambda p: f.apply(p, None, x, False))(params[layers])
    # Stacking the parameters `[L, ...]` (expand_dims, concatenate) grows with L.
    stacking = ('broadcast_in_dim', 'reshape', 'concatenate')
    return sum(e.primitive.name not in stacking for e in jaxpr.jaxpr.eqns)

  assert num_eqns(2, scan_layers=True) == num_eqns(5, scan_layers=True)
  assert num_eqns(5) > num_eqns(2)
  # unroll_shared_layers traces everything separately, scan_layers included.
  assert num_eqns(5, scan_layers=True, unroll_shared_layers=True) == num_eqns(5)


# ------------------------------------------------------------- chunked attention


CHUNKS = [(4, None), (None, 4), (3, 5)]


@pytest.mark.slow
@pytest.mark.parametrize('mask_name', ['none', 'full', 'keys', 'queries'])
def test_chunked_attend_matches_dense(mask_name):
  q, k, v = _qkv()
  mask = _masks()[mask_name]

  @jax.jit
  def outputs_and_grads(q, k, v):
    results = []
    extra = [(1, 1), (None, 13)] if mask_name == 'full' else []
    for qc, kc in [(None, None)] + CHUNKS + extra:
      fn = lambda q, k, v, qc=qc, kc=kc: perceiver.attend(
        q, k, v, attention_mask=mask, query_chunk_size=qc, key_chunk_size=kc
      )
      grads = jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=(0, 1, 2))(q, k, v)
      results.append((fn(q, k, v), grads))
    return results

  (ref, ref_grads), *chunked = outputs_and_grads(q, k, v)
  for (qc, kc), (out, grads) in zip(CHUNKS + [(1, 1), (None, 13)], chunked):
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6, err_msg=f'{qc}, {kc}')
    _assert_trees_close(grads, ref_grads)
  if mask_name == 'full':
    np.testing.assert_array_equal(out[0, 3], np.zeros(out.shape[-1]))


def test_chunked_attend_errors():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match='does not support attention dropout'):
    hk.transform(
      lambda: perceiver.attend(q, k, v, dropout_prob=0.1, key_chunk_size=4)
    ).apply({}, None)
  with pytest.raises(ValueError, match='key_chunk_size must be a positive int'):
    perceiver.attend(q, k, v, key_chunk_size=-2)
  with pytest.raises(ValueError, match='query_chunk_size must be a positive int'):
    hk.transform(lambda: perceiver.Attention(query_chunk_size=2.5)).init(None)
  with pytest.raises(ValueError, match=r'attention_mask must have shape \(3, 11, 13\)'):
    perceiver.attend(q, k, v, attention_mask=jnp.ones((B, 2, S)))


def _temp_bytes(fn, *args):
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow
def test_chunked_attention_memory_is_bounded():
  """XLA's buffers for training 2048 queries x S keys: dense attention grows with S
  (the whole weight matrix), key-chunked attention does not; query chunks cut it more."""

  def temp_mib(num_keys, **chunks):
    shape = lambda n: jax.ShapeDtypeStruct((1, n, 1, 8), jnp.float32)
    grad = jax.grad(
      lambda q, k, v: jnp.sum(perceiver.attend(q, k, v, **chunks)), argnums=(0, 1, 2)
    )
    return _temp_bytes(grad, shape(2048), shape(num_keys), shape(num_keys)) / 2**20

  weights_mib = 2048 * 4096 * 4 / 2**20  # 32 MiB of attention weights at S = 4096.
  dense = temp_mib(4096)
  assert dense >= weights_mib
  assert temp_mib(8192) >= dense + weights_mib
  by_keys = temp_mib(4096, key_chunk_size=256)
  assert by_keys < dense / 4
  assert temp_mib(8192, key_chunk_size=256) < by_keys + weights_mib / 8
  assert temp_mib(4096, query_chunk_size=256, key_chunk_size=256) < dense / 16


@pytest.mark.slow
def test_chunked_encoder_and_decoder_match_unchunked():
  x = _inputs(m=13)
  input_mask = jnp.asarray(np.random.RandomState(0).rand(3, 13) > 0.3)
  base, chunked = (
    _encoder_fn(),
    _encoder_fn(attention_key_chunk_size=4, attention_query_chunk_size=2),
  )
  params = _init(base, jax.random.PRNGKey(0), x, False)
  apply = lambda f: jax.jit(f.apply, static_argnums=3)
  np.testing.assert_allclose(
    apply(chunked)(params, None, x, False, input_mask),
    apply(base)(params, None, x, False, input_mask),
    rtol=1e-5,
    atol=1e-5,
  )

  z = jax.random.normal(jax.random.PRNGKey(3), (3, 6, 8))
  query_mask = jnp.asarray(np.random.RandomState(1).rand(3, 9) > 0.4)

  def decoder(**kwargs):
    def fn(x, z):
      dec = perceiver.BasicDecoder(
        output_num_channels=4,
        position_encoding_type='fourier',
        output_index_dims=(9,),
        qk_channels=8,
        num_heads=2,
        fourier_position_encoding_kwargs=dict(num_bands=3, max_resolution=(9,)),
        **kwargs,
      )
      return dec(dec.decoder_query(x), z, is_training=False, query_mask=query_mask)

    return hk.transform(fn)

  dparams = jax.jit(decoder().init)(jax.random.PRNGKey(0), x, z)
  ref = jax.jit(decoder().apply)(dparams, None, x, z)
  out = jax.jit(decoder(attention_query_chunk_size=2, attention_key_chunk_size=4).apply)(
    dparams, None, x, z
  )
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(ref))) > 1e-2


# ------------------------------------------------------- remat and bfloat16 compute


def _all_eqns(jaxpr):
  """The equations of `jaxpr` and of its sub-jaxprs (scan bodies, remat blocks, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else [value]:
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from _all_eqns(inner)


def _count_dots(jaxpr):
  return sum(eqn.primitive.name == 'dot_general' for eqn in _all_eqns(jaxpr))


@pytest.mark.slow
def test_remat_matches_and_is_used():
  x = _inputs()
  base = _encoder_fn(num_blocks=2)
  params = _init(base, jax.random.PRNGKey(0), x, True)
  # Remat changes only the backward pass: training outputs (with dropout: the same
  # draws under remat) and gradients are compared.
  ref = _training_outputs_and_grads_jit(base, params, x)

  def grad_dots(f):
    loss = lambda p: jnp.sum(f.apply(p, jax.random.PRNGKey(1), x, True))
    return _count_dots(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)

  dots = {}
  for policy in (None, 'full', 'dots', 'dots_no_batch'):
    remat = _encoder_fn(num_blocks=2, remat=True, remat_policy=policy)
    if policy is not None:  # No policy is full remat (the same products, below).
      _assert_trees_close(_training_outputs_and_grads_jit(remat, params, x), ref)
    dots[policy] = grad_dots(remat)
  # Full remat recomputes every product in the backward pass; 'dots' none of them;
  # 'dots_no_batch' only the attention products (batched over heads).
  assert dots['dots'] == grad_dots(base) < dots['dots_no_batch'] < dots['full']
  assert dots[None] == dots['full']


def test_remat_policy_errors():
  with pytest.raises(ValueError, match="remat_policy must be one of .* got 'dot'"):
    attention.rematerializer(True, 'dot')
  with pytest.raises(ValueError, match="remat_policy='dots' needs remat=True"):
    hk.transform(lambda: perceiver.PerceiverEncoder(remat_policy='dots')).init(None)
  with pytest.raises(ValueError, match="remat_policy='dots' needs remat=True"):
    hk.transform(lambda: perceiver.BasicDecoder(4, remat_policy='dots')).init(None)


def _dot_dtypes(jaxpr):
  """The dtypes of every matrix product's operands in `jaxpr` and its sub-jaxprs."""
  return {
    v.aval.dtype
    for eqn in _all_eqns(jaxpr)
    if eqn.primitive.name == 'dot_general'
    for v in eqn.invars
  }


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters():
  x = _inputs()
  f32, bf16 = (
    _encoder_fn(dropout_prob=0.0),
    _encoder_fn(dropout_prob=0.0, compute_dtype='bfloat16'),
  )
  params = _init(bf16, jax.random.PRNGKey(0), x, False)
  ref_params = _init(f32, jax.random.PRNGKey(0), x, False)
  # Same float32 parameters as the float32 model, created from the same keys.
  for leaf, ref in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    assert leaf.dtype == jnp.float32
    np.testing.assert_array_equal(leaf, ref)
  out = jax.jit(bf16.apply, static_argnums=3)(params, None, x, False)
  ref = jax.jit(f32.apply, static_argnums=3)(params, None, x, False)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=0.1 * float(jnp.max(jnp.abs(ref))))
  assert float(jnp.max(jnp.abs(out - ref))) > 0  # bfloat16 really was used...
  jaxpr = jax.make_jaxpr(lambda p: bf16.apply(p, None, x, False))(params).jaxpr
  assert _dot_dtypes(jaxpr) == {jnp.dtype(jnp.bfloat16)}  # ...by every matmul.
  grads = jax.jit(jax.grad(lambda p: jnp.sum(bf16.apply(p, None, x, False))))(params)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  with pytest.raises(ValueError, match='compute_dtype must be one of'):
    hk.transform(lambda: perceiver.PerceiverEncoder(compute_dtype='float16')).init(None)


def test_bfloat16_decoder_outputs_float32():
  z = jax.random.normal(jax.random.PRNGKey(3), (3, 6, 8))

  def fn(z, dtype):
    dec = perceiver.BasicDecoder(
      output_num_channels=4,
      output_index_dims=(5,),
      trainable_position_encoding_kwargs=dict(num_channels=6),
      compute_dtype=dtype,
      remat=True,
    )
    return dec(dec.decoder_query(z), z, is_training=False)

  f = hk.transform(fn)
  params = jax.jit(f.init, static_argnums=2)(jax.random.PRNGKey(0), z, None)
  apply = jax.jit(f.apply, static_argnums=3)
  out, ref = apply(params, None, z, 'bfloat16'), apply(params, None, z, None)
  assert out.dtype == jnp.float32 and out.shape == (3, 5, 4)
  np.testing.assert_allclose(out, ref, atol=0.1 * float(jnp.max(jnp.abs(ref))))
