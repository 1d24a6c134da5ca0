"""`python -m experiments.optical_flow`: end to end, its errors, all-or-nothing outputs."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import flow as flow_config
from experiments import optical_flow
from experiments.tasks.flow import formats
from experiments.tasks.flow import task
from experiments.training import cli
from perceiver import checkpoint
from tests import helpers

CONFIG = os.path.join(helpers.REPO_ROOT, 'configs', 'flow.py')


def run_command(**values):
  """Runs the command in this process with `--name=value` flags."""
  argv = ['optical_flow'] + [f'--{k}={v}' for k, v in values.items() if v is not None]
  return cli.invoke(
    optical_flow.main, optical_flow.define_flags, argv, name='optical_flow'
  )


def _debug_checkpoint(tmp_path):
  config = flow_config.get_config('debug')
  model = task.build_model(config)
  frames = np.zeros((1, 2, 13, 19, 3), np.float32)
  params, _ = model.init(jax.random.PRNGKey(0), {'frames': frames}, is_training=True)
  params = jax.tree.map(
    lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params
  )
  path = str(tmp_path / 'params.npz')
  checkpoint.save_npz(path, params)
  return config, path


@pytest.mark.slow
def test_command_end_to_end(tmp_path, capsys):
  config, path = _debug_checkpoint(tmp_path)
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
  formats.write_image(str(tmp_path / 'a.png'), frames[0])
  formats.write_image(str(tmp_path / 'b.png'), frames[1])
  truth = rng.normal(size=(20, 30, 2)).astype(np.float32)
  formats.write_flo(str(tmp_path / 'gt.flo'), truth)
  run_command(  # No SystemExit: status 0.
    config=f'{CONFIG}:debug',
    checkpoint=path,
    frame1=tmp_path / 'a.png',
    frame2=tmp_path / 'b.png',
    output=tmp_path / 'out.flo',
    visualization=tmp_path / 'out.png',
    ground_truth=tmp_path / 'gt.flo',
  )
  captured = capsys.readouterr()
  assert 'tile 4/4' in captured.err
  flow = formats.read_flo(str(tmp_path / 'out.flo'))
  assert flow.shape == (20, 30, 2) and np.isfinite(flow).all() and flow.std() > 0
  scores = json.loads(captured.out.strip().splitlines()[-1])
  assert scores['epe'] == pytest.approx(
    np.linalg.norm(flow - truth, axis=-1).mean(), rel=1e-5
  )
  assert formats.read_image(str(tmp_path / 'out.png')).shape == (20, 30, 3)


def test_compute_dtype_bfloat16_changes_only_the_rounding(tmp_path):
  config, path = _debug_checkpoint(tmp_path)
  frames = np.random.default_rng(2).integers(0, 256, (2, 13, 19, 3), dtype=np.uint8)
  formats.write_image(str(tmp_path / 'a.png'), frames[0])
  formats.write_image(str(tmp_path / 'b.png'), frames[1])
  flows = {}
  for dtype in ('float32', 'bfloat16'):
    run_command(
      config=f'{CONFIG}:debug',
      checkpoint=path,
      frame1=tmp_path / 'a.png',
      frame2=tmp_path / 'b.png',
      output=tmp_path / f'{dtype}.flo',
      compute_dtype=dtype,
    )
    flows[dtype] = formats.read_flo(str(tmp_path / f'{dtype}.flo'))
  assert flows['bfloat16'].dtype == np.float32  # float32 outputs either way
  difference = np.abs(flows['bfloat16'] - flows['float32']).max()
  scale = np.abs(flows['float32']).max()
  # bfloat16 has 8 mantissa bits: differences of ~1e-2 relative, never identical.
  assert 0 < difference < 0.05 * scale, (difference, scale)


def test_command_exits_with_status_1(tmp_path):
  (tmp_path / 'a.png').write_text('not an image')
  command = [
    sys.executable,
    '-m',
    'experiments.optical_flow',
    f'--config={helpers.REPO_ROOT}/configs/flow.py:debug',
    f'--checkpoint={tmp_path / "none.npz"}',
    f'--frame1={tmp_path / "a.png"}',
    f'--frame2={tmp_path / "a.png"}',
    f'--output={tmp_path / "out.flo"}',
  ]
  env = dict(os.environ, PYTHONPATH=helpers.REPO_ROOT, JAX_PLATFORMS='cpu')
  result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('optical_flow: error:') and 'a.png' in last


def test_command_errors_name_the_input(tmp_path):
  rng = np.random.default_rng(2)
  frames = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
  formats.write_image(str(tmp_path / 'a.png'), frames[0])
  formats.write_image(str(tmp_path / 'small.png'), frames[1, :10])
  from PIL import Image

  Image.fromarray(frames[1, ..., 0]).save(tmp_path / 'grey.png')
  (tmp_path / 'text.flo').write_text('this is not a flow file')
  formats.write_image(str(tmp_path / 'b.png'), frames[1])
  other = flow_config.get_config('synthetic')
  shapes = jax.eval_shape(
    lambda: task.build_model(other).init(
      jax.random.PRNGKey(0),
      {'frames': jnp.zeros((1, 2, 24, 32, 3), jnp.float32)},
      is_training=True,
    )[0]
  )
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  checkpoint.save_npz(str(tmp_path / 'other.npz'), params)
  base = dict(
    config=f'{CONFIG}:debug',
    checkpoint=str(tmp_path / 'other.npz'),
    frame1=str(tmp_path / 'a.png'),
    frame2=str(tmp_path / 'b.png'),
    output=str(tmp_path / 'out.flo'),
  )
  cases = [
    (dict(frame2=str(tmp_path / 'small.png')), r"small.png' is 30x10"),
    (dict(frame2=str(tmp_path / 'grey.png')), r'grey.png.*grey'),
    (dict(ground_truth=str(tmp_path / 'text.flo')), r'text.flo.*magic'),
    (dict(output=str(tmp_path / 'out.png')), r'out.png.*must end in .flo'),
    ({}, r'other.npz.*does not fit'),
    (dict(checkpoint=str(tmp_path / 'missing.npz')), r'missing.npz'),
    (dict(output=str(tmp_path / 'no' / 'out.flo')), r'no/out.flo.*does not exist'),
    (dict(visualization=str(tmp_path / 'no' / 'v.png')), r'--visualization=.*no/v.png'),
  ]
  for overrides, message in cases:
    with pytest.raises(SystemExit) as info:
      run_command(**{**base, **overrides})
    text = str(info.value.code)
    assert text.startswith('optical_flow: error:') and re.search(message, text), text
    assert not (tmp_path / 'out.flo').exists()  # Nothing is written on an error.


def test_outputs_are_all_or_nothing(tmp_path, monkeypatch):
  """A picture that fails to write leaves no .flo behind (and no temporary file)."""
  config, path = _debug_checkpoint(tmp_path)
  frames = np.random.default_rng(3).integers(0, 256, (2, 13, 19, 3), dtype=np.uint8)
  for i, frame in enumerate(frames):
    formats.write_image(str(tmp_path / f'{i}.png'), frame)

  def broken_write(path, image):
    raise OSError(28, 'No space left on device', path)

  monkeypatch.setattr(formats, 'write_image', broken_write)
  out = tmp_path / 'out'
  out.mkdir()
  with pytest.raises(OSError, match='No space'):
    run_command(
      config=f'{CONFIG}:debug',
      checkpoint=path,
      frame1=tmp_path / '0.png',
      frame2=tmp_path / '1.png',
      output=out / 'flow.flo',
      visualization=out / 'flow.png',
    )
  assert os.listdir(out) == []
