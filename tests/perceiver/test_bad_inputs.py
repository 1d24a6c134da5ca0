"""Bad inputs to the library and its file loaders: clear errors, never tracebacks.

Unreadable, truncated or hand-made parameter files are a ValueError (or
UnsafeCheckpointError) naming the file; invalid model arguments and inputs (zero heads,
an empty batch, masks of the wrong shape) are a ValueError naming the argument.
"""

import io
import json
import re
import zipfile

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import checkpoint
from perceiver import perceiver
from tests.perceiver import test_perceiver


def _saved(tmp_path):
  path = str(tmp_path / 'params.npz')
  checkpoint.save_npz(path, {'linear': {'w': np.arange(15.0).reshape(3, 5)}})
  return path


def test_truncated_npz_names_the_file(tmp_path):
  path = _saved(tmp_path)
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[: len(data) // 2])
  with pytest.raises(ValueError, match=f'{path!r} is not a readable .npz') as error:
    checkpoint.load_params(path)
  assert 'Traceback' not in str(error.value)


def _hand_made_npz(path, entries):
  buffer = io.BytesIO()
  np.savez(buffer, **entries)
  open(path, 'wb').write(buffer.getvalue())
  return str(path)


def _format_entry(meta):
  return np.frombuffer(json.dumps(meta).encode(), np.uint8)


@pytest.mark.parametrize(
  'meta, entries, message',
  [
    # A dtype recorded as an object instead of a name.
    (
      {'version': 1, 'dtypes': {'params/linear/w': {'__class__': 'dtype'}}},
      {'params/linear/w': np.zeros(3, np.float32)},
      'not a dtype name',
    ),
    # A dtype whose size does not fit the stored bits.
    (
      {'version': 1, 'dtypes': {'params/linear/w': 'bfloat16'}},
      {'params/linear/w': np.zeros(3, np.float32)},
      'cannot be read from its stored float32',
    ),
    ({'version': 1, 'dtypes': []}, {}, 'malformed'),
    ({'version': 1, 'dtypes': {}}, {'weights': np.zeros(3)}, "entry 'weights'"),
  ],
)
def test_hand_made_npz_files_are_clear_errors(tmp_path, meta, entries, message):
  path = _hand_made_npz(
    tmp_path / 'bad.npz', {'__perceiver_npz__': _format_entry(meta), **entries}
  )
  with pytest.raises(ValueError, match=message) as error:
    checkpoint.load_params(path)
  assert path in str(error.value)


def test_npz_with_unreadable_metadata(tmp_path):
  path = _hand_made_npz(
    tmp_path / 'bad.npz', {'__perceiver_npz__': np.frombuffer(b'\xff{', np.uint8)}
  )
  with pytest.raises(ValueError, match='unreadable __perceiver_npz__ metadata'):
    checkpoint.load_params(path)


def test_zip_that_is_not_an_npz(tmp_path):
  path = str(tmp_path / 'archive.npz')
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('readme.txt', 'hello')
  with pytest.raises(ValueError, match='not a Perceiver parameter file'):
    checkpoint.load_params(path)


def test_deeply_nested_pickle_is_refused_without_recursion_error(tmp_path):
  # 200,000 nested dicts {'a': {'a': ...}}, written opcode by opcode (pickle.dumps
  # itself would exhaust the recursion limit).
  depth = 200_000
  key = b'X\x01\x00\x00\x00a'  # BINUNICODE 'a'
  data = b'\x80\x02' + (b'}' + key) * depth + b'}' + b's' * depth + b'.'
  path = tmp_path / 'deep.pickle'
  path.write_bytes(data)
  with pytest.raises(checkpoint.UnsafeCheckpointError, match='nested more than'):
    checkpoint.load_params(str(path))


def test_truncated_pickle_names_the_file(tmp_path):
  import pickle  # pylint: disable=g-import-not-at-top

  data = pickle.dumps({'linear': {'w': np.zeros((3, 5), np.float32)}}, protocol=2)
  path = tmp_path / 'cut.pickle'
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match=f'{str(path)!r} is not a readable checkpoint'):
    checkpoint.load_params(str(path))


def _encode(inputs, input_mask=None, **kwargs):
  def forward(inputs, input_mask):
    arguments = dict(
      num_self_attends_per_block=1,
      z_index_dim=3,
      num_z_channels=8,
      num_cross_attend_heads=1,
    )
    encoder = perceiver.PerceiverEncoder(**dict(arguments, **kwargs))
    z = encoder.latents(inputs)
    return encoder(inputs, z, is_training=False, input_mask=input_mask)

  model = hk.transform(forward)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs, input_mask))


def test_zero_heads_is_a_clear_error():
  with pytest.raises(ValueError, match='num_self_attend_heads must be a positive'):
    _encode(jnp.zeros([2, 5, 7]), num_self_attend_heads=0)
  with pytest.raises(ValueError, match='num_cross_attend_heads must be a positive'):
    _encode(jnp.zeros([2, 5, 7]), num_self_attend_heads=2, num_cross_attend_heads=0)


def test_empty_batch_is_a_clear_error():
  with pytest.raises(ValueError, match=r'batch B .*at least 1'):
    _encode(jnp.zeros([0, 5, 7]), num_self_attend_heads=2)


def test_mask_of_the_wrong_shape_is_a_clear_error():
  with pytest.raises(ValueError, match=r'input_mask must have shape \(2, 5\)'):
    _encode(jnp.zeros([2, 5, 7]), jnp.ones([2, 3]), num_self_attend_heads=2)


@pytest.mark.parametrize('shape', [(0, 8, 8, 3), (2, 0, 0, 3), (2, 5, 0, 3)])
def test_an_empty_image_batch_names_its_shape(shape):
  """The README's example with a batch of 0 images, or 0 x 0 images."""
  model = test_perceiver._classifier(preprocessor=True)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=rf'of shape {re.escape(str(shape))} .*is empty'):
    model.init(jax.random.PRNGKey(0), jnp.zeros(shape))


def test_npz_with_an_object_array_names_the_file(tmp_path):
  path = str(tmp_path / 'objects.npz')
  meta = json.dumps({'version': 1, 'dtypes': {}}).encode()
  np.savez(
    path,
    __perceiver_npz__=np.frombuffer(meta, np.uint8),
    **{'params/linear/w': np.array([{'a': 1}], dtype=object)},
  )
  with pytest.raises(ValueError, match=r"objects.npz'.*params/linear/w.*unpickling"):
    checkpoint.load_npz(path)
