"""Helpers shared by the test packages (fixtures are in `conftest.py`)."""

import os

# The repository root, whichever folder the tests run from.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
