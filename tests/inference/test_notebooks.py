"""The notebooks under colabs/: stored without outputs, one install cell, a SMOKE switch.

Executing them (smoke mode, nbclient) is `python .ci/run_notebooks`, run by the CI.
"""

import glob
import os

import nbformat
import pytest

from tests import helpers

NOTEBOOKS = sorted(glob.glob(os.path.join(helpers.REPO_ROOT, 'colabs', '*.ipynb')))


def test_the_notebooks_exist():
  names = {os.path.basename(p) for p in NOTEBOOKS}
  assert {
    'imagenet_classification.ipynb',
    'masked_language_modelling.ipynb',
    'optical_flow.ipynb',
    'training.ipynb',
    'video_autoencoding.ipynb',
  } <= names


@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_clean_and_smoke_switchable(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  code = [c for c in notebook.cells if c.cell_type == 'code']
  for cell in code:
    assert not cell.get('outputs') and cell.get('execution_count') is None, path
  install = [c for c in code if c.source.startswith('#@title Install')]
  assert len(install) == 1 and code[0] is install[0], 'one install cell, first'
  assert "SMOKE = os.environ.get('PERCEIVER_SMOKE', '0') == '1'" in install[0].source
  for cell in code:
    compile(cell.source, f'{path}: cell', 'exec')  # No syntax errors, no shell magics.
