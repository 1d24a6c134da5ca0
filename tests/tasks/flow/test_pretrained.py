"""The `optical_flow` registry name: served by a local HTTP server, loaded, run."""

import functools
import hashlib
import http.server
import os
import threading

import jax
import numpy as np
import pytest

from configs import flow as flow_config
from experiments import optical_flow as command
from experiments.inference import pretrained
from experiments.tasks.flow import formats
from experiments.tasks.flow import optical_flow
from experiments.tasks.flow import task
from experiments.training import cli
from experiments.training import registry
from experiments.training import task as task_lib
from perceiver import checkpoint
from tests import helpers


@pytest.fixture
def served(tmp_path):
  """A debug flow checkpoint served on 127.0.0.1 as a `.pystate`-named `.npz`."""
  config = flow_config.get_config('debug')
  model = task.build_model(config)
  frames = np.zeros((1, 2, 13, 19, 3), np.float32)
  shapes, _ = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), {'frames': frames}, is_training=True)
  )
  # Values of the model's shapes (non-zero output weights, so the flow is not 0).
  params = jax.tree.map(
    lambda s: (0.05 * np.cos(np.arange(s.size))).reshape(s.shape).astype(s.dtype),
    shapes,
  )
  root = tmp_path / 'www'
  root.mkdir()
  checkpoint.save_npz(str(root / 'flow.npz'), params)
  data = (root / 'flow.npz').read_bytes()
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
  handler.log_message = lambda *args: None
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  release = registry.Release(
    'optical_flow',
    'test',
    f'http://127.0.0.1:{httpd.server_address[1]}/flow.npz',
    'configs/flow.py:debug',
    size=len(data),
    sha256=hashlib.sha256(data).hexdigest(),
  )
  yield release, params, str(root / 'flow.npz')
  httpd.shutdown()
  httpd.server_close()


def test_registry_entry_builds_the_release_architecture():
  release = registry.get_release('optical_flow')
  assert release.config == 'configs/flow.py:perceiver_io'
  config = registry.load_config(release.config)
  batch = task_lib.example_batch(task, config)
  assert batch['frames'].shape == (1, 2, 368, 496, 3)
  smoke = registry.load_config(release.smoke_config)
  assert tuple(smoke.model.image_size) == (13, 19)  # The smoke model (notebook, CI).


def test_name_downloads_loads_and_runs_the_command(served, tmp_path, monkeypatch):
  release, params, local = served
  monkeypatch.setenv('PERCEIVER_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setitem(registry.releases(), 'optical_flow', release)
  ready = pretrained.load('optical_flow')
  assert ready.path == str(tmp_path / 'cache' / 'flow.npz')
  jax.tree.map(np.testing.assert_array_equal, ready.params, jax.device_get(params))
  # The command takes the name where it takes a path; the flow equals the file's.
  frames = np.random.default_rng(0).integers(0, 256, (2, 17, 23, 3), dtype=np.uint8)
  for i, frame in enumerate(frames):
    formats.write_image(str(tmp_path / f'{i}.png'), frame)
  flags = {
    'config': os.path.join(helpers.REPO_ROOT, 'configs', 'flow.py') + ':debug',
    'checkpoint': 'optical_flow',
    'frame1': tmp_path / '0.png',
    'frame2': tmp_path / '1.png',
    'output': tmp_path / 'out.flo',
  }

  def run(**changes):
    argv = ['optical_flow'] + [f'--{k}={v}' for k, v in {**flags, **changes}.items()]
    cli.invoke(command.main, command.define_flags, argv, name='optical_flow')

  run()
  by_name = formats.read_flo(str(tmp_path / 'out.flo'))
  config = flow_config.get_config('debug')
  by_path = optical_flow.FlowModel.from_checkpoint(config, local)(frames[0], frames[1])
  np.testing.assert_array_equal(by_name, by_path)
  assert by_name.std() > 0
  # A name that is neither a file nor a release: one line naming it, status 1.
  with pytest.raises(SystemExit, match='optical_flow_v2.*neither a file nor'):
    run(checkpoint='optical_flow_v2')
  # Another architecture (the synthetic variant) does not fit the served checkpoint.
  synthetic = os.path.join(helpers.REPO_ROOT, 'configs', 'flow.py') + ':synthetic'
  with pytest.raises(SystemExit, match="does not fit the config's architecture"):
    run(config=synthetic)
