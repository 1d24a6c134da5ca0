"""Task module: byte-level masked language modelling with Perceiver IO.

The model is the released language Perceiver IO: UTF-8 byte ids are embedded
(`embed/embeddings`), a learned position embedding is added
(`trainable_position_encoding/pos_embs`), a `PerceiverEncoder`
(`perceiver_encoder/~/...`) reads them into latents, a `BasicDecoder`
(`basic_decoder/...`) with one learned query per position decodes them, and an
`EmbeddingDecoder` tied to the input embedding (`embedding_decoder/bias`)
produces byte logits. With `configs/mlm.py:bytes` the parameter tree is exactly
the release's (201,108,230 parameters), so its checkpoint applies unchanged.

Inputs shorter than `model.max_seq_len` use the first rows of both position
embeddings; padded positions are masked out of the encoder, so the outputs
equal those of the full-length model on the padded input.

Data (see `text_input`, `text_masking`, `text_pipeline`): TFDS corpora mixed
with `data.weights`, or local files (`data.files`), packed into sequences of
`data.seq_len` ids and whole-word masked. Batches hold `inputs` (masked ids),
`input_mask`, `targets` (original ids) and `weights` (1.0 at masked bytes).

Metrics are computed on masked bytes only: cross-entropy `loss` (nats),
`masked_accuracy`, `bits_per_byte` (loss / ln 2), and at evaluation the
frequency baselines: the accuracy of always predicting the most frequent
masked byte of the split, and the entropy (bits) of the masked bytes'
unigram distribution.

Shape glossary:
  B: batch; L: sequence length (bytes); V: vocabulary (262).
  N: latents; D: latent channels; C: `d_model`.
"""

import copy
import functools
import json
import math
import random
from typing import Callable, Dict, Iterator, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.language import corpora as text_input
from experiments.training import errors
from perceiver import bytes_tokenizer
from perceiver import io_processors
from perceiver import perceiver
from perceiver import position_encoding

VOCAB_SIZE = bytes_tokenizer.BytesTokenizer().vocab_size
_EVAL_MASK_SEED_OFFSET = 1_000_003  # Evaluation masks differ from training's.


# -------------------------------------------------------------------------- model


def check_seq_len(config: ml_collections.ConfigDict) -> int:
  """`data.seq_len`, checked against the model's `max_seq_len`."""
  seq_len = config.data.seq_len
  if not 1 < seq_len <= config.model.max_seq_len:
    raise errors.ConfigError(
      f'config.data.seq_len={seq_len} must be in [2, config.model.max_seq_len='
      f'{config.model.max_seq_len}].'
    )
  return seq_len


def embed_inputs(inputs: jax.Array, model_config) -> Tuple[jax.Array, hk.Embed]:
  """Byte embeddings plus learned positions, `[B, L]` -> `[B, L, C]`.

  Returns the embedded inputs and the `hk.Embed` module (for tying).

  Ids outside `[0, VOCAB_SIZE)` are never clipped to a valid byte: concrete inputs
  raise a ValueError naming them; traced ones (inside jit) embed as NaN, so the loss
  is non-finite and the training loop's guard stops on it.
  """
  if not isinstance(inputs, jax.core.Tracer):
    ids = np.asarray(inputs)
    bad = (ids < 0) | (ids >= VOCAB_SIZE)
    if bad.any():
      raise ValueError(
        f'inputs hold {int(bad.sum())} id(s) outside [0, {VOCAB_SIZE}) (e.g. '
        f'{int(ids[bad][0])}); byte ids are 0..{VOCAB_SIZE - 1}.'
      )
  length = inputs.shape[-1]
  if length > model_config.max_seq_len:
    raise ValueError(
      f'inputs have {length} positions, more than '
      f'model.max_seq_len={model_config.max_seq_len}.'
    )
  embed = hk.Embed(
    vocab_size=VOCAB_SIZE,
    embed_dim=model_config.d_model,
    w_init=hk.initializers.TruncatedNormal(stddev=model_config.embed_init_scale),
    name='embed',
  )
  positions = position_encoding.TrainablePositionEncoding(
    index_dim=model_config.max_seq_len,
    num_channels=model_config.d_model,
    init_scale=model_config.pos_init_scale,
  )
  pos = positions(batch_size=inputs.shape[0])[:, :length]  # [B, L, C]
  # jnp.take with mode='fill': an id out of range gives NaN, never the nearest row. It
  # wraps negative ids (NumPy's indexing), so those are first moved past the end.
  inputs = jnp.where(inputs < 0, VOCAB_SIZE, inputs)
  embedded = jnp.take(embed.embeddings, inputs, axis=0, mode='fill', fill_value=jnp.nan)
  return embedded + pos, embed


