r"""Autoregressive modelling with Perceiver AR (task `experiments.tasks.perceiver_ar.task`).

Variants:
  copy_32: the release's CPU copy task (32 events: SOS, 15 random bytes, the same
    mirrored, EOS) with a model sized for a small CPU; accuracy on the mirrored half.
  copy_long: the copy task at 4,096 events, one 4,096-position cross-attention into
    32 latents, trained with a context curriculum (windows of 128 to 2,048 inputs
    around the fold first; `data.curriculum_contexts`).
  bytes: byte-level language modelling on local text (default: the Python standard
    library's top-level sources; `--config.data.files=GLOBS` or a PG-19 layout with
    `--config.data.pg19_dir=DIR`); bits per byte on held-out text, with unigram and
    bigram baselines.
  imagenet64: the release's downsampled ImageNet 64x64 model (pixels as a sequence of
    12,289 events with 3D positions, 60 layers, 1,024 latents); bits per dim.
  copy_131072: the architecture of the release's 131,072-position copy-task checkpoint
    (registry name `perceiver_ar_copy_131072`).
  tiny: a few steps of a tiny copy model (smoke tests).

  python -m experiments.train --config=configs/perceiver_ar.py:copy_32 --workdir=/tmp/ar_copy32
  python -m experiments.train --config=configs/perceiver_ar.py:copy_long --workdir=/tmp/ar_copy4k
  python -m experiments.train --config=configs/perceiver_ar.py:bytes --workdir=/tmp/ar_bytes
  python -m experiments.train --config=configs/perceiver_ar.py:imagenet64 \
      --config.data.tfds_data_dir=DIR --workdir=/tmp/ar_imagenet64
  python -m experiments.train --config=configs/perceiver_ar.py:imagenet64 \
      --config.data.fake=True --workdir=/tmp/ar_fake   # generated images

Sample from a trained model (`export/params.npz` of the workdir) with the key/value
caches:

  python -m experiments.generate --config=configs/perceiver_ar.py:bytes \
      --checkpoint=/tmp/ar_bytes/export/params.npz --prompt='def main(' --num_tokens=200

Data fields (`config.data`):
  source: 'copy', 'text' or 'imagenet64'.
  max_context_length: M, inputs per example (the model's context).
  sequence_length: copy: events per sequence (even).
  minimum_crop_length: training crops have at least this many inputs (copy and
    images: as the release, so the latents see the part to predict).
  eval_sequences: copy: held-out sequences scored.
  curriculum_contexts, curriculum_stage_steps: copy: train first on windows of these
    contexts around the fold, `curriculum_stage_steps` steps each (see
    experiments/tasks/perceiver_ar/copy_task.py); () for none.
  files, pg19_dir, heldout_fraction, eval_bytes: text sources (see
    experiments/tasks/perceiver_ar/text.py).
  tfds_data_dir, eval_images, fake_num_examples: imagenet64.

`evaluation.eval_block_size` targets are scored per evaluation window (<= the latents,
`model.perceiver_ar.z_index_dim`), so every scored target sees the full context.
`model.perceiver_ar` holds every keyword of `perceiver.perceiver_ar.PerceiverAR` but
those the data fixes (num_classes, input_idx_size, max_context_length). On GPUs and
TPUs: `--config.model.perceiver_ar.compute_dtype=bfloat16` (float32 parameters),
`--config.model.perceiver_ar.remat=True`, `--config.model.perceiver_ar.scan_layers=True`.
"""

import os
import sysconfig

import ml_collections

from configs import common
from perceiver import perceiver_ar

VARIANTS = ('copy_32', 'copy_long', 'bytes', 'imagenet64', 'copy_131072', 'tiny')
# Google Research's Perceiver AR release (its README and inference notebook): a zip of
# jaxline snapshots, read by perceiver.checkpoint.load_params.
RELEASES = {
  'perceiver_ar_copy_131072': dict(
    variant='copy_131072',
    smoke_variant='tiny',
    url='https://storage.googleapis.com/perceiver-ar/checkpoints/random_mirrored_131072.zip',
    description='Perceiver AR on the 131,072-position copy task (1,024 latents, 6 layers)',
    paper_result='the copy task at 131,072 positions (Perceiver AR paper)',
  ),
}
_EXCLUDED = ('num_classes', 'input_idx_size', 'max_context_length')


def python_sources() -> str:
  """The glob of the Python standard library's top-level sources (always installed)."""
  return os.path.join(sysconfig.get_paths()['stdlib'], '*.py')


def _model(**overrides) -> ml_collections.ConfigDict:
  kwargs = dict(
    position_encoding_type='absolute',
    position_encoding='sinusoidal',
    use_positions_from_data=True,
    activation_name='sq_relu',
    dropout_prob=0.0,
  )
  kwargs.update(overrides)
  return common.module_kwargs(perceiver_ar.PerceiverAR, exclude=_EXCLUDED, **kwargs)


def _data(**overrides) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict()
  data.source = 'copy'
  data.max_context_length = 32
  data.sequence_length = 32
  data.minimum_crop_length = 16
  data.eval_sequences = 256
  data.curriculum_contexts = ()
  data.curriculum_stage_steps = 0
  data.files = ''
  data.pg19_dir = ''
  data.heldout_fraction = 0.05
  data.eval_bytes = 65_536
  data.tfds_data_dir = ''
  data.eval_images = 1000
  data.fake_num_examples = 16
  data.update(overrides)
  return data


def _adam(config, *, base_lr, warmup_steps):
  """Adam without weight decay (as the release; decay would also move the fixed
  position tables), clipped at global norm 1, warmup then cosine decay."""
  common.fixed_lr_optimizer(
    config,
    name='adamw',
    base_lr=base_lr,
    weight_decay=0.0,
    schedule='warmup_cosine',
    warmup_steps=warmup_steps,
    max_norm=1.0,
  )
  config.optimizer.eps = 1e-8


