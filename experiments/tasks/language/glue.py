"""Task module: GLUE fine-tuning of the byte-level Perceiver IO.

The input side is the masked language model's (`experiments.tasks.language.mlm`): byte
embedding `embed`, learned positions `trainable_position_encoding` and the
`perceiver_encoder`, with the same parameter paths. The MLM decoder is replaced
by a per-task `ClassificationDecoder` (`classification_decoder/~/basic_decoder`):
one trainable query cross-attends to the latents and a linear layer maps it to
class logits (or to one real value for the STS-B regression).

`model.init_checkpoint` initialises the modules `model.init_modules` names (the
embedding, positions and encoder: `configs/glue.py`) from an MLM checkpoint: this
project's `.npz` export or workdir, the official `language_perceiver_io_bytes.pickle`
(read by the safe loader), or the released model's name `language_bytes` (downloaded
once and verified); the trainer loads it (`experiments/training/weights.py`). The
decoder starts fresh. Every encoder parameter must be present in the checkpoint with
the same shape; otherwise training stops before it starts, naming the offending paths.

Metrics: `loss`, `accuracy` during training; at evaluation the task's GLUE
metrics (`glue_metrics.TASK_METRICS`), their mean `score`, the mean `loss` and
`truncated_fraction` (examples cut to fit `data.seq_len`).

Shape glossary:
  B: batch; L: sequence length (bytes); K: classes (1 for STS-B).
"""

import copy
import functools
import math
from typing import Dict

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.language import glue_data
from experiments.tasks.language import glue_metrics
from experiments.tasks.language import mlm
from experiments.training import errors
from experiments.training import losses
from perceiver import perceiver


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


def batch_spec(config: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """A training example: byte `inputs` and `input_mask` `[L]`, whether it was
  `truncated`, and its `label` (int32 class, float32 score for STS-B)."""
  length = config.data.seq_len
  regression = _task(config).is_regression
  return {
    'inputs': jax.ShapeDtypeStruct((length,), np.int32),
    'input_mask': jax.ShapeDtypeStruct((length,), np.int32),
    'truncated': jax.ShapeDtypeStruct((), np.int32),
    'label': jax.ShapeDtypeStruct((), np.float32 if regression else np.int32),
  }


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

  return hk.transform_with_state(forward)


# --------------------------------------------------------------------------- data


def _data_kwargs(config) -> dict:
  return dict(
    fake=config.data.fake,
    fake_examples_count=config.data.fake_examples,
    data_dir=config.data.tfds_data_dir or None,
  )


def _check_split(split: str) -> None:
  if split.startswith('test'):
    raise errors.ConfigError(
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
