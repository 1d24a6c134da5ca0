r"""Perceiver IO multimodal autoencoding: video + audio + label through one latent array.

The model reconstructs the frames, the audio samples and the class label of a clip from
one latent array; the label is masked at the input (`mask_probs['label'] = 1`), so
predicting it is classification from video and audio. Outputs are decoded through
per-modality queries; training decodes a random subset of the video and audio points
(`model.train_image_points`, `model.train_audio_points`), evaluation decodes every point
in `model.eval_num_chunks` groups with the encoder run once.

Loss (the paper trains on a weighted sum of reconstruction losses for video and audio and
a cross-entropy for the label; the kinds and weights here are this project's choice):
`training.loss_weights.video` * R(video) + `.audio` * R(audio) + `.label` *
cross-entropy(label), R over the decoded points being the mean absolute error
(`training.reconstruction_loss='l1'`) or the mean squared error (`'l2'`).
  kinetics, debug: L1, weights video 1, audio 1, label 0.1.
  synthetic: L2 (the error PSNR measures: under L1 a pixel that may or may not be
  covered by the digit is pulled to the median, the background; see
  docs/multimodal.md), weights video 10, audio 2, label 0.1 (the squared errors are ~10x smaller
  than the absolute ones; these put the three terms at comparable sizes at the start).

Variants (run from the repository root):

  kinetics (default): the released architecture exactly (16 frames of 224x224 as 4x4
  patches with 3D Fourier features, 32 bands, max resolution 16x56x56; 30,720 audio
  samples at 48 kHz in patches of 16 with 1D Fourier features, 192 bands; 700-way label;
  784 latents x 512, 8 self-attends, 8 heads; 512-channel decoder outputs), so the
  release's `video_autoencoding_checkpoint.pystate` applies unchanged. Data: a
  Kinetics-layout video folder (`--config.data.video_folder.root=DIR`).

    python -m experiments.train --config=configs/multimodal.py --workdir=/tmp/mm_k700 \
        --config.data.video_folder.root=/data/kinetics700_2020

  synthetic: moving digits with sound (8 frames of 32x32, 512 audio samples, 10
  classes), sized to learn on a 2-core CPU in ~15 minutes. Its pixel queries carry
  Fourier features at pixel resolution (16 bands, max resolution 8x32x32) rather than
  the release's patch resolution, so that the decoder can place edges finer than a
  4x4 patch:

    python -m experiments.train --config=configs/multimodal.py:synthetic --workdir=/tmp/mm

  debug: tiny, seconds:

    python -m experiments.train --config=configs/multimodal.py:debug --workdir=/tmp/mm_debug

Autoencode one video file with a checkpoint (the release's or one trained here):

  python -m experiments.autoencode --checkpoint=video_autoencoding_checkpoint.pystate \
      --video=IN.mp4 --output_dir=/tmp/out

On GPUs and TPUs use bfloat16 compute, keeping parameters, optimizer state, layer
norms, the softmax normalisation and the losses in float32
(experiments/training/precision.py):

  --config.model.audio_decoder.compute_dtype=bfloat16 \
  --config.model.decoder.compute_dtype=bfloat16 \
  --config.model.encoder.compute_dtype=bfloat16 \
  --config.model.image_decoder.compute_dtype=bfloat16 \
  --config.model.label_decoder.compute_dtype=bfloat16
"""

import ml_collections

from configs import common
from perceiver import io_processors
from perceiver import perceiver

VARIANTS = ('kinetics', 'synthetic', 'debug')
# The released checkpoint this config builds (experiments/training/registry.py).
RELEASES = {
  'video_autoencoding': dict(
    variant='kinetics',
    smoke_variant='debug',
    url=common.RELEASE_URL + 'video_autoencoding_checkpoint.pystate',
    description='Kinetics-700 multimodal autoencoder (video, audio, label)',
    paper_result='Kinetics-700 autoencoding (Perceiver IO paper, Sec. 4.3)',
  ),
}


