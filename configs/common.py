"""Defaults shared by every experiment config.

An experiment config starts from `get_base_config()`, fills in its task, model and data
fields, and returns `lock(config)` so that a mistyped override fails instead of being
ignored. Field reference:

  task: import path of the task module (see `experiments/training/task.py`).
  seed: seeds parameter init, data order and dropout.
  model: task-specific architecture fields, plus:
  model.init_checkpoint: start training from these weights instead of a random
    initialisation: a parameter file (`.npz`, the release's `.pystate` / `.pickle`), a
    training workdir (its `export/params.npz`) or a released model's name
    (`experiments/training/weights.py`); '' initialises randomly. A run that resumes
    from its own checkpoint never reads it again.
  model.init_modules: the module paths taken from `init_checkpoint`, as prefixes
    (e.g. `('perceiver_encoder',)`); empty takes every parameter and state entry.
  data.fake: run the real input pipeline on generated examples (no dataset needed).
  optimizer.name: 'lamb' (default, as in the release) or 'adamw'.
  optimizer.base_lr: peak learning rate, multiplied by `batch_size / 256` when
    `optimizer.scale_by_batch`.
  optimizer.b1, b2, eps: Adam moments of LAMB/AdamW.
  optimizer.weight_decay: decoupled decay; never applied to biases or LayerNorm /
    BatchNorm parameters; applied to position embeddings iff `decay_pos_embs`.
  optimizer.max_norm: global-norm gradient clipping (<= 0 disables it).
  optimizer.schedule.type: 'constant_cosine' (constant for `constant_fraction` of the
    steps, then cosine to `end_value`), 'warmup_cosine' (linear warmup over
    `warmup_steps` from `init_value`, then cosine to `end_value`), 'step' (multiply by
    `decay_rate` at each of `decay_boundaries`, given as fractions of training), or
    'constant'.
  training.batch_size: global batch over all devices and hosts.
  training.num_steps / num_epochs: length of training; `num_epochs`, when set (> 0),
    takes precedence.
  training.log_every_steps, checkpoint_every_steps, eval_every_steps (<= 0 disables
    periodic evaluation in train_and_eval mode; the final evaluation always runs),
    keep_checkpoints (how many recent checkpoints stay on disk).
  training.label_smoothing: for classification tasks.
  training.rollback_on_nonfinite: how many times a run may go back, after a non-finite
    loss or gradient, to its latest good checkpoint (finite parameters, finite loss
    when saved) and skip the batches between that checkpoint and the bad step; 0 stops
    at the first one.
  training.compilation_cache: keep JAX's persistent compilation cache in
    `<workdir>/compilation_cache`, so a resumed run (after preemption) or a repeated
    evaluation loads its compiled steps instead of compiling them again.
  training.grad_accum_steps: split each device's share of the batch into this many
    micro-batches run one after the other, averaging their gradients into one
    optimizer update (the per-device batch must be divisible by it); steps, logs and
    checkpoints count optimizer updates.
  training.prefetch_to_device: batches copied to the devices ahead of the step that
    runs (0: copy each when its step starts).
  parallel.strategy: 'pmap' (a state replica per device, `jax.pmap`) or 'sharded'
    (`jax.jit` over a mesh of every device, global sharded batches); see
    `experiments/training/strategies.py` and docs/scaling.md.
  parallel.fsdp: with 'sharded', split parameters and optimizer state over the
    devices (each array along its largest dimension divisible by the device count).
  evaluation.batch_size: global evaluation batch; evaluation.split: the split evaluated.
  evaluation.best_metric: with `--mode=eval_continuous`, keep the checkpoint that is
    best by this summary metric (e.g. 'top_1_acc') in `<workdir>/eval_<split>/best/`
    ('' keeps none); evaluation.best_metric_higher_is_better: its direction.
  evaluation.poll_every_s: how often `eval_continuous` looks for a new checkpoint;
    evaluation.idle_timeout_s: it stops after this long without a new one (a training
    run that died), besides stopping once the final step is evaluated.
  distributed.initialization_timeout_s: multi-host runs: how long each process waits for
    all to connect; distributed.heartbeat_timeout_s: after how long without a heartbeat
    a process counts as lost, which ends every other process with an error (never a
    hang); distributed.shutdown_timeout_s: how long processes wait for each other at exit.
"""

import inspect
from typing import Any

import ml_collections
from ml_collections import config_dict

from perceiver import perceiver
from perceiver import position_encoding

# Where DeepMind's release serves its checkpoints (config files name them in `RELEASES`).
RELEASE_URL = 'https://storage.googleapis.com/perceiver_io/'

