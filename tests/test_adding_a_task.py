"""docs/adding_a_task.md: its task module and config, as printed, train a model."""

import json
import os
import re
import sys

import pytest

from experiments.training import task as task_lib
from experiments.training import trainer
from tests import helpers

DOC = os.path.join(helpers.REPO_ROOT, 'docs', 'adding_a_task.md')


def _python_blocks():
  with open(DOC) as f:
    return re.findall(r'```python\n(.*?)```', f.read(), re.DOTALL)


@pytest.fixture
def tutorial_family(tmp_path, monkeypatch):
  """The page's task module and config, written as packages on a temporary path."""
  task_source, config_source = _python_blocks()
  package = tmp_path / 'tutorial_tasks' / 'centroids'
  package.mkdir(parents=True)
  (tmp_path / 'tutorial_tasks' / '__init__.py').write_text('')
  (package / '__init__.py').write_text('')
  (package / 'task.py').write_text(task_source)
  (tmp_path / 'tutorial_centroids_config.py').write_text(
    config_source.replace(
      "'experiments.tasks.centroids.task'", "'tutorial_tasks.centroids.task'"
    )
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  yield
  for name in list(sys.modules):
    if name.startswith(('tutorial_tasks', 'tutorial_centroids_config')):
      del sys.modules[name]


def test_the_page_has_the_task_and_the_config():
  blocks = _python_blocks()
  assert len(blocks) == 2
  assert 'def build_model' in blocks[0] and 'def get_config' in blocks[1]


@pytest.mark.slow
def test_tutorial_task_satisfies_the_contract_and_learns(tutorial_family, tmp_path):
  import tutorial_centroids_config  # pylint: disable=g-import-not-at-top

  config = tutorial_centroids_config.get_config()
  task = task_lib.load_task(config.task)
  assert isinstance(task, task_lib.Task)
  # Labels are the quadrant of the centroid.
  batch = next(task.load('test', is_training=False, batch_dims=(1, 50), config=config))
  points, labels = batch['points'][0], batch['labels'][0]
  mean = points.mean(axis=1)
  assert ((mean[:, 0] > 0) + 2 * (mean[:, 1] > 0) == labels).all()
  config.training.num_steps = 150
  trainer.train(config, str(tmp_path / 'work'), evaluate=True)
  with open(tmp_path / 'work' / 'metrics.jsonl') as f:
    evals = [r for r in map(json.loads, f) if r.get('split') == 'eval']
  assert evals[-1]['top_1_acc'] > 0.6  # Chance is 0.25.
