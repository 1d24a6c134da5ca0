r"""ImageNet classification with Perceiver / Perceiver IO (task `experiments.tasks.imagenet.task`).

Variants (`--config=configs/imagenet.py:<variant>`):
  io_fourier (default): the release's Perceiver IO: raw pixels + 2D Fourier features
    (64 bands, max resolution 224), 1 cross-attend, 8 blocks x 6 self-attends (shared),
    512 x 1024 latents, a ClassificationDecoder with one trainable 1024-channel query;
    48,440,627 parameters with the release's parameter paths.
  io_learned: the release's learned-position model: 1x1 conv of the pixels to 256
    channels + a trainable 50,176 x 256 position encoding projected to 256.
  io_conv: the release's conv model: Conv2DDownsample (7x7 stride-2 conv, BatchNorm,
    ReLU, max pool) to 56 x 56 x 64 + 2D Fourier features (max resolution 56).
  perceiver: the original Perceiver (paper 1): the io_fourier inputs, 8 cross-attends
    interleaved with 8 latent Transformers of 6 self-attends, weights shared by all
    cross-attends but the first and by all latent Transformers, 1 cross-attend head,
    8 self-attend heads, mean of the latents + linear logits (44,912,254 parameters;
    paper 1: 44.9M). Paper 1 (Sec. 4.1) trains 120 epochs with LAMB at 4e-3, divided
    by 10 at epochs 84, 102 and 114, with crops and RandAugment; it states no batch
    size, weight decay, clipping or label smoothing, so this variant uses batch 1024 and
    the release's weight decay (0.1) and clipping (10), RandAugment 4 x 5 (as the
    Perceiver IO paper reports for paper 1), no MixUp / CutMix, no label smoothing.
  debug: a tiny pixels + Fourier model on 16 x 16 images that runs in seconds on a CPU.
  io_fourier_tiny, io_learned_tiny, io_conv_tiny: the release variants shrunk to a few
    thousand parameters on 32 x 32 images, keeping their input preprocessing: the
    stand-ins of the released checkpoints in smoke runs of the notebooks and tests.

Training recipe of the Perceiver IO variants (release / Perceiver IO paper A.1): LAMB
(b1 0.9, b2 0.999, eps 1e-6), base lr 5e-4 x batch / 256 (2e-3 at batch 1024), weight
decay 0.1 (not on biases and norms, on position embeddings), global-norm clipping at
10, constant for 55 epochs then cosine to 0 at epoch 110, label smoothing 0.1,
RandAugment (4 layers, magnitude 5), MixUp (alpha 0.2) and CutMix on alternate pairs.

Commands:
  python -m experiments.train --config=configs/imagenet.py --workdir=/tmp/in_io
  python -m experiments.train --config=configs/imagenet.py:perceiver \
      --workdir=/tmp/in_perceiver
  # Permuted ImageNet (paper 1): one fixed pixel permutation after position features.
  python -m experiments.train --config=configs/imagenet.py:perceiver \
      --config.model.permute_inputs=True --workdir=/tmp/in_permuted
  # Smoke test without the dataset (mock JPEGs through the real pipeline):
  python -m experiments.train --config=configs/imagenet.py:debug \
      --config.data.fake=True --workdir=/tmp/in_debug

Data fields (`config.data`):
  tfds_name, data_dir: the TFDS dataset ('imagenet2012') and its directory ('' = TFDS
    default); prepare it once with
    `python -m experiments.tasks.imagenet.prepare --manual_dir=DIR [--data_dir=...]`.
  train_split: TFDS split read for training ('train'; e.g. 'train[10000:]' to hold out
    the release's 10,000 validation images); `evaluation.split` is evaluated.
  image_size: side of the square crops; num_classes: 1000.
  randaugment_layers, randaugment_magnitude: RandAugment N and M (N=0 disables it).
  mixup_alpha: Beta(alpha, alpha) MixUp weight (0 disables MixUp).
  cutmix, cutmix_alpha: CutMix on/off and the Beta(alpha, alpha) of the kept area
    (1: uniform, the release's choice). With both, alternate pairs use each.
  shuffle_buffer: examples (0: 10 x the host batch, as the release).
  deterministic: keep tf.data element order under parallelism (reproducible runs).
  threadpool_size, max_intra_op_parallelism: tf.data private threadpool (0: default).
  fake, fake_num_examples: use that many `tfds.testing.mock_data` JPEGs instead.

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

VARIANTS = (
  'io_fourier',
  'io_learned',
  'io_conv',
  'perceiver',
  'debug',
  'io_fourier_tiny',
  'io_learned_tiny',
  'io_conv_tiny',
)
NUM_TRAIN_EXAMPLES = 1_281_167
# The released checkpoints these variants build (experiments/training/registry.py).
RELEASES = {
  'imagenet_fourier': dict(
    variant='io_fourier',
    smoke_variant='io_fourier_tiny',
    url=common.RELEASE_URL + 'imagenet_fourier_position_encoding.pystate',
    description=(
      'ImageNet classifier, pixels + 2D Fourier features (Perceiver IO, 48.4M params)'
    ),
    paper_result='79.0% top-1 (Perceiver IO paper, ImageNet, 2D Fourier features)',
  ),
  'imagenet_learned': dict(
    variant='io_learned',
    smoke_variant='io_learned_tiny',
    url=common.RELEASE_URL + 'imagenet_learned_position_encoding.pystate',
    description='ImageNet classifier, 1x1 conv + learned position encoding (Perceiver IO)',
    paper_result='72.7% top-1 (Perceiver IO paper, ImageNet, learned positions)',
  ),
  'imagenet_conv': dict(
    variant='io_conv',
    smoke_variant='io_conv_tiny',
    url=common.RELEASE_URL + 'imagenet_conv_preprocessing.pystate',
    description='ImageNet classifier, conv + max-pool preprocessing + 2D Fourier features',
    paper_result=(
      '82.1% top-1 (Perceiver IO paper, ImageNet, conv preprocessing, no pretraining)'
    ),
  ),
}


def fourier_pixels(num_bands: int = 64, max_resolution: int = 224):
  """`ImagePreprocessor` keywords: raw pixels + 2D Fourier features (concatenated)."""
  return common.module_kwargs(
    io_processors.ImagePreprocessor,
    prep_type='pixels',
    spatial_downsample=1,
    position_encoding_type='fourier',
    concat_or_add_pos='concat',
    fourier_position_encoding_kwargs=dict(
      num_bands=num_bands,
      max_resolution=(max_resolution, max_resolution),
      sine_only=False,
      concat_pos=True,
    ),
  )


def encoder(**overrides):
  """`PerceiverEncoder` keywords of the release's ImageNet models, with `overrides`."""
  return common.imagenet_encoder(
    dropout_prob=0.0,
    z_pos_enc_init_scale=0.02,
    cross_attention_shape_for_attn='kv',
    use_query_residual=True,
    scan_layers=False,
    **overrides,
  )


