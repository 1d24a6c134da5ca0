r"""AudioSet-style multi-label classification: audio, video and audio+video (paper 1).

Task `experiments.tasks.audioset.task`; see docs/audioset.md. Variants
(`--config=configs/audioset.py:<variant>`):

  audio_raw: raw 48 kHz waveform windows of 1.28 s (61,440 samples) cut into 480
    patches of 128 samples + 1D Fourier features.
  audio_mel: the same windows as a log-mel spectrogram of 96 frames x 50 bins, one
    input per time-frequency bin (4,800 inputs, time-major) + 1D Fourier features.
  video: 32 frames of 224 x 224 (1.28 s at 25 fps) in 2 x 8 x 8 patches (12,544
    inputs of 384 values) + 3D Fourier features (16 bands; 483 channels).
  audio_video: video + raw audio through the multimodal preprocessor, channels padded
    to 487 with trainable per-modality padding (13,024 inputs x 487 channels).
    The mel version (17,344 inputs): add `--config.data.audio_input=mel
    --config.model.audio_preprocessor.samples_per_patch=1
    '--config.model.audio_preprocessor.fourier_position_encoding_kwargs.max_resolution=(4800,)'`.
  synthetic: generated sound events (16 classes, 1.0 s at 4 kHz) as log-mel frames,
    a small Perceiver that learns on a 2-core CPU in minutes.
  synthetic_audio_video: the same clips with their pictures (8 frames of 16 x 16).
  debug: a tiny model on a few generated clips (seconds).

Paper-1 sizes: the seeds give 32-frame clips, 2 x 8 x 8 video patches, 128-sample
audio patches, 13,024 (raw) and 17,344 (mel) audio+video inputs of 487 channels, 527
classes and mAP 38.4 (audio), 25.8 (video), 43.5 (audio+video). They fix 48 kHz
audio (480 x 128 samples in the 1.28 s of 32 frames at 25 fps), 4,800 mel inputs
and, with 4 padding channels as in the release's multimodal model, 16 video bands
(384 + 3 + 6 x 16 = 483). Not stated, hence chosen here: the mel parameters (25 ms
Hann window, 640-sample hop, 50 HTK mel bins up to 24 kHz), 64 audio bands, the
architecture (paper 1's ImageNet Perceiver: 512 x 1024 latents, 8 cross-attends
interleaved with 8 latent Transformers of 6 self-attends, weights shared after the
first, average of the latents + linear), and the recipe (LAMB 1e-3 x batch / 256,
batch 512, 100,000 steps, step decay, class-balanced sampling of balanced +
unbalanced training sets, no mixup). Evaluation uses one centred window per clip
(paper 1 averages 16 overlapping windows).

Commands:
  python -m experiments.train --config=configs/audioset.py:synthetic \
      --workdir=/tmp/audioset_synthetic
  python -m experiments.train --config=configs/audioset.py:synthetic_audio_video \
      --workdir=/tmp/audioset_synthetic_av
  python -m experiments.train --config=configs/audioset.py:audio_video \
      --config.data.data_dir=/data/audioset --workdir=/tmp/audioset_av
  python -m experiments.train --config=configs/audioset.py:debug --workdir=/tmp/as_debug

Data fields (`config.data`):
  dataset: 'synthetic_events' (generated, nothing to download) or 'audioset' (the
    published CSVs in `data_dir` + the user's clips; see local_clips.py).
  num_classes; sample_rate, clip_seconds (the window); audio_input 'raw' | 'mel' |
    'none'; use_video, num_frames, frame_size; mel.* (mel.py).
  synthetic.*: seed, num_train, num_test, max_events, noise_level of the generator.
  data_dir, class_file, train_segments, eval_segments, clip_template,
    clip_extensions, class_balanced, balance_power, min_clip_seconds: the audioset
    dataset.
  fake, fake_num_examples: generated inputs through the real pipeline (tests).

On GPUs and TPUs use bfloat16 compute, keeping parameters, optimizer state, layer
norms, the softmax normalisation and the losses in float32
(experiments/training/precision.py):

  --config.model.encoder.compute_dtype=bfloat16
"""

import ml_collections

from configs import common
from perceiver import io_processors
from perceiver import perceiver

VARIANTS = (
  'audio_raw',
  'audio_mel',
  'video',
  'audio_video',
  'synthetic',
  'synthetic_audio_video',
  'debug',
)


def _fourier(num_bands: int, max_resolution) -> dict:
  return dict(
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=dict(
      num_bands=num_bands,
      max_resolution=tuple(max_resolution),
      sine_only=False,
      concat_pos=True,
    ),
  )


def _audio_preprocessor(samples_per_patch: int, num_patches: int, num_bands: int):
  return common.module_kwargs(
    io_processors.AudioPreprocessor,
    samples_per_patch=samples_per_patch,
    **_fourier(num_bands, (num_patches,)),
  )


def _video_preprocessor(temporal: int, spatial: int, grid, num_bands: int):
  return common.module_kwargs(
    io_processors.ImagePreprocessor,
    prep_type='patches',
    temporal_downsample=temporal,
    spatial_downsample=spatial,
    **_fourier(num_bands, grid),
  )


def _paper_encoder():
  return common.perceiver1_encoder()


