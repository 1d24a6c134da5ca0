"""Cached sampling from Perceiver AR: one latent per token, the logits of full calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import perceiver_ar


def _sampler(position_encoding_type, context=320, latents=11, reset_latents=None):
  kwargs = dict(
    num_classes=19,
    input_idx_size=[context + 1],
    max_context_length=context,
    position_encoding_type=position_encoding_type,
    input_embed_dim=12,
    num_z_channels=12,
    num_transformers_per_block=2,
    z_index_dim=latents,
    num_cross_attend_heads=2,
    num_transformer_heads=3,
    fraction_to_rotate=0.5,
    max_wavelength=context,
    use_positions_from_data=True,
    final_layer_init_zeros=False,
    additional_cross_attend_after_layers=[0],
  )
  sampler = perceiver_ar.Sampler(kwargs, reset_latents=reset_latents)
  params = jax.jit(sampler.init)(
    jax.random.PRNGKey(3), jnp.ones((1, context), jnp.int32), sampler.default_positions(1)
  )
  return sampler, params


def test_latent_counts():
  assert perceiver_ar.latent_counts(9, num_latents=5, reset_latents=2) == [
    2,
    3,
    4,
    5,
    2,
    3,
    4,
    5,
    2,
  ]
  assert perceiver_ar.latent_counts(3, num_latents=1, reset_latents=1) == [1, 1, 1]


@pytest.mark.parametrize(
  'position_encoding_type', ['rotary', pytest.param('absolute', marks=pytest.mark.slow)]
)
def test_cached_logits_equal_full_calls_over_hundreds_of_positions(
  position_encoding_type,
):
  """Each cached step's logits equal those of a full call over the same tokens with
  the same number of latents, for 300 generated positions (42 cache refills)."""
  sampler, params = _sampler(position_encoding_type)
  prompt = np.array([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
  num_tokens = 300
  logits = {}
  tokens = sampler.generate(
    params,
    prompt,
    num_tokens,
    seed=4,
    temperature=1.0,
    logits_callback=lambda step, value: logits.__setitem__(step, np.asarray(value)),
  )
  assert tokens.shape == (2, 305)
  np.testing.assert_array_equal(tokens[:, :5], prompt)
  assert (tokens > 0).all()
  assert len(set(tokens[0, 5:].tolist())) > 5  # Sampled, not constant.
  counts = perceiver_ar.latent_counts(
    num_tokens, sampler.num_latents, sampler.reset_latents
  )
  assert counts.count(sampler.reset_latents) == 43  # The prompt and 42 refills.
  # The reference: one full call per step, batched over the steps with the same
  # number of latents (rows padded with zeros after their tokens).
  for count in sorted(set(counts)):
    steps = [step for step, c in enumerate(counts) if c == count]
    rows = np.zeros((len(steps) * 2, tokens.shape[1]), np.int32)
    for i, step in enumerate(steps):
      rows[2 * i : 2 * i + 2, : 5 + step] = tokens[:, : 5 + step]
    want = np.asarray(sampler.full_call_logits(params, rows, count))
    got = np.concatenate([logits[step] for step in steps])
    scale = float(np.max(np.abs(want)))
    np.testing.assert_allclose(
      got, want, rtol=1e-4, atol=2e-5 * scale, err_msg=str(count)
    )


def test_uncached_generation_is_reproducible_and_uses_the_full_latents():
  sampler, params = _sampler('rotary', context=40, latents=7, reset_latents=7)
  prompt = np.array([[5, 6, 7]])
  a = sampler.generate(params, prompt, 20, seed=1, cached=False)
  b = sampler.generate(params, prompt, 20, seed=1, cached=False)
  np.testing.assert_array_equal(a, b)
  # With reset_latents = N every cached step is a full call with N latents too.
  c = sampler.generate(params, prompt, 20, seed=1, cached=True)
  np.testing.assert_array_equal(a, c)
  assert not np.array_equal(a, sampler.generate(params, prompt, 20, seed=2))


def test_sample_logits():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.3, 0.15], [0.7, 0.1, 0.1, 0.1]]))
  keys = jax.random.split(jax.random.PRNGKey(0), 2000)
  np.testing.assert_array_equal(
    perceiver_ar.sample_logits(keys[0], logits, temperature=0.0), [1, 0]
  )
  top1 = jax.vmap(lambda k: perceiver_ar.sample_logits(k, logits, top_k=1))(keys)
  np.testing.assert_array_equal(np.unique(top1[:, 0]), [1])
  top2 = np.asarray(
    jax.vmap(lambda k: perceiver_ar.sample_logits(k, logits, top_k=2))(keys)
  )
  assert set(np.unique(top2[:, 0])) == {1, 2}
  # The nucleus of 0.75 is {1 (0.5), 2 (0.3)}: 0.5 alone is below it.
  nucleus = np.asarray(
    jax.vmap(lambda k: perceiver_ar.sample_logits(k, logits, top_p=0.75))(keys)
  )
  assert set(np.unique(nucleus[:, 0])) == {1, 2}
  assert set(np.unique(nucleus[:, 1])) == {0, 1, 2, 3}  # 0.7 < 0.75: needs more.
  assert abs(np.mean(nucleus[:, 0] == 1) - 0.5 / 0.8) < 0.04
  full = np.asarray(jax.vmap(lambda k: perceiver_ar.sample_logits(k, logits))(keys))
  assert abs(np.mean(full[:, 0] == 3) - 0.15) < 0.03
  with pytest.raises(ValueError, match='top_p'):
    perceiver_ar.sample_logits(keys[0], logits, top_p=0.0)


def test_generation_must_fit_the_context():
  sampler, params = _sampler('rotary', context=40, latents=7)
  with pytest.raises(ValueError, match='must fit the context of 40 positions'):
    sampler.generate(params, np.ones((1, 30), np.int32), 11)
  with pytest.raises(ValueError, match='token ids > 0'):
    sampler.generate(params, np.zeros((1, 3), np.int32), 1)
  with pytest.raises(ValueError, match='use_positions_from_data=True'):
    perceiver_ar.Sampler(dict(sampler.model_kwargs, use_positions_from_data=False))