def classification_decoder(num_channels: int = 1024, use_query_residual: bool = True):
  """`ClassificationDecoder` keywords: one trainable query of `num_channels`."""
  return common.module_kwargs(
    perceiver.ClassificationDecoder,
    num_z_channels=num_channels,
    use_query_residual=use_query_residual,
    position_encoding_type='trainable',
    trainable_position_encoding_kwargs=dict(num_channels=num_channels, init_scale=0.02),
  )


def _model(variant: str) -> ml_collections.ConfigDict:
  model = common.model_section()
  model.decoder_type = 'classification'
  model.permute_inputs = False
  model.permutation_seed = 0
  if variant == 'io_fourier':
    model.input_preprocessor = fourier_pixels()
    model.encoder = encoder()
    model.decoder = classification_decoder()
  elif variant == 'io_learned':
    model.input_preprocessor = common.module_kwargs(
      io_processors.ImagePreprocessor,
      prep_type='conv1x1',
      spatial_downsample=1,
      num_channels=256,
      position_encoding_type='trainable',
      concat_or_add_pos='concat',
      project_pos_dim=256,
      trainable_position_encoding_kwargs=dict(num_channels=256, init_scale=0.02),
    )
    model.encoder = encoder()
    model.decoder = classification_decoder(use_query_residual=False)
  elif variant == 'io_conv':
    model.input_preprocessor = common.module_kwargs(
      io_processors.ImagePreprocessor,
      prep_type='conv',
      spatial_downsample=4,
      num_channels=64,
      conv2d_use_batchnorm=True,
      position_encoding_type='fourier',
      concat_or_add_pos='concat',
      fourier_position_encoding_kwargs=dict(
        num_bands=64, max_resolution=(56, 56), sine_only=False, concat_pos=True
      ),
    )
    model.encoder = encoder()
    model.decoder = classification_decoder()
  elif variant == 'perceiver':
    model.input_preprocessor = fourier_pixels()
    model.encoder = common.perceiver1_encoder()
    model.decoder_type = 'projection'
    model.decoder = common.module_kwargs(perceiver.ProjectionDecoder)
  else:  # debug
    model.input_preprocessor = fourier_pixels(num_bands=4, max_resolution=16)
    model.encoder = encoder(
      num_self_attends_per_block=1,
      num_blocks=1,
      z_index_dim=16,
      num_z_channels=32,
      num_self_attend_heads=4,
    )
    model.decoder = classification_decoder(num_channels=32)
  return model


