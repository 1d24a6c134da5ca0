"""`perceiver.perceiver_ar` against outputs of Google Research's Perceiver AR release.

The reference values in `data/perceiver_ar_golden/` were computed by the release's own
modules (`data/perceiver_ar_golden/generate.py`) for the configurations of
`perceiver_ar_cases.py`: block-causal masks (with latent dropout), rotary encodings,
position tables, whole models in evaluation and in training (with dropout, latent
dropout, context dropout and random input subsets, which match only if every random
key is drawn in the release's order), initialisation from a seed, and incremental
decoding with 'kv' and 'fixed_size_kv' memories. Float32 throughout.
"""

import json
import os

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver_ar
from tests.perceiver import perceiver_ar_cases as cases

DATA = os.path.join(os.path.dirname(__file__), 'data', 'perceiver_ar_golden')
RTOL, ATOL = 1e-5, 1e-5


def _load(name):
  with np.load(os.path.join(DATA, name)) as f:
    return dict(f)


def _tree(golden, prefix):
  tree = {}
  for key, value in golden.items():
    if key.startswith(prefix + '/'):
      module, name = key[len(prefix) + 1 :].rsplit('/', 1)
      tree.setdefault(module, {})[name] = value
  return tree


def _forward(kwargs):
  def forward(tokens, idxs, is_training, **call_kwargs):
    model = perceiver_ar.PerceiverAR(**kwargs)
    return model(tokens, idxs, is_training=is_training, **call_kwargs)

  return hk.transform(forward)


def _shapes(tree):
  return {f'{m}/{n}': tuple(np.shape(v)) for m, d in tree.items() for n, v in d.items()}


@pytest.mark.parametrize('name', sorted(cases.MASK_CASES))
def test_block_causal_masks_match_release(name):
  golden = _load('masks.npz')
  spec = cases.MASK_CASES[name]
  tokens = jnp.asarray(golden[f'{name}/tokens'])
  np.testing.assert_array_equal(tokens, cases.mask_tokens(name))
  common = dict(
    latent_index_dim=spec['latents'],
    latents_per_position=spec['per_position'],
    rng_key=jax.random.PRNGKey(cases.RNG_SEED),
  )
  masks, last_steps = perceiver_ar.make_block_causal_masks(tokens, **common)
  np.testing.assert_array_equal(masks.encoder, golden[f'{name}/encoder'])
  np.testing.assert_array_equal(masks.processor, golden[f'{name}/processor'])
  np.testing.assert_array_equal(last_steps, golden[f'{name}/last_steps'])
  train, _ = perceiver_ar.make_block_causal_masks(
    tokens, latent_dropout_prob=0.4, is_training=True, **common
  )
  np.testing.assert_array_equal(train.processor, golden[f'{name}/train_processor'])
  # Latent dropout removed some keys (the same ones as the release).
  assert train.processor.sum() < masks.processor.sum()


def test_block_causal_mask_by_hand():
  """Length 4 of 6 positions, 3 latents: positions 1, 2, 3 (the release's layout)."""
  tokens = jnp.array([[5, 6, 7, 8, 0, 0]])
  masks, last_steps = perceiver_ar.make_block_causal_masks(tokens, latent_index_dim=3)
  np.testing.assert_array_equal(last_steps, [[1, 2, 3]])
  np.testing.assert_array_equal(
    masks.encoder[0, 0],
    [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]],
  )
  np.testing.assert_array_equal(masks.processor[0, 0], np.tril(np.ones((3, 3))))
  # Two tokens, three latents: the first latent has no position and sees nothing else.
  masks, last_steps = perceiver_ar.make_block_causal_masks(
    jnp.array([[5, 6, 0, 0]]), latent_index_dim=3
  )
  np.testing.assert_array_equal(last_steps, [[-1, 0, 1]])
  np.testing.assert_array_equal(masks.encoder[0, 0, 0], [0, 0, 0, 0])
  np.testing.assert_array_equal(masks.processor[0, 0], [[1, 0, 0], [0, 1, 0], [0, 1, 1]])


def test_terminal_relative_positions_match_release():
  golden = _load('masks.npz')
  tokens = golden['terminal_relative/tokens']
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  np.testing.assert_array_equal(
    perceiver_ar.terminal_relative_positions(jnp.asarray(positions), jnp.asarray(tokens)),
    golden['terminal_relative/positions'],
  )