# Keywords a wrapper decoder passes to its inner `BasicDecoder` itself.
_SET_BY_WRAPPER = {
  'ClassificationDecoder': ('output_num_channels', 'output_index_dims'),
  'FlowDecoder': ('output_num_channels',),
  'MultimodalDecoder': ('position_encoding_type', 'output_index_dims'),
}
# Keywords never put in a config section: Haiku module names fix parameter paths.
_EXCLUDED = ('self', 'name')
# Types of keywords whose default is None (a placeholder keeps them settable).
_NONE_DEFAULT_TYPES = {
  'compute_dtype': str,
  'remat_policy': str,
  'qk_channels': int,
  'v_channels': int,
  'attention_query_chunk_size': int,
  'attention_key_chunk_size': int,
  'output_index_dims': tuple,
  'subsampled_index_dims': tuple,
}


def _keywords(cls) -> dict:
  """`{keyword: default}` of `cls`, expanding forwarded `**kwargs`."""
  out = {}
  for p in inspect.signature(cls.__init__).parameters.values():
    if p.name in _EXCLUDED or p.kind is p.VAR_POSITIONAL:
      continue
    if p.kind is p.VAR_KEYWORD:
      if p.name == 'decoder_kwargs':  # Forwarded to the inner BasicDecoder.
        inner = _keywords(perceiver.BasicDecoder)
        for key in _SET_BY_WRAPPER.get(cls.__name__, ()):
          inner.pop(key, None)
        out.update(inner)
      elif p.name == 'position_encoding_kwargs':  # Forwarded to the position encoding.
        params = inspect.signature(position_encoding.build_position_encoding).parameters
        out.update(
          (q.name, q.default)
          for q in params.values()
          if q.default is not q.empty and q.name != 'name'
        )
      continue
    out[p.name] = p.default  # `inspect.Parameter.empty` for required arguments.
  return out


def _field(name: str, value: Any):
  if isinstance(value, dict):
    return ml_collections.ConfigDict(value)
  if value is None:
    if name.endswith('_kwargs'):
      return config_dict.placeholder(object)
    return config_dict.placeholder(_NONE_DEFAULT_TYPES.get(name, object))
  return value


def module_kwargs(cls, *, exclude=(), **overrides) -> ml_collections.ConfigDict:
  """Every keyword argument of `cls` at its default, updated with `overrides`.

  The section of a model config for one module: the task builds the module with
  `cls(*task_arguments, **section.to_dict())`. Keywords whose default is None become
  typed placeholders (settable from the command line); dict values become nested
  ConfigDicts. Required arguments (no default) appear only when given in `overrides`:
  the task supplies the others (e.g. a decoder's number of classes). `name` is left
  out, since module names fix the parameter paths of checkpoints.

  Args:
    cls: a `perceiver` or `io_processors` module class.
    exclude: keywords the task itself passes (derived from other fields), left out.
    **overrides: keyword values that differ from the defaults.

  Returns:
    A ConfigDict with one field per keyword.
  """
  keywords = _keywords(cls)
  unknown = sorted((set(overrides) | set(exclude)) - set(keywords))
  if unknown:
    raise ValueError(f'{cls.__name__} has no keyword argument(s) {unknown}.')
  section = ml_collections.ConfigDict()
  for name, default in keywords.items():
    if name in exclude:
      continue
    value = overrides.get(name, default)
    if value is inspect.Parameter.empty:
      continue
    section[name] = _field(name, value)
  return section


def imagenet_encoder(**overrides) -> ml_collections.ConfigDict:
  """The encoder section of the release's ImageNet models, with overrides.

  8 blocks of 6 self-attends (8 heads) over 512 x 1024 latents sharing weights across
  blocks, one single-head cross-attend, widening factor 1 everywhere.
  """
  kwargs = dict(
    num_self_attends_per_block=6,
    num_blocks=8,
    z_index_dim=512,
    num_z_channels=1024,
    num_cross_attend_heads=1,
    num_self_attend_heads=8,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=1,
  )
  kwargs.update(overrides)
  return module_kwargs(perceiver.PerceiverEncoder, **kwargs)


def perceiver1_encoder(**overrides) -> ml_collections.ConfigDict:
  """The encoder section of paper 1's architecture (its ImageNet model), with overrides.

  `imagenet_encoder` with a single-head cross-attend before each of the 8 latent
  Transformers (`cross_attend_placement='interleaved'`); all cross-attends but the
  first share weights, and so do the latent Transformers.
  """
  kwargs = dict(
    num_cross_attends=8,
    cross_attend_placement='interleaved',
    share_cross_attend_weights=True,
    share_self_attend_weights=True,
  )
  kwargs.update(overrides)
  return imagenet_encoder(**kwargs)


