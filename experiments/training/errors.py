"""The errors a command reports as one line, not as a traceback.

A `UserError` is a mistake in what the user gave (a config field, a flag, a file, a
dataset) or a situation the user must fix (a busy workdir, a full disk, a run that
diverged). The commands (`experiments/*.py`, through `cli.run`) print its message
after the command's name and exit with status 1. Every other exception is a bug and
keeps its traceback, so a broadcast error deep in a model never reads as a typo.

`ConfigError` and `DataError` also derive from `ValueError`, the type Python code
raises for a bad value, so callers that catch `ValueError` keep working.
"""


class UserError(Exception):
  """Something the user gave or must fix; the message says what and where."""


class ConfigError(UserError, ValueError):
  """A config field or a command-line flag holds a value that cannot be used.

  The message names the field (`config.training.batch_size`) or flag (`--top_k`) and
  its value.
  """


class DataError(UserError, ValueError):
  """An input file, folder or dataset is missing, unreadable or malformed.

  The message names the file (and the flag or field that pointed to it).
  """


class MissingDependencyError(UserError, ImportError):
  """An optional package (an extra of setup.py) that a feature needs is not installed.

  The message names the extra to install.
  """


def import_optional(module: str, *, extra: str, purpose: str):
  """Imports `module`, or raises `MissingDependencyError` naming the extra to install.

  Args:
    module: e.g. 'av'.
    extra: the setup.py extra that installs it, e.g. 'media'.
    purpose: what needs it, for the message (e.g. 'Decoding video files').
  """
  import importlib  # pylint: disable=import-outside-toplevel

  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise MissingDependencyError(
      f'{purpose} needs the {module!r} package: pip install -e ".[{extra}]" (from the '
      f'repository root) or pip install {module}.'
    ) from e
