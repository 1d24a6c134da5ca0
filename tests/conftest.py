"""Settings for the whole test session, applied before JAX starts its backend.

The tests' models are tiny, so their time goes to XLA compiling them, not to running
them. XLA's CPU backend compiles two to three times faster with LLVM optimisation off
(`--xla_backend_optimization_level=0`), and the programs compute the same operations
in the same order (the flag changes how fast the machine code runs, not the HLO
program; matrix products run in the same precompiled libraries). The tests use it unless `XLA_FLAGS` already sets a level; `PERCEIVER_TEST_XLA_OPTIMIZATION=default`
keeps XLA's default, e.g. to check a failure does not depend on it. Subprocesses the
tests start inherit it through `tests.helpers.subprocess_env`.

Programs compiled once are reused through JAX's persistent compilation cache, in a
folder of this session shared by the pytest-xdist workers and the subprocesses the
tests start (`JAX_COMPILATION_CACHE_DIR`, unless set already): tests that build the
same train step again load it instead of compiling it. The folder is removed at exit.
"""

import atexit
import os
import shutil
import tempfile

OPTIMIZATION_FLAG = '--xla_backend_optimization_level=0'


def xla_flags_for_tests(flags: str) -> str:
  """`flags` plus the tests' optimisation level unless it sets one."""
  if os.environ.get('PERCEIVER_TEST_XLA_OPTIMIZATION', 'fast') == 'default':
    return flags
  if 'xla_backend_optimization_level' in flags:
    return flags
  return f'{flags} {OPTIMIZATION_FLAG}'.strip()


os.environ['XLA_FLAGS'] = xla_flags_for_tests(os.environ.get('XLA_FLAGS', ''))


def _session_compilation_cache() -> None:
  if os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.environ.get('PYTEST_XDIST_WORKER'):
    return  # Set by the user, or by the controlling process of this xdist worker.
  folder = tempfile.mkdtemp(prefix='perceiver-tests-jax-cache-')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = folder
  atexit.register(shutil.rmtree, folder, ignore_errors=True)


_session_compilation_cache()