def get_config(arg: str = 'copy_32') -> ml_collections.ConfigDict:
  """The Perceiver AR config of variant `arg` (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(
      f'Unknown configs/perceiver_ar.py variant {arg!r}; expected one of {VARIANTS}.'
    )
  config = common.get_base_config()
  config.task = 'experiments.tasks.perceiver_ar.task'
  config.seed = 0
  config.training.z_loss = 1e-4
  config.evaluation.split = 'validation'
  config.evaluation.eval_block_size = 16
  config.training.log_every_steps = 100
  config.training.checkpoint_every_steps = 500
  config.training.eval_every_steps = 0

  if arg in ('copy_32', 'tiny'):
    config.data.update(_data())
    config.model.perceiver_ar = _model(
      input_embed_dim=64,
      num_z_channels=64,
      z_index_dim=16,
      num_transformers_per_block=1,
      num_cross_attend_heads=4,
      num_transformer_heads=4,
      cross_attend_widening_factor=4,
      transformer_widening_factor=4,
      max_wavelength=32,
    )
    _adam(config, base_lr=1e-3, warmup_steps=100)
    config.training.batch_size = 64
    config.training.num_steps = 2000
    config.evaluation.batch_size = 64
    if arg == 'tiny':
      config.model.perceiver_ar.update(
        input_embed_dim=8,
        num_z_channels=8,
        num_cross_attend_heads=2,
        num_transformer_heads=2,
      )
      config.data.eval_sequences = 5
      config.optimizer.schedule.warmup_steps = 1
      config.training.batch_size = 4
      config.training.num_steps = 3
      config.training.log_every_steps = 1
      config.training.checkpoint_every_steps = 3
      config.evaluation.batch_size = 4
  elif arg == 'copy_long':
    # The context curriculum (copy_task.py) trains windows of 128 to 2,048 inputs
    # around the fold before the release's crops of the whole 4,096.
    config.data.update(
      _data(
        max_context_length=4096,
        sequence_length=4096,
        minimum_crop_length=2048 + 256,
        eval_sequences=16,
        curriculum_contexts=(128, 256, 512, 1024, 2048),
        curriculum_stage_steps=400,
      )
    )
    config.model.perceiver_ar = _model(
      input_embed_dim=64,
      num_z_channels=64,
      z_index_dim=32,
      num_transformers_per_block=1,
      num_cross_attend_heads=4,
      num_transformer_heads=4,
      cross_attend_widening_factor=2,
      transformer_widening_factor=2,
      max_wavelength=4096,
    )
    _adam(config, base_lr=2e-3, warmup_steps=100)
    config.optimizer.schedule.end_value = 2e-4
    config.training.batch_size = 32
    config.training.num_steps = 3000
    config.evaluation.batch_size = 16
    config.evaluation.eval_block_size = 32
  elif arg == 'bytes':
    config.data.update(
      _data(
        source='text', max_context_length=1024, files=python_sources(), eval_bytes=32_768
      )
    )
    config.model.perceiver_ar = _model(
      position_encoding_type='rotary',
      fraction_to_rotate=0.5,
      max_wavelength=1024,
      input_embed_dim=128,
      num_z_channels=128,
      z_index_dim=128,
      num_transformers_per_block=3,
      num_cross_attend_heads=4,
      num_transformer_heads=4,
      cross_attend_widening_factor=2,
      transformer_widening_factor=2,
    )
    _adam(config, base_lr=1e-3, warmup_steps=100)
    config.training.batch_size = 16
    config.training.num_steps = 1500
    config.evaluation.batch_size = 16
    config.evaluation.eval_block_size = 128
  elif arg == 'imagenet64':
    # The release's `imagenet_w_positions` sweep.
    config.data.update(
      _data(source='imagenet64', max_context_length=12416, minimum_crop_length=1024)
    )
    config.model.perceiver_ar = _model(
      position_encoding='random',
      learnable_position_embeddings=True,
      input_embed_dim=1024,
      num_z_channels=1024,
      z_index_dim=1024,
      num_transformers_per_block=60,
      num_cross_attend_heads=16,
      num_transformer_heads=16,
      cross_attend_widening_factor=4,
      transformer_widening_factor=4,
      fraction_to_rotate=0.5,
      max_wavelength=12416,
      dropout_prob=0.1,
    )
    _adam(config, base_lr=3e-4, warmup_steps=10_000)
    config.training.batch_size = 2048
    config.training.num_steps = 1_000_000
    config.training.checkpoint_every_steps = 5000
    config.evaluation.batch_size = 16
    config.evaluation.eval_block_size = 512
  else:  # copy_131072: the released checkpoint's architecture.
    config.data.update(
      _data(
        max_context_length=131072,
        sequence_length=131072,
        minimum_crop_length=65536,
        eval_sequences=4,
      )
    )
    config.model.perceiver_ar = _model(
      input_embed_dim=1024,
      num_z_channels=1024,
      z_index_dim=1024,
      num_transformers_per_block=6,
      num_cross_attend_heads=16,
      num_transformer_heads=16,
      cross_attention_head_group_size=4,
      cross_attend_widening_factor=4,
      transformer_widening_factor=4,
      fraction_to_rotate=0.5,
      max_wavelength=131072,
      dropout_prob=0.1,
    )
    _adam(config, base_lr=3e-4, warmup_steps=1000)
    config.training.batch_size = 4096
    config.training.num_steps = 1_000_000
    config.evaluation.batch_size = 4
    config.evaluation.eval_block_size = 1024
  return common.lock(config)
