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
"""

import ml_collections

from configs import common


def _model_bytes() -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.max_seq_len = 2048
  model.d_model = 768
  model.num_latents = 256
  model.num_z_channels = 1280
  model.num_blocks = 1
  model.num_self_attends_per_block = 26
  model.num_cross_attend_heads = 8
  model.num_self_attend_heads = 8
  model.qk_channels = 8 * 32
  model.v_channels = 1280
  model.cross_attend_widening_factor = 1
  model.self_attend_widening_factor = 1
  model.decoder_num_heads = 8
  model.decoder_qk_channels = 8 * 32
  model.dropout_prob = 0.0
  model.pos_init_scale = 0.02
  # One hk.scan over the self-attends (same parameters and results): compiles the
  # 26-layer encoder about twice as fast, for slightly slower steps.
  model.scan_layers = False
  # Only affects training from scratch: the tied embedding starts small so that
  # the initial logits are O(1) (Haiku's default, 1.0, gives a loss of ~20).
  model.embed_init_scale = 0.02
  return model


def _model_debug() -> ml_collections.ConfigDict:
  model = _model_bytes()
  model.max_seq_len = 64
  model.d_model = 64
  model.num_latents = 32
  model.num_z_channels = 96
  model.num_self_attends_per_block = 2
  model.num_cross_attend_heads = 2
  model.num_self_attend_heads = 4
  model.qk_channels = 32
  model.v_channels = 96
  model.decoder_num_heads = 2
  model.decoder_qk_channels = 32
  return model


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

  config.optimizer.name = 'lamb'
  config.optimizer.base_lr = 1.25e-3
  config.optimizer.scale_by_batch = False
  config.optimizer.weight_decay = 0.01
  config.optimizer.schedule.type = 'warmup_cosine'
  config.optimizer.schedule.warmup_steps = 1000

  if arg == 'bytes':
    config.model.update(_model_bytes())
    config.data.update(_data(seq_len=2048))
    config.training.batch_size = 512
    config.training.num_steps = 500_000
    config.training.eval_every_steps = 10_000
    config.evaluation.batch_size = 64
  else:
    config.model.update(_model_debug())
    config.data.update(_data(seq_len=64))
    config.data.shuffle_buffer = 256
    config.data.document_shuffle_buffer = 256
    config.data.eval_splits = ('validation[:64]', 'train[:64]')
    config.optimizer.name = 'adamw'
    config.optimizer.base_lr = 2e-3
    config.optimizer.schedule.warmup_steps = 50
    config.training.batch_size = 32
    config.training.num_steps = 4000
    config.training.log_every_steps = 100
    config.training.checkpoint_every_steps = 500
    config.training.eval_every_steps = 1000
    config.evaluation.batch_size = 64
  return common.lock(config)
