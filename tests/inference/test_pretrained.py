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
from experiments.tasks.imagenet import task as imagenet_task
from perceiver import checkpoint as checkpoint_lib


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
  model = imagenet_task.build_model(config)
  batch = pretrained.example_batch(config)
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), batch, is_training=True)
  )
  rng = np.random.RandomState(0)
  params, state = jax.tree.map(
    lambda s: (0.02 * rng.randn(*s.shape)).astype(s.dtype), shapes
  )  # Random values of the model's shapes (no initialisation run needed).
  path = str(tmp_path_factory.mktemp('ckpt') / 'debug.npz')
  checkpoint_lib.save_npz(path, params, state)
  with open(path, 'rb') as f:
    return f.read(), config


def _release(url, data=None, **kwargs):
  return pretrained.Release(
    name='tiny',
    description='test',
    url=url,
    config='configs/imagenet.py:debug',
    size=len(data) if data is not None else None,
    sha256=hashlib.sha256(data).hexdigest() if data is not None else None,
    **kwargs,
  )


def test_registry_names_urls_and_configs():
  assert set(pretrained.RELEASES) >= {
    'imagenet_fourier',
    'imagenet_learned',
    'imagenet_conv',
    'language_bytes',
    'optical_flow',
    'video_autoencoding',
  }
  for release in pretrained.RELEASES.values():
    bucket = 'perceiver-ar' if release.name.startswith('perceiver_ar') else 'perceiver_io'
    assert release.url.startswith(f'https://storage.googleapis.com/{bucket}/')
    if release.config:
      config = pretrained.load_config(release.config)
      assert pretrained.example_batch(config)  # Every buildable entry can be checked.
  assert pretrained.get_release('imagenet_fourier').filename == (
    'imagenet_fourier_position_encoding.pystate'
  )
  with pytest.raises(ValueError, match='imagenet_fourier'):
    pretrained.get_release('resnet')


def test_download_good_file_once_then_from_cache(
  server, debug_checkpoint, tmp_path, monkeypatch
):
  data, config = debug_checkpoint
  _Handler.files['/good.npz'] = data
  monkeypatch.setenv('PERCEIVER_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setitem(pretrained.RELEASES, 'tiny', _release(server + '/good.npz', data))
  path = pretrained.checkpoint_path('tiny', progress=True)
  assert path == str(tmp_path / 'cache' / 'good.npz')
  with open(path, 'rb') as f:
    assert f.read() == data
  assert sorted(os.listdir(tmp_path / 'cache')) == ['good.npz', 'good.npz.sha256']
  del _Handler.files['/good.npz']  # A second call must not download again.
  assert pretrained.checkpoint_path('tiny') == path
  model = pretrained.load('tiny', progress=False)
  assert model.config.model.encoder.z_index_dim == config.model.encoder.z_index_dim
  batch = {'images': np.zeros([1, 16, 16, 3], np.float32)}
  apply = jax.jit(lambda p, s, b: model.model.apply(p, s, None, b, is_training=False)[0])
  assert apply(model.params, model.state, batch).shape == (1, 1000)
  # A local path works as well as a name; a wrong architecture is refused.
  assert pretrained.checkpoint_path(path) == path
  with pytest.raises(ValueError, match='does not fit'):
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
    pretrained.RELEASES, 'tiny', _release(server + '/corrupt.npz', data)
  )
  with pytest.raises(pretrained.ChecksumError, match='SHA-256'):
    pretrained.checkpoint_path('tiny', progress=False)
  assert os.listdir(tmp_path) == []  # No partial or bad file is left.


def test_unpublished_checksum_is_recorded_and_rechecked(
  server, debug_checkpoint, tmp_path
):
  data, _ = debug_checkpoint
  _Handler.files['/unpinned.npz'] = data
  release = _release(server + '/unpinned.npz')  # No size, no SHA-256.
  target = str(tmp_path / 'unpinned.npz')
  pretrained.download(release, target, progress=False)
  assert pretrained.verify_file(release, target) == hashlib.sha256(data).hexdigest()
  with open(target, 'r+b') as f:  # The cached file changes afterwards.
    f.seek(10)
    f.write(b'\0\1\2')
  with pytest.raises(pretrained.ChecksumError, match='recorded'):
    pretrained.verify_file(release, target)
  with pytest.raises(pretrained.ChecksumError, match='expected'):  # A pinned digest.
    pretrained.verify_file(release, target, sha256='0' * 64)


def test_dropped_connection_leaves_nothing(server, debug_checkpoint, tmp_path):
  data, _ = debug_checkpoint
  _Handler.files['/drop.npz'] = data
  _Handler.drop.add('/drop.npz')
  release = _release(server + '/drop.npz')
  target = str(tmp_path / 'drop.npz')
  with pytest.raises(pretrained.DownloadError, match='--checkpoint=') as info:
    pretrained.download(release, target, progress=False)
  assert server + '/drop.npz' in str(info.value)
  assert os.listdir(tmp_path) == []


def test_offline_fails_at_once_with_url_and_local_file_hint(server, tmp_path):
  with socket.socket() as s:  # A port nobody listens on.
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}/imagenet_fourier_position_encoding.pystate'
  with pytest.raises(pretrained.DownloadError) as info:
    pretrained.download(_release(url), str(tmp_path / 'x.pystate'), progress=False)
  message = str(info.value)
  assert (
    url in message
    and '--checkpoint=/path/imagenet_fourier_position_encoding.pystate' in message
  )
  assert os.listdir(tmp_path) == []
  with pytest.raises(pretrained.DownloadError, match='Not Found'):  # HTTP 404.
    pretrained.download(
      _release(server + '/missing'), str(tmp_path / 'y'), progress=False
    )
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
  'name', ['imagenet_fourier', 'imagenet_learned', 'imagenet_conv']
)
def test_tiny_configs_keep_the_release_preprocessing(name):
  full = pretrained.load_config(pretrained.get_release(name).config)
  tiny = pretrained.tiny_config(name)
  assert (
    tiny.model.input_preprocessor.prep_type == full.model.input_preprocessor.prep_type
  )
  model = imagenet_task.build_model(tiny)
  params, _ = jax.eval_shape(
    lambda: model.init(
      jax.random.PRNGKey(0), pretrained.example_batch(tiny), is_training=True
    )
  )
  count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
  assert 10_000 < count < 50_000  # The release's models hold ~48M.
