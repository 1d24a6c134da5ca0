"""The one way weights enter a model: sources, the fit check, fine-tuning's init."""

import os
import pickle
import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import flow as flow_config
from experiments.tasks.flow import task as flow_task
from experiments.training import errors
from experiments.training import registry
from experiments.training import steps
from experiments.training import task as task_lib
from experiments.training import weights
from perceiver import checkpoint


def _model():
  """Two linear layers and a batch-norm statistic: `{proj, head}` params, one state."""

  def forward(x, *, is_training):
    h = hk.Linear(5, name='proj')(x)
    h = hk.BatchNorm(True, True, 0.9, name='norm')(h, is_training)
    return hk.Linear(3, name='head')(h)

  return hk.transform_with_state(forward)


X = np.ones((2, 7), np.float32)


def _saved(tmp_path, **changes):
  shapes = weights.model_shapes(_model(), X)
  rng = np.random.default_rng(0)
  params, state = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
  params = {m: dict(d) for m, d in params.items()}
  for key, value in changes.items():
    module, name = key.split(':')
    if value is None:
      del params[module][name]
    else:
      params.setdefault(module, {})[name] = value
  path = str(tmp_path / 'w.npz')
  checkpoint.save_npz(path, params, state)
  return path, params, state


def test_load_gives_the_file_values_in_the_model_dtypes(tmp_path):
  path, params, state = _saved(tmp_path)
  got_params, got_state = weights.load(_model(), X, path)
  jax.tree.map(np.testing.assert_array_equal, got_params, params)
  jax.tree.map(np.testing.assert_array_equal, got_state, state)
  # bfloat16 files load into float32 models (and round-trip exactly).
  half = {m: {n: v.astype(jnp.bfloat16) for n, v in d.items()} for m, d in params.items()}
  checkpoint.save_npz(str(tmp_path / 'half.npz'), half, state)
  loaded, _ = weights.load(_model(), X, str(tmp_path / 'half.npz'))
  assert loaded['proj']['w'].dtype == np.float32
  np.testing.assert_array_equal(loaded['proj']['w'], half['proj']['w'].astype(np.float32))


def test_one_message_counts_and_names_what_does_not_fit(tmp_path):
  path, _, _ = _saved(
    tmp_path,
    **{'head:w': np.zeros((5, 4), np.float32), 'proj:b': None, 'extra:w': np.zeros(2)},
  )
  with pytest.raises(errors.DataError) as info:
    weights.load(_model(), X, path, arg_name='--checkpoint')
  message = str(info.value)
  assert message.startswith(f"--checkpoint={path!r} does not fit the config's")
  assert "1 missing parameter(s) ['proj/b']" in message
  assert "1 unexpected parameter(s) ['extra/w']" in message
  assert "1 parameter(s) with other shapes ['head/w: file (5, 4) vs model (5, 3)']" in (
    message
  )


def test_select_loads_part_of_a_model_and_ignores_the_rest_of_the_file(tmp_path):
  # A file whose head has another shape and which holds modules the model lacks.
  path, params, _ = _saved(
    tmp_path, **{'head:w': np.zeros((5, 9), np.float32), 'decoder:w': np.zeros(4)}
  )
  select = weights.select_modules(('proj', 'norm'))
  got, state = weights.load(_model(), X, path, select=select)
  assert set(got) == {'proj', 'norm'}  # BatchNorm's scale and offset.
  assert set(state) == {'norm/~/mean_ema', 'norm/~/var_ema'}
  np.testing.assert_array_equal(got['proj']['w'], params['proj']['w'])
  assert weights.select_modules(()) is None
  prefix = weights.select_modules(('perceiver_encoder',))
  assert prefix('perceiver_encoder') and prefix('perceiver_encoder/~/cross_attention')
  assert not prefix('perceiver_encoder_2')


