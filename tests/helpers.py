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