def test_sequence_helpers():
  assert perceiver_ar.sequence_length(jnp.array([4, 5, 6, 0])) == 3
  assert perceiver_ar.sequence_length(jnp.array([4, 5, 6, 7])) == 4
  assert perceiver_ar.sequence_length(jnp.array([0, 0, 0])) == 0
  np.testing.assert_array_equal(
    perceiver_ar.truncate_sequence(jnp.array([4, 5, 6, 0])), [4, 5, 0, 0]
  )
  np.testing.assert_array_equal(perceiver_ar.truncate_sequence(jnp.array([0, 0])), [0, 0])


@pytest.mark.parametrize('name', sorted(cases.ROTARY_CASES))
def test_rotary_encoding_matches_release(name):
  golden = _load('rotary.npz')
  x, positions = cases.rotary_inputs()
  np.testing.assert_array_equal(golden['x'], x)
  out = perceiver_ar.apply_rotary_to_subset(
    jnp.asarray(x), jnp.asarray(positions), **cases.ROTARY_CASES[name]
  )
  np.testing.assert_allclose(out, golden[name], rtol=RTOL, atol=ATOL)


def test_rotary_encoding_is_relative():
  """Rotated query . rotated key depends on the positions only through their gap."""
  rs = np.random.RandomState(0)
  q = jnp.asarray(rs.standard_normal((1, 1, 1, 8)), jnp.float32)
  k = jnp.asarray(rs.standard_normal((1, 1, 1, 8)), jnp.float32)

  def score(pq, pk):
    rq = perceiver_ar.apply_rotary(q, jnp.array([[pq]]), 100)
    rk = perceiver_ar.apply_rotary(k, jnp.array([[pk]]), 100)
    return float(jnp.sum(rq * rk))

  assert score(3, 1) == pytest.approx(score(12, 10), rel=1e-5)
  assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)