def test_sources_files_workdirs_and_release_names(tmp_path, monkeypatch):
  path, _, _ = _saved(tmp_path)
  workdir = tmp_path / 'run'
  os.makedirs(workdir / 'export')
  os.replace(path, workdir / 'export' / 'params.npz')
  assert weights.resolve(str(workdir), arg_name='x') == str(workdir / 'export/params.npz')
  # A release name resolves to its verified file in the cache.
  cache = tmp_path / 'cache'
  os.makedirs(cache)
  data = (workdir / 'export' / 'params.npz').read_bytes()
  (cache / 'w.npz').write_bytes(data)
  import hashlib  # pylint: disable=g-import-not-at-top

  release = registry.Release(
    'mine', 'test', 'http://127.0.0.1:9/w.npz', sha256=hashlib.sha256(data).hexdigest()
  )
  monkeypatch.setitem(registry.releases(), 'mine', release)
  monkeypatch.setenv('PERCEIVER_CACHE', str(cache))
  assert weights.resolve('mine', arg_name='x') == str(cache / 'w.npz')
  for source, message in [
    ('', 'x is empty'),
    (str(tmp_path), 'is a folder without export/params.npz'),
    ('nothing_of_that_name', "x='nothing_of_that_name' is neither a file nor"),
  ]:
    with pytest.raises(errors.UserError, match=re.escape(message)):
      weights.resolve(source, arg_name='x')
  # A file that holds code is refused, never run, and named with its flag.
  evil = tmp_path / 'evil.pickle'
  evil.write_bytes(pickle.dumps({'a': {'w': os.system}}))
  with pytest.raises(
    errors.DataError, match=r'--init=.*evil.pickle.*not allowed|--init='
  ):
    weights.read(str(evil), arg_name='--init')


def _flow_case(tmp_path):
  """The released flow architecture (41M parameters) and an npz of values for it."""
  config = flow_config.get_config('perceiver_io')
  model = flow_task.build_model(config)
  batch = task_lib.example_batch(flow_task, config)
  shapes, _ = weights.model_shapes(model, batch)
  params = {
    m: {n: np.full(s.shape, hash((m, n)) % 97 / 97, s.dtype) for n, s in d.items()}
    for m, d in shapes.items()
  }
  path = str(tmp_path / 'flow.npz')
  checkpoint.save_npz(path, params)
  return config, model, batch, params, path


_CONSTANT = re.compile(
  r'stablehlo\.constant dense<([\["])[^\n]*: tensor<([0-9x]*)x?(\w+)>'
)
# JAX 0.12 passes large constants as arguments marked `jax.const` instead.
_CONSTANT_ARGUMENT = re.compile(
  r'(%arg\d+): tensor<([0-9x]*)x?(\w+)> \{jax\.const = true'
)
_ITEMSIZE = {'f32': 4, 'bf16': 2, 'f16': 2, 'i32': 4, 'ui32': 4, 'i64': 8, 'f64': 8}


def _constant_bytes(lowered) -> int:
  """Bytes of the array values a lowered program holds (its StableHLO): non-splat
  constants, and the constants JAX hoists into arguments."""
  text = lowered.as_text()
  total = 0
  for _, dims, dtype in _CONSTANT.findall(text) + _CONSTANT_ARGUMENT.findall(text):
    size = int(np.prod([int(d) for d in dims.split('x') if d])) if dims else 1
    total += size * _ITEMSIZE.get(dtype, 4)
  return total


def test_fine_tuning_init_compiles_no_parameter_into_its_program(tmp_path):
  config, model, batch, params, path = _flow_case(tmp_path)
  assert sum(v.size for v in jax.tree.leaves(params)) == 41_057_134
  initial = weights.load(model, batch, path, arg_name='config.model.init_checkpoint')
  optimizer = optax.adam(1e-3)
  init = steps._jitted_init(model, optimizer)  # pylint: disable=protected-access
  lowered = init.lower(jax.random.PRNGKey(0), batch, initial)
  assert _constant_bytes(lowered) < 1 << 20
  # An array put into a traced function is counted: the check above can fail.
  one = np.random.default_rng(0).normal(size=(512, 513)).astype(np.float32)
  assert _constant_bytes(jax.jit(lambda: jnp.asarray(one) + 1).lower()) == one.nbytes
  state = steps.init_train_state(
    model, optimizer, batch, jax.random.PRNGKey(0), initial=initial
  )
  jax.tree.map(np.testing.assert_array_equal, state.params, params)
  assert int(state.step) == 0
  del config