def fixed_lr_optimizer(
  config: ml_collections.ConfigDict,
  *,
  name: str,
  base_lr: float,
  weight_decay: float,
  schedule: str,
  warmup_steps: int = 0,
  max_norm: float = None,
) -> None:
  """Sets an optimizer whose learning rate does not scale with the batch size.

  The recipe of this project's small runs (the CPU demos, fine-tuning): `base_lr` is
  the peak learning rate as it stands (`optimizer.scale_by_batch=False`).
  """
  optimizer = config.optimizer
  optimizer.name = name
  optimizer.base_lr = base_lr
  optimizer.scale_by_batch = False
  optimizer.weight_decay = weight_decay
  optimizer.schedule.type = schedule
  optimizer.schedule.warmup_steps = warmup_steps
  if max_norm is not None:
    optimizer.max_norm = max_norm


def run_length(
  config: ml_collections.ConfigDict,
  *,
  batch_size: int,
  num_steps: int,
  log_every: int,
  checkpoint_every: int,
  eval_every: int = 0,
  eval_batch_size: int,
) -> None:
  """Sets the batch sizes, the number of steps and how often to log, checkpoint and
  evaluate (`eval_every=0`: only at the end)."""
  training = config.training
  training.batch_size = batch_size
  training.num_steps = num_steps
  training.log_every_steps = log_every
  training.checkpoint_every_steps = checkpoint_every
  training.eval_every_steps = eval_every
  config.evaluation.batch_size = eval_batch_size


def model_section() -> ml_collections.ConfigDict:
  """The fields every model section has (see the module docstring), at their defaults;
  a config adds its task's fields and the library modules' sections to it."""
  section = ml_collections.ConfigDict()
  section.init_checkpoint = ''
  section.init_modules = ()
  return section


def debug_run(config: ml_collections.ConfigDict, *, eval_batch_size: int) -> None:
  """The `debug` variants' seconds-long run: 6 steps of 8 examples at a fixed learning
  rate of 2e-3, logged every 2 steps, checkpointed every 3, evaluated at the end."""
  config.optimizer.base_lr = 2e-3
  config.optimizer.scale_by_batch = False
  config.training.num_epochs = None
  run_length(
    config,
    batch_size=8,
    num_steps=6,
    log_every=2,
    checkpoint_every=3,
    eval_batch_size=eval_batch_size,
  )


def get_base_config() -> ml_collections.ConfigDict:
  """Returns the shared defaults, unlocked, for an experiment config to complete."""
  config = ml_collections.ConfigDict()
  config.task = ''
  config.seed = 42

  config.model = model_section()

  config.data = ml_collections.ConfigDict()
  config.data.fake = False

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'lamb'
  config.optimizer.base_lr = 5e-4
  config.optimizer.scale_by_batch = True
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-6
  config.optimizer.weight_decay = 0.1
  config.optimizer.decay_pos_embs = True
  config.optimizer.max_norm = 10.0
  config.optimizer.schedule = ml_collections.ConfigDict()
  config.optimizer.schedule.type = 'constant_cosine'
  config.optimizer.schedule.constant_fraction = 0.5
  config.optimizer.schedule.warmup_steps = 0
  config.optimizer.schedule.warmup_fraction = 0.0  # Or warmup as a fraction of training.
  config.optimizer.schedule.init_value = 0.0
  config.optimizer.schedule.end_value = 0.0
  config.optimizer.schedule.decay_boundaries = (0.5, 0.8, 0.95)
  config.optimizer.schedule.decay_rate = 0.1

  config.training = ml_collections.ConfigDict()
  config.training.batch_size = 256
  config.training.num_steps = config_dict.placeholder(int)
  config.training.num_epochs = config_dict.placeholder(float)
  config.training.log_every_steps = 100
  config.training.checkpoint_every_steps = 1000
  config.training.eval_every_steps = 0
  config.training.keep_checkpoints = 3
  config.training.label_smoothing = 0.0
  config.training.compilation_cache = True
  config.training.rollback_on_nonfinite = 0
  config.training.grad_accum_steps = 1
  config.training.prefetch_to_device = 2

  config.parallel = ml_collections.ConfigDict()
  config.parallel.strategy = 'pmap'
  config.parallel.fsdp = False

  config.evaluation = ml_collections.ConfigDict()
  config.evaluation.batch_size = 256
  config.evaluation.split = 'test'
  config.evaluation.best_metric = ''
  config.evaluation.best_metric_higher_is_better = True
  config.evaluation.poll_every_s = 10.0
  config.evaluation.idle_timeout_s = 3600.0

  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialization_timeout_s = 300
  config.distributed.heartbeat_timeout_s = 100
  config.distributed.shutdown_timeout_s = 300
  return config


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks `config` (no new fields) after checking the fields every run needs."""
  if not config.task:
    raise ValueError(
      'config.task must name a task module, e.g. "experiments.tasks.digits.task".'
    )
  missing = [name for name in model_section() if name not in config.model]
  if missing:
    raise ValueError(
      f'config.model lacks {missing}: start model sections from common.model_section().'
    )
  config.lock()
  return config