def _sizes(arg):
  """(frames, image size, audio samples per frame, classes, fps, model sizes)."""
  if arg == 'kinetics':
    return dict(
      num_frames=16,
      image_size=224,
      samples_per_frame=1920,  # 48 kHz at 25 frames per second.
      num_classes=700,
      fps=25.0,
      image_bands=32,
      audio_bands=192,
      num_latents=28 * 28,
      num_z_channels=512,
      num_self_attends=8,
      self_heads=8,
      decoder_channels=512,
      label_query=1024,
    )
  if arg == 'synthetic':
    return dict(
      num_frames=8,
      image_size=32,
      samples_per_frame=64,
      num_classes=10,
      fps=25.0,
      image_bands=6,
      audio_bands=32,
      num_latents=64,
      num_z_channels=128,
      num_self_attends=2,
      self_heads=4,
      decoder_channels=128,
      label_query=128,
      pixel_queries=16,  # Fourier bands of the pixel queries, at pixel resolution.
    )
  return dict(  # debug
    num_frames=3,
    image_size=16,
    samples_per_frame=48,
    num_classes=10,
    fps=25.0,
    image_bands=2,
    audio_bands=3,
    num_latents=7,
    num_z_channels=16,
    num_self_attends=1,
    self_heads=2,
    decoder_channels=12,
    label_query=12,
  )


def model_fields(s: dict, *, samples_per_patch: int = 16) -> ml_collections.ConfigDict:
  """The model section for sizes `s` (see `_sizes`)."""
  n_audio = s['num_frames'] * s['samples_per_frame']
  patched = s['image_size'] // 4
  image_fourier = dict(
    num_bands=s['image_bands'],
    max_resolution=(s['num_frames'], patched, patched),
    sine_only=False,
    concat_pos=True,
  )
  audio_fourier = dict(
    num_bands=s['audio_bands'],
    max_resolution=(n_audio,),
    sine_only=False,
    concat_pos=True,
  )
  model = common.model_section()
  model.input_preprocessor = common.module_kwargs(
    io_processors.MultimodalPreprocessor,
    exclude=('modalities',),
    min_padding_size=4,
    mask_probs=dict(image=0.0, audio=0.0, label=1.0),
  )
  model.audio_preprocessor = common.module_kwargs(
    io_processors.AudioPreprocessor,
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=audio_fourier,
    n_extra_pos_mlp=0,
    prep_type='patches',
    samples_per_patch=samples_per_patch,
  )
  model.image_preprocessor = common.module_kwargs(
    io_processors.ImagePreprocessor,
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=image_fourier,
    n_extra_pos_mlp=0,
    prep_type='patches',
    spatial_downsample=4,
    temporal_downsample=1,
  )
  model.encoder = common.module_kwargs(
    perceiver.PerceiverEncoder,
    num_self_attends_per_block=s['num_self_attends'],
    num_blocks=1,
    z_index_dim=s['num_latents'],
    num_z_channels=s['num_z_channels'],
    num_cross_attend_heads=1,
    num_self_attend_heads=s['self_heads'],
    cross_attend_widening_factor=1,
    self_attend_widening_factor=1,
    dropout_prob=0.0,
    z_pos_enc_init_scale=0.02,
    cross_attention_shape_for_attn='kv',
  )
  query_channels = dict(
    num_z_channels=1024,
    output_num_channels=s['decoder_channels'],
    use_query_residual=False,
    concat_preprocessed_input=False,
  )
  # The release's pixel queries reuse the inputs' Fourier features (resolution of the
  # 4x4 patches); `pixel_queries` gives them the pixels' own resolution instead.
  decoder_fourier = image_fourier
  if s.get('pixel_queries'):
    decoder_fourier = dict(
      image_fourier,
      num_bands=s['pixel_queries'],
      max_resolution=(s['num_frames'], s['image_size'], s['image_size']),
    )
  model.image_decoder = common.module_kwargs(
    perceiver.BasicVideoAutoencodingDecoder,
    exclude=('output_shape', 'output_index_dims', 'subsampled_index_dims'),
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=decoder_fourier,
    **query_channels,
  )
  model.audio_decoder = common.module_kwargs(
    perceiver.BasicDecoder,
    exclude=('output_index_dims', 'subsampled_index_dims'),
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=audio_fourier,
    **query_channels,
  )
  model.label_decoder = common.module_kwargs(
    perceiver.ClassificationDecoder,
    exclude=('subsampled_index_dims',),
    num_z_channels=1024,
    use_query_residual=False,
    concat_preprocessed_input=False,
    position_encoding_type='trainable',
    # The label query's channels (1,024 in the release).
    trainable_position_encoding_kwargs=dict(
      num_channels=s['label_query'], init_scale=0.02
    ),
  )
  model.decoder = common.module_kwargs(
    perceiver.MultimodalDecoder,
    exclude=('modalities', 'num_outputs'),
    output_num_channels=s['decoder_channels'],
    use_query_residual=False,
    concat_preprocessed_input=False,
  )
  model.audio_postprocessor = common.module_kwargs(
    io_processors.AudioPostprocessor, samples_per_patch=samples_per_patch
  )
  # Points decoded per training example (<= 0: all of them).
  model.train_image_points = 4096
  model.train_audio_points = 0
  # Groups of output points decoded one after another in evaluation (encoder once).
  model.eval_num_chunks = 1
  return model


