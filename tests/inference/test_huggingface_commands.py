"""`python -m experiments.import_hf` and `python -m experiments.export_hf`, run as a user would.

A transformers checkpoint imported to `.npz` and exported again with the config flags the
import printed gives back transformers' file byte for byte; every refusal is one line
on stderr with exit status 1.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers
from tests import transformers_data


def _run(*args):
  result = subprocess.run(
    [sys.executable, '-m', *args],
    cwd=helpers.REPO_ROOT,
    env=helpers.subprocess_env(TF_CPP_MIN_LOG_LEVEL='3'),
    capture_output=True,
    text=True,
    timeout=600,
  )
  return result


def _error_line(result, program):
  """The one-line error of a refused command (exit status 1)."""
  assert result.returncode == 1, (result.stdout, result.stderr[-2000:])
  lines = [line for line in result.stderr.splitlines() if line.startswith(program)]
  assert len(lines) == 1 and result.stderr.rstrip().endswith(lines[0]), result.stderr
  return lines[0]


@pytest.mark.slow
def test_import_then_export_gives_back_the_file(tmp_path):
  directory = transformers_data.unpack('imagenet_fourier', str(tmp_path / 'hf'))
  params = tmp_path / 'params.npz'
  result = _run('experiments.import_hf', f'--input_dir={directory}', f'--output={params}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'PerceiverForImageClassificationFourier, 6,901 parameters' in result.stdout
  (flags_line,) = [
    line for line in result.stdout.splitlines() if line.startswith('config: ')
  ]
  flags = flags_line[len('config: ') :].split()
  assert flags[0] == '--config=configs/imagenet.py:io_fourier'
  assert '--config.model.encoder.z_index_dim=7' in flags
  out = tmp_path / 'export'
  result = _run(
    'experiments.export_hf',
    *flags,
    '--config.model.encoder.compute_dtype=',  # Off: float32, as '' and None.
    f'--checkpoint={params}',
    f'--output_dir={out}',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert (out / 'model.safetensors').read_bytes() == (
    tmp_path / 'hf' / 'model.safetensors'
  ).read_bytes()
  config = json.loads((out / 'config.json').read_text())
  assert config['architectures'] == ['PerceiverForImageClassificationFourier']
  assert config['num_latents'] == 7 and config['hidden_act'] == 'gelu_new'
  processor = json.loads((out / 'preprocessor_config.json').read_text())
  assert processor['image_processor_type'] == 'PerceiverImageProcessor'
  assert processor['size'] == {'height': 224, 'width': 224}


@pytest.mark.slow
def test_refusals_are_one_line(tmp_path):
  # An unknown family, before any weights are read.
  line = _error_line(
    _run(
      'experiments.export_hf',
      '--config=configs/digits.py',
      '--checkpoint=/nonexistent',
      f'--output_dir={tmp_path}',
    ),
    'export_hf: error:',
  )
  assert (
    "config.task='experiments.tasks.digits.task' has no transformers counterpart" in line
  )
  # An option transformers cannot express.
  line = _error_line(
    _run(
      'experiments.export_hf',
      '--config=configs/imagenet.py:io_fourier',
      '--config.model.encoder.compute_dtype=bfloat16',
      '--checkpoint=/nonexistent',
      f'--output_dir={tmp_path}',
    ),
    'export_hf: error:',
  )
  assert "model.encoder.compute_dtype='bfloat16'" in line
  # Weights that do not fit the config's model.
  small = tmp_path / 'small.npz'
  from perceiver import checkpoint  # noqa: PLC0415

  checkpoint.save_npz(
    str(small), {'embed': {'embeddings': np.zeros((262, 4), np.float32)}}
  )
  line = _error_line(
    _run(
      'experiments.export_hf',
      '--config=configs/mlm.py:bytes',
      f'--checkpoint={small}',
      f'--output_dir={tmp_path / "out"}',
    ),
    'export_hf: error:',
  )
  assert (
    "with other shapes ['embed/embeddings: file (262, 4) vs model (262, 768)']" in line
  )
  assert 'missing parameter(s)' in line  # The rest of the model's, counted.
  # A pickle.
  pickled = tmp_path / 'pickled'
  pickled.mkdir()
  (pickled / 'config.json').write_text('{"architectures": ["PerceiverForMaskedLM"]}')
  (pickled / 'pytorch_model.bin').write_bytes(b'\x80\x02}q\x00.')
  line = _error_line(
    _run(
      'experiments.import_hf', f'--input_dir={pickled}', f'--output={tmp_path / "p.npz"}'
    ),
    'import_hf: error:',
  )
  assert 'pytorch_model.bin is a pickle' in line
  # A checkpoint that differs from the given config.
  directory = transformers_data.unpack('optical_flow', str(tmp_path / 'flow'))
  line = _error_line(
    _run(
      'experiments.import_hf',
      f'--input_dir={directory}',
      f'--output={tmp_path / "f.npz"}',
      '--config=configs/flow.py',
    ),
    'import_hf: error:',
  )
  assert 'model.image_size: checkpoint (3, 5), config (368, 496)' in line
  assert not (tmp_path / 'f.npz').exists()
