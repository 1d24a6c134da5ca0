"""The released Perceiver AR checkpoint: registry entry, verified download, safe loading.

The release publishes a zip of jaxline snapshots (`.../step_<N>_<date>/checkpoint.dill`,
dill pickles of params, state and optimizer state holding JAX arrays). The tests write
such zips for a tiny model, in the pickle formats of JAX 0.3 (`DeviceArray`) and of
current JAX, serve them from a local HTTP server and read them back.
"""

import dataclasses
import io
import os
import pickle
import sys
import types
import zipfile

import jax
import numpy as np
import optax
import pytest

from configs import perceiver_ar as perceiver_ar_config
from experiments.inference import pretrained
from experiments.tasks.perceiver_ar import generation
from experiments.tasks.perceiver_ar import task
from experiments.training import errors
from experiments.training import registry
from experiments.training import task as task_lib
from experiments.training import weights
from perceiver import checkpoint as checkpoint_lib
from tests.training.test_registry import _Handler
from tests.training.test_registry import server  # noqa: F401  (fixture)

NAME = 'perceiver_ar_copy_131072'


def _tiny_params(seed):
  config = perceiver_ar_config.get_config('tiny')
  model = task.build_model(config)
  shapes, _ = weights.model_shapes(model, task_lib.example_batch(task, config))
  rng = np.random.RandomState(seed)
  params = jax.tree.map(lambda s: (0.3 * rng.randn(*s.shape)).astype(s.dtype), shapes)
  return config, params


def _old_jax_pickle(snapshot):
  """Pickles NumPy leaves as JAX 0.3 DeviceArrays (`reconstruct_device_array`)."""
  module = types.ModuleType('jax._src.device_array')

  def reconstruct_device_array(fun, args, arr_state, aval_state):
    raise AssertionError('never called: only referenced by name')

  reconstruct_device_array.__module__ = module.__name__
  reconstruct_device_array.__qualname__ = 'reconstruct_device_array'
  module.reconstruct_device_array = reconstruct_device_array

  class Pickler(pickle.Pickler):
    def reducer_override(self, obj):
      if type(obj) is np.ndarray:
        fun, args, state = obj.__reduce__()
        aval = {'weak_type': False, 'named_shape': {}}
        return reconstruct_device_array, (fun, args, state, aval)
      return NotImplemented

  sys.modules[module.__name__] = module
  try:
    out = io.BytesIO()
    Pickler(out, protocol=4).dump(snapshot)
    return out.getvalue()
  finally:
    del sys.modules[module.__name__]


def _snapshot(params, step, *, old_jax):
  device = jax.tree.map(jax.numpy.asarray, params)
  snapshot = {
    'global_step': np.int64(step),
    'params': jax.device_get(device) if old_jax else device,
    'state': {},
    'opt_state': optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)).init(
      jax.device_get(device) if old_jax else device
    ),
  }
  if old_jax:
    return _old_jax_pickle(snapshot)
  return pickle.dumps(snapshot, protocol=4)


def _release_zip(newest, older, *, old_jax):
  out = io.BytesIO()
  with zipfile.ZipFile(out, 'w') as archive:
    root = 'random_mirrored_131072/models/latest/'
    archive.writestr(
      root + 'step_2_2022-06-10T10:00:00/checkpoint.dill',
      _snapshot(older, 2, old_jax=old_jax),
    )
    archive.writestr(
      root + 'step_7_2022-06-11T09:00:00/checkpoint.dill',
      _snapshot(newest, 7, old_jax=old_jax),
    )
  return out.getvalue()


def test_registry_entry_and_its_config():
  release = registry.get_release(NAME)
  assert release.url == (
    'https://storage.googleapis.com/perceiver-ar/checkpoints/random_mirrored_131072.zip'
  )
  assert release.filename == 'random_mirrored_131072.zip'
  assert release.config == 'configs/perceiver_ar.py:copy_131072'
  assert release.smoke_config == 'configs/perceiver_ar.py:tiny'
  config = registry.load_config(release.config)
  assert config.data.max_context_length == 131072
  assert config.model.perceiver_ar.z_index_dim == 1024
  assert generation.config_for(NAME, None).to_dict() == config.to_dict()
  smoke = pretrained.smoke_model(NAME)  # Same interface, no download.
  assert smoke.config.data.max_context_length == 32


@pytest.mark.parametrize('old_jax', [True, False])
def test_download_cache_verify_and_load(server, tmp_path, monkeypatch, old_jax):  # noqa: F811
  config, params = _tiny_params(0)
  _, older = _tiny_params(1)
  data = _release_zip(params, older, old_jax=old_jax)
  path_on_server = f'/ar_{int(old_jax)}/random_mirrored_131072.zip'
  _Handler.files[path_on_server] = data
  monkeypatch.setenv('PERCEIVER_CACHE', str(tmp_path / 'cache'))
  release = dataclasses.replace(
    registry.get_release(NAME),
    url=server + path_on_server,
    config='configs/perceiver_ar.py:tiny',
  )
  monkeypatch.setitem(registry.releases(), NAME, release)

  path = registry.checkpoint_path(NAME, progress=False)
  assert path == str(tmp_path / 'cache' / 'random_mirrored_131072.zip')
  assert sorted(os.listdir(tmp_path / 'cache')) == [
    'random_mirrored_131072.zip',
    'random_mirrored_131072.zip.sha256',
  ]
  del _Handler.files[path_on_server]  # Later calls use the verified cache.
  assert registry.checkpoint_path(NAME) == path

  # The newest snapshot's parameters, as NumPy arrays; the optimizer state is skipped.
  loaded, state = checkpoint_lib.load_params(path)
  assert state == {}
  assert loaded.keys() == params.keys()
  for module in params:
    for key in params[module]:
      np.testing.assert_array_equal(loaded[module][key], params[module][key])
      assert type(loaded[module][key]) is np.ndarray
  # By name, through the one weight loader (its config from the registry entry).
  for source in (NAME, path):
    model = generation.load(generation.config_for(NAME, None), source)
    assert model.path == path
    jax.tree.map(np.testing.assert_array_equal, model.params, params)
  tokens = generation.generate(
    config,
    model.params,
    generation.prompt_tokens(config, tokens=[5, 6, 7]),
    4,
    temperature=0,
  ).tokens
  assert tokens.shape == (8,) and (tokens[4:] > 0).all()
  other = perceiver_ar_config.get_config('copy_32')  # Another architecture.
  with pytest.raises(errors.DataError, match='with other shapes'):
    generation.load(other, path)

  with open(path, 'r+b') as f:  # A cached file that changed is refused.
    f.seek(100)
    f.write(b'\0\0\0')
  with pytest.raises(registry.ChecksumError, match='Refusing it'):
    registry.checkpoint_path(NAME)


def test_snapshot_with_code_is_refused(tmp_path):
  class Evil:
    def __reduce__(self):
      return os.system, ('echo pwned',)

  path = tmp_path / 'evil.zip'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr(
      'run/models/latest/step_1_x/checkpoint.dill',
      pickle.dumps({'params': {'m': {'w': Evil()}}}),
    )
  with pytest.raises(
    checkpoint_lib.UnsafeCheckpointError, match=r'Refusing to load posix\.system'
  ):
    checkpoint_lib.load_params(str(path))
  with zipfile.ZipFile(tmp_path / 'empty.zip', 'w') as archive:
    archive.writestr('readme.txt', 'no snapshot')
  with pytest.raises(ValueError, match='not a Perceiver parameter file'):
    checkpoint_lib.load_params(str(tmp_path / 'empty.zip'))