def _data(s: dict, arg: str) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict()
  data.dataset = 'video_folder' if arg == 'kinetics' else 'moving_digits'
  data.num_frames = s['num_frames']
  data.image_size = s['image_size']
  data.samples_per_frame = s['samples_per_frame']
  data.num_classes = s['num_classes']
  data.fps = s['fps']  # Audio rate: samples_per_frame * fps (48 kHz for kinetics).
  data.moving_digits = ml_collections.ConfigDict()
  data.moving_digits.num_train = 4096
  data.moving_digits.num_eval = 256  # Clips in 'validation' and in 'test'.
  data.moving_digits.num_digits = 1
  data.moving_digits.digit_scale = 2
  data.moving_digits.noise_std = 0.01
  data.video_folder = ml_collections.ConfigDict()
  data.video_folder.root = ''  # <root>/<split>/<id>_<start:06d>_<end:06d>.<ext>
  data.video_folder.annotations = ''  # Default: <root>/annotations/<split>.csv
  data.video_folder.num_workers = 2
  data.video_folder.random_crop = True  # Training crops; evaluation is centre-cropped.
  data.video_folder.class_names = (
    'kinetics700'  # Or '' for the annotations' sorted labels.
  )
  return data


def get_config(arg: str = None) -> ml_collections.ConfigDict:
  """The multimodal autoencoding config; `arg` selects a variant (default kinetics)."""
  arg = arg or 'kinetics'
  if arg not in VARIANTS:
    raise ValueError(f'configs/multimodal.py variant {arg!r} is not one of {VARIANTS}.')
  s = _sizes(arg)
  config = common.get_base_config()
  config.task = 'experiments.tasks.multimodal.task'
  config.seed = 0
  config.model = model_fields(s)
  config.data = _data(s, arg)
  config.data.fake = False
  config.training.loss_weights = ml_collections.ConfigDict(
    dict(video=1.0, audio=1.0, label=0.1)
  )
  config.training.reconstruction_loss = 'l1'  # Or 'l2' (mean squared error).
  config.evaluation.split = 'test'
  # Training clips averaged into the mean frame of the mean-frame baseline.
  config.evaluation.mean_frame_clips = 512

  if arg == 'kinetics':
    config.model.train_image_points = 16 * 224 * 224 // 128  # One colab chunk.
    config.model.train_audio_points = 0
    config.model.eval_num_chunks = 128
    config.training.batch_size = 64
    config.training.num_steps = 100_000
    config.training.eval_every_steps = 10_000
    config.evaluation.batch_size = 8
    config.evaluation.split = 'validate'
  elif arg == 'synthetic':
    config.model.train_image_points = 1024
    config.training.reconstruction_loss = 'l2'
    config.training.loss_weights.video = 10.0
    config.training.loss_weights.audio = 2.0
    common.fixed_lr_optimizer(
      config,
      name='adamw',
      base_lr=1.5e-3,
      weight_decay=0.01,
      schedule='warmup_cosine',
      warmup_steps=50,
    )
    common.run_length(
      config,
      batch_size=16,
      num_steps=1500,
      log_every=50,
      checkpoint_every=400,
      eval_batch_size=64,
    )
  else:  # debug
    config.model.train_image_points = 64
    config.model.eval_num_chunks = 3
    config.data.moving_digits.num_train = 64
    config.data.moving_digits.num_eval = 12
    config.data.moving_digits.digit_scale = 1
    common.run_length(
      config,
      batch_size=8,
      num_steps=4,
      log_every=1,
      checkpoint_every=4,
      eval_batch_size=8,
    )
  return common.lock(config)