def test_position_tables_match_release():
  golden = _load('tables.npz')
  np.testing.assert_allclose(
    perceiver_ar.sinusoidal_features(10, 9), golden['sinusoidal_10x9'], rtol=1e-6
  )
  np.testing.assert_allclose(
    perceiver_ar.sinusoidal_features(7, 5), golden['sinusoidal_7x5'], rtol=1e-6
  )
  np.testing.assert_array_equal(perceiver_ar.linear_features(6, 4), golden['linear_6x4'])
  np.testing.assert_allclose(
    perceiver_ar.fourier_features(10, 9), golden['fourier_10x9'], rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize('name', sorted(cases.MODEL_CASES))
def test_model_matches_release(name):
  golden = _load(f'model_{name}.npz')
  spec = cases.MODEL_CASES[name]
  tokens, idxs = cases.model_inputs(name)
  np.testing.assert_array_equal(golden['tokens'], tokens)
  forward = _forward(spec['kwargs'])
  init = _tree(golden, 'init')
  # The same parameter paths and shapes, and the same values from the same seed.
  ours = jax.jit(forward.init, static_argnums=3)(
    jax.random.PRNGKey(cases.INIT_SEED), tokens, idxs, True
  )
  assert _shapes(ours) == _shapes(init)
  for module, entries in init.items():
    for key, value in entries.items():
      np.testing.assert_allclose(
        ours[module][key], value, rtol=1e-6, atol=1e-6, err_msg=module
      )
  params = cases.perturb(init, seed=1)
  modes = ('eval', 'train') if spec['train'] else ('eval',)
  for mode in modes:
    out = jax.jit(forward.apply, static_argnums=4)(
      params, jax.random.PRNGKey(cases.RNG_SEED), tokens, idxs, mode == 'train'
    )
    last_steps = golden[f'{mode}/latent_last_steps']
    np.testing.assert_array_equal(out.latent_last_steps, last_steps)
    np.testing.assert_array_equal(out.encoder_mask, golden[f'{mode}/encoder_mask'])
    np.testing.assert_array_equal(out.processor_mask, golden[f'{mode}/processor_mask'])
    # Latents before a sequence's start (position -1) attend to no input: the
    # release averages all inputs there, this implementation returns zeros. Their
    # logits are never used (masked in the loss), so only valid latents are compared.
    valid = last_steps >= 0
    assert valid.sum() > valid.shape[0]
    np.testing.assert_allclose(
      np.asarray(out.input_events_logits)[valid],
      golden[f'{mode}/logits'][valid],
      rtol=RTOL,
      atol=ATOL,
      err_msg=mode,
    )


def _memory(golden, prefix, num_layers):
  memory = []
  for layer in range(num_layers):
    fields = {
      f: golden.get(f'{prefix}memory{layer}/{f}')
      for f in ('k', 'v', 'kv_positions', 'memory_mask')
    }
    memory.append(perceiver_ar.AttentionState(**fields))
  return memory


def _empty_memory(memory_type, position_encoding_type):
  if memory_type == 'kv':
    return [None] * (cases.CACHE_LAYERS + 1)
  memory = []
  for layer in range(cases.CACHE_LAYERS + 1):
    size = cases.CACHE_CONTEXT if layer == 0 else cases.CACHE_LATENTS
    heads = cases.CACHE_CROSS_HEADS if layer == 0 else cases.CACHE_SELF_HEADS
    shape = (cases.CACHE_BATCH, size, heads, cases.CACHE_CHANNELS // heads)
    memory.append(
      perceiver_ar.AttentionState(
        k=jnp.zeros(shape),
        v=jnp.zeros(shape),
        kv_positions=jnp.zeros(shape[:2], jnp.int32)
        if position_encoding_type == 'rotary'
        else None,
        memory_mask=jnp.zeros(shape[:2]),
      )
    )
  return memory


def _assert_memory_equal(ours, golden, prefix, num_layers):
  for layer, state in enumerate(ours):
    for field in ('k', 'v', 'kv_positions', 'memory_mask'):
      want = golden.get(f'{prefix}memory{layer}/{field}')
      got = getattr(state, field)
      assert (want is None) == (got is None), (layer, field)
      if want is not None:
        np.testing.assert_allclose(
          got, want, rtol=RTOL, atol=ATOL, err_msg=f'{layer}/{field}'
        )
  assert len(ours) == num_layers


@pytest.mark.parametrize('name', sorted(cases.CACHE_CASES))
def test_incremental_decoding_with_memory_matches_release(name):
  golden = _load(f'cache_{name}.npz')
  spec = cases.CACHE_CASES[name]
  memory_type = spec['memory_type']
  tokens, idxs = cases.cache_inputs()
  np.testing.assert_array_equal(golden['tokens'], tokens)
  forward = _forward(cases.cache_model_kwargs(spec['position_encoding_type']))
  params = cases.perturb(_tree(golden, 'init'), seed=2)
  rng = jax.random.PRNGKey(cases.RNG_SEED)
  apply = jax.jit(
    forward.apply, static_argnames=('is_training', 'memory_type', 'z_index_dim')
  )
  uncached = apply(params, rng, tokens, idxs, is_training=False).input_events_logits
  np.testing.assert_allclose(uncached, golden['uncached_logits'], rtol=RTOL, atol=ATOL)

  memory = _empty_memory(memory_type, spec['position_encoding_type'])
  step_logits = []
  for step, (start, end) in enumerate(cases.cache_schedule()):
    out = apply(
      params,
      rng,
      tokens[:, start:end],
      idxs[:, start:end],
      is_training=False,
      memory_type=memory_type,
      memory=memory,
      z_index_dim=1,
    )
    memory = out.perceiver_state
    np.testing.assert_allclose(
      out.input_events_logits, golden[f'step{step}/logits'], rtol=RTOL, atol=ATOL
    )
    step_logits.append(out.input_events_logits)
  # The release's own claim: within the context and the latents, decoding one token
  # at a time reproduces the logits of the full call.
  np.testing.assert_allclose(
    jnp.concatenate(step_logits, axis=1), uncached, rtol=1e-4, atol=1e-5
  )
  _assert_memory_equal(memory, golden, '', cases.CACHE_LAYERS + 1)
  if memory_type == 'fixed_size_kv':
    out = apply(
      params,
      rng,
      tokens,
      idxs,
      is_training=False,
      memory_type=memory_type,
      memory=_empty_memory(memory_type, spec['position_encoding_type']),
    )
    np.testing.assert_allclose(
      out.input_events_logits, golden['refill/logits'], rtol=RTOL, atol=ATOL
    )
    _assert_memory_equal(out.perceiver_state, golden, 'refill/', cases.CACHE_LAYERS + 1)


def test_parameter_paths_of_the_released_copy_model():
  """The 131,072-position copy-task model creates exactly the release's parameters, so
  its checkpoint loads unchanged (shapes only: `jax.eval_shape` computes nothing)."""
  with open(os.path.join(DATA, 'release_copy_131072_params.json')) as f:
    want = {k: tuple(v) for k, v in json.load(f).items()}
  kwargs = cases.RELEASE_COPY_131072
  length = kwargs['max_context_length']
  forward = _forward(kwargs)
  shapes = jax.eval_shape(
    lambda t, i: forward.init(jax.random.PRNGKey(0), t, i, True),
    jax.ShapeDtypeStruct((1, length), jnp.int32),
    jax.ShapeDtypeStruct((1, length, 1), jnp.int32),
  )
  assert _shapes(shapes) == want
  assert sum(np.prod(s) for s in want.values()) > 200_000_000
