"""`python -m experiments.autoencode`: outputs, the JSON line and errors on bad input."""

import json
import os
import pickle
import subprocess
import sys
import wave

import jax
import numpy as np
import pytest

from configs import multimodal as multimodal_config
from experiments.inference import pretrained
from experiments.tasks.multimodal import autoencode
from experiments.tasks.multimodal import decoding
from experiments.tasks.multimodal import metrics
from experiments.tasks.multimodal import model as model_lib
from experiments.tasks.multimodal import task as multimodal_task
from experiments.tasks.multimodal import video_folder as vf
from experiments.training import errors
from experiments.training import registry
from experiments.training import task as task_lib
from perceiver import checkpoint
from tests import helpers
from tests.tasks.multimodal import fixtures

FPS = 25.0


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """A debug-config checkpoint (random parameters) and a 10-frame avi with audio."""
  root = tmp_path_factory.mktemp('autoencode')
  config = multimodal_config.get_config('debug')  # 3 frames of 16x16, 1,200 Hz audio.
  shapes = model_lib.Shapes(3, 16, 16, 3 * 48, 10)
  rec = decoding.Reconstructor(config, shapes, num_chunks=1)
  batch = {
    'video': np.zeros((1, 3, 16, 16, 3), np.float32),
    'audio': np.zeros((1, 144), np.float32),
  }
  params, state = fixtures.random_params(rec.init, jax.random.PRNGKey(0), batch)
  ckpt = str(root / 'params.npz')
  checkpoint.save_npz(ckpt, params, state)
  video, _ = vf.tone_clip(10, (20, 30), FPS, 1200, seed=0)
  audio = (0.5 * np.sin(2 * np.pi * 100 * np.arange(10 * 48) / 1200)).astype(np.float32)
  path = str(root / 'in.avi')
  vf.write_clip(path, video, FPS, audio, 1200)
  return config, ckpt, path, root, params


@pytest.mark.slow
def test_outputs_and_metrics(files):
  config, ckpt, path, root, params = files
  out_dir = str(root / 'out')
  result = autoencode.autoencode(ckpt, path, out_dir, config, num_chunks=3, progress=None)
  assert sorted(os.listdir(out_dir)) == [
    'input.wav',
    'reconstruction.wav',
    'result.json',
    'side_by_side.mp4',
  ]
  assert json.load(open(os.path.join(out_dir, 'result.json'))) == result
  assert [e['name'] for e in result['top5']] == [str(e['class']) for e in result['top5']]
  assert sum(e['probability'] for e in result['top5']) <= 1.0 + 1e-6
  # The PSNRs are those of the written reconstruction against the clip read as input.
  clip = vf.read_clip(path, vf.options_from_config(config, is_training=False))
  rec = decoding.Reconstructor(config, model_lib.Shapes(3, 16, 16, 144, 10), num_chunks=1)
  want = rec(
    params,
    {},
    jax.random.PRNGKey(42),
    {'video': clip['video'][None], 'audio': clip['audio'][None]},
  )
  np.testing.assert_allclose(
    result['video_psnr'],
    metrics.psnr(np.clip(want['image'], 0, 1), clip['video'][None])[0],
    rtol=1e-4,
  )
  side = vf.read_clip(
    os.path.join(out_dir, 'side_by_side.mp4'), vf.ReadOptions(3, 16, FPS, 1200, 48)
  )
  assert side['has_audio']
  with wave.open(os.path.join(out_dir, 'input.wav')) as f:
    assert (f.getframerate(), f.getnchannels(), f.getnframes()) == (1200, 1, 144)
    pcm = np.frombuffer(f.readframes(144), '<i2') / 32767
  np.testing.assert_allclose(pcm, clip['audio'], atol=1e-4)


@pytest.mark.slow
def test_a_video_without_sound_gets_no_audio_scores(files):
  """Issue 24: its input audio is silence, so no score against it would mean anything."""
  config, ckpt, _, root, _ = files
  video, _ = vf.tone_clip(10, (20, 30), FPS, 1200, seed=1)
  silent = str(root / 'silent.avi')
  vf.write_clip(silent, video, FPS, None, 1200)
  with pytest.warns(UserWarning, match='no audio stream; using silence'):
    result = autoencode.autoencode(
      ckpt, silent, str(root / 'silent_out'), config, num_chunks=1, progress=None
    )
  assert result['has_audio'] is False
  assert result['audio_psnr'] is None and result['audio_snr'] is None
  assert np.isfinite(result['video_psnr'])
  with open(os.path.join(root, 'silent_out', 'result.json')) as f:
    assert json.load(f)['audio_psnr'] is None  # null in the JSON line and file.


def test_bad_input_is_named(files):
  config, ckpt, path, root, _ = files
  with pytest.raises(ValueError, match='--video: .*nothere.mp4: no such file'):
    autoencode.autoencode(
      ckpt, str(root / 'nothere.mp4'), str(root / 'o'), config, num_chunks=1
    )
  other = multimodal_config.get_config('debug')
  with other.unlocked():
    other.model.encoder.num_z_channels = 24
  with pytest.raises(ValueError, match='--checkpoint=.*params.npz.* does not fit'):
    autoencode.autoencode(ckpt, path, str(root / 'o'), other, num_chunks=1, progress=None)


def test_command_exits_with_one_line_on_bad_input(files):
  _, ckpt, path, root, _ = files
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.autoencode',
      f'--checkpoint={ckpt}',
      f'--video={root / "short.avi"}',
      f'--output_dir={root / "o2"}',
      '--config=configs/multimodal.py:debug',
    ],
    cwd=helpers.REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith('autoencode: error: --video: ')
  assert 'short.avi: no such file' in result.stderr


def test_registry_name_loads_the_release_file_from_the_cache(
  files, tmp_path, monkeypatch
):
  """`--checkpoint=video_autoencoding` finds the release file in $PERCEIVER_CACHE (here
  written beforehand in the release's pickle format), so nothing is downloaded."""
  config, _, path, root, params = files
  release = registry.get_release('video_autoencoding')
  assert release.config == 'configs/multimodal.py:kinetics'
  monkeypatch.setenv('PERCEIVER_CACHE', str(tmp_path))
  with open(tmp_path / release.filename, 'wb') as f:
    pickle.dump({m: dict(d) for m, d in params.items()}, f)
  model = pretrained.load('video_autoencoding', config=config)
  assert model.path == str(tmp_path / release.filename)
  assert jax.tree.structure(model.params) == jax.tree.structure(params)
  for got, want in zip(jax.tree.leaves(model.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  batch = task_lib.example_batch(multimodal_task, config)
  out, _ = jax.eval_shape(  # The ready model applies to a clip of the config's sizes.
    lambda p: model.model.apply(p, {}, jax.random.PRNGKey(0), batch, is_training=False),
    model.params,
  )
  assert out['image'].shape == (1, 3, 16, 16, 3) and out['label'].shape == (1, 10)
  with pytest.raises(errors.DataError, match="--checkpoint='nothing' is neither a file"):
    autoencode.autoencode('nothing', path, str(root / 'o3'), config, num_chunks=1)
