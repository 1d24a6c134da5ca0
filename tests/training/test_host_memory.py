"""experiments.training.host_memory: glibc malloc settings that keep freed host memory for reuse.

The settings are process-wide and cannot be undone, so the test that applies them for
real runs in subprocesses; the rest replace the C library with a recorder.
"""

import os
import subprocess
import sys
import textwrap
import types

import pytest

from experiments.training import host_memory
from tests import helpers

REPO_ROOT = helpers.REPO_ROOT


class _RecordingLibc:
  """Stands in for glibc: records mallopt calls, answers `result` (1 is success)."""

  def __init__(self, result=1):
    self.calls = []
    self.result = result

  def mallopt(self, option, value):
    self.calls.append((option, value))
    return self.result


@pytest.fixture
def libc(monkeypatch):
  recorder = _RecordingLibc()
  monkeypatch.setattr(host_memory, 'is_glibc', lambda: True)
  monkeypatch.setattr(host_memory.ctypes, 'CDLL', lambda name: recorder)
  return recorder


def test_retain_sets_arena_mmap_and_trim(libc):
  assert host_memory.retain_freed_host_memory() is True
  # <malloc.h>: M_ARENA_MAX -8, M_MMAP_MAX -4, M_TRIM_THRESHOLD -1 (-1 = never trim).
  assert libc.calls == [(-8, 1), (-4, 0), (-1, -1)]


def test_retain_per_thread_leaves_the_arenas(libc):
  assert host_memory.configure('retain_per_thread') == 'retain_per_thread'
  assert libc.calls == [(-4, 0), (-1, -1)]


def test_rejected_setting_raises_with_its_name(libc):
  libc.result = 0
  with pytest.raises(OSError, match=r'mallopt\(M_ARENA_MAX, 1\)'):
    host_memory.retain_freed_host_memory()


def test_other_c_libraries_are_left_alone(monkeypatch):
  monkeypatch.setattr(host_memory, 'is_glibc', lambda: False)
  monkeypatch.setattr(host_memory.ctypes, 'CDLL', _fail_if_called)
  assert host_memory.retain_freed_host_memory() is False
  assert host_memory.configure('retain') == 'system'


def _fail_if_called(*args, **kwargs):
  raise AssertionError(f'unexpected call with {args} {kwargs}')


def test_system_mode_changes_nothing(monkeypatch):
  monkeypatch.setattr(host_memory, 'retain_freed_host_memory', _fail_if_called)
  assert host_memory.configure('system') == 'system'


@pytest.mark.parametrize(
  'platforms, plugins, expected',
  [
    ('cpu', ['cuda'], 'retain_per_thread'),  # an explicit platform list decides
    ('CPU,cuda', [], 'retain_per_thread'),
    ('cuda,cpu', [], 'system'),
    ('tpu', [], 'system'),
    (None, [], 'retain_per_thread'),  # no plugin installed: JAX uses the CPU
    (None, ['cuda'], 'system'),
    ('', ['libtpu'], 'system'),
  ],
)
def test_auto_mode_follows_the_backend_jax_will_use(
  monkeypatch, libc, platforms, plugins, expected
):
  monkeypatch.setattr(host_memory, '_configured_platforms', lambda: platforms)
  monkeypatch.setattr(host_memory, 'accelerator_plugins', lambda: plugins)
  assert host_memory.configure('auto') == expected
  assert libc.calls == ([(-4, 0), (-1, -1)] if expected != 'system' else [])


def test_unknown_mode_is_named():
  with pytest.raises(ValueError, match="mode='keep'"):
    host_memory.configure('keep')


def test_accelerator_plugins_reads_entry_points_and_libtpu(monkeypatch):
  entries = [types.SimpleNamespace(name='cuda'), types.SimpleNamespace(name='cuda')]
  monkeypatch.setattr(
    host_memory.importlib.metadata,
    'entry_points',
    lambda group: entries if group == 'jax_plugins' else [],
  )
  monkeypatch.setattr(
    host_memory.importlib.util,
    'find_spec',
    lambda name: object() if name == 'libtpu' else None,
  )
  assert 'cuda' in host_memory.accelerator_plugins()
  assert 'libtpu' in host_memory.accelerator_plugins()
  monkeypatch.setattr(host_memory.importlib.metadata, 'entry_points', lambda group: [])
  monkeypatch.setattr(host_memory.importlib.util, 'find_spec', lambda name: None)
  assert 'cuda' not in host_memory.accelerator_plugins()


_FAULTS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from experiments.training import host_memory
    mode = host_memory.configure(sys.argv[1])
    import jax, jax.numpy as jnp

    @jax.jit
    def f(x, w1, w2):
      h = jnp.tanh(x @ w1)  # [4096, 5120]: an 84 MB temporary, larger than a thread heap
      return (h @ w2).sum() + h.max()

    x = jnp.ones((4096, 16))
    w1 = jnp.full((16, 5120), 1e-3)
    w2 = jnp.ones((5120, 3))
    for _ in range(10):
      f(x, w1, w2).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
      f(x, w1, w2).block_until_ready()
    print(mode, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _page_faults(mode):
  env = dict(
    os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO_ROOT
  )
  result = subprocess.run(
    [sys.executable, '-c', _FAULTS_SCRIPT, mode],
    env=env,
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  applied, faults = result.stdout.split()[-2:]
  assert applied == mode
  return int(faults)


@pytest.mark.skipif(not host_memory.is_glibc(), reason='glibc malloc settings')
def test_retained_memory_is_not_faulted_in_again_every_call():
  # With glibc's defaults each call maps the 84 MB temporary afresh and the kernel
  # zero-fills it page by page: ~20,500 minor faults per call, 20 calls. Retained, the
  # heap is reused; at most the first calls after warm-up land on untouched pages.
  system = _page_faults('system')
  retained = _page_faults('retain')
  assert system > 20 * 15_000, system
  assert retained < 0.3 * system, (retained, system)
