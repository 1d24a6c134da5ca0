"""Every config file in configs/ loads by path, is locked, and builds its model.

For each file and each of its variants (`VARIANTS`), the task module's input pipeline
runs on fake data (`data.fake=True`, the real pipeline code on generated examples) for
one training and one evaluation batch, and the model's parameters are shaped from
that batch (`jax.eval_shape`, so full-size models cost no compute).
"""

import glob
import importlib.util
import os

import jax
import ml_collections
import pytest

from experiments.training import parallel
from experiments.training import task as task_lib
from experiments.training import train_state
from tests import helpers

REPO_ROOT = helpers.REPO_ROOT
CONFIG_FILES = sorted(
  path
  for path in glob.glob(os.path.join(REPO_ROOT, 'configs', '*.py'))
  if os.path.basename(path) not in ('__init__.py', 'common.py')
)
BATCH_DIMS = (1, 2)


def _load_module(path):
  """Loads a config file by path, as `--config=<path>` does."""
  name = 'config_under_test_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _cases():
  """(file, variant) pairs; the default is skipped when it equals a named variant."""
  cases = []
  for path in CONFIG_FILES:
    module = _load_module(path)
    name = os.path.basename(path)
    variants = tuple(getattr(module, 'VARIANTS', ()))
    default = module.get_config().to_dict()
    if not any(module.get_config(v).to_dict() == default for v in variants):
      cases.append(pytest.param(path, None, id=name))
    for variant in variants:
      cases.append(pytest.param(path, variant, id=f'{name}:{variant}'))
  return cases


def test_config_files_exist():
  names = [os.path.basename(p) for p in CONFIG_FILES]
  assert 'digits.py' in names


@pytest.mark.parametrize('path, variant', _cases())
def test_config_loads_and_builds_model(path, variant):
  module = _load_module(path)
  config = module.get_config() if variant is None else module.get_config(variant)
  assert isinstance(config, ml_collections.ConfigDict)
  assert module.__doc__ and 'python -m experiments.' in module.__doc__, (
    f'{path} must give its run command in the docstring.'
  )
  # Locked: a mistyped field fails instead of being silently added.
  with pytest.raises(AttributeError):
    config.training.batch_sise = 3
  for field in ('seed', 'model', 'data', 'optimizer', 'training', 'evaluation'):
    assert field in config, f'{path}: config.{field} is missing'
  assert config.training.batch_size > 0 and config.evaluation.batch_size > 0

  config.data.fake = True
  task = task_lib.load_task(config.task)
  assert task_lib.num_train_steps(config, task) > 0
  train_batch = next(
    task_lib.train_iterator(task, config, batch_dims=BATCH_DIMS, start_step=0)
  )
  parallel.check_batch_dims(train_batch, BATCH_DIMS)
  eval_batch = next(
    iter(
      task.load(
        config.evaluation.split, is_training=False, batch_dims=BATCH_DIMS, config=config
      )
    )
  )
  parallel.check_batch_dims(eval_batch, BATCH_DIMS)
  assert eval_batch['mask'].dtype.name == 'float32'

  from experiments.training import trainer  # pylint: disable=g-import-not-at-top

  steps = trainer.build_steps(config, task)
  example = {k: v[0] for k, v in train_batch.items()}
  state = train_state.abstract_train_state(steps.model, steps.optimizer, example)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  assert num_params > 0
  outputs = jax.eval_shape(
    lambda p, s, b: steps.model.apply(p, s, jax.random.PRNGKey(0), b, is_training=False)[
      0
    ],
    state.params,
    state.state,
    example,
  )
  assert jax.tree.leaves(outputs), f'{path}: the model returns no outputs'


def test_digits_variants_differ_only_where_documented():
  module = _load_module(os.path.join(REPO_ROOT, 'configs', 'digits.py'))
  default, permuted = module.get_config(), module.get_config('permuted')
  assert not default.model.permute_pixels and permuted.model.permute_pixels
  with permuted.unlocked():
    permuted.model.permute_pixels = False
  assert permuted.to_dict() == default.to_dict()
  with pytest.raises(ValueError, match="variant 'shuffled'"):
    module.get_config('shuffled')
