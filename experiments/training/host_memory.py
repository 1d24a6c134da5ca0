"""Host memory for the CPU backend: keep freed blocks for reuse instead of unmapping them.

XLA's CPU runtime allocates each step's temporary buffers with `malloc` and frees them
when the step ends: one large block of XLA temporaries plus thousands of scratch blocks
for its kernels, every step. With glibc's defaults every such block goes back to the
kernel when it is freed (blocks above the mmap threshold are mapped and unmapped one by
one), so the next step touches fresh pages that the kernel zero-fills one page fault at a
time, which costs a large share of a CPU step in system time.

Two settings of glibc's `mallopt` keep freed blocks in the process:

* `M_MMAP_MAX = 0`: no block is served by its own mapping;
* `M_TRIM_THRESHOLD = -1`: freed memory at the top of a heap is never returned.

Each thread other than the main one allocates from an arena of 64 MiB heaps, and glibc
still maps any block larger than such a heap on its own. XLA allocates its per-step
temporaries on a worker thread, so with these two settings alone (`'retain_per_thread'`)
a temporary block over 64 MiB is still mapped afresh each step. A third setting closes
that gap:

* `M_ARENA_MAX = 1` (`'retain'`): every thread allocates from the main arena, which
  grows with `sbrk` and keeps blocks of any size.

Its price is one allocator lock for all threads: XLA's compiler threads and a small
model's dispatch-bound training loop contend for it. So `'auto'` picks
`'retain_per_thread'` on the CPU backend, and a long CPU run of a large model should ask
for `'retain'`. docs/performance.md has the measurements and the commands.

Nothing computed changes. Resident memory stays near its high-water mark instead of
falling between steps, plus what fragmentation adds. The settings only reach threads that
allocate after them, so apply them before JAX starts its backend (before the first
`jax.devices()`, array or jitted call); `experiments.train` and `experiments.benchmark` do
so from their `--host_malloc` flag.
"""

import ctypes
import importlib.metadata
import importlib.util
import pkgutil
import platform
from typing import List, Optional

from absl import flags
from absl import logging
import jax

from experiments.training import errors

# glibc's mallopt parameter numbers (<malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

SETTINGS = (
  ('M_ARENA_MAX', _M_ARENA_MAX, 1),
  ('M_MMAP_MAX', _M_MMAP_MAX, 0),
  ('M_TRIM_THRESHOLD', _M_TRIM_THRESHOLD, -1),
)


def is_glibc() -> bool:
  """Whether this process runs on GNU libc (the only C library whose malloc is tuned)."""
  return platform.libc_ver()[0] == 'glibc'


def backends_initialized() -> bool:
  """Whether JAX has already started its backends (and their thread pools)."""
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  check = getattr(xla_bridge, 'backends_are_initialized', None)
  return (
    bool(check()) if check is not None else bool(getattr(xla_bridge, '_backends', {}))
  )


def accelerator_plugins() -> List[str]:
  """Names of the installed PJRT plugins JAX would load besides its CPU backend.

  Reads what JAX's own plugin discovery reads (the `jax_plugins` entry points and
  namespace package) plus `libtpu`, without starting any backend.
  """
  names = [entry.name for entry in importlib.metadata.entry_points(group='jax_plugins')]
  try:
    import jax_plugins  # pylint: disable=g-import-not-at-top

    names += [module.name for module in pkgutil.iter_modules(jax_plugins.__path__)]
  except ImportError:
    pass
  if importlib.util.find_spec('libtpu') is not None:
    names.append('libtpu')
  return sorted(set(names))


def _configured_platforms() -> Optional[str]:
  return jax.config.jax_platforms


def will_use_cpu_backend() -> bool:
  """Whether JAX's default backend will be the CPU, decided without starting it.

  `jax_platforms` (the `JAX_PLATFORMS` variable or `jax.config`) decides when set: its
  first entry is the default backend. Otherwise JAX uses an accelerator when a plugin
  for one is installed, and the CPU when none is.
  """
  platforms = _configured_platforms()
  if platforms:
    return platforms.split(',')[0].strip().lower() == 'cpu'
  return not accelerator_plugins()


MODES = ('auto', 'retain', 'retain_per_thread', 'system')

# The `--host_malloc` flag's help, shared by the programs that define it.
FLAG_HELP = (
  "'retain_per_thread': keep freed host memory for the next step instead of "
  'returning it to the OS (glibc malloc settings, see experiments/training/host_memory.py); '
  "'retain': the same for blocks of any size, with one allocator arena for all "
  "threads (faster steps for large models on CPU, slower for small ones); 'system': "
  "glibc's defaults; 'auto': 'retain_per_thread' on the CPU backend, else 'system'."
)


def define_flag(flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagHolder:
  """Defines the `--host_malloc` flag of a command (values `MODES`, default auto)."""
  return flags.DEFINE_enum(
    'host_malloc', 'auto', MODES, FLAG_HELP, flag_values=flag_values
  )


def retain_freed_host_memory(*, single_arena: bool = True) -> bool:
  """Makes glibc's malloc keep freed memory in the process for reuse (see module doc).

  Args:
    single_arena: also make every thread allocate from the main arena
      (`M_ARENA_MAX = 1`), so that blocks larger than a thread heap (64 MiB, e.g.
      XLA's per-step temporaries of a large model) are retained too, at the price of
      one allocator lock for all threads (see the module docstring).

  Returns:
    True when the settings were applied; False on a C library other than glibc (macOS,
    musl), where nothing is changed.

  Raises:
    OSError: glibc rejected one of the settings.
  """
  if not is_glibc():
    logging.info(
      'Not retaining freed host memory: the C library is %r, not glibc.',
      platform.libc_ver()[0] or 'unknown',
    )
    return False
  if backends_initialized():
    logging.warning(
      'retain_freed_host_memory() was called after JAX started its backends: threads '
      'that already allocated keep their own arenas, which still unmap large blocks. '
      'Call it before the first JAX computation.'
    )
  settings = [
    setting for setting in SETTINGS if single_arena or setting[0] != 'M_ARENA_MAX'
  ]
  libc = ctypes.CDLL(None)
  for name, option, value in settings:
    if libc.mallopt(option, value) != 1:
      raise OSError(f'glibc mallopt({name}, {value}) failed.')
  logging.info(
    'Retaining freed host memory for reuse (glibc %s).',
    ', '.join(f'{name}={value}' for name, _, value in settings),
  )
  return True


def configure(mode: str) -> str:
  """Applies a command-line choice of host allocator behaviour; returns the one in effect.

  Args:
    mode: 'retain' (`retain_freed_host_memory()`), 'retain_per_thread' (the same with
      `single_arena=False`), 'system' (glibc's defaults, nothing changed) or 'auto':
      'retain_per_thread' when the run will use the CPU backend
      (`will_use_cpu_backend`), else 'system' (on GPU and TPU the model's buffers live
      in device memory).

  Returns:
    The mode in effect: 'system' where the C library is not glibc.

  Raises:
    ValueError: `mode` is not one of `MODES`.
  """
  if mode not in MODES:
    raise errors.ConfigError(f'mode={mode!r} must be one of {MODES}.')
  if mode == 'auto':
    mode = 'retain_per_thread' if will_use_cpu_backend() else 'system'
  if mode == 'system':
    return mode
  applied = retain_freed_host_memory(single_arena=mode == 'retain')
  return mode if applied else 'system'
