"""The release registry and verified downloads, against a local HTTP server."""

import hashlib
import http.server
import os
import socket
import threading

import jax
import numpy as np
import pytest

from configs import imagenet as imagenet_config
from experiments.inference import pretrained
from experiments.training import errors
from experiments.training import registry
from experiments.training import task as task_lib
from tests import helpers


class _Handler(http.server.BaseHTTPRequestHandler):
  files = {}  # path -> bytes
  drop = set()  # paths whose transfer breaks off half-way

  def do_GET(self):  # noqa: N802
    body = self.files.get(self.path)
    if body is None:
      self.send_error(404)
      return
    self.send_response(200)
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    if self.path in self.drop:
      self.wfile.write(body[: len(body) // 2])
      self.wfile.flush()
      self.connection.shutdown(socket.SHUT_RDWR)
      return
    self.wfile.write(body)

  def log_message(self, *args):
    del args


@pytest.fixture(scope='module')
def server():
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{httpd.server_address[1]}'
  httpd.shutdown()
  httpd.server_close()


@pytest.fixture(scope='module')
def debug_checkpoint(tmp_path_factory):
  """The bytes of an .npz export of the debug ImageNet model, and its config."""
  config = imagenet_config.get_config('debug')
  path = str(tmp_path_factory.mktemp('ckpt') / 'debug.npz')
  helpers.random_checkpoint(config, path, scale=0.02)
  with open(path, 'rb') as f:
    return f.read(), config


def _release(url, data=None, **kwargs):
  return registry.Release(
    name='tiny',
    description='test',
    url=url,
    config='configs/imagenet.py:debug',
    size=len(data) if data is not None else None,
    sha256=hashlib.sha256(data).hexdigest() if data is not None else None,
    **kwargs,
  )


def test_every_family_declares_its_releases_in_its_config_file():
  releases = registry.releases()
  assert {
    'imagenet_fourier': 'configs/imagenet.py:io_fourier',
    'imagenet_learned': 'configs/imagenet.py:io_learned',
    'imagenet_conv': 'configs/imagenet.py:io_conv',
    'language_bytes': 'configs/mlm.py:bytes',
    'optical_flow': 'configs/flow.py:perceiver_io',
    'video_autoencoding': 'configs/multimodal.py:kinetics',
  }.items() <= {name: r.config for name, r in releases.items()}.items()
  for release in releases.values():
    assert release.url.startswith(('https://storage.googleapis.com/', 'https://'))
    for spec in (release.config, release.smoke_config):
      config = registry.load_config(spec)  # Both build through their task.
      task = task_lib.load_task(config.task)
      assert task_lib.example_batch(task, config)
  assert registry.get_release('imagenet_fourier').filename == (
    'imagenet_fourier_position_encoding.pystate'
  )
  with pytest.raises(errors.ConfigError, match='imagenet_fourier'):
    registry.get_release('resnet')


def test_a_declaration_with_an_unknown_field_is_named():
  with pytest.raises(ValueError, match=r"configs/x.py: RELEASES\['a'\].*colour"):
    registry._declared('x', {'a': dict(variant='v', url='u', description='d', colour=1)})  # pylint: disable=protected-access


def test_download_good_file_once_then_from_cache(
  server, debug_checkpoint, tmp_path, monkeypatch
):
  data, config = debug_checkpoint
  _Handler.files['/good.npz'] = data
  monkeypatch.setenv('PERCEIVER_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setitem(registry.releases(), 'tiny', _release(server + '/good.npz', data))
  path = registry.checkpoint_path('tiny', progress=True)
  assert path == str(tmp_path / 'cache' / 'good.npz')
  with open(path, 'rb') as f:
    assert f.read() == data
  assert sorted(os.listdir(tmp_path / 'cache')) == ['good.npz', 'good.npz.sha256']
  del _Handler.files['/good.npz']  # A second call must not download again.
  assert registry.checkpoint_path('tiny') == path
  model = pretrained.load('tiny')
  assert model.config.model.encoder.z_index_dim == config.model.encoder.z_index_dim
  batch = {'images': np.zeros([1, 16, 16, 3], np.float32)}
  apply = jax.jit(lambda p, s, b: model.model.apply(p, s, None, b, is_training=False)[0])
  assert apply(model.params, model.state, batch).shape == (1, 1000)
  # A local path works as well as a name; a wrong architecture is refused.
  assert pretrained.load(path, config=config).path == path
  with pytest.raises(errors.DataError, match='does not fit'):
    pretrained.load(path, config=imagenet_config.get_config('io_conv'))


def test_corrupted_file_is_refused_and_not_cached(
  server, debug_checkpoint, tmp_path, monkeypatch
):
  data, _ = debug_checkpoint
  corrupted = bytearray(data)
  corrupted[len(data) // 2] ^= 0xFF
  _Handler.files['/corrupt.npz'] = bytes(corrupted)
  monkeypatch.setenv('PERCEIVER_CACHE', str(tmp_path))
  monkeypatch.setitem(
    registry.releases(), 'tiny', _release(server + '/corrupt.npz', data)
  )
  with pytest.raises(registry.ChecksumError, match='SHA-256'):
    registry.checkpoint_path('tiny', progress=False)
  assert os.listdir(tmp_path) == []  # No partial or bad file is left.


def test_unpublished_checksum_is_recorded_and_rechecked(
  server, debug_checkpoint, tmp_path
):
  data, _ = debug_checkpoint
  _Handler.files['/unpinned.npz'] = data
  release = _release(server + '/unpinned.npz')  # No size, no SHA-256.
  target = str(tmp_path / 'unpinned.npz')
  registry.download(release, target, progress=False)
  assert registry.verify_file(release, target) == hashlib.sha256(data).hexdigest()
  with open(target, 'r+b') as f:  # The cached file changes afterwards.
    f.seek(10)
    f.write(b'\0\1\2')
  with pytest.raises(registry.ChecksumError, match='recorded'):
    registry.verify_file(release, target)
  with pytest.raises(registry.ChecksumError, match='expected'):  # A pinned digest.
    registry.verify_file(release, target, sha256='0' * 64)


def test_dropped_connection_leaves_nothing(server, debug_checkpoint, tmp_path):
  data, _ = debug_checkpoint
  _Handler.files['/drop.npz'] = data
  _Handler.drop.add('/drop.npz')
  release = _release(server + '/drop.npz')
  target = str(tmp_path / 'drop.npz')
  with pytest.raises(registry.DownloadError, match='--checkpoint=') as info:
    registry.download(release, target, progress=False)
  assert server + '/drop.npz' in str(info.value)
  assert os.listdir(tmp_path) == []


def test_offline_fails_at_once_with_url_and_local_file_hint(server, tmp_path):
  with socket.socket() as s:  # A port nobody listens on.
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}/imagenet_fourier_position_encoding.pystate'
  with pytest.raises(registry.DownloadError) as info:
    registry.download(_release(url), str(tmp_path / 'x.pystate'), progress=False)
  message = str(info.value)
  assert (
    url in message
    and '--checkpoint=/path/imagenet_fourier_position_encoding.pystate' in message
  )
  assert os.listdir(tmp_path) == []
  with pytest.raises(registry.DownloadError, match='Not Found'):  # HTTP 404.
    registry.download(_release(server + '/missing'), str(tmp_path / 'y'), progress=False)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
  'name', ['imagenet_fourier', 'imagenet_learned', 'imagenet_conv']
)
def test_smoke_models_keep_the_release_preprocessing(name):
  release = registry.get_release(name)
  full = registry.load_config(release.config)
  smoke = pretrained.smoke_model(name)
  prep = smoke.config.model.input_preprocessor
  assert prep.prep_type == full.model.input_preprocessor.prep_type
  assert (
    prep.position_encoding_type == full.model.input_preprocessor.position_encoding_type
  )
  count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(smoke.params))
  assert 10_000 < count < 50_000  # The release's models hold ~48M.
  assert smoke.path == '' and 'smoke' in smoke.name
