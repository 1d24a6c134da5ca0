"""Regenerates the reference data of tests/perceiver/test_perceiver_ar_compat.py.

The files hold what Google Research's Perceiver AR release computes for the small
configurations of tests/perceiver/perceiver_ar_cases.py, so that the test suite checks
compatibility without the release's code. This script imports the release from a
checkout of https://github.com/google-research/perceiver-ar (the directory holding its
`perceiver_ar/` package); that code is not part of this project. It needs JAX, Haiku,
flax, chex and NumPy (not TensorFlow: the release's data code is not imported):

    python tests/perceiver/data/perceiver_ar_golden/generate.py --release_path=DIR

Run it from the repository root; it is never run by the test suite. The release still
annotates with `jnp.DeviceArray` and calls `jax.tree_map`, both removed from JAX, so
they are aliased to `jax.Array` and `jax.tree_util.tree_map` before it is imported.

It writes, next to this file:
  model_<case>.npz: `tokens`, `input_idxs` (if any), `init/<module>/<name>` (the
    release's initialisation from PRNGKey(INIT_SEED)), and the outputs of the
    parameters `perturb(init, seed=1)` (N(0, PARAM_NOISE^2) noise added, so that
    zero-initialised layers matter) in `eval` (and `train`, with every dropout on)
    applied with PRNGKey(RNG_SEED): `<mode>/logits`, `<mode>/latent_last_steps`,
    `<mode>/encoder_mask`, `<mode>/processor_mask`.
  cache_<case>.npz: incremental decoding with a memory (`kv` or `fixed_size_kv`):
    `tokens`, `input_idxs`, `init/...` (parameters: `perturb(init, seed=2)`),
    `uncached_logits` of one full call,
    `step<i>/logits` of each call of `cache_schedule()` (one latent per call) and the
    memory after the last call, `memory<l>/{k,v,kv_positions,memory_mask}`; for
    `fixed_size_kv` also `refill/logits` and `refill/memory<l>/...` of one call over
    the whole context with all N latents into an empty fixed-size memory.
  masks.npz: `make_block_causal_masks` of each mask case (with latent dropout in
    training from PRNGKey(RNG_SEED)): `<case>/{tokens,encoder,processor,last_steps,
    train_processor}`; and `terminal_relative/{tokens,positions}`.
  rotary.npz: `x`, `positions`, and `<case>` for each rotary case.
  tables.npz: sinusoidal, linear and Fourier position tables.
  release_copy_131072_params.json: parameter paths and shapes of the released
    131,072-position copy-task model.
"""

import argparse
import importlib.util
import json
import os
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(os.path.dirname(HERE))  # tests/perceiver


