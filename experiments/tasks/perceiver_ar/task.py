"""Task module: autoregressive modelling with Perceiver AR (`perceiver.perceiver_ar`).

One family, three sources of sequences (`config.data.source`):
  'copy': the generated copy task (`copy_task`): accuracy on the mirrored half.
  'text': bytes of local text files or of a PG-19 layout (`text`): bits per byte,
    with unigram and bigram baselines on the same held-out bytes.
  'imagenet64': downsampled ImageNet pixels with 3D positions (`imagenet64`): bits
    per dim.

Every example holds `inputs` `[M]` and `targets` `[M]` (the next token of each input),
`input_idxs` `[M, I]` and `weights` `[M]` (which targets count); the model predicts the
targets at its N latents (the last N inputs). Training minimises the mean cross-entropy
of the latents' targets plus `training.z_loss` times the squared log-normaliser (the
release's z-loss). Evaluation scores each target of its split exactly once with
block-wise windows (`evaluation.eval_block_size` <= N targets per window).

See `experiments/training/task.py` for the contract and `configs/perceiver_ar.py` for
the commands.

Shape glossary:
  B: batch; M: inputs (`data.max_context_length`); I: position dimensions.
  U: latent positions (N); K: vocabulary (259).
"""

import functools
import json
import math
from typing import Any, Dict, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.perceiver_ar import copy_task
from experiments.tasks.perceiver_ar import imagenet64
from experiments.tasks.perceiver_ar import sequences
from experiments.tasks.perceiver_ar import text
from experiments.training import errors
from perceiver import perceiver_ar

SOURCES = ('copy', 'text', 'imagenet64')
SPLITS = ('train', 'validation', 'test')
# Reported names of the bits per scored token, per source.
_BITS_NAME = {
  'copy': 'bits_per_token',
  'text': 'bits_per_byte',
  'imagenet64': 'bits_per_dim',
}


def _source(config) -> str:
  source = config.data.source
  if source not in SOURCES:
    raise errors.ConfigError(f'config.data.source={source!r} is not one of {SOURCES}.')
  return source


def input_idx_size(config) -> Tuple[int, ...]:
  """Rows of each position table: positions run from 1 to the longest sequence."""
  source = _source(config)
  if source == 'copy':
    return (config.data.sequence_length + 1,)
  if source == 'text':
    return (config.data.max_context_length + 1,)
  return imagenet64.INPUT_IDX_SIZE


def model_kwargs(config) -> Dict[str, Any]:
  """Every `PerceiverAR` keyword: the config's model section and those the data fixes."""
  kwargs = dict(config.model.perceiver_ar.to_dict())
  kwargs.update(
    num_classes=sequences.VOCAB_SIZE,
    input_idx_size=list(input_idx_size(config)),
    max_context_length=config.data.max_context_length,
  )
  return kwargs


def batch_spec(config) -> Dict[str, jax.ShapeDtypeStruct]:
  """Per-example shapes and dtypes (no batch dims) of every entry of a training batch:
  `inputs`, `input_idxs` (what the forward reads), `targets` and `weights`."""
  context = config.data.max_context_length
  return {
    'inputs': jax.ShapeDtypeStruct((context,), jnp.int32),
    'input_idxs': jax.ShapeDtypeStruct((context, len(input_idx_size(config))), jnp.int32),
    'targets': jax.ShapeDtypeStruct((context,), jnp.int32),
    'weights': jax.ShapeDtypeStruct((context,), jnp.float32),
  }


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """`f(batch, *, is_training) -> {'logits': [B, U, K], 'latent_last_steps': [B, U]}`."""
  kwargs = model_kwargs(config)
  from_data = kwargs.get('use_positions_from_data', False)

  def forward(batch, *, is_training):
    model = perceiver_ar.PerceiverAR(**kwargs)
    out = model(
      batch['inputs'],
      batch['input_idxs'] if from_data else None,
      is_training=is_training,
    )
    return {'logits': out.input_events_logits, 'latent_last_steps': out.latent_last_steps}

  return hk.transform_with_state(forward)


def _check(config) -> None:
  _source(config)
  context = config.data.max_context_length
  latents = config.model.perceiver_ar.z_index_dim
  block = config.evaluation.eval_block_size
  if not 1 <= block <= latents:
    raise errors.ConfigError(
      f'evaluation.eval_block_size={block} must be in [1, model.perceiver_ar.z_index_dim'
      f'={latents}]: each scored target needs a latent.'
    )
  if latents > context:
    raise errors.ConfigError(
      f'model.perceiver_ar.z_index_dim={latents} exceeds data.max_context_length={context}.'
    )
  if config.data.source == 'copy' and context < config.data.sequence_length:
    raise errors.ConfigError(
      f'data.max_context_length={context} is shorter than data.sequence_length='
      f'{config.data.sequence_length}: the copy task needs the whole sequence.'
    )
  if config.data.source == 'copy':
    copy_task.check_curriculum(config)
  elif tuple(config.data.curriculum_contexts):
    raise errors.ConfigError(
      f'data.curriculum_contexts={tuple(config.data.curriculum_contexts)} is for the '
      f'copy task; config.data.source is {config.data.source!r}.'
    )


def _fingerprint(config) -> str:
  fields = {k: config[k].to_dict() for k in ('data', 'evaluation')}
  return json.dumps([fields, config.seed], sort_keys=True, default=repr)


