"""What a run of one config is built from: its task, model, optimizer and strategy.

`build(config)` is called once per run, after the config was checked
(`validation.check_config`): the trainer, the evaluation jobs and the benchmarks all
start from it, so they build the same model, optimizer, schedule and compiled steps
from the same config. Compiled steps are reused across runs by JAX's persistent
compilation cache (`training.compilation_cache`), not kept here.
"""

import functools
import types
from typing import Any, Dict, NamedTuple, Optional, Tuple

import haiku as hk
import jax
import ml_collections
import numpy as np
import optax

from experiments.training import optimizers
from experiments.training import steps
from experiments.training import strategies
from experiments.training import task as task_lib


class Experiment(NamedTuple):
  """The parts of a run of one config.

  Attributes:
    config: the (checked) experiment config.
    task: the task module `config.task` names.
    num_steps: total training steps.
    model: the task's transformed model.
    optimizer: the optax transformation.
    schedule: the learning rate per step.
    strategy: device placement and the compiled train and evaluation steps.
  """

  config: ml_collections.ConfigDict
  task: types.ModuleType
  num_steps: int
  model: hk.TransformedWithState
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  strategy: strategies.Strategy

  def abstract_state(self) -> steps.TrainState:
    """Zeros shaped like the train state (a restore target); nothing is compiled."""
    example = task_lib.example_batch(self.task, self.config)
    return steps.abstract_train_state(self.model, self.optimizer, example)


def _with_config(outputs, batch, *, fn, config):
  return fn(outputs, batch, config)


def build(
  config: ml_collections.ConfigDict, task: Optional[types.ModuleType] = None
) -> Experiment:
  """The experiment of a checked `config` (its task module is loaded unless given)."""
  task = task or task_lib.load_task(config.task)
  num_steps = task_lib.num_train_steps(config, task)
  model = task.build_model(config)
  optimizer, schedule = optimizers.make_optimizer(
    config.optimizer, num_steps=num_steps, batch_size=config.training.batch_size
  )
  loss_fn = functools.partial(_with_config, fn=task.train_loss, config=config)
  outputs_fn = functools.partial(_with_config, fn=task.eval_outputs, config=config)
  return Experiment(
    config=config,
    task=task,
    num_steps=num_steps,
    model=model,
    optimizer=optimizer,
    schedule=schedule,
    strategy=strategies.make_strategy(
      config, model=model, optimizer=optimizer, loss_fn=loss_fn, outputs_fn=outputs_fn
    ),
  )


def rngs(config: ml_collections.ConfigDict) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """`(init, train, eval)` keys of a run, from `config.seed`."""
  init_rng, train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  return init_rng, train_rng, eval_rng


def count_params(params: Any) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def first_device(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """One device's share `[b, ...]` of a host batch `[D, b, ...]`."""
  return {k: v[0] for k, v in batch.items()}
