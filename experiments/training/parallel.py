"""Data parallelism over devices and hosts: batch dimensions, collectives, replicas.

A host feeds its devices a batch shaped `[local_devices, per_device_batch, ...]`. Inside
a step (`steps.py`), where a strategy binds the device axis `AXIS_NAME` (`jax.pmap`, or
`jax.vmap` over a sharded global batch), `cross_device_mean` averages over every device
of every host and `device_rng` gives each device (and each step) its own key. The
`pmap` strategy keeps a replica of the state on every local device (`replicate`).

Shape glossary:
  D: local device count (`jax.local_device_count()`).
  P: host (process) count.
  b: per-device batch, `global_batch / (D * P)`.
"""

import functools
from typing import Any, Callable, Sequence, Tuple

import jax
import numpy as np

from experiments.training import errors

AXIS_NAME = 'devices'

PyTree = Any


def per_device_batch_size(global_batch_size: int, *, name: str = 'batch_size') -> int:
  """The per-device share `b` of a global batch split over every device of every host.

  Args:
    global_batch_size: examples per step over all hosts and devices.
    name: the config field, quoted in the error.

  Returns:
    `global_batch_size // jax.device_count()`.

  Raises:
    errors.ConfigError: the batch does not divide evenly over hosts and devices.
  """
  num_processes = jax.process_count()
  num_devices = jax.device_count()
  if global_batch_size <= 0:
    raise errors.ConfigError(f'{name}={global_batch_size} must be positive.')
  if global_batch_size % num_processes:
    raise errors.ConfigError(
      f'{name}={global_batch_size} is not divisible by the number of hosts '
      f'({num_processes}).'
    )
  if global_batch_size % num_devices:
    raise errors.ConfigError(
      f'{name}={global_batch_size} is not divisible by the number of devices '
      f'({num_devices} = {num_processes} host(s) x {jax.local_device_count()} local).'
    )
  return global_batch_size // num_devices


def local_batch_dims(
  global_batch_size: int, *, name: str = 'batch_size'
) -> Tuple[int, int]:
  """`[D, b]`: the leading dims of every batch a host feeds to its devices."""
  return (jax.local_device_count(), per_device_batch_size(global_batch_size, name=name))


def cross_device_mean(tree: PyTree) -> PyTree:
  """Mean of `tree` over all devices of all hosts; call inside a step."""
  return jax.lax.pmean(tree, axis_name=AXIS_NAME)


def cross_device_max(tree: PyTree) -> PyTree:
  """Maximum of `tree` over all devices of all hosts (e.g. integer state that already
  agrees everywhere, so that a strategy sees it as one value)."""
  return jax.lax.pmax(tree, axis_name=AXIS_NAME)


def cross_device_sum(tree: PyTree) -> PyTree:
  """Sum of `tree` over all devices of all hosts; call inside a step."""
  return jax.lax.psum(tree, axis_name=AXIS_NAME)


def device_rng(rng: jax.Array, step: jax.Array) -> jax.Array:
  """A key unique to this step and this device (global index over all hosts).

  Call inside a step with the same `rng` on every device.
  """
  rng = jax.random.fold_in(rng, step)
  return jax.random.fold_in(rng, jax.lax.axis_index(AXIS_NAME))


def pmap_step(fn: Callable[..., Any], *, donate_state: bool) -> Callable[..., Any]:
  """`jax.pmap` over local devices, argument 0 being the (replicated) state.

  Args:
    fn: `fn(state, batch, *rest)`; every argument carries a leading `D` axis.
    donate_state: donate argument 0's buffers (the old state is dead after a train
      step; evaluation keeps it).
  """
  return jax.pmap(fn, axis_name=AXIS_NAME, donate_argnums=(0,) if donate_state else ())


@functools.cache
def _pmapped_identity():
  return jax.pmap(lambda tree: tree, axis_name=AXIS_NAME)


def replicate(tree: PyTree) -> PyTree:
  """Puts one copy of a host-side tree on every local device (adds the `D` axis).

  The copies are laid out exactly like the outputs of `pmap_step` functions, so a
  step function compiles once for its first and all later calls.
  """
  num_devices = jax.local_device_count()
  stacked = jax.tree.map(lambda x: np.stack([np.asarray(x)] * num_devices), tree)
  return _pmapped_identity()(stacked)


def _first_local_replica(x) -> np.ndarray:
  if isinstance(x, jax.Array):
    shard = np.asarray(x.addressable_shards[0].data)
    # Shards keep the mapped axis (size 1) or drop it, depending on the pmap backend.
    return shard[0] if shard.ndim == x.ndim else shard
  return np.asarray(x)[0]


def unreplicate(tree: PyTree) -> PyTree:
  """Copies the first local device's replica to host NumPy (drops `D`)."""
  return jax.tree.map(_first_local_replica, tree)


def local_values(tree: PyTree) -> PyTree:
  """Host NumPy copy of a pmapped output's local part, shaped `[D, ...]`."""

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
      parts = [np.asarray(s.data) for s in shards]
      return np.concatenate(parts) if parts[0].ndim == x.ndim else np.stack(parts)
    return np.asarray(x)

  return jax.tree.map(fetch, tree)


def check_batch_dims(batch: PyTree, batch_dims: Sequence[int]) -> None:
  """Raises ValueError unless every leaf of `batch` starts with `batch_dims`."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
    shape = tuple(np.shape(leaf))
    if shape[: len(batch_dims)] != tuple(batch_dims):
      raise ValueError(
        f'batch leaf {jax.tree_util.keystr(path)} has shape {shape}; expected leading '
        f'dims {tuple(batch_dims)} ([local_devices, per_device_batch]).'
      )


@functools.cache
def _allgather_fn():
  # Imported lazily: multihost_utils is only needed on multi-host evaluation.
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return multihost_utils.process_allgather


def gather_from_hosts(tree: PyTree) -> PyTree:
  """Stacks each host's NumPy tree along a new leading `P` axis (identical shapes)."""
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: np.asarray(x)[None], tree)
  return jax.tree.map(np.asarray, _allgather_fn()(tree))


def sync_hosts(name: str) -> None:
  """Blocks until every host reaches the barrier `name` (no-op on one host)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)