@functools.lru_cache(maxsize=8)
def _eval_source(split: str, fingerprint: str):
  config = ml_collections.ConfigDict(json.loads(fingerprint)[0])
  config.seed = json.loads(fingerprint)[1]
  source = config.data.source
  if source == 'copy':
    return copy_task.eval_source(split, config)
  if source == 'text':
    tokens = (
      text.fake_stream(split, 2048)
      if config.data.fake
      else text.split_stream(split, config)
    )
    return text.eval_source(
      tokens,
      context=config.data.max_context_length,
      block=config.evaluation.eval_block_size,
      eval_bytes=config.data.eval_bytes,
    )
  images = imagenet64.eval_images(split, config)
  windows = len(imagenet64.eval_windows(config))
  return len(images) * windows, functools.partial(
    imagenet64.eval_example, images, config=config
  )


@functools.lru_cache(maxsize=2)
def _train_stream(fingerprint: str) -> np.ndarray:
  config = ml_collections.ConfigDict(json.loads(fingerprint)[0])
  if config.data.fake:
    return text.fake_stream('train', 8192)
  return text.split_stream('train', config)


def load(split, *, is_training, batch_dims, config, start_step=0):
  """Batches of examples (see the module docstring); training batches are a pure
  function of `(config.seed, step, host)`."""
  _check(config)
  if split not in SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {SPLITS}.')
  host, hosts = jax.process_index(), jax.process_count()
  source = config.data.source
  if is_training:
    if source == 'imagenet64':
      return imagenet64.train_batches(
        config, batch_dims=batch_dims, start_step=start_step, host=host
      )
    if source == 'copy':
      make = functools.partial(copy_task.train_batch, config=config)
    else:
      tokens = _train_stream(_fingerprint(config))
      context = config.data.max_context_length

      def make(rng, num, step):
        del step  # Every step draws alike.
        return text.train_batch(tokens, rng, num, context=context)

    return sequences.batches_forever(
      make, batch_dims=batch_dims, seed=config.seed, start_step=start_step, host=host
    )
  if split == 'train':
    raise errors.ConfigError('Evaluate a held-out split (validation or test), not train.')
  num, example = _eval_source(split, _fingerprint(config))
  return sequences.eval_batches(
    num, example, batch_dims=batch_dims, process_index=host, process_count=hosts
  )


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  """Evaluation windows of a held-out split; for 'train', training windows per epoch
  (copy: the sequences of 1,000 steps of batch 256, which are generated afresh)."""
  _check(config)
  if split == 'train':
    source = config.data.source
    if source == 'copy':
      return 256_000
    if source == 'text':
      return max(
        1, len(_train_stream(_fingerprint(config))) // config.data.max_context_length
      )
    return config.data.fake_num_examples if config.data.fake else 1_281_167
  return _eval_source(split, _fingerprint(config))[0]


def _at_latents(values, steps):
  """`values` `[B, M]` taken at the latents' positions `[B, U]` (-1: position 0)."""
  return jnp.take_along_axis(values, jnp.maximum(steps, 0), axis=1)


def _scored(outputs, batch):
  """Per latent: log-probabilities `[B, U, K]`, targets, weights and previous tokens."""
  steps = outputs['latent_last_steps']
  targets = _at_latents(batch['targets'], steps)
  weights = _at_latents(batch['weights'], steps) * (steps >= 0)
  previous = _at_latents(batch['inputs'], steps)
  log_probs = jax.nn.log_softmax(outputs['logits'].astype(jnp.float32), axis=-1)
  return log_probs, targets, weights, previous


def train_loss(outputs, batch, config):
  """Mean cross-entropy over the weighted targets at the latents, plus the z-loss."""
  log_probs, targets, weights, _ = _scored(outputs, batch)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  log_z = jax.nn.logsumexp(outputs['logits'].astype(jnp.float32), axis=-1)
  count = jnp.maximum(jnp.sum(weights), 1.0)
  mean_nll = jnp.sum(nll * weights) / count
  z_loss = config.training.z_loss * jnp.sum(jnp.square(log_z) * weights) / count
  correct = jnp.argmax(log_probs, axis=-1) == targets
  return mean_nll + z_loss, {
    'nll': mean_nll,
    'bits_per_token': mean_nll / math.log(2.0),
    'accuracy': jnp.sum(correct * weights) / count,
  }


def eval_outputs(outputs, batch, config):
  """Per example: summed NLL, scored and correct targets, and each latent's target,
  previous token and weight (for the n-gram baselines of text)."""
  del config
  log_probs, targets, weights, previous = _scored(outputs, batch)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  correct = jnp.argmax(log_probs, axis=-1) == targets
  return {
    'nll_sum': jnp.sum(nll * weights, axis=1),
    'num_scored': jnp.sum(weights, axis=1),
    # Targets the windows marked but no latent reached (must be 0).
    'num_unreached': jnp.sum(batch['weights'], axis=1) - jnp.sum(weights, axis=1),
    'num_correct': jnp.sum(correct * weights, axis=1),
    'targets': targets,
    'previous': previous,
    'weights': weights,
  }


def summarize_eval(per_example, config):
  """Bits per scored token (per byte / per dim), accuracy and, for text, the unigram
  and bigram baselines on the same targets."""
  unreached = float(np.sum(per_example['num_unreached']))
  if unreached:
    raise errors.ConfigError(
      f'{unreached:.0f} scored targets had no latent; check eval_block_size.'
    )
  count = float(np.sum(per_example['num_scored']))
  if count == 0:
    raise errors.DataError('The evaluation scored no target.')
  nll = float(np.sum(per_example['nll_sum'])) / count
  summary = {
    'nll': nll,
    _BITS_NAME[config.data.source]: nll / math.log(2.0),
    'accuracy': float(np.sum(per_example['num_correct'])) / count,
    'num_scored': count,
  }
  if config.data.source == 'text':
    scored = per_example['weights'] > 0
    unigram, bigram = text.baselines(config).bits(
      per_example['previous'][scored], per_example['targets'][scored]
    )
    summary['unigram_bits_per_byte'] = unigram
    summary['bigram_bits_per_byte'] = bigram
  return summary
