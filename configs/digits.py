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
"""

import ml_collections

from configs import common

VARIANTS = ('permuted', 'tiny')


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """The digits config; `arg` selects a variant (None, 'permuted' or 'tiny')."""
  if arg is not None and arg not in VARIANTS:
    raise ValueError(f'configs/digits.py variant {arg!r} is not one of {VARIANTS}.')
  config = common.get_base_config()
  config.task = 'experiments.tasks.digits.task'
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.num_bands = 4
  config.model.num_latents = 16
  config.model.num_z_channels = 32
  config.model.num_blocks = 1
  config.model.num_self_attends_per_block = 2
  config.model.num_cross_attend_heads = 1
  config.model.num_self_attend_heads = 4
  config.model.cross_attend_widening_factor = 1
  config.model.self_attend_widening_factor = 2
  config.model.dropout_prob = 0.0
  config.model.permute_pixels = arg == 'permuted'

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
    config.model.num_bands = 2
    config.model.num_latents = 4
    config.model.num_z_channels = 8
    config.model.num_self_attends_per_block = 1
    config.model.num_self_attend_heads = 2
    config.training.batch_size = 32
    config.training.num_steps = 5
    config.training.log_every_steps = 1
    config.training.checkpoint_every_steps = 5
    config.training.eval_every_steps = 0
    config.evaluation.batch_size = 64
  return common.lock(config)