def make_encoder(model_config) -> perceiver.PerceiverEncoder:
  """The `perceiver_encoder` of the language models (`model.encoder` keywords)."""
  return perceiver.PerceiverEncoder(**model_config.encoder.to_dict())


def mlm_logits(
  inputs: jax.Array, input_mask: jax.Array, model_config, *, is_training: bool
) -> jax.Array:
  """Byte logits `[B, L, V]` of the masked language model for ids `[B, L]`."""
  length = inputs.shape[-1]
  embedded, embed = embed_inputs(inputs, model_config)
  decoder = perceiver.BasicDecoder(
    output_index_dims=model_config.max_seq_len, **model_config.decoder.to_dict()
  )
  model = perceiver.Perceiver(encoder=make_encoder(model_config), decoder=decoder)
  subsampled = None
  if length != model_config.max_seq_len:
    subsampled = jnp.arange(length)  # Query the first L output positions.
  outputs = model(
    embedded,
    is_training=is_training,
    input_mask=input_mask,
    query_mask=input_mask,
    subsampled_output_points=subsampled,
  )
  return io_processors.EmbeddingDecoder(embedding_matrix=embed.embeddings)(outputs)


def batch_spec(config: ml_collections.ConfigDict) -> Dict[str, jax.ShapeDtypeStruct]:
  """A training example of `L = data.seq_len` bytes: masked `inputs`, `input_mask`,
  `targets` (int32) and the float32 loss `weights` of the masked positions."""
  length = config.data.seq_len
  ids = jax.ShapeDtypeStruct((length,), np.int32)
  return {
    'inputs': ids,
    'input_mask': ids,
    'targets': ids,
    'weights': jax.ShapeDtypeStruct((length,), np.float32),
  }


def build_model(config: ml_collections.ConfigDict) -> hk.TransformedWithState:
  """The masked language model: `f(batch, *, is_training) -> logits [B, L, V]`."""
  # A copy: later edits of `config` do not change the built model.
  model_config = copy.deepcopy(config.model)

  def forward(batch, *, is_training):
    return mlm_logits(
      batch['inputs'], batch['input_mask'], model_config, is_training=is_training
    )

  return hk.transform_with_state(forward)


# --------------------------------------------------------------------------- data


def _heldout_split(split: str) -> bool:
  return split != 'train'


@functools.lru_cache(maxsize=8)
def _local_paths(files: str) -> Tuple[str, ...]:
  return tuple(text_input.expand_file_patterns(files))


def _local_documents(config, split: str, paths: Sequence[str]) -> Iterator[bytes]:
  data = config.data
  documents = text_input.iter_file_documents(
    paths,
    file_format=data.file_format,
    text_field=data.text_field,
    document_unit=data.document_unit,
  )
  return text_input.split_documents(documents, split, data.heldout_fraction)


