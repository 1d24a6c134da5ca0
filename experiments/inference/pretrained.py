"""The released checkpoints in one call, for notebooks: `load('imagenet_fourier')`.

  from experiments.inference import pretrained
  model = pretrained.load('imagenet_fourier')    # downloads once, verifies, builds
  logits, _ = model.model.apply(model.params, model.state, None, batch, is_training=False)

A name is looked up in the registry (`experiments.training.registry`: the config files'
`RELEASES`), its file downloaded once into `$PERCEIVER_CACHE` and verified, and its
parameters loaded into the model its config builds (`experiments.training.weights`,
which checks they fit). A path to a checkpoint file or a training workdir works as
well, given the config of its architecture.

`smoke_model(name)` gives a tiny randomly initialised model of the same kind (the
release's smoke config: same inputs and preprocessing), with no download: notebooks run
on it in CI (`PERCEIVER_SMOKE=1`).
"""

from typing import Optional, Tuple

import jax
import ml_collections

from experiments.training import errors
from experiments.training import registry
from experiments.training import task as task_lib
from experiments.training import weights


def config_of(name_or_path: str, config: Optional[ml_collections.ConfigDict] = None):
  """`config`, else the config of the release `name_or_path` names.

  Raises:
    errors.ConfigError: a path without a config, or an unknown release name.
  """
  if config is not None:
    return config
  if name_or_path not in registry.releases():
    raise errors.ConfigError(
      f'{name_or_path!r} is not a released model ({sorted(registry.releases())}): '
      'pass config= (--config=) to load a file.'
    )
  return registry.load_config(registry.get_release(name_or_path).config)


def load(
  name_or_path: str, *, config: Optional[ml_collections.ConfigDict] = None
) -> weights.Model:
  """The model of a release name (downloaded once) or of a checkpoint path.

  Args:
    name_or_path: a registry name, a `.pystate` / `.pickle` / `.npz` file, or a
      training workdir.
    config: the architecture; default: the release's config (required for a path).

  Raises:
    errors.ConfigError: unknown name, or no config for a path.
    errors.DataError: the file cannot be read or does not fit the architecture.
    registry.DownloadError, registry.ChecksumError: see `registry.download`.
  """
  return weights.load_model(config_of(name_or_path, config), name_or_path)


def smoke_model(name: str, seed: int = 0) -> weights.Model:
  """A tiny randomly initialised stand-in for release `name` (its smoke config): the
  same interface as `load(name)`, with no download (for smoke runs and demos)."""
  release = registry.get_release(name)
  config = registry.load_config(release.smoke_config)
  task = task_lib.load_task(config.task)
  model = task.build_model(config)
  batch = task_lib.example_batch(task, config)
  params, state = jax.jit(lambda rng: model.init(rng, batch, is_training=True))(
    jax.random.PRNGKey(seed)
  )
  return weights.Model(
    name=f'{name} (smoke: tiny random model)',
    config=config,
    model=model,
    params=jax.device_get(params),
    state=jax.device_get(state),
    path='',
  )


def describe() -> Tuple[str, ...]:
  """One line per release: name, URL, config, size / checksum status."""
  return registry.describe()
