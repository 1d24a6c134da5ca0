"""Every config file in configs/ loads by path, is locked, and builds its model.

Each model section (`model.input_preprocessor`, `encoder`, `decoder`,
`output_postprocessor`) must hold every keyword of one library constructor and reach
that constructor unchanged, with scale options set as a user would set them.

For each file and each of its variants (`VARIANTS`), the task module's input pipeline
runs on fake data (`data.fake=True`, the real pipeline code on generated examples) for
one training and one evaluation batch, and the model's parameters are shaped from
that batch (`jax.eval_shape`, so full-size models cost no compute).
"""

import glob
import importlib.util
import inspect
import os

from absl import flags
import haiku as hk
import jax
import ml_collections
from ml_collections import config_flags
import pytest

from configs import common
from experiments.training import experiment
from experiments.training import parallel
from experiments.training import steps
from experiments.training import task as task_lib
from perceiver import io_processors
from perceiver import perceiver
from perceiver import perceiver_ar
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
def test_config_loads_and_builds_model(path, variant, monkeypatch):
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
  # The full configs shuffle 10,000 sequences, which the pipeline would fill (from a
  # Python generator) before the first batch; shapes do not depend on the buffer.
  for field in ('shuffle_buffer', 'document_shuffle_buffer'):
    if config.data.get(field, 0) > 16:
      config.data[field] = 16
  task = task_lib.load_task(config.task)
  assert task_lib.num_train_steps(config, task) > 0
  # A length curriculum (Perceiver AR's copy task) shortens the first steps' batches;
  # the spec describes those after it.
  curriculum_steps = len(config.data.get('curriculum_contexts', ())) * config.data.get(
    'curriculum_stage_steps', 0
  )
  train_batch = next(
    task_lib.train_iterator(
      task, config, batch_dims=BATCH_DIMS, start_step=curriculum_steps
    )
  )
  parallel.check_batch_dims(train_batch, BATCH_DIMS)
  # The task declares its batches (`batch_spec`): what code outside it builds on.
  spec = task.batch_spec(config)
  assert {k: (v.shape[2:], v.dtype) for k, v in train_batch.items()} == {
    k: (tuple(s.shape), s.dtype) for k, s in spec.items()
  }, f'{path}:{variant}: batch_spec differs from the training batches'
  eval_batch = next(
    iter(
      task.load(
        config.evaluation.split, is_training=False, batch_dims=BATCH_DIMS, config=config
      )
    )
  )
  parallel.check_batch_dims(eval_batch, BATCH_DIMS)
  assert eval_batch['mask'].dtype.name == 'float32'

  sections = _set_scale_options(config)
  keywords = {cls: common._keywords(cls) for cls in _module_classes()}  # pylint: disable=protected-access
  calls = _record_constructors(monkeypatch)
  exp = experiment.build(config, task)
  example = {k: v[0] for k, v in train_batch.items()}
  state = steps.abstract_train_state(exp.model, exp.optimizer, example)
  _check_sections_reached_modules(f'{path}:{variant}', sections, calls, keywords)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  assert num_params > 0
  outputs = jax.eval_shape(
    lambda p, s, b: exp.model.apply(p, s, jax.random.PRNGKey(0), b, is_training=False)[0],
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


MODEL_SECTIONS = (
  'input_preprocessor',
  'encoder',
  'decoder',
  'output_postprocessor',
  'perceiver_ar',
)


def _module_classes():
  """Every Haiku module class of the public `perceiver` and `io_processors` modules."""
  classes = set()
  for module in (perceiver, io_processors, perceiver_ar):
    for value in vars(module).values():
      if isinstance(value, type) and issubclass(value, hk.Module):
        classes.add(value)
  return classes


def _record_constructors(monkeypatch):
  """Patches every module class to record `(class, keyword arguments)` per construction."""
  calls = []
  for cls in _module_classes():
    if '__init__' not in vars(cls):
      continue
    original = cls.__init__

    def init(self, *args, _original=original, _cls=cls, **kwargs):
      calls.append((_cls, kwargs))
      _original(self, *args, **kwargs)

    monkeypatch.setattr(cls, '__init__', init)
  return calls


def _set_scale_options(config):
  """Sets scale options as a user would; returns the model sections `{name: kwargs}`."""
  sections = [s for s in MODEL_SECTIONS if s in config.model]
  # The section of the model's main module: a Perceiver's encoder or a Perceiver AR.
  main = 'perceiver_ar' if 'perceiver_ar' in sections else 'encoder'
  assert main in sections, sections
  # Values a user would set on the command line (the config stays locked).
  config.model[main].compute_dtype = 'bfloat16'
  config.model[main].remat = True
  config.parallel.strategy = 'sharded'
  config.parallel.fsdp = True
  config.training.prefetch_to_device = 1
  if 'decoder' in sections and 'attention_query_chunk_size' in config.model.decoder:
    config.model.decoder.attention_query_chunk_size = 3
  return {s: config.model[s].to_dict() for s in sections}


def _check_sections_reached_modules(case, sections, calls, keywords):
  """Each section holds every keyword of one constructor, and reached it unchanged."""
  for name, kwargs in sections.items():
    matches = [
      (cls, given)
      for cls, given in calls
      if all(k in given and _same(given[k], v) for k, v in kwargs.items())
    ]
    assert matches, f'{case}: model.{name} reached no module constructor.'
    cls, given = matches[0]
    # Every keyword with a default is in the section or passed by the task itself.
    missing = sorted(
      k
      for k, default in keywords[cls].items()
      if default is not inspect.Parameter.empty and k not in kwargs and k not in given
    )
    assert not missing, f'{case}: model.{name} lacks {cls.__name__} {missing}.'


def _same(a, b):
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return tuple(a) == tuple(b)
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
  return a == b


@pytest.mark.parametrize(
  'config_arg', ['digits.py:tiny', 'imagenet.py:debug', 'mlm.py:debug', 'glue.py:debug']
)
def test_scale_options_from_the_command_line_change_the_computation(config_arg):
  """`--config.model.encoder.compute_dtype=bfloat16` and `remat=True` parse and apply."""
  path, variant = config_arg.split(':')
  overrides = [
    '--config.model.encoder.compute_dtype=bfloat16',
    '--config.model.encoder.remat=True',
    '--config.model.decoder.attention_query_chunk_size=4096',
  ]
  argv = [
    'prog',
    f'--config={os.path.join(REPO_ROOT, "configs", path)}:{variant}',
    *overrides,
  ]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    'config', None, 'config', flag_values, lock_config=True, sys_argv=argv
  )
  flag_values(argv)
  config = flag_values.config
  assert config.model.encoder.compute_dtype == 'bfloat16'
  assert config.model.encoder.remat is True
  assert config.model.decoder.attention_query_chunk_size == 4096
  config.data.fake = True
  task = task_lib.load_task(config.task)
  batch = next(task_lib.train_iterator(task, config, batch_dims=BATCH_DIMS, start_step=0))
  example = {k: v[0] for k, v in batch.items()}
  model = task.build_model(config)
  params, state = model.init(jax.random.PRNGKey(0), example, is_training=True)
  jaxpr = jax.make_jaxpr(
    lambda p: model.apply(p, state, jax.random.PRNGKey(1), example, is_training=True)[0]
  )(params)
  primitives = [(e.primitive.name, e) for e in _equations(jaxpr.jaxpr)]
  assert any(name in ('checkpoint', 'remat', 'remat2') for name, _ in primitives), (
    'no remat'
  )
  assert any(
    name == 'dot_general' and e.invars[0].aval.dtype == jax.numpy.bfloat16
    for name, e in primitives
  ), 'no bfloat16 matrix product'


def _equations(jaxpr):
  """Every equation of `jaxpr` and of the jaxprs nested in its equations."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        if hasattr(sub, 'jaxpr') and hasattr(sub.jaxpr, 'eqns'):
          yield from _equations(sub.jaxpr)
        elif hasattr(sub, 'eqns'):
          yield from _equations(sub)
