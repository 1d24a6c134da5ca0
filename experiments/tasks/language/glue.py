"""Task module: GLUE fine-tuning of the byte-level Perceiver IO.

The input side is the masked language model's (`experiments.tasks.language.mlm`): byte
embedding `embed`, learned positions `trainable_position_encoding` and the
`perceiver_encoder`, with the same parameter paths. The MLM decoder is replaced
by a per-task `ClassificationDecoder` (`classification_decoder/~/basic_decoder`):
one trainable query cross-attends to the latents and a linear layer maps it to
class logits (or to one real value for the STS-B regression).

`model.init_checkpoint` initialises the embedding, positions and encoder from
an MLM checkpoint: this project's `.npz` export or the official
`language_perceiver_io_bytes.pickle` (read by the safe loader), or the released
model's name `language_bytes` (downloaded once and verified). The decoder
starts fresh. Every encoder parameter must be present in the checkpoint with
the same shape; otherwise initialisation fails naming the offending paths.

Metrics: `loss`, `accuracy` during training; at evaluation the task's GLUE
metrics (`glue_metrics.TASK_METRICS`), their mean `score`, the mean `loss` and
`truncated_fraction` (examples cut to fit `data.seq_len`).

Shape glossary:
  B: batch; L: sequence length (bytes); K: classes (1 for STS-B).
"""

import copy
import functools
import math
import os
from typing import Dict, List, Tuple

from absl import logging
import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.language import glue_data
from experiments.tasks.language import glue_metrics
from experiments.tasks.language import mlm
from experiments.training import losses
from perceiver import checkpoint as checkpoint_lib
from perceiver import perceiver

# Modules initialised from an MLM checkpoint: the input embedding, the input
# positions and everything inside the encoder.
PRETRAINED_MODULES = ('embed', 'trainable_position_encoding')
PRETRAINED_PREFIX = 'perceiver_encoder/'


def _task(config) -> glue_data.GlueTask:
  return glue_data.get_task(config.data.task)


# -------------------------------------------------------------------------- model


def classifier_outputs(
  inputs: jax.Array,
  input_mask: jax.Array,
  model_config,
  num_classes: int,
  *,
  is_training: bool,
) -> jax.Array:
  """Class logits `[B, K]` for byte ids `inputs` `[B, L]`."""
  embedded, _ = mlm.embed_inputs(inputs, model_config)
  decoder = perceiver.ClassificationDecoder(
    num_classes=num_classes, **model_config.decoder.to_dict()
  )
  model = perceiver.Perceiver(encoder=mlm.make_encoder(model_config), decoder=decoder)
  return model(embedded, is_training=is_training, input_mask=input_mask)


def is_pretrained_path(module: str) -> bool:
  """Whether Haiku module path `module` is initialised from the MLM checkpoint."""
  return module in PRETRAINED_MODULES or module.startswith(PRETRAINED_PREFIX)


@functools.lru_cache(maxsize=1)
def _checkpoint_params(path: str) -> Dict[str, Dict[str, np.ndarray]]:
  """The parameters of a checkpoint file, or of a released model's name (e.g.
  'language_bytes', downloaded once and verified by experiments/inference/pretrained.py)."""
  from experiments.inference import pretrained  # pylint: disable=import-outside-toplevel

  if not os.path.isfile(path) and path in pretrained.RELEASES:
    path = pretrained.checkpoint_path(path)
  params, _ = checkpoint_lib.load_params(path)
  return params


def pretrained_entries(params, path: str) -> List[Tuple[str, str]]:
  """The `(module, name)` entries of `params` to take from checkpoint `path`.

  Raises:
    ValueError: if an encoder parameter is missing from the checkpoint or has a
      different shape there.
  """
  source = _checkpoint_params(path)
  entries, missing, mismatched = [], [], []
  for module in sorted(params):
    if not is_pretrained_path(module):
      continue
    for name, value in params[module].items():
      stored = source.get(module, {}).get(name)
      if stored is None:
        missing.append(f'{module}/{name}')
      elif tuple(stored.shape) != tuple(value.shape):
        mismatched.append(
          f'{module}/{name}: checkpoint {tuple(stored.shape)} vs '
          f'model {tuple(value.shape)}'
        )
      else:
        entries.append((module, name))
  if missing or mismatched:
    raise ValueError(
      f'config.model.init_checkpoint={path!r} does not fit the model: '
      f'{len(missing)} missing parameter(s) {missing[:5]}, '
      f'{len(mismatched)} with other shapes {mismatched[:5]}. Check that the '
      "config's model fields match the pretrained model."
    )
  if not entries:
    raise ValueError(
      f'config.model.init_checkpoint={path!r}: the model has no '
      'encoder parameters to initialise.'
    )
  return entries


