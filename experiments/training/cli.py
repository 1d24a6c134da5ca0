"""How every command (`experiments/*.py`, `experiments/benchmarks/*.py`) reads its flags
and reports errors.

A command module defines

  def define_flags(flag_values=flags.FLAGS) -> types.SimpleNamespace:
    return types.SimpleNamespace(
      checkpoint=flags.DEFINE_string('checkpoint', None, '...', flag_values=flag_values),
      ...
    )

  def main(argv, *, args):   # args.checkpoint.value, ...
    ...

  if __name__ == '__main__':
    cli.run(main, define_flags, name='classify')

Flags are defined only when the module runs as a program (or into a private
`FlagValues` in tests, `invoke`), so importing a command never clashes with another
program's flags. A mistake on the command line (an unknown flag or config field, a
config variant that does not exist) and any `errors.UserError` the command raises end
with one line, `<name>: error: <message>`, and exit status 1; every other exception is
a bug and keeps its traceback.
"""

import functools
import json
import sys
import types
from typing import Any, Callable, List, Sequence

from absl import app
from absl import flags

from experiments.training import errors

DefineFlags = Callable[..., types.SimpleNamespace]

# What ml_collections raises while applying `--config.<field>=value` overrides.
_OVERRIDE_ERRORS = (KeyError, AttributeError, TypeError, ValueError)


def one_line(text: str) -> str:
  """`text` with its whitespace (newlines included) folded into single spaces."""
  return ' '.join(str(text).split())


def _flag_error_message(error: flags.Error) -> str:
  """The useful part of an absl flag error: for a config file that failed to load, the
  last line of the traceback absl puts in its message (the exception itself)."""
  text = str(error)
  if 'Traceback (most recent call last)' in text:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = lines[0].split(':', 1)[0] if lines else ''
    return f'{head}: {lines[-1]}' if head.startswith('flag ') else lines[-1]
  return text


def parse_flags(
  flag_values: flags.FlagValues, argv: Sequence[str], *, name: str
) -> List[str]:
  """Parses `argv` into `flag_values`; the remaining arguments.

  Raises:
    SystemExit: a command-line mistake, with the one-line message.
  """
  try:
    return flag_values(list(argv))
  except flags.Error as e:
    raise SystemExit(f'{name}: error: {one_line(_flag_error_message(e))}') from None
  except _OVERRIDE_ERRORS as e:
    message = e  # ml_collections wraps the KeyError naming the field in others.
    while isinstance(message, BaseException) and message.args:
      message = message.args[0]
    raise SystemExit(
      f'{name}: error: a config override names no field: {one_line(message)}'
    ) from None


def _guarded(main: Callable[..., Any], argv, *, args, name: str):
  try:
    return main(argv, args=args)
  except errors.UserError as e:
    sys.exit(f'{name}: error: {one_line(e)}')


def run(main: Callable[..., Any], define_flags: DefineFlags, *, name: str) -> None:
  """Runs a command as a program: defines its flags, parses `sys.argv`, calls `main`."""
  args = define_flags()
  app.run(
    functools.partial(_guarded, main, args=args, name=name),
    flags_parser=functools.partial(parse_flags, flags.FLAGS, name=name),
  )


def invoke(
  main: Callable[..., Any], define_flags: DefineFlags, argv: Sequence[str], *, name: str
) -> Any:
  """Runs a command in this process on `argv` (`argv[0]` is the program name), with
  its own flags: what `run` does, for tests and notebooks.

  Raises:
    SystemExit: as the command would exit (a one-line error).
  """
  flag_values = flags.FlagValues()
  argv = [str(a) for a in argv]
  # `config_flags` reads a config's `--config.<field>` overrides from `sys.argv` while
  # parsing: let it see `argv`.
  saved, sys.argv = sys.argv, argv
  try:
    args = define_flags(flag_values)
    remaining = parse_flags(flag_values, argv, name=name)
  finally:
    sys.argv = saved
  return _guarded(main, remaining, args=args, name=name)


def print_json(record: Any, output: str = '') -> None:
  """Prints `record` as one JSON line and, if `output` is set, writes it there too."""
  text = json.dumps(record)
  print(text, flush=True)
  if output:
    with open(output, 'w') as f:
      f.write(text + '\n')
