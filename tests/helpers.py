"""Helpers shared by the test packages (fixtures are in `conftest.py`)."""

import os
import socket

# The repository root, whichever folder the tests run from.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now (for a test's coordinator)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]
