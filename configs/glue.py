r"""GLUE fine-tuning of the byte-level Perceiver IO (task `experiments.tasks.language.glue`).

Variants: `configs/glue.py:<task>` for task in cola, sst2, mrpc, qqp, stsb, mnli,
qnli, rte, wnli (the architecture of `configs/mlm.py:bytes` with a per-task
trainable class query), and `configs/glue.py:<task>,debug` (or just `debug`,
CoLA) with the tiny `configs/mlm.py:debug` architecture and 128-byte inputs.

Fine-tune from the official checkpoint (read without unpickling code):
  python -m experiments.train --config=configs/glue.py:mrpc \
      --config.model.init_checkpoint=/path/language_perceiver_io_bytes.pickle \
      --workdir=/tmp/glue_mrpc

Fine-tune from this project's MLM export (`<mlm workdir>/export/params.npz`):
  python -m experiments.train --config=configs/glue.py:rte \
      --config.model.init_checkpoint=/tmp/mlm_bytes/export/params.npz \
      --workdir=/tmp/glue_rte

MNLI evaluates on `validation_matched`; add
`--config.evaluation.split=validation_mismatched` for the other one.

Model fields: those of `configs/mlm.py` (byte embedding and `model.encoder`), with
  model.decoder: keywords of the `ClassificationDecoder` (one trainable class query
    attending to the latents; the number of classes comes from the GLUE task).
  model.init_checkpoint: MLM checkpoint for the embedding, positions and encoder
    ('' trains from scratch).
  data.task: the GLUE task; data.seq_len: bytes per example (pairs are joined
    by SEP and truncated longest-first beyond it, reported as
    `truncated_fraction`); data.shuffle_buffer; data.fake_examples (with
    `data.fake`); data.tfds_data_dir.

The optimisation settings (AdamW, 3e-5 peak learning rate after 10% warmup,
cosine decay; batch 32 for 10 epochs on the small tasks, 128 for 3 epochs on
SST-2, QQP, MNLI, QNLI) are this project's defaults, not published values.

On GPUs and TPUs use bfloat16 compute, keeping parameters, optimizer state, layer
norms, the softmax normalisation and the losses in float32
(experiments/training/precision.py):

  --config.model.decoder.compute_dtype=bfloat16 \
  --config.model.encoder.compute_dtype=bfloat16
"""

import copy

import ml_collections

from configs import common
from configs import mlm as mlm_config
from perceiver import perceiver

TASKS = ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', 'qnli', 'rte', 'wnli')
_LARGE_TASKS = ('sst2', 'qqp', 'mnli', 'qnli')


def get_config(arg: str = 'mrpc') -> ml_collections.ConfigDict:
  """Returns the config for `arg` = '<task>', '<task>,debug' or 'debug'."""
  parts = [p.strip() for p in arg.split(',') if p.strip()]
  debug = 'debug' in parts
  parts = [p for p in parts if p != 'debug']
  task = parts[0] if parts else 'cola'
  if task not in TASKS or len(parts) > 1:
    raise ValueError(
      f'Unknown configs/glue.py variant {arg!r}; expected '
      f'"<task>", "<task>,debug" or "debug" with task in {TASKS}.'
    )

  config = common.get_base_config()
  config.task = 'experiments.tasks.language.glue'
  base = mlm_config.get_config('debug' if debug else 'bytes')
  config.model = copy.deepcopy(base.model)
  config.model.unlock()
  # The MLM's input side (byte embedding, positions, encoder) comes from
  # `init_checkpoint`; the classification decoder starts fresh.
  config.model.init_modules = (
    'embed',
    'trainable_position_encoding',
    'perceiver_encoder',
  )
  # One trainable class query attending to the latents (the MLM's encoder width).
  width = base.model.encoder.num_z_channels
  config.model.decoder = common.module_kwargs(
    perceiver.ClassificationDecoder,
    num_z_channels=width,
    qk_channels=base.model.decoder.qk_channels,
    v_channels=width,
    num_heads=base.model.decoder.num_heads,
    use_query_residual=True,
    position_encoding_type='trainable',
    trainable_position_encoding_kwargs=dict(num_channels=width, init_scale=0.02),
  )

  config.data.task = task
  config.data.seq_len = base.data.seq_len
  config.data.shuffle_buffer = 10_000
  config.data.fake_examples = 256
  config.data.tfds_data_dir = ''

  common.fixed_lr_optimizer(
    config,
    name='adamw',
    base_lr=3e-5,
    weight_decay=0.01,
    schedule='warmup_cosine',
    max_norm=1.0,
  )

  large = task in _LARGE_TASKS
  config.training.batch_size = 128 if large else 32
  config.training.num_epochs = 3.0 if large else 10.0
  config.optimizer.schedule.warmup_fraction = 0.1
  config.training.log_every_steps = 50
  config.training.checkpoint_every_steps = 1000
  config.training.eval_every_steps = 1000
  config.evaluation.batch_size = 128
  config.evaluation.split = 'validation_matched' if task == 'mnli' else 'validation'

  if debug:
    config.optimizer.base_lr = 1e-3
    config.optimizer.schedule.warmup_fraction = 0.0
    config.optimizer.schedule.warmup_steps = 5
    config.training.num_epochs = None
    common.run_length(
      config,
      batch_size=16,
      num_steps=50,
      log_every=10,
      checkpoint_every=50,
      eval_batch_size=16,
    )
    config.data.shuffle_buffer = 256
  return common.lock(config)
