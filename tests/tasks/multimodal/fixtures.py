"""Shared helpers of the multimodal tests."""

import jax
import numpy as np


def random_params(init, *args, seed=0):
  """Parameters shaped as `init(*args)` creates them, filled on the host without
  compiling `init` (XLA takes seconds to compile the initialisers): N(0, 0.2^2),
  LayerNorm scales 1 + N(0, 0.2^2)."""
  abstract, state = jax.eval_shape(init, *args)
  rng = np.random.default_rng(seed)
  params = {}
  for module in sorted(abstract):
    params[module] = {}
    for name in sorted(abstract[module]):
      spec = abstract[module][name]
      value = 0.2 * rng.standard_normal(spec.shape)
      if name == 'scale':
        value += 1.0
      params[module][name] = value.astype(spec.dtype)
  assert not jax.tree.leaves(state)
  return params, {}
