"""Where the train state and the batches live: `jax.pmap` replicas or a `jax.jit` mesh.

`config.parallel.strategy` picks one of two implementations of `Strategy`, so the
training loop, the evaluator and the benchmarks never touch device placement. Both run
the same step functions (`steps.train_step`, `steps.eval_step`) on one device's share
of the batch, binding their device axis `parallel.AXIS_NAME` in their own way:

* 'pmap': every local device holds a replica of the state and runs the step on its
  share under `jax.pmap`; collectives are `pmean`s over the devices.
* 'sharded': `jax.jit` over a one-axis `Mesh` ('data') spanning every device of every
  host. A batch is one global array `[G, b, ...]` sharded along its first axis, built
  from each host's `[D, b, ...]` share; the step runs under `jax.vmap` over `G` (share
  `g` gets the key device `g` gets under 'pmap', and its own batch statistics), its
  cross-device means become means over `G`, and the compiler turns them into
  all-reduces. The state is replicated, or with
  `config.parallel.fsdp` each array of parameters and optimizer state is split along
  its largest dimension divisible by `G` (arrays without one stay replicated); the
  compiler gathers parameters where the step needs them whole and reduce-scatters
  the gradients.

Both take and give host NumPy states (`put_state` / `get_state`), which is what
checkpoints hold, so a checkpoint written under one strategy resumes under the other.

Shape glossary:
  G: global device count (`jax.device_count()`).
  D: local device count.
  b: per-device batch.
"""

import abc
import functools
from typing import Any, Callable, Dict, Optional

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import ml_collections
import numpy as np

from experiments.training import errors
from experiments.training import parallel
from experiments.training import steps as steps_lib

STRATEGIES = ('pmap', 'sharded')
MESH_AXIS = 'data'

PyTree = Any


def data_mesh() -> Mesh:
  """A one-axis mesh ('data') over every device of every host, in `jax.devices()` order.

  That order puts each host's devices together, in the order of its local devices, so
  global share `g = P * D + d` is local device `d` of host `P`, as under `jax.pmap`.
  """
  return Mesh(np.asarray(jax.devices()), (MESH_AXIS,))


def fsdp_spec(shape, num_devices: int) -> PartitionSpec:
  """Splits the largest dimension of `shape` divisible by `num_devices` (else none)."""
  candidates = [
    (size, -axis) for axis, size in enumerate(shape) if size % num_devices == 0
  ]
  if num_devices <= 1 or not candidates:
    return PartitionSpec()
  axis = -max(candidates)[1]
  spec = [None] * len(shape)
  spec[axis] = MESH_AXIS
  return PartitionSpec(*spec)


def state_shardings(state: PyTree, mesh: Mesh, *, fsdp: bool) -> PyTree:
  """`NamedSharding` per leaf of `state` (arrays or `jax.ShapeDtypeStruct`s)."""
  num_devices = mesh.devices.size

  def sharding(x):
    spec = fsdp_spec(np.shape(x), num_devices) if fsdp else PartitionSpec()
    return NamedSharding(mesh, spec)

  return jax.tree.map(sharding, state)