def _fake_documents(config, split: str) -> Sequence[bytes]:
  if _heldout_split(split):
    return text_input.fake_documents(config.seed + 1, config.data.fake_documents // 4)
  return text_input.fake_documents(config.seed, config.data.fake_documents)


def _source(config) -> str:
  if config.data.fake:
    return 'fake'
  return 'files' if config.data.files else 'tfds'


def _tfds_splits(config, split: str) -> Sequence[str]:
  if split == 'train':
    return tuple(config.data.train_splits)
  if split in text_input.HELDOUT_SPLITS:
    return tuple(config.data.eval_splits)
  raise errors.ConfigError(
    f'MLM splits are "train" and the held-out '
    f'{text_input.HELDOUT_SPLITS}; got split={split!r}.'
  )


def _all_documents(config, split: str) -> Iterator[bytes]:
  """Every document of a finite split (all hosts), in a fixed order."""
  source = _source(config)
  if source == 'fake':
    return iter(_fake_documents(config, split))
  if source == 'files':
    return _local_documents(config, split, _local_paths(config.data.files))
  return text_input.tfds_documents(
    config.data.tfds_names,
    _tfds_splits(config, split),
    is_training=False,
    text_key=config.data.text_field,
    data_dir=config.data.tfds_data_dir or None,
  )


def _train_sequences(config) -> Callable[[], Iterator[Tuple[np.ndarray, np.ndarray]]]:
  """A factory of this host's endless stream of packed training sequences."""
  data = config.data
  seq_len = check_seq_len(config)
  host, hosts = jax.process_index(), jax.process_count()
  source = _source(config)

  def local_epochs():
    epoch = 0
    while True:
      rng = random.Random(f'{config.seed}/{epoch}/{host}')
      if source == 'fake':
        documents = list(_fake_documents(config, 'train'))
        rng.shuffle(documents)
        documents = iter(documents)
      else:
        paths = list(_local_paths(data.files))
        rng.shuffle(paths)
        documents = _local_documents(config, 'train', paths)
      documents = text_input.shard(documents, host, hosts)
      documents = text_input.shuffle_buffer(documents, data.document_shuffle_buffer, rng)
      produced = 0
      for sequence in text_input.pack_documents(documents, seq_len, packing=data.packing):
        produced += 1
        yield sequence
      if not produced:
        raise errors.DataError(
          f'Host {host} has no training documents (config.data.files='
          f'{data.files!r}, heldout_fraction={data.heldout_fraction}).'
        )
      epoch += 1

  def tfds_stream():
    documents = text_input.tfds_documents(
      data.tfds_names,
      _tfds_splits(config, 'train'),
      weights=data.weights,
      is_training=True,
      shard_index=host,
      shard_count=hosts,
      seed=config.seed,
      text_key=data.text_field,
      data_dir=data.tfds_data_dir or None,
    )
    return text_input.pack_documents(documents, seq_len, packing=data.packing)

  return tfds_stream if source == 'tfds' else local_epochs


def _eval_sequences(config, split: str):
  """A factory of this host's share of the packed sequences of a finite split."""
  seq_len = check_seq_len(config)
  host, hosts = jax.process_index(), jax.process_count()

  def stream():
    sequences = text_input.pack_documents(
      _all_documents(config, split), seq_len, packing=config.data.packing
    )
    # Every host packs the whole split and keeps every `hosts`-th sequence, so
    # the shares differ by at most one sequence.
    return text_input.shard(sequences, host, hosts)

  return stream


@functools.lru_cache(maxsize=16)
def _count_sequences(config_json: str, split: str) -> int:
  config = ml_collections.ConfigDict(json.loads(config_json))
  return text_input.count_sequences(
    _all_documents(config, split), check_seq_len(config), packing=config.data.packing
  )


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  """Number of packed sequences in `split` over all hosts.

  Local files and fake data are counted exactly (one pass over the document
  lengths). TFDS evaluation splits are counted the same way; the TFDS training
  stream is open-ended, so train by `training.num_steps` there.
  """
  if _source(config) == 'tfds' and split == 'train':
    raise errors.ConfigError(
      'The number of training sequences of TFDS text corpora is not known in '
      'advance: set config.training.num_steps instead of training.num_epochs.'
    )
  if split != 'train' and split not in text_input.HELDOUT_SPLITS:
    raise errors.ConfigError(
      f'MLM splits are "train" and the held-out '
      f'{text_input.HELDOUT_SPLITS}; got split={split!r}.'
    )
  return _count_sequences(config.to_json(), split)


def _masking_kwargs(config) -> Dict[str, float]:
  return dict(
    mask_rate=config.data.mask_rate,
    mask_token_prob=config.data.mask_token_prob,
    random_token_prob=config.data.random_token_prob,
  )


def load(
  split: str,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  config: ml_collections.ConfigDict,
  start_step: int = 0,
):
  """Masked-LM batches `[*batch_dims, L]` (see the module docstring)."""
  # TensorFlow (masking) is imported only here: building the model and the loss
  # does not need it.
  from experiments.tasks.language import mlm_pipeline  # noqa: PLC0415

  seq_len = check_seq_len(config)
  if _source(config) == 'tfds':
    text_input.check_tfds_available(
      config.data.tfds_names,
      _tfds_splits(config, split),
      data_dir=config.data.tfds_data_dir or None,
    )
  if is_training:
    if split != 'train':
      raise ValueError(f'Training reads split "train", got split={split!r}.')
    return mlm_pipeline.masked_lm_train_batches(
      _train_sequences(config),
      seq_len=seq_len,
      batch_dims=batch_dims,
      seed=config.seed + jax.process_index(),
      shuffle_buffer=config.data.shuffle_buffer,
      start_step=start_step,
      **_masking_kwargs(config),
    )
  global_batch = math.prod(batch_dims) * jax.process_count()
  num_batches = -(-num_examples(split, config) // global_batch)
  return mlm_pipeline.masked_lm_eval_batches(
    _eval_sequences(config, split),
    seq_len=seq_len,
    batch_dims=batch_dims,
    num_batches=num_batches,
    seed=config.seed + _EVAL_MASK_SEED_OFFSET,
    **_masking_kwargs(config),
  )


# ------------------------------------------------------------------ loss, metrics


def masked_lm_terms(
  logits: jax.Array, targets: jax.Array, weights: jax.Array
) -> Dict[str, jax.Array]:
  """Per-position negative log-likelihood and correctness, weighted, `[B, L]`."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  return dict(nll=nll * weights, correct=correct * weights, weights=weights)


def train_loss(outputs, batch, config):
  """Mean cross-entropy over the masked bytes of this device's batch."""
  del config
  terms = masked_lm_terms(outputs, batch['targets'], batch['weights'])
  num_masked = jnp.sum(terms['weights'])
  denominator = jnp.maximum(num_masked, 1.0)
  loss = jnp.sum(terms['nll']) / denominator
  real = jnp.maximum(jnp.sum(batch['input_mask'].astype(jnp.float32)), 1.0)
  metrics = {
    'loss': loss,
    'masked_accuracy': jnp.sum(terms['correct']) / denominator,
    'bits_per_byte': loss / math.log(2.0),
    'masked_fraction': num_masked / real,
  }
  return loss, metrics


def eval_outputs(outputs, batch, config):
  """Per-sequence sums over masked bytes, and their byte histogram `[B, V]`."""
  del config
  terms = masked_lm_terms(outputs, batch['targets'], batch['weights'])
  histogram = jnp.sum(
    jax.nn.one_hot(batch['targets'], VOCAB_SIZE, dtype=jnp.float32)
    * terms['weights'][..., None],
    axis=-2,
  )  # [B, V]
  return {
    'nll_sum': jnp.sum(terms['nll'], axis=-1),
    'correct_sum': jnp.sum(terms['correct'], axis=-1),
    'num_masked': jnp.sum(terms['weights'], axis=-1),
    'target_histogram': histogram,
  }


def summarize_eval(per_example, config):
  """Masked-byte accuracy, loss, bits per byte, and the frequency baselines."""
  del config
  num_masked = float(np.sum(per_example['num_masked']))
  if num_masked == 0:
    raise errors.DataError('The evaluation split has no masked bytes to score.')
  loss = float(np.sum(per_example['nll_sum'])) / num_masked
  histogram = np.sum(per_example['target_histogram'], axis=0)
  frequencies = histogram / num_masked
  nonzero = frequencies[frequencies > 0]
  return {
    'loss': loss,
    'masked_accuracy': float(np.sum(per_example['correct_sum'])) / num_masked,
    'bits_per_byte': loss / math.log(2.0),
    'baseline_accuracy': float(np.max(frequencies)),
    'baseline_bits_per_byte': float(-np.sum(nonzero * np.log2(nonzero))),
    'num_masked_bytes': num_masked,
    'num_sequences': float(per_example['num_masked'].shape[0]),
  }