def _small_encoder(latents: int, channels: int, self_attends: int, heads: int):
  return common.module_kwargs(
    perceiver.PerceiverEncoder,
    num_self_attends_per_block=self_attends,
    num_blocks=1,
    z_index_dim=latents,
    num_z_channels=channels,
    num_cross_attend_heads=1,
    num_self_attend_heads=heads,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=2,
  )


def _data() -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict()
  data.dataset = 'audioset'
  data.fake = False
  data.fake_num_examples = 6
  data.num_classes = 527
  data.sample_rate = 48_000
  data.clip_seconds = 1.28
  data.audio_input = 'raw'
  data.use_video = False
  data.num_frames = 32
  data.frame_size = 224
  data.mel = ml_collections.ConfigDict(
    dict(
      window_length=1200,
      hop_length=640,
      num_mel_bins=50,
      fft_length=0,
      lower_edge_hz=0.0,
      upper_edge_hz=0.0,
      log_offset=1e-6,
    )
  )
  data.synthetic = ml_collections.ConfigDict(
    dict(seed=0, num_train=6000, num_test=1000, max_events=3, noise_level=0.02)
  )
  data.data_dir = ''
  data.class_file = 'class_labels_indices.csv'
  data.train_segments = 'balanced_train_segments.csv,unbalanced_train_segments.csv'
  data.eval_segments = 'eval_segments.csv'
  data.clip_template = '{csv}/{ytid}_{start_ms}_{end_ms}'
  data.clip_extensions = '.wav,.flac,.mp4,.mkv,.webm,.m4a,.ogg,.mp3,.opus'
  data.class_balanced = True
  data.balance_power = 1.0
  data.min_clip_seconds = 1.0
  return data


def get_config(arg: str = 'audio_video') -> ml_collections.ConfigDict:
  """The AudioSet config of variant `arg` (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'configs/audioset.py variant {arg!r} is not one of {VARIANTS}.')
  config = common.get_base_config()
  config.task = 'experiments.tasks.audioset.task'
  config.seed = 0
  config.data = data = _data()
  model = config.model = common.model_section()
  model.decoder_type = 'projection'
  model.input_preprocessor = common.module_kwargs(
    io_processors.MultimodalPreprocessor, exclude=('modalities',), min_padding_size=4
  )

  # Paper 1 scale (see the docstring).
  model.audio_preprocessor = _audio_preprocessor(128, 480, 64)
  model.video_preprocessor = _video_preprocessor(2, 8, (16, 28, 28), 16)
  model.encoder = _paper_encoder()
  model.decoder = common.module_kwargs(perceiver.ProjectionDecoder)
  config.optimizer.base_lr = 1e-3
  config.optimizer.schedule.type = 'step'
  config.optimizer.schedule.decay_boundaries = (0.7, 0.85, 0.95)
  config.training.batch_size = 512
  config.training.num_steps = 100_000
  config.training.log_every_steps = 100
  config.training.checkpoint_every_steps = 2000
  config.training.eval_every_steps = 10_000
  config.evaluation.batch_size = 256
  config.evaluation.split = 'test'

  if arg == 'audio_raw':
    data.audio_input = 'raw'
  elif arg == 'audio_mel':
    data.audio_input = 'mel'
    model.audio_preprocessor = _audio_preprocessor(1, 4800, 64)
  elif arg == 'video':
    data.audio_input = 'none'
    data.use_video = True
  elif arg == 'audio_video':
    data.use_video = True
  else:  # Generated events: synthetic, synthetic_audio_video, debug.
    data.dataset = 'synthetic_events'
    data.num_classes = 16
    data.sample_rate = 4000
    data.clip_seconds = 1.0
    data.audio_input = 'mel'
    data.use_video = arg == 'synthetic_audio_video'
    data.num_frames = 8
    data.frame_size = 16
    data.mel.update(
      dict(window_length=256, hop_length=125, num_mel_bins=32, log_offset=1e-4)
    )
    data.class_balanced = False
    data.min_clip_seconds = 0.5
    model.audio_preprocessor = _audio_preprocessor(32, 32, 8)  # One token per mel frame.
    model.video_preprocessor = _video_preprocessor(2, 4, (4, 4, 4), 4)
    model.encoder = _small_encoder(latents=32, channels=64, self_attends=2, heads=4)
    common.fixed_lr_optimizer(
      config, name='lamb', base_lr=2e-3, weight_decay=0.01, schedule='constant_cosine'
    )
    common.run_length(
      config,
      batch_size=64,
      num_steps=3000,
      log_every=100,
      checkpoint_every=1000,
      eval_every=1000,
      eval_batch_size=250,
    )
    if arg == 'debug':
      data.use_video = True
      data.synthetic.num_train = 24
      data.synthetic.num_test = 11
      data.fake_num_examples = 5
      data.frame_size = 8
      model.video_preprocessor = _video_preprocessor(2, 4, (4, 2, 2), 2)
      model.audio_preprocessor = _audio_preprocessor(32, 32, 2)
      model.encoder = _small_encoder(latents=5, channels=8, self_attends=1, heads=2)
      config.training.batch_size = 8
      config.training.num_steps = 4
      config.training.log_every_steps = 2
      config.training.checkpoint_every_steps = 4
      config.training.eval_every_steps = 0
      config.evaluation.batch_size = 7
  if not data.use_video:
    del model['video_preprocessor']
  if data.audio_input == 'none':
    del model['audio_preprocessor']
  if not (data.use_video and data.audio_input != 'none'):
    del model['input_preprocessor']
  return common.lock(config)