def bytes_per_device(state: PyTree, shardings: PyTree) -> int:
  """Bytes of `state` held by one device (the largest share) under `shardings`."""
  total = 0
  for x, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    shard = sharding.shard_shape(tuple(np.shape(x)))
    total += int(np.prod(shard, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return total


def to_host(x) -> np.ndarray:
  """Host NumPy value of a (possibly multi-host) global array."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def put_local_batch(batch: PyTree) -> PyTree:
  """Starts copying a host batch `[D, b, ...]` to the local devices (asynchronous): row
  d on local device d, as `jax.pmap` lays out its inputs."""
  local_mesh = Mesh(np.asarray(jax.local_devices()), (parallel.AXIS_NAME,))
  sharding = NamedSharding(local_mesh, PartitionSpec(parallel.AXIS_NAME))
  return jax.tree.map(lambda x: jax.device_put(np.asarray(x), sharding), batch)


class Strategy(abc.ABC):
  """Device placement and the compiled steps of one config.

  States go in and out as host NumPy trees (what checkpoints hold), so a checkpoint
  written under one strategy resumes under the other.

  Attributes:
    name: the `config.parallel.strategy` value.
    fsdp: whether parameters and optimizer state are split over the devices.
  """

  name: str
  fsdp: bool = False

  @abc.abstractmethod
  def put_state(self, host_state: PyTree) -> PyTree:
    """A host state, placed on the devices as the steps expect it."""

  @abc.abstractmethod
  def get_state(self, state: PyTree) -> PyTree:
    """The host NumPy copy of a device state."""

  @abc.abstractmethod
  def put_rng(self, rng: jax.Array) -> jax.Array:
    """A key, placed on the devices as the steps expect it."""

  @abc.abstractmethod
  def put_batch(self, batch: PyTree) -> PyTree:
    """Starts copying this host's batch `[D, b, ...]` to the devices (asynchronous)."""

  @abc.abstractmethod
  def train_step(self, state: PyTree, batch: PyTree, rng: jax.Array):
    """`(new_state, metrics)` of one update; `state` is donated."""

  @abc.abstractmethod
  def eval_step(self, state: PyTree, batch: PyTree, rng: jax.Array) -> PyTree:
    """Per-example evaluation outputs (with `mask`) of a placed batch."""

  @abc.abstractmethod
  def get_metrics(self, metrics: PyTree) -> Dict[str, float]:
    """Host values of a train step's metrics."""

  def local_outputs(self, outputs: PyTree) -> PyTree:
    """Host `[D, b, ...]` values of an evaluation step's outputs on this host."""
    return parallel.local_values(outputs)


class PmapStrategy(Strategy):
  """A replica of the state on every local device; steps are `jax.pmap`ped."""

  name = 'pmap'

  def __init__(self, train_fn: Callable[..., Any], eval_fn: Callable[..., Any]):
    """Wraps the per-device steps.

    Args:
      train_fn: `steps.train_step` with its keywords bound.
      eval_fn: `steps.eval_step` with its keywords bound.
    """
    self._train = parallel.pmap_step(train_fn, donate_state=True)
    self._eval = parallel.pmap_step(eval_fn, donate_state=False)

  def put_state(self, host_state: PyTree) -> PyTree:
    return parallel.replicate(host_state)

  def get_state(self, state: PyTree) -> PyTree:
    return parallel.unreplicate(state)

  def put_rng(self, rng: jax.Array) -> jax.Array:
    return parallel.replicate(rng)

  def put_batch(self, batch: PyTree) -> PyTree:
    return put_local_batch(batch)

  def train_step(self, state: PyTree, batch: PyTree, rng: jax.Array):
    return self._train(state, batch, rng)

  def eval_step(self, state: PyTree, batch: PyTree, rng: jax.Array) -> PyTree:
    return self._eval(state, batch, rng)

  def get_metrics(self, metrics: PyTree) -> Dict[str, float]:
    return parallel.unreplicate(metrics)


class ShardedStrategy(Strategy):
  """`jax.jit` over `data_mesh()`; batches are global arrays sharded over its axis."""

  name = 'sharded'

  def __init__(
    self,
    train_fn: Callable[..., Any],
    eval_fn: Callable[..., Any],
    *,
    fsdp: bool = False,
  ):
    """Wraps the per-device steps, mapped over the global device axis.

    Args:
      train_fn: `steps.train_step` with its keywords bound except `constrain`.
      eval_fn: `steps.eval_step` with its keywords bound.
      fsdp: shard parameters and optimizer state along the mesh axis.
    """
    self.mesh = data_mesh()
    self.fsdp = fsdp
    self._train_fn = train_fn
    self._batch_sharding = NamedSharding(self.mesh, PartitionSpec(MESH_AXIS))
    self._replicated = NamedSharding(self.mesh, PartitionSpec())
    self._jitted_train: Dict[Any, Callable[..., Any]] = {}
    self._eval = jax.jit(
      jax.vmap(eval_fn, in_axes=(None, 0, None), axis_name=parallel.AXIS_NAME),
      out_shardings=self._batch_sharding,
    )

  def shardings(self, state: PyTree) -> PyTree:
    """The sharding of each leaf of a (host or abstract) train state."""
    return state_shardings(state, self.mesh, fsdp=self.fsdp)

  def put_state(self, host_state: PyTree) -> PyTree:
    """Places a host state (the same on every host) on the mesh."""

    def put(x, sharding):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, host_state, self.shardings(host_state))

  def get_state(self, state: PyTree) -> PyTree:
    return jax.tree.map(to_host, state)

  def put_rng(self, rng: jax.Array) -> jax.Array:
    return jax.device_put(np.asarray(rng), self._replicated)

  def put_batch(self, batch: PyTree) -> PyTree:
    """A global `[G, b, ...]` array from this host's `[D, b, ...]` share (asynchronous)."""

    def put(x):
      x = np.asarray(x)
      global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
      return jax.make_array_from_process_local_data(self._batch_sharding, x, global_shape)

    return jax.tree.map(put, batch)

  def _train_jit(self, state: PyTree) -> Callable[..., Any]:
    key = jax.tree.structure(state)
    if key not in self._jitted_train:
      shardings = jax.tree.map(lambda x: x.sharding, state)
      param_shardings = shardings.params

      def constrain(grads):
        return jax.lax.with_sharding_constraint(grads, param_shardings)

      step = jax.vmap(
        functools.partial(self._train_fn, constrain=constrain),
        in_axes=(None, 0, None),
        out_axes=None,
        axis_name=parallel.AXIS_NAME,
      )
      self._jitted_train[key] = jax.jit(
        step, out_shardings=(shardings, self._replicated), donate_argnums=(0,)
      )
    return self._jitted_train[key]

  def train_step(self, state: PyTree, batch: PyTree, rng: jax.Array):
    """`(new_state, metrics)`; the new state keeps the shardings of `state`."""
    return self._train_jit(state)(state, batch, rng)

  def eval_step(self, state: PyTree, batch: PyTree, rng: jax.Array) -> PyTree:
    return self._eval(state, batch, rng)

  def get_metrics(self, metrics: PyTree) -> Dict[str, float]:
    return jax.tree.map(to_host, metrics)


def check(config: ml_collections.ConfigDict) -> None:
  """Checks `config.parallel` (the only place that does).

  Raises:
    errors.ConfigError: an unknown strategy, or `fsdp` without 'sharded'.
  """
  strategy, fsdp = config.parallel.strategy, config.parallel.fsdp
  if strategy not in STRATEGIES:
    raise errors.ConfigError(
      f'config.parallel.strategy={strategy!r} is not one of {STRATEGIES}.'
    )
  if not isinstance(fsdp, bool):
    raise errors.ConfigError(f'config.parallel.fsdp={fsdp!r} must be True or False.')
  if fsdp and strategy != 'sharded':
    raise errors.ConfigError(
      'config.parallel.fsdp=True needs config.parallel.strategy=sharded '
      f'(got {strategy!r}).'
    )


def make_strategy(
  config: ml_collections.ConfigDict,
  *,
  model,
  optimizer,
  loss_fn: Callable[..., Any],
  outputs_fn: Optional[Callable[..., Any]] = None,
) -> Strategy:
  """The strategy `config.parallel.strategy` names, with the steps bound.

  Args:
    config: a checked experiment config (`parallel.*`, `training.grad_accum_steps`).
    model: the task's transformed model.
    optimizer: the optax transformation.
    loss_fn: `(outputs, batch) -> (loss, metrics)`.
    outputs_fn: `(outputs, batch) -> per-example outputs` (evaluation), if any.
  """
  train_fn = functools.partial(
    steps_lib.train_step,
    model=model,
    optimizer=optimizer,
    loss_fn=loss_fn,
    grad_accum_steps=config.training.grad_accum_steps,
  )
  eval_fn = functools.partial(
    steps_lib.eval_step, model=model, outputs_fn=outputs_fn or (lambda o, b: {})
  )
  if config.parallel.strategy == 'pmap':
    return PmapStrategy(train_fn, eval_fn)
  return ShardedStrategy(train_fn, eval_fn, fsdp=config.parallel.fsdp)
