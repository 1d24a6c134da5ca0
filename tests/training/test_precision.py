"""The bfloat16 recipe: documented in every config, and it trains.

For the smallest variant of each experiment family, a few optimizer steps on one fixed
batch (generated through the task's real pipeline) run in float32 and with the recipe:
the bfloat16 losses must fall and stay close to the float32 ones on the first steps.
"""

import functools
import importlib.util
import os

import jax
import numpy as np
import optax
import pytest

from experiments.training import precision
from experiments.training import task as task_lib
from tests import helpers

CONFIG_DIR = os.path.join(helpers.REPO_ROOT, 'configs')
EXPERIMENTS = [
  f[:-3]
  for f in sorted(os.listdir(CONFIG_DIR))
  if f.endswith('.py') and f not in ('__init__.py', 'common.py')
]
SMALLEST = {
  'digits': 'tiny',
  'imagenet': 'debug',
  'mlm': 'debug',
  'glue': 'debug',
  'flow': 'debug',
  'multimodal': 'debug',
  'audioset': 'debug',
  'modelnet40': 'debug',
}
NUM_STEPS = 5


def _config_module(name):
  spec = importlib.util.spec_from_file_location(
    f'precision_test_{name}', os.path.join(CONFIG_DIR, name + '.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_set_compute_dtype_and_overrides():
  config = _config_module('multimodal').get_config('debug')
  fields = precision.compute_dtype_fields(config)
  assert 'model.encoder.compute_dtype' in fields
  assert 'model.image_decoder.compute_dtype' in fields
  precision.set_compute_dtype(config, 'bfloat16')
  assert config.model.encoder.compute_dtype == 'bfloat16'
  assert config.model.audio_decoder.compute_dtype == 'bfloat16'
  assert precision.bfloat16_overrides(config)[0] == (
    '--config.model.audio_decoder.compute_dtype=bfloat16'
  )


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_config_documents_the_bfloat16_recipe(name):
  module = _config_module(name)
  config = module.get_config()
  overrides = precision.bfloat16_overrides(config)
  assert overrides, f'configs/{name}.py has no compute_dtype field'
  missing = [o for o in overrides if o not in ' '.join(module.__doc__.split())]
  assert not missing, f'configs/{name}.py docstring lacks {missing}'


def _losses(config, batch, compute_dtype, initial=None):
  """Losses of `NUM_STEPS` Adam steps on `batch`, and the initial (params, state).

  Starts from `initial` if given (it must match the model's own initialisation in tree,
  shapes and dtypes), else from the model's initialisation.
  """
  precision.set_compute_dtype(config, compute_dtype)
  task = task_lib.load_task(config.task)
  model = task.build_model(config)
  init = functools.partial(model.init, is_training=True)
  if initial is None:
    initial = jax.jit(init)(jax.random.PRNGKey(0), batch)
  else:
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
    assert shapes(initial) == shapes(jax.eval_shape(init, jax.random.PRNGKey(0), batch))
  params, state = initial
  optimizer = optax.adam(1e-3)

  def loss_fn(params, state, batch):
    outputs, state = model.apply(
      params, state, jax.random.PRNGKey(1), batch, is_training=True
    )
    return task.train_loss(outputs, batch, config)[0], state

  @jax.jit
  def step(params, state, opt_state, batch):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state, opt_state, loss, grads

  opt_state = optimizer.init(params)
  losses = []
  for _ in range(NUM_STEPS):
    params, state, opt_state, loss, grads = step(params, state, opt_state, batch)
    losses.append(float(loss))
  # Parameters, gradients and optimizer state stay float32 under the recipe.
  for tree in (params, grads, opt_state):
    for leaf in jax.tree.leaves(tree):
      if np.issubdtype(leaf.dtype, np.floating):
        assert leaf.dtype == np.float32, leaf.dtype
  return np.array(losses), initial


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(SMALLEST))
def test_bfloat16_recipe_trains_close_to_float32(name):
  config = _config_module(name).get_config(SMALLEST[name])
  config.data.fake = True
  task = task_lib.load_task(config.task)
  batch = next(task_lib.train_iterator(task, config, batch_dims=[1, 3], start_step=0))
  batch = {k: v[0] for k, v in batch.items()}
  float32, initial = _losses(config, batch, '')
  # The same starting point: the recipe changes only the compute dtype.
  bfloat16, _ = _losses(config, batch, 'bfloat16', initial=initial)
  assert bfloat16[-1] < bfloat16[0], bfloat16
  # bfloat16 keeps 8 bits of mantissa: 2^-8 relative per product, a few percent here.
  np.testing.assert_allclose(bfloat16[:2], float32[:2], rtol=0.05)