def _data(image_size: int) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict()
  data.fake = False
  data.fake_num_examples = 64
  data.tfds_name = 'imagenet2012'
  data.data_dir = ''
  data.train_split = 'train'
  data.image_size = image_size
  data.num_classes = 1000
  data.randaugment_layers = 4
  data.randaugment_magnitude = 5.0
  data.mixup_alpha = 0.2
  data.cutmix = True
  data.cutmix_alpha = 1.0
  data.shuffle_buffer = 0
  data.deterministic = False
  data.threadpool_size = 0
  data.max_intra_op_parallelism = 1
  return data


def get_config(arg: str = 'io_fourier') -> ml_collections.ConfigDict:
  """Returns the ImageNet config of variant `arg` (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(
      f'Unknown configs/imagenet.py variant {arg!r}; expected one of {VARIANTS}.'
    )
  tiny = arg.endswith('_tiny')
  arg = arg[: -len('_tiny')] if tiny else arg
  config = common.get_base_config()
  config.task = 'experiments.tasks.imagenet.task'
  config.model = _model(arg)
  config.data = _data(image_size=16 if arg == 'debug' else 224)

  # Perceiver IO release / paper A.1.
  config.optimizer.name = 'lamb'
  config.optimizer.base_lr = 5e-4
  config.optimizer.scale_by_batch = True
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-6
  config.optimizer.weight_decay = 0.1
  config.optimizer.decay_pos_embs = True
  config.optimizer.max_norm = 10.0
  config.optimizer.schedule.type = 'constant_cosine'
  config.optimizer.schedule.constant_fraction = 0.5
  config.optimizer.schedule.end_value = 0.0

  config.training.batch_size = 1024
  config.training.label_smoothing = 0.1
  config.training.log_every_steps = 100
  config.training.checkpoint_every_steps = 1000
  config.training.eval_every_steps = 5000
  config.evaluation.split = 'validation'
  config.evaluation.batch_size = 1000

  if arg == 'perceiver':
    # Paper 1, Sec. 4.1: 120 epochs, LAMB, 4e-3 divided by 10 at epochs 84, 102, 114.
    config.optimizer.base_lr = 1e-3  # x batch / 256 = 4e-3 at batch 1024.
    config.optimizer.schedule.type = 'step'
    config.optimizer.schedule.decay_boundaries = (84 / 120, 102 / 120, 114 / 120)
    config.optimizer.schedule.decay_rate = 0.1
    config.training.num_epochs = 120.0
    config.training.label_smoothing = 0.0
    config.data.mixup_alpha = 0.0
    config.data.cutmix = False
  elif arg != 'debug':
    config.training.num_epochs = 110.0
  if arg == 'debug':
    config.data.fake_num_examples = 24
    config.data.randaugment_layers = 2
    config.data.deterministic = True
    config.data.threadpool_size = 2
    common.debug_run(config, eval_batch_size=10)
  if tiny:
    _shrink(config)
  return common.lock(config)


def _shrink(config: ml_collections.ConfigDict) -> None:
  """A few thousand parameters, same preprocessing: the smoke models of the releases.

  32 x 32 images, 8 latents of 16 channels, one self-attend; the input preprocessing
  (Fourier pixels, learned positions or conv) keeps its kind.
  """
  config.data.image_size = 32
  config.data.fake_num_examples = 24
  config.model.encoder.update(
    dict(
      z_index_dim=8,
      num_z_channels=16,
      num_blocks=1,
      num_self_attends_per_block=1,
      num_self_attend_heads=2,
    )
  )
  config.model.decoder.num_z_channels = 16
  config.model.decoder.trainable_position_encoding_kwargs.num_channels = 16
  prep = config.model.input_preprocessor
  if prep.position_encoding_type == 'fourier':
    side = 32 // prep.spatial_downsample
    prep.fourier_position_encoding_kwargs.num_bands = 4
    prep.fourier_position_encoding_kwargs.max_resolution = (side, side)
  if prep.position_encoding_type == 'trainable':
    prep.num_channels = 8
    prep.project_pos_dim = 8
    prep.trainable_position_encoding_kwargs.num_channels = 8
  if prep.prep_type == 'conv':
    prep.num_channels = 8
  common.debug_run(config, eval_batch_size=10)