def with_pretrained_init(
  transformed: hk.TransformedWithState, path: str
) -> hk.TransformedWithState:
  """Wraps `init` so that encoder parameters come from the checkpoint `path`.

  The checkpoint is read on the host through `jax.pure_callback`, so the
  wrapped `init` also works under `jax.jit` without embedding the parameters
  in the compiled program.
  """
  if not path:
    return transformed

  def init(*args, **kwargs):
    params, state = transformed.init(*args, **kwargs)
    entries = pretrained_entries(params, path)
    shapes = [
      jax.ShapeDtypeStruct(params[m][n].shape, params[m][n].dtype) for m, n in entries
    ]

    def fetch():
      source = _checkpoint_params(path)
      return [
        np.asarray(source[m][n], dtype=s.dtype) for (m, n), s in zip(entries, shapes)
      ]

    values = jax.pure_callback(fetch, shapes)
    params = {m: dict(d) for m, d in params.items()}
    for (m, n), value in zip(entries, values):
      params[m][n] = value
    logging.info('Initialised %d parameter arrays from %s.', len(entries), path)
    return params, state

  return hk.TransformedWithState(init=init, apply=transformed.apply)


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """GLUE classifier: `f(batch, *, is_training)` -> logits `[B, K]` (`[B]` for STS-B)."""
  task = _task(config)
  # A copy: later edits of `config` do not change the built model.
  model_config = copy.deepcopy(config.model)
  mlm.check_seq_len(config)

  def forward(batch, *, is_training):
    logits = classifier_outputs(
      batch['inputs'],
      batch['input_mask'],
      model_config,
      task.num_classes,
      is_training=is_training,
    )
    return logits[:, 0] if task.is_regression else logits

  return with_pretrained_init(
    hk.transform_with_state(forward), model_config.init_checkpoint
  )


# --------------------------------------------------------------------------- data


def _data_kwargs(config) -> dict:
  return dict(
    fake=config.data.fake,
    fake_examples_count=config.data.fake_examples,
    data_dir=config.data.tfds_data_dir or None,
  )


def _check_split(split: str) -> None:
  if split.startswith('test'):
    raise ValueError(
      f'GLUE {split!r} labels are hidden; train on "train" and '
      'evaluate on "validation" (MNLI: "validation_matched" or '
      '"validation_mismatched").'
    )


@functools.lru_cache(maxsize=32)
def _cached_count(
  task_name: str, split: str, fake: bool, fake_examples: int, data_dir
) -> int:
  return glue_data.count_examples(
    task_name, split, fake=fake, fake_examples_count=fake_examples, data_dir=data_dir
  )


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  _check_split(split)
  return _cached_count(
    config.data.task,
    split,
    config.data.fake,
    config.data.fake_examples,
    config.data.tfds_data_dir or None,
  )


def load(split: str, *, is_training: bool, batch_dims, config, start_step: int = 0):
  """GLUE batches (see `glue_input`)."""
  _check_split(split)
  seq_len = mlm.check_seq_len(config)
  ds = glue_data.examples_dataset(
    config.data.task,
    split,
    is_training=is_training,
    shard_index=jax.process_index(),
    shard_count=jax.process_count(),
    seed=config.seed,
    **_data_kwargs(config),
  )
  if is_training:
    return glue_data.train_batches(
      ds,
      config.data.task,
      seq_len=seq_len,
      batch_dims=batch_dims,
      seed=config.seed + jax.process_index(),
      shuffle_buffer=config.data.shuffle_buffer,
      start_step=start_step,
    )
  global_batch = math.prod(batch_dims) * jax.process_count()
  return glue_data.eval_batches(
    ds,
    config.data.task,
    seq_len=seq_len,
    batch_dims=batch_dims,
    num_batches=-(-num_examples(split, config) // global_batch),
  )


# ------------------------------------------------------------------ loss, metrics


def train_loss(outputs, batch, config):
  """Cross-entropy (MSE for STS-B) and batch metrics."""
  task = _task(config)
  truncated = jnp.mean(batch['truncated'].astype(jnp.float32))
  if task.is_regression:
    loss = jnp.mean(jnp.square(outputs - batch['label']))
    return loss, {'loss': loss, 'truncated_fraction': truncated}
  loss, metrics = losses.classification_loss(
    outputs, batch['label'], label_smoothing=config.training.label_smoothing, ks=(1,)
  )
  return loss, {
    'loss': loss,
    'accuracy': metrics['top_1_acc'],
    'truncated_fraction': truncated,
  }


def eval_outputs(outputs, batch, config):
  """Per-example prediction, label, loss and truncation flag."""
  task = _task(config)
  if task.is_regression:
    loss = jnp.square(outputs - batch['label'])
    prediction = outputs
  else:
    loss = losses.softmax_cross_entropy(outputs, batch['label'])
    prediction = jnp.argmax(outputs, axis=-1)
  return {
    'prediction': prediction,
    'label': batch['label'],
    'loss': loss,
    'truncated': batch['truncated'],
  }


def summarize_eval(per_example, config):
  """The task's GLUE metrics, their mean `score`, mean loss and truncation."""
  summary = glue_metrics.task_metrics(
    config.data.task, per_example['prediction'], per_example['label']
  )
  summary['loss'] = float(np.mean(per_example['loss']))
  summary['truncated_fraction'] = float(np.mean(per_example['truncated']))
  return summary
