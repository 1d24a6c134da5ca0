"""Runs a few train steps of a small model under each parallel strategy (a subprocess).

Usage: `python -m tests.training.strategy_worker OUTPUT.npz all|bn [COORDINATOR
NUM_PROCESSES PROCESS_ID]`, with `XLA_FLAGS=--xla_force_host_platform_device_count=N`. Every process
feeds its share of the same global batches of `GLOBAL_BATCH` examples and writes the
final parameters of each variant (`<variant>/<parameter path>`), plus the per-device
shard shapes of the FSDP state (`shard/<path>`), to OUTPUT.npz.

Variants (3 optimizer steps each, LAMB as configured by `configs.common`):
  bn_pmap, bn_sharded, bn_fsdp: a model with BatchNorm and dropout, per strategy.
  bn_pmap_then_fsdp, bn_fsdp_then_pmap: 2 steps under one strategy, the host state
    (what a checkpoint holds) placed under the other, the last step there.
  mlp_pmap_k1, mlp_pmap_k3, mlp_sharded_k3 (`all` only): a model without either, with
    `training.grad_accum_steps` 1 or 3.
"""

import functools
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

GLOBAL_BATCH = 24  # 6 per device on 4 devices; micro-batches of 2 with k = 3.
NUM_STEPS = 3
IN_DIM, HIDDEN, NUM_CLASSES = 7, 8, 3


def _model(with_bn: bool) -> hk.TransformedWithState:
  def forward(batch, *, is_training):
    x = hk.Linear(HIDDEN)(batch['x'])
    if with_bn:
      x = hk.BatchNorm(True, True, 0.9)(x, is_training=is_training)
    x = jax.nn.gelu(x)
    if with_bn and is_training:
      x = hk.dropout(hk.next_rng_key(), 0.3, x)
    return hk.Linear(NUM_CLASSES)(x)

  return hk.transform_with_state(forward)


def _loss(logits, batch):
  labels = jax.nn.one_hot(batch['y'], NUM_CLASSES)
  loss = -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1))
  return loss, {'loss': loss}


def _batches():
  """This host's `[D, b, ...]` share of each step's global batch."""
  rng = np.random.default_rng(0)
  per_device = GLOBAL_BATCH // jax.device_count()
  local = jax.local_device_count()
  first = jax.process_index() * local * per_device
  for _ in range(NUM_STEPS):
    x = rng.normal(size=(GLOBAL_BATCH, IN_DIM)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=(GLOBAL_BATCH,)).astype(np.int32)
    share = slice(first, first + local * per_device)
    yield {
      'x': x[share].reshape(local, per_device, IN_DIM),
      'y': y[share].reshape(local, per_device),
    }


@functools.cache
def _model_and_optimizer(with_bn: bool):
  from configs import common  # pylint: disable=g-import-not-at-top
  from experiments.training import optimizers  # pylint: disable=g-import-not-at-top

  config = common.get_base_config()
  config.optimizer.base_lr = 1e-2
  optimizer, _ = optimizers.make_optimizer(
    config.optimizer, num_steps=NUM_STEPS, batch_size=GLOBAL_BATCH
  )
  return _model(with_bn), optimizer


@functools.cache
def _strategy(name: str, accum: int, with_bn: bool):
  """One strategy object per variant: the resumed runs reuse its compiled steps."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from experiments.training import strategies  # pylint: disable=g-import-not-at-top

  config = common.get_base_config()
  config.parallel.strategy = 'pmap' if name == 'pmap' else 'sharded'
  config.parallel.fsdp = name == 'fsdp'
  config.training.grad_accum_steps = accum
  model, optimizer = _model_and_optimizer(with_bn)
  return strategies.make_strategy(config, model=model, optimizer=optimizer, loss_fn=_loss)


def _run(name: str, *, accum: int, with_bn: bool, then: str = ''):
  from experiments.training import prefetch  # pylint: disable=g-import-not-at-top
  from experiments.training import steps  # pylint: disable=g-import-not-at-top

  model, optimizer = _model_and_optimizer(with_bn)
  make = lambda name: _strategy(name, accum, with_bn)
  strategy = make(name)
  example = {'x': np.zeros((2, IN_DIM), np.float32), 'y': np.zeros((2,), np.int32)}
  host_state = steps.init_train_state(model, optimizer, example, jax.random.PRNGKey(1))
  state = strategy.put_state(host_state)
  host_rng = jax.random.PRNGKey(2)
  rng = strategy.put_rng(host_rng)
  for step, batch in enumerate(_batches()):
    if then and step == NUM_STEPS - 1:
      strategy, host_state = make(then), strategy.get_state(state)
      state, rng = strategy.put_state(host_state), strategy.put_rng(host_rng)
    batch = next(prefetch.prefetch_to_device([batch], 1, strategy.put_batch))
    state, metrics = strategy.train_step(state, batch, rng)
    assert float(strategy.get_metrics(metrics)['finite']) == 1.0
  return state, strategy.get_state(state)


def main(argv):
  output, which = argv[1], argv[2]
  if len(argv) > 3:
    jax.distributed.initialize(
      coordinator_address=argv[3], num_processes=int(argv[4]), process_id=int(argv[5])
    )
  out = {}

  def record(name, host_state):
    for path, value in jax.tree_util.tree_flatten_with_path(host_state.params)[0]:
      out[f'{name}/{jax.tree_util.keystr(path)}'] = np.asarray(value)
    for path, value in jax.tree_util.tree_flatten_with_path(host_state.state)[0]:
      out[f'{name}/state{jax.tree_util.keystr(path)}'] = np.asarray(value)

  for name in ('pmap', 'sharded', 'fsdp'):
    device_state, host_state = _run(name, accum=1, with_bn=True)
    record(f'bn_{name}', host_state)
    if name == 'fsdp':
      for path, value in jax.tree_util.tree_flatten_with_path(device_state)[0]:
        out[f'shard/{jax.tree_util.keystr(path)}'] = np.asarray(
          value.addressable_shards[0].data.shape
        )
  for first, then in (('pmap', 'fsdp'), ('fsdp', 'pmap')):
    record(f'bn_{first}_then_{then}', _run(first, accum=1, with_bn=True, then=then)[1])
  if which == 'all':
    for name, accum in (('pmap', 1), ('pmap', 3), ('sharded', 3)):
      record(f'mlp_{name}_k{accum}', _run(name, accum=accum, with_bn=False)[1])
  np.savez(output, **out)


if __name__ == '__main__':
  main(sys.argv)
