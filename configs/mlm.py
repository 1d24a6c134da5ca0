r"""Byte-level masked language modelling with Perceiver IO (task `experiments.tasks.language.mlm`).

Variants:
  bytes: the released language model: 2048 UTF-8 bytes, d_model 768, 256 x 1280
    latents, 26 self-attends in 1 block, 8 heads, qk 256, tied EmbeddingDecoder;
    201,108,230 parameters with exactly the release's parameter paths, so its
    checkpoint (`language_perceiver_io_bytes.pickle`) applies unchanged.
  debug: a tiny model (180,166 parameters) on 64-byte sequences, trained with AdamW
    for 4000 steps of 32 sequences: a few minutes on a CPU.

Pretrain on TFDS (C4 and English Wikipedia, mixed 50/50 by default):
  python -m experiments.train --config=configs/mlm.py:bytes \
      --workdir=/tmp/mlm_bytes

Pretrain on your own corpus (plain text split into paragraphs, or JSON lines):
  python -m experiments.train --config=configs/mlm.py:debug \
      --config.data.files='corpus/*.txt' --workdir=/tmp/mlm_debug
  python -m experiments.train --config=configs/mlm.py:bytes \
      --config.data.files='corpus/*.jsonl' --config.data.text_field=text \
      --workdir=/tmp/mlm_bytes

Data fields (`config.data`):
  files: comma-separated glob patterns of local files; empty: read TFDS.
  file_format: 'auto' (.jsonl/.json/.ndjson are JSON lines), 'text' or 'jsonl'.
  text_field: the text feature of JSON lines records and TFDS examples.
  document_unit: plain text documents: 'paragraph', 'line' or 'file'.
  heldout_fraction: share of local documents (chosen by content hash) held out
    as the 'validation' split.
  tfds_names, weights: TFDS corpora and their training mixture weights.
  train_splits, eval_splits: one TFDS split per corpus for 'train' and for the
    held-out splits ('validation', 'test').
  tfds_data_dir: TFDS data directory ('' = default).
  seq_len: ids per sequence (<= model.max_seq_len; shorter sequences use the
    first rows of the position embeddings).
  packing: 'pack' (concatenate documents, EOS between) or 'pad' (one document
    per sequence run, padded).
  mask_rate, mask_token_prob, random_token_prob: whole-word masking (15%,
    80/10/10 by default).
  shuffle_buffer, document_shuffle_buffer: sequence and document shuffling.
  fake_documents: number of generated training documents with `data.fake`.

The training hyperparameters (LAMB, 1.25e-3 peak learning rate with 1000
warmup steps, cosine decay, batch 512, 500k steps) are this project's defaults
for pretraining from scratch; the release published no training code.

On GPUs and TPUs use bfloat16 compute, keeping parameters, optimizer state, layer
norms, the softmax normalisation and the losses in float32
(experiments/training/precision.py):

  --config.model.decoder.compute_dtype=bfloat16 \
  --config.model.encoder.compute_dtype=bfloat16
"""

import ml_collections

from configs import common
from perceiver import perceiver

# The released checkpoint this config builds (experiments/training/registry.py).
RELEASES = {
  'language_bytes': dict(
    variant='bytes',
    smoke_variant='debug',
    url=common.RELEASE_URL + 'language_perceiver_io_bytes.pickle',
    description='Byte-level masked language model (UTF-8 bytes, 2048 positions)',
    paper_result='81.0 GLUE average after fine-tuning (Perceiver IO paper, GLUE)',
  ),
}


