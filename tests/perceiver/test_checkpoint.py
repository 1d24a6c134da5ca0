"""Tests for the safe official-checkpoint loader and the npz parameter format."""

import os
import pickle

import haiku as hk
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from perceiver import checkpoint


def _params():
  rng = np.random.RandomState(0)
  return {
    'perceiver_encoder/~/cross_attention/attention/linear': {
      'w': rng.randn(3, 5).astype(np.float32),
      'b': rng.randn(5).astype(np.float32),
    },
    'embed': {'embeddings': rng.randn(7, 3).astype(np.float32)},
  }


def _state():
  return {
    'image_preprocessor/~/conv2_d_downsample/~/batchnorm/~/mean_ema': {
      'counter': np.array(3, np.int32),
      'hidden': np.ones((1, 1, 1, 5), np.float32),
    }
  }


class _Exploit:
  """Unpickling this would run a shell command."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, (f'touch {self.path}',))


def test_restricted_unpickler_refuses_code(tmp_path):
  marker = tmp_path / 'pwned'
  bad = tmp_path / 'bad.pickle'
  bad.write_bytes(pickle.dumps({'params': _Exploit(marker)}))
  with pytest.raises(checkpoint.UnsafeCheckpointError, match=r'(posix|os|nt)\.system'):
    checkpoint.load_official_checkpoint(str(bad))
  assert not marker.exists()


def test_restricted_unpickler_refuses_other_types(tmp_path):
  path = tmp_path / 'f.pickle'
  path.write_bytes(pickle.dumps({'a': {'w': {1, 2}}}))  # A set is not a parameter.
  with pytest.raises(checkpoint.UnsafeCheckpointError, match='set'):
    checkpoint.load_official_checkpoint(str(path))
  path.write_bytes(pickle.dumps({'a': np.array([object()], dtype=object)}))
  with pytest.raises(checkpoint.UnsafeCheckpointError):
    checkpoint.load_official_checkpoint(str(path))
  path.write_bytes(b'not a pickle')
  with pytest.raises(ValueError, match='not a readable checkpoint'):
    checkpoint.load_official_checkpoint(str(path))


def test_loads_dicts_and_haiku_flatmappings(tmp_path):
  params, state = _params(), _state()
  path = tmp_path / 'imagenet.pystate'
  # Haiku's immutable mappings pickle as haiku._src.data_structures.FlatMapping.
  frozen = {
    'params': hk.data_structures.to_immutable_dict(params),
    'state': hk.data_structures.to_immutable_dict(state),
  }
  data = pickle.dumps(frozen)
  assert b'FlatMapping' in data
  path.write_bytes(data)
  loaded = checkpoint.load_official_checkpoint(str(path))
  p, s = checkpoint.split_params_and_state(loaded)
  for mod in params:
    for name in params[mod]:
      np.testing.assert_array_equal(p[mod][name], params[mod][name])
  np.testing.assert_array_equal(s[next(iter(state))]['counter'], 3)
  # A bare params mapping (MLM, flow, video files).
  path2 = tmp_path / 'mlm.pickle'
  path2.write_bytes(pickle.dumps(params, protocol=2))
  p2, s2 = checkpoint.load_params(str(path2))
  assert s2 == {} and set(p2) == set(params)


def test_npz_round_trip_is_exact(tmp_path):
  params, state = _params(), _state()
  params['embed']['bf16'] = (
    np.random.RandomState(1).randn(4, 3).astype(ml_dtypes.bfloat16)
  )
  path = tmp_path / 'sub' / 'params.npz'
  checkpoint.save_npz(str(path), params, state)
  assert sorted(os.listdir(tmp_path / 'sub')) == ['params.npz']  # No temp files left.
  with np.load(path, allow_pickle=False) as archive:
    assert (
      'params/perceiver_encoder/~/cross_attention/attention/linear/w' in archive.files
    )
  p, s = checkpoint.load_npz(str(path))
  for tree, ref in ((p, params), (s, state)):
    assert set(tree) == set(ref)
    for mod in ref:
      for name, value in ref[mod].items():
        assert tree[mod][name].dtype == value.dtype
        assert tree[mod][name].shape == value.shape
        np.testing.assert_array_equal(
          tree[mod][name].reshape(-1).view(np.uint8),
          np.asarray(value).reshape(-1).view(np.uint8),
        )
  p2, s2 = checkpoint.load_params(str(path))
  np.testing.assert_array_equal(p2['embed']['embeddings'], params['embed']['embeddings'])
  # jax arrays are accepted too.
  checkpoint.save_npz(str(path), {'m': {'w': jnp.ones((2,))}})
  assert checkpoint.load_npz(str(path))[0]['m']['w'].tolist() == [1.0, 1.0]


def test_load_npz_rejects_foreign_files(tmp_path):
  path = tmp_path / 'other.npz'
  np.savez(path, x=np.zeros(3))
  with pytest.raises(ValueError, match='not a Perceiver parameter file'):
    checkpoint.load_npz(str(path))
  path = tmp_path / 'text.npz'
  path.write_text('hello')
  with pytest.raises(ValueError, match='not a readable .npz'):
    checkpoint.load_npz(str(path))
