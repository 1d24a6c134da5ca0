"""Helpers shared by the test packages (session settings are in `conftest.py`)."""

import os
import socket

# The repository root, whichever folder the tests run from.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now (for a test's coordinator)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def subprocess_env(xla_flags: str = '', **variables: str) -> dict:
  """The environment for a command a test runs: this one's, on the CPU, with `XLA_FLAGS`
  reset to `xla_flags` plus the session's optimisation level (`tests/conftest.py`), so a
  forced device count of this process never leaks into the child, and `variables`."""
  from tests import conftest  # pylint: disable=g-import-not-at-top

  env = dict(os.environ, JAX_PLATFORMS='cpu', **variables)
  env['XLA_FLAGS'] = conftest.xla_flags_for_tests(xla_flags)
  return env


def random_checkpoint(config, path: str, *, seed: int = 0, scale: float = 1.0) -> str:
  """Writes, as this project's `.npz`, normal random values (times `scale`) of the
  parameter and state shapes of the model `config` builds; returns `path`. No
  initialisation runs, so full-size models cost only their file."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from experiments.training import task as task_lib  # pylint: disable=g-import-not-at-top
  from experiments.training import weights  # pylint: disable=g-import-not-at-top
  from perceiver import checkpoint  # pylint: disable=g-import-not-at-top

  task = task_lib.load_task(config.task)
  shapes = weights.model_shapes(
    task.build_model(config), task_lib.example_batch(task, config)
  )
  rng = np.random.RandomState(seed)
  params, state = jax.tree.map(
    lambda s: (scale * rng.randn(*s.shape)).astype(s.dtype), shapes
  )
  checkpoint.save_npz(path, params, state)
  return path