def model_fields(
  *,
  max_seq_len: int,
  d_model: int,
  num_latents: int,
  num_z_channels: int,
  num_self_attends: int,
  cross_heads: int,
  self_heads: int,
  qk_channels: int,
  decoder_heads: int,
  decoder_qk_channels: int,
) -> ml_collections.ConfigDict:
  """The language model: byte embedding, encoder and decoder sections."""
  model = common.model_section()
  model.max_seq_len = max_seq_len
  model.d_model = d_model
  # Only affects training from scratch: the tied embedding starts small so that the
  # initial logits are O(1) (Haiku's default, 1.0, gives a loss of ~20).
  model.embed_init_scale = 0.02
  model.pos_init_scale = 0.02  # The input position embedding's init scale.
  model.encoder = common.module_kwargs(
    perceiver.PerceiverEncoder,
    num_self_attends_per_block=num_self_attends,
    num_blocks=1,
    z_index_dim=num_latents,
    num_z_channels=num_z_channels,
    qk_channels=qk_channels,
    v_channels=num_z_channels,
    num_cross_attend_heads=cross_heads,
    num_self_attend_heads=self_heads,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=1,
    dropout_prob=0.0,
    z_pos_enc_init_scale=0.02,
    use_query_residual=True,
  )
  # One query per byte position (output_index_dims = max_seq_len, set by the task), no
  # final projection: the tied EmbeddingDecoder maps the d_model outputs to bytes.
  model.decoder = common.module_kwargs(
    perceiver.BasicDecoder,
    exclude=('output_index_dims',),
    output_num_channels=d_model,
    position_encoding_type='trainable',
    num_z_channels=num_z_channels,
    qk_channels=decoder_qk_channels,
    v_channels=d_model,
    num_heads=decoder_heads,
    use_query_residual=False,
    final_project=False,
    trainable_position_encoding_kwargs=dict(num_channels=d_model, init_scale=0.02),
  )
  return model


def _model_bytes() -> ml_collections.ConfigDict:
  return model_fields(
    max_seq_len=2048,
    d_model=768,
    num_latents=256,
    num_z_channels=1280,
    num_self_attends=26,
    cross_heads=8,
    self_heads=8,
    qk_channels=8 * 32,
    decoder_heads=8,
    decoder_qk_channels=8 * 32,
  )


def _model_debug() -> ml_collections.ConfigDict:
  return model_fields(
    max_seq_len=64,
    d_model=64,
    num_latents=32,
    num_z_channels=96,
    num_self_attends=2,
    cross_heads=2,
    self_heads=4,
    qk_channels=32,
    decoder_heads=2,
    decoder_qk_channels=32,
  )


def _data(seq_len: int) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict()
  data.files = ''
  data.file_format = 'auto'
  data.text_field = 'text'
  data.document_unit = 'paragraph'
  data.heldout_fraction = 0.02
  data.tfds_names = ('c4/en:3.1.0', 'wikipedia/20230601.en')
  data.weights = (0.5, 0.5)
  data.train_splits = ('train', 'train[10000:]')
  data.eval_splits = ('validation[:10000]', 'train[:10000]')
  data.tfds_data_dir = ''
  data.seq_len = seq_len
  data.packing = 'pack'
  data.mask_rate = 0.15
  data.mask_token_prob = 0.8
  data.random_token_prob = 0.1
  data.shuffle_buffer = 10_000
  data.document_shuffle_buffer = 10_000
  data.fake_documents = 512
  return data


def get_config(arg: str = 'bytes') -> ml_collections.ConfigDict:
  """Returns the MLM config for variant `arg` ('bytes' or 'debug')."""
  variants = ('bytes', 'debug')
  if arg not in variants:
    raise ValueError(
      f'Unknown configs/mlm.py variant {arg!r}; expected one of {variants}.'
    )
  config = common.get_base_config()
  config.task = 'experiments.tasks.language.mlm'
  config.evaluation.split = 'validation'

  common.fixed_lr_optimizer(
    config,
    name='lamb',
    base_lr=1.25e-3,
    weight_decay=0.01,
    schedule='warmup_cosine',
    warmup_steps=1000,
  )

  if arg == 'bytes':
    config.model = _model_bytes()
    config.data.update(_data(seq_len=2048))
    config.training.batch_size = 512
    config.training.num_steps = 500_000
    config.training.eval_every_steps = 10_000
    config.evaluation.batch_size = 64
  else:
    config.model = _model_debug()
    config.data.update(_data(seq_len=64))
    config.data.shuffle_buffer = 256
    config.data.document_shuffle_buffer = 256
    config.data.eval_splits = ('validation[:64]', 'train[:64]')
    config.optimizer.name = 'adamw'
    config.optimizer.base_lr = 2e-3
    config.optimizer.schedule.warmup_steps = 50
    common.run_length(
      config,
      batch_size=32,
      num_steps=4000,
      log_every=100,
      checkpoint_every=500,
      eval_every=1000,
      eval_batch_size=64,
    )
  return common.lock(config)
