r"""A Perceiver on scikit-learn's 8x8 handwritten digits: pixels + 2D Fourier features.

Trains on 1,437 images and reports top-1 on the 360 held-out ones; the data ships
with scikit-learn, nothing is downloaded. Run from the repository root:

  python -m experiments.train --config=configs/digits.py --workdir=/tmp/digits

Variant `permuted`: one fixed permutation of the 64 pixels, applied after the position
features are attached (paper 1, Table 2):

  python -m experiments.train --config=configs/digits.py:permuted \
      --workdir=/tmp/digits_permuted

Variant `tiny`: a very small model and a few steps, for smoke tests (seconds):

  python -m experiments.train --config=configs/digits.py:tiny --workdir=/tmp/digits_tiny

On GPUs and TPUs use bfloat16 compute, keeping parameters, optimizer state, layer
norms, the softmax normalisation and the losses in float32
(experiments/training/precision.py):

  --config.model.decoder.compute_dtype=bfloat16 \
  --config.model.encoder.compute_dtype=bfloat16
"""

import ml_collections

from configs import common
from perceiver import io_processors
from perceiver import perceiver

VARIANTS = ('permuted', 'tiny')


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """The digits config; `arg` selects a variant (None, 'permuted' or 'tiny')."""
  if arg is not None and arg not in VARIANTS:
    raise ValueError(f'configs/digits.py variant {arg!r} is not one of {VARIANTS}.')
  config = common.get_base_config()
  config.task = 'experiments.tasks.digits.task'
  config.seed = 0

  config.model = common.model_section()
  config.model.permute_pixels = arg == 'permuted'
  config.model.input_preprocessor = common.module_kwargs(
    io_processors.ImagePreprocessor,
    prep_type='pixels',
    spatial_downsample=1,
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=dict(
      num_bands=4, max_resolution=(8, 8), concat_pos=True, sine_only=False
    ),
  )
  config.model.encoder = common.module_kwargs(
    perceiver.PerceiverEncoder,
    num_self_attends_per_block=2,
    num_blocks=1,
    z_index_dim=16,
    num_z_channels=32,
    num_cross_attend_heads=1,
    num_self_attend_heads=4,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=2,
    dropout_prob=0.0,
  )
  config.model.decoder = common.module_kwargs(
    perceiver.ClassificationDecoder,
    num_z_channels=32,
    position_encoding_type='trainable',
    trainable_position_encoding_kwargs=dict(num_channels=32, init_scale=0.02),
    use_query_residual=True,
  )

  config.data.max_shift = 0  # Random translations of training images (pixels).

  config.optimizer.base_lr = 8e-3
  config.optimizer.weight_decay = 0.01

  config.training.batch_size = 128
  config.training.num_steps = 2000
  config.training.log_every_steps = 200
  config.training.checkpoint_every_steps = 1000
  config.training.eval_every_steps = 1000
  config.training.label_smoothing = 0.0

  config.evaluation.batch_size = 128
  config.evaluation.split = 'test'

  if arg == 'tiny':
    config.model.input_preprocessor.fourier_position_encoding_kwargs.num_bands = 2
    config.model.encoder.update(
      z_index_dim=4,
      num_z_channels=8,
      num_self_attends_per_block=1,
      num_self_attend_heads=2,
    )
    config.model.decoder.num_z_channels = 8
    config.model.decoder.trainable_position_encoding_kwargs.num_channels = 8
    common.run_length(
      config,
      batch_size=32,
      num_steps=5,
      log_every=1,
      checkpoint_every=5,
      eval_batch_size=64,
    )
  return common.lock(config)
