r"""Optical flow with Perceiver IO: the release's architecture, trained on generated data.

Variants:
  perceiver_io (default): the released model exactly (368x496 frames, 3x3 patches of
    both frames, 64-band 2D Fourier features, 2,048 x 512 latents, 24 self-attends with
    16 heads, FlowDecoder queried by the inputs, outputs x 20). The release's
    `optical_flow_checkpoint.pystate` applies to it unchanged:

      python -m experiments.optical_flow --checkpoint=optical_flow_checkpoint.pystate \
          --frame1=A.png --frame2=B.png --output=flow.flo --visualization=flow.png

    Fine-tuning / evaluation on a dataset folder (see experiments/tasks/flow/datasets.py):

      python -m experiments.train --config=configs/flow.py --workdir=/tmp/flow \
          --config.model.init_checkpoint=optical_flow_checkpoint.pystate \
          --config.data.dataset=sintel --config.data.data_dir=/data/MPI-Sintel

  synthetic: a small model on 24x32 flying-objects pairs generated here (noise
    textures, motions within the 3x3 patches' reach), sized for a 2-core CPU
    (docs/flow.md has what it reaches and why these data and scale factors):

      python -m experiments.train --config=configs/flow.py:synthetic --workdir=/tmp/flow_syn

    and evaluation of its checkpoint on another dataset (frames larger than the model
    are tiled as the release's colab does):

      python -m experiments.train --config=configs/flow.py:synthetic --workdir=/tmp/flow_syn \
          --mode=eval --config.data.dataset=sintel --config.data.data_dir=/data/MPI-Sintel

  debug: a tiny model and a few steps (seconds):

      python -m experiments.train --config=configs/flow.py:debug --workdir=/tmp/flow_debug

Loss: the mean end-point error over valid pixels of the batch. The release publishes no
training code; EPE is the standard loss of supervised flow networks trained without
multi-scale or iterative refinement outputs (FlowNet's single-scale case).

Fields beside the model sections: `model.image_size` (the training / tile size),
`model.flow_scale_factor` (20 in the release), `model.zero_init_output` (the release
zero-initialises the decoder's output layer), `model.tile_min_overlap` (20),
`model.init_checkpoint` (release `.pystate`, this project's `.npz`, a workdir or a released
name: every parameter is loaded; the shapes must fit).

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

VARIANTS = ('perceiver_io', 'synthetic', 'debug')
# The released checkpoint this config builds (experiments/training/registry.py).
RELEASES = {
  'optical_flow': dict(
    variant='perceiver_io',
    smoke_variant='debug',
    url=common.RELEASE_URL + 'optical_flow_checkpoint.pystate',
    description='Optical flow between two frames (Perceiver IO, AutoFlow-trained)',
    paper_result='Sintel clean 1.81 / final 2.42, KITTI 4.98 EPE (Perceiver IO paper)',
  ),
}
RELEASE_SIZE = (368, 496)


def _fourier(num_bands, size):
  return dict(
    num_bands=num_bands, max_resolution=tuple(size), sine_only=False, concat_pos=True
  )


def model_config(
  *,
  image_size,
  num_bands,
  num_latents,
  num_z_channels,
  num_self_attends,
  num_self_attend_heads,
  num_channels=64,
) -> ml_collections.ConfigDict:
  """The release's flow architecture with the given sizes."""
  model = common.model_section()
  model.image_size = tuple(image_size)
  model.flow_scale_factor = 20.0
  model.zero_init_output = True
  model.tile_min_overlap = 20 if min(image_size) > 20 else 2
  model.input_preprocessor = common.module_kwargs(
    io_processors.ImagePreprocessor,
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=_fourier(num_bands, image_size),
    n_extra_pos_mlp=0,
    prep_type='patches',
    spatial_downsample=1,
    conv_after_patching=True,
    temporal_downsample=2,
    num_channels=num_channels,
  )
  model.encoder = common.module_kwargs(
    perceiver.PerceiverEncoder,
    num_self_attends_per_block=num_self_attends,
    num_blocks=1,
    z_index_dim=num_latents,
    num_cross_attend_heads=1,
    num_z_channels=num_z_channels,
    num_self_attend_heads=num_self_attend_heads,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=1,
    dropout_prob=0.0,
    z_pos_enc_init_scale=0.02,
    cross_attention_shape_for_attn='kv',
  )
  model.decoder = common.module_kwargs(
    perceiver.FlowDecoder,
    exclude=('output_w_init',),  # Set by the task from model.zero_init_output.
    rescale_factor=100.0,
    num_z_channels=num_z_channels,
    use_query_residual=False,
    output_num_channels=2,
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=_fourier(num_bands, image_size),
  )
  return model


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """The flow config; `arg` selects a variant (None = 'perceiver_io')."""
  if arg is not None and arg not in VARIANTS:
    raise ValueError(f'configs/flow.py variant {arg!r} is not one of {VARIANTS}.')
  variant = arg or 'perceiver_io'
  config = common.get_base_config()
  config.task = 'experiments.tasks.flow.task'
  config.seed = 0

  if variant == 'perceiver_io':
    config.model = model_config(
      image_size=RELEASE_SIZE,
      num_bands=64,
      num_latents=2048,
      num_z_channels=512,
      num_self_attends=24,
      num_self_attend_heads=16,
    )
    config.model.decoder.attention_query_chunk_size = 8192
    # The encoder attends in blocks of 256 keys (online softmax): its cross-attend
    # never holds the 2,048 x 182,528 weights at once, and on a 2-core CPU every
    # attention of the forward pass ran 15-25% faster in blocks (docs/performance.md).
    config.model.encoder.attention_key_chunk_size = 256
  elif variant == 'synthetic':
    config.model = model_config(
      image_size=(24, 32),
      num_bands=8,
      num_latents=32,
      num_z_channels=64,
      num_self_attends=2,
      num_self_attend_heads=4,
    )
    # Unlike the release, the decoder adds its query (the pixel's own patches of both
    # frames) to the attention output, so per-pixel evidence reaches the output even
    # with few latents.
    config.model.decoder.use_query_residual = True
    # The release divides the zero-initialised output layer by 100 and multiplies by
    # 20 (a net 0.2, for flows of tens of pixels learnt over 480 epochs); here the
    # net factor is 1, so the output layer's updates move the flow 5x faster.
    config.model.decoder.rescale_factor = 20.0
  else:
    config.model = model_config(
      image_size=(13, 19),
      num_bands=3,
      num_latents=5,
      num_z_channels=16,
      num_self_attends=1,
      num_self_attend_heads=2,
      num_channels=8,
    )

  d = config.data
  d.dataset = 'synthetic'  # Or 'flying_chairs', 'sintel', 'kitti', 'autoflow'.
  d.data_dir = ''
  d.sintel_passes = 'clean'  # 'clean', 'final' or 'both'.
  # Generated data (see experiments/tasks/flow/synthetic.py).
  d.synthetic_seed = 0
  d.synthetic_size = ()  # () = model.image_size.
  d.num_train_examples = 2048
  d.num_eval_examples = 256
  d.num_objects = (1, 3)
  d.object_radius = (0.15, 0.35)
  d.background_translation = 2.0
  d.object_translation = 3.0
  d.background_rotation = 2.0
  d.object_rotation = 10.0
  d.background_scale = 0.03
  d.object_scale = 0.08
  d.textures = 'photos'  # Or 'noise' (smooth random colour fields).
  d.texture_scale = (0.75, 1.5)
  # Augmentation of training examples (see experiments/tasks/flow/augment.py).
  d.augment = ml_collections.ConfigDict()
  d.augment.min_log2_scale = 0.0
  d.augment.max_log2_scale = 0.0
  d.augment.brightness = 0.2
  d.augment.contrast = 0.2
  d.augment.saturation = 0.2
  d.augment.horizontal_flip = 0.5
  d.augment.vertical_flip = 0.1

  common.fixed_lr_optimizer(
    config,
    name='adamw',
    base_lr=1e-3,
    weight_decay=1e-4,
    schedule='warmup_cosine',
    warmup_steps=100,
    max_norm=1.0,
  )
  common.run_length(
    config,
    batch_size=16,
    num_steps=3000,
    log_every=100,
    checkpoint_every=1000,
    eval_every=1000,
    eval_batch_size=16,
  )
  config.evaluation.split = 'test'

  if variant == 'perceiver_io':
    d.augment.min_log2_scale = -0.2
    d.augment.max_log2_scale = 0.6
    config.optimizer.base_lr = 4e-4
    config.training.batch_size = 8
    config.training.num_steps = 100_000
    config.evaluation.batch_size = 1
  elif variant == 'synthetic':
    # Motions within the 3x3 patches' reach (<= 1.5 px per axis plus rotation and
    # scaling) on textures with structure at every pixel (random colour fields): the
    # flow is determined locally (docs/flow.md, "Why the first demo learnt nothing").
    d.num_train_examples = 1024
    d.textures = 'noise'
    d.texture_scale = (1.5, 3.0)
    d.background_translation = 1.5
    d.object_translation = 1.5
    d.background_rotation = 2.0
    d.object_rotation = 5.0
    d.background_scale = 0.02
    d.object_scale = 0.05
    config.optimizer.base_lr = 2e-3
    config.training.num_steps = 1200
    config.training.eval_every_steps = 400
    config.training.checkpoint_every_steps = 400
  elif variant == 'debug':
    d.num_train_examples = 32
    d.num_eval_examples = 7
    common.run_length(
      config,
      batch_size=4,
      num_steps=3,
      log_every=1,
      checkpoint_every=3,
      eval_batch_size=4,
    )
    config.optimizer.schedule.warmup_steps = 1
  return common.lock(config)