def load_cases():
  spec = importlib.util.spec_from_file_location(
    'perceiver_ar_cases', os.path.join(TESTS_DIR, 'perceiver_ar_cases.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_release(path):
  """The release's model and sampling modules, with removed JAX names aliased."""
  jnp.DeviceArray = jax.Array
  argsort = jnp.argsort

  def argsort_with_kind(a, axis=-1, kind=None, **kwargs):
    if kind is not None:
      kwargs['stable'] = kind == 'stable'
    return argsort(a, axis=axis, **kwargs)

  jnp.argsort = argsort_with_kind  # The release passes kind='stable'.
  if not hasattr(jax, 'tree_map'):
    jax.tree_map = jax.tree_util.tree_map
  sys.path.insert(0, os.path.abspath(path))
  from perceiver_ar import perceiver_ar_model  # pylint: disable=import-outside-toplevel
  from perceiver_ar import sample_utils  # pylint: disable=import-outside-toplevel

  return perceiver_ar_model, sample_utils


def flat(prefix, tree):
  return {
    f'{prefix}/{module}/{name}': np.asarray(value)
    for module, entries in tree.items()
    for name, value in entries.items()
  }


def model_forward(model_lib, kwargs):
  def forward(tokens, idxs, is_training, **call_kwargs):
    model = model_lib.PerceiverAR(**kwargs)
    return model(tokens, idxs, is_training=is_training, **call_kwargs)

  return hk.transform(forward)


def generate_model_case(cases, model_lib, name):
  spec = cases.MODEL_CASES[name]
  tokens, idxs = cases.model_inputs(name)
  forward = model_forward(model_lib, spec['kwargs'])
  init = forward.init(jax.random.PRNGKey(cases.INIT_SEED), tokens, idxs, True)
  params = cases.perturb(init, seed=1)
  out = {'tokens': tokens, **flat('init', init)}
  if idxs is not None:
    out['input_idxs'] = idxs
  modes = ('eval', 'train') if spec['train'] else ('eval',)
  for mode in modes:
    result = forward.apply(
      params, jax.random.PRNGKey(cases.RNG_SEED), tokens, idxs, mode == 'train'
    )
    out[f'{mode}/logits'] = np.asarray(result.input_events_logits)
    out[f'{mode}/latent_last_steps'] = np.asarray(result.latent_last_steps)
    out[f'{mode}/encoder_mask'] = np.asarray(result.encoder_mask)
    out[f'{mode}/processor_mask'] = np.asarray(result.processor_mask)
  return out


def memory_arrays(prefix, memory):
  out = {}
  for layer, state in enumerate(memory):
    for field in ('k', 'v', 'kv_positions', 'memory_mask'):
      value = getattr(state, field)
      if value is not None:
        out[f'{prefix}memory{layer}/{field}'] = np.asarray(value)
  return out


def generate_cache_case(cases, model_lib, sample_utils, name):
  spec = cases.CACHE_CASES[name]
  kwargs = cases.cache_model_kwargs(spec['position_encoding_type'])
  memory_type = spec['memory_type']
  tokens, idxs = cases.cache_inputs()
  forward = model_forward(model_lib, kwargs)
  init = forward.init(jax.random.PRNGKey(cases.INIT_SEED), tokens, idxs, False)
  params = cases.perturb(init, seed=2)
  rng = jax.random.PRNGKey(cases.RNG_SEED)
  out = {'tokens': tokens, 'input_idxs': idxs, **flat('init', init)}
  out['uncached_logits'] = np.asarray(
    forward.apply(params, rng, tokens, idxs, False).input_events_logits
  )

  def empty_memory():
    if memory_type == 'kv':
      return [None] * (cases.CACHE_LAYERS + 1)
    return sample_utils.initialize_memory(
      cases.CACHE_BATCH,
      num_transformers_per_block=cases.CACHE_LAYERS,
      num_cross_attend_heads=cases.CACHE_CROSS_HEADS,
      num_transformer_heads=cases.CACHE_SELF_HEADS,
      num_z_channels=cases.CACHE_CHANNELS,
      max_context_length_memory=cases.CACHE_CONTEXT,
      z_index_dim_memory=cases.CACHE_LATENTS,
      position_encoding_type=spec['position_encoding_type'],
      memory_type=memory_type,
    )

  memory = empty_memory()
  for step, (start, end) in enumerate(cases.cache_schedule()):
    result = forward.apply(
      params,
      rng,
      tokens[:, start:end],
      idxs[:, start:end],
      False,
      memory_type=memory_type,
      memory=memory,
      z_index_dim=1,
    )
    memory = result.perceiver_state
    out[f'step{step}/logits'] = np.asarray(result.input_events_logits)
  out.update(memory_arrays('', memory))
  if memory_type == 'fixed_size_kv':
    result = forward.apply(
      params,
      rng,
      tokens,
      idxs,
      False,
      memory_type=memory_type,
      memory=empty_memory(),
    )
    out['refill/logits'] = np.asarray(result.input_events_logits)
    out.update(memory_arrays('refill/', result.perceiver_state))
  return out


def generate_masks(cases, model_lib):
  out = {}
  for name, spec in cases.MASK_CASES.items():
    tokens = cases.mask_tokens(name)
    common = dict(
      inputs=jnp.asarray(tokens),
      latent_index_dim=spec['latents'],
      latents_per_position=spec['per_position'],
      batch_size=tokens.shape[0],
      mask_style='final_block',
      rng_key=jax.random.PRNGKey(cases.RNG_SEED),
    )
    masks, last_steps = model_lib.make_block_causal_masks(
      latent_dropout_prob=0.0, is_training=False, **common
    )
    train_masks, _ = model_lib.make_block_causal_masks(
      latent_dropout_prob=0.4, is_training=True, **common
    )
    out[f'{name}/tokens'] = tokens
    out[f'{name}/encoder'] = np.asarray(masks.encoder)
    out[f'{name}/processor'] = np.asarray(masks.processor)
    out[f'{name}/last_steps'] = np.asarray(last_steps)
    out[f'{name}/train_processor'] = np.asarray(train_masks.processor)
  tokens = cases.mask_tokens('one_per_position')
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  out['terminal_relative/tokens'] = tokens
  out['terminal_relative/positions'] = np.asarray(
    model_lib.make_positions_terminal_relative(positions, tokens)
  )
  return out


def generate_rotary(cases, model_lib):
  x, positions = cases.rotary_inputs()
  out = {'x': x, 'positions': positions}
  for name, spec in cases.ROTARY_CASES.items():
    out[name] = np.asarray(
      model_lib._apply_rotary_encoding_to_subset(  # pylint: disable=protected-access
        jnp.asarray(x), positions=jnp.asarray(positions), **spec
      )
    )
  return out


def generate_tables(model_lib):
  return {
    'sinusoidal_10x9': np.asarray(model_lib.generate_sinusoidal_features(10, max_len=9)),
    'sinusoidal_7x5': np.asarray(model_lib.generate_sinusoidal_features(7, max_len=5)),
    'linear_6x4': np.asarray(model_lib.generate_linear_features(6, max_len=4)),
    'fourier_10x9': np.asarray(
      model_lib.generate_fourier_features(
        pos=model_lib.build_linear_positions([9]), n_bands=5, max_res=9, concat_pos=False
      )
    ),
  }


def release_copy_param_shapes(cases, model_lib):
  kwargs = cases.RELEASE_COPY_131072
  forward = model_forward(model_lib, kwargs)
  length = kwargs['max_context_length']
  tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)
  idxs = jax.ShapeDtypeStruct((1, length, 1), jnp.int32)
  shapes = jax.eval_shape(
    lambda t, i: forward.init(jax.random.PRNGKey(0), t, i, True), tokens, idxs
  )
  return {
    f'{module}/{name}': list(value.shape)
    for module, entries in sorted(shapes.items())
    for name, value in sorted(entries.items())
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--release_path', required=True, help='Checkout of perceiver-ar.')
  args = parser.parse_args()
  cases = load_cases()
  model_lib, sample_utils = load_release(args.release_path)
  for name in cases.MODEL_CASES:
    np.savez(
      os.path.join(HERE, f'model_{name}.npz'),
      **generate_model_case(cases, model_lib, name),
    )
    print('wrote', name)
  for name in cases.CACHE_CASES:
    out = generate_cache_case(cases, model_lib, sample_utils, name)
    np.savez(os.path.join(HERE, f'cache_{name}.npz'), **out)
    print('wrote cache', name)
  np.savez(os.path.join(HERE, 'masks.npz'), **generate_masks(cases, model_lib))
  np.savez(os.path.join(HERE, 'rotary.npz'), **generate_rotary(cases, model_lib))
  np.savez(os.path.join(HERE, 'tables.npz'), **generate_tables(model_lib))
  with open(os.path.join(HERE, 'release_copy_131072_params.json'), 'w') as f:
    shapes = release_copy_param_shapes(cases, model_lib)
    f.write(
      '{\n' + ',\n'.join(f' {json.dumps(k)}: {json.dumps(v)}' for k, v in shapes.items())
    )
    f.write('\n}\n')
  print('done')


if __name__ == '__main__':
  main()
