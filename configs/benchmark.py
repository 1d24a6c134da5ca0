r"""Speed benchmark configurations, run on fake data by `experiments.benchmark`.

Variants (`--config=configs/benchmark.py:<variant>`):
  image64_b8: ImageNet-style classification (task `experiments.tasks.imagenet.task`): 64 x 64 x 3
    pixels + 2D Fourier features (32 bands, max resolution 64, positions concatenated)
    = 133 input channels; 256 x 512 latents; 2 weight-shared blocks of 4 self-attends;
    1 cross-attend head, 8 self-attend heads, widening 1 everywhere (the two block
    applications unrolled); a ClassificationDecoder with one trainable 512-channel
    query and 1000 classes; batch 8; LAMB; float32.
  mlm2048_b4: byte-level masked language modelling (task `experiments.tasks.language.mlm`): 2048
    positions, d_model 256, 256 x 512 latents, qk 256, v 512, 6 self-attends, 8 heads,
    a BasicDecoder without final projection and the tied EmbeddingDecoder; batch 4;
    float32.

Commands (from the repository root):
  python -m experiments.benchmark --config=configs/benchmark.py:image64_b8
  python -m experiments.benchmark --config=configs/benchmark.py:mlm2048_b4
  # Scale options of the encoder and decoder (all off by default):
  python -m experiments.benchmark --config=configs/benchmark.py:image64_b8 \
      --config.model.encoder.compute_dtype=bfloat16 \
      --config.model.encoder.remat=True
  # Rematerialise only elementwise work (keep matrix products' outputs):
  python -m experiments.benchmark --config=configs/benchmark.py:image64_b8 \
      --config.model.encoder.remat=True --config.model.encoder.remat_policy=dots
  # The same variants train like any experiment (fake data, a few steps):
  python -m experiments.train --config=configs/benchmark.py:image64_b8 \
      --config.training.num_steps=3 --workdir=/tmp/bench_image64

Input pipelines run on generated data (`data.fake=True`); the benchmark feeds one such
batch, already on the device, to every timed step, so the figures measure the train step
alone. The ImageNet variant keeps augmentation off (it only shapes the fake batch).

On GPUs and TPUs use bfloat16 compute, keeping parameters, optimizer state, layer
norms, the softmax normalisation and the losses in float32
(experiments/training/precision.py):

  --config.model.decoder.compute_dtype=bfloat16 \
  --config.model.encoder.compute_dtype=bfloat16
"""

import ml_collections

from configs import common
from configs import imagenet
from configs import mlm as mlm_config

VARIANTS = ('image64_b8', 'mlm2048_b4')


def _image64_b8() -> ml_collections.ConfigDict:
  config = imagenet.get_config('io_fourier')
  with config.unlocked():
    config.model.input_preprocessor = imagenet.fourier_pixels(
      num_bands=32, max_resolution=64
    )
    # The two applications of the shared block are unrolled: a scan over them stacks
    # and zero-fills their activations for the backward pass every step (see
    # docs/performance.md); compile time is what unrolling costs.
    config.model.encoder = imagenet.encoder(
      num_self_attends_per_block=4,
      num_blocks=2,
      z_index_dim=256,
      num_z_channels=512,
      unroll_shared_layers=True,
    )
    config.model.decoder = imagenet.classification_decoder(num_channels=512)
    config.data.fake = True
    config.data.fake_num_examples = 16
    config.data.image_size = 64
    config.data.randaugment_layers = 0
    config.data.mixup_alpha = 0.0
    config.data.cutmix = False
    config.data.deterministic = True
    config.training.batch_size = 8
    config.training.num_epochs = None
    config.training.num_steps = 1000
    config.evaluation.batch_size = 8
  return config


def _mlm2048_b4() -> ml_collections.ConfigDict:
  config = mlm_config.get_config('bytes')
  with config.unlocked():
    config.model = mlm_config.model_fields(
      max_seq_len=2048,
      d_model=256,
      num_latents=256,
      num_z_channels=512,
      num_self_attends=6,
      cross_heads=8,
      self_heads=8,
      qk_channels=256,
      decoder_heads=8,
      decoder_qk_channels=256,
    )
    config.data.fake = True
    config.data.seq_len = 2048
    config.data.fake_documents = 64
    config.data.shuffle_buffer = 16
    config.data.document_shuffle_buffer = 16
    config.training.batch_size = 4
    config.training.num_steps = 1000
    config.optimizer.schedule.warmup_steps = 10
    config.evaluation.batch_size = 4
  return config


def get_config(arg: str = 'image64_b8') -> ml_collections.ConfigDict:
  """Returns the benchmark config of variant `arg` (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(
      f'Unknown configs/benchmark.py variant {arg!r}; expected one of {VARIANTS}.'
    )
  config = _image64_b8() if arg == 'image64_b8' else _mlm2048_b4()
  return common.lock(config)
