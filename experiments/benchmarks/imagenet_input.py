r"""Throughput of the ImageNet input pipeline (images/s) on this machine.

Runs the real training and evaluation pipelines of `experiments/tasks/imagenet/input_pipeline.py` (the
same decode, crop, RandAugment, MixUp / CutMix and normalisation code) over synthetic
JPEGs of ImageNet-like size held in memory, so it measures the CPU cost of
preprocessing, not disk reads. The training pipeline decodes two images per output
image when MixUp or CutMix is on (as the release does).

Each pipeline prints its wall-clock rate and the CPU time (all threads of the process)
it spent per image; the latter gives the rate per fully available core, which does not
depend on other jobs sharing the machine.

  python -m experiments.benchmarks.imagenet_input
  python -m experiments.benchmarks.imagenet_input --mode=eval --batch_size=500
  python -m experiments.benchmarks.imagenet_input --variant=perceiver --threads=16

Flags select the config variant whose `config.data` is used (`io_fourier`: RandAugment
4 layers at magnitude 5, MixUp 0.2 and CutMix, 224 x 224 outputs).
"""

import os
import time
import types
from typing import Dict, Tuple

from absl import flags
import numpy as np
import tensorflow as tf

from configs import imagenet as imagenet_config
from experiments.tasks.imagenet import input_pipeline as imagenet_input
from experiments.training import cli


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags; called only when run as a program, so that
  importing this module never clashes with other programs' flags."""
  namespace = types.SimpleNamespace(
    mode=flags.DEFINE_enum(
      'mode', 'both', ['train', 'eval', 'both'], 'Pipelines to time.'
    ),
    variant=flags.DEFINE_string(
      'variant', 'io_fourier', 'configs/imagenet.py variant whose data settings are used.'
    ),
    batch_size=flags.DEFINE_integer('batch_size', 128, 'Host batch size.'),
    num_batches=flags.DEFINE_integer('num_batches', 30, 'Timed batches (after warm-up).'),
    warmup_batches=flags.DEFINE_integer('warmup_batches', 5, 'Untimed batches first.'),
    num_images=flags.DEFINE_integer('num_images', 256, 'Distinct synthetic JPEGs.'),
    height=flags.DEFINE_integer('height', 375, 'Synthetic JPEG height.'),
    width=flags.DEFINE_integer('width', 500, 'Synthetic JPEG width.'),
    quality=flags.DEFINE_integer('quality', 90, 'JPEG quality of the synthetic images.'),
    threads=flags.DEFINE_integer(
      'threads', 0, 'tf.data private threadpool size (0: TF default, all cores).'
    ),
  )
  return namespace


def synthetic_jpegs(
  num: int, height: int, width: int, quality: int, seed: int = 0
) -> Dict[str, np.ndarray]:
  """`num` JPEGs of smooth random content (coarse noise upsampled, plus fine noise)."""
  rng = np.random.RandomState(seed)
  images, labels = [], []
  for _ in range(num):
    coarse = rng.uniform(0, 255, size=(height // 16, width // 16, 3)).astype(np.float32)
    image = tf.image.resize(coarse, (height, width), method='bicubic')
    image += rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    images.append(tf.io.encode_jpeg(image, quality=quality).numpy())
    labels.append(rng.randint(0, 1000))
  return {'image': np.array(images, dtype=object), 'label': np.array(labels, np.int32)}


def _time(ds: tf.data.Dataset, warmup: int, num: int) -> Tuple[float, float]:
  """(wall seconds, CPU seconds of this process) to pull `num` batches after warm-up.

  The CPU time (all threads) measures the preprocessing work independently of other
  jobs competing for the cores.
  """
  iterator = iter(ds)
  for _ in range(warmup):
    next(iterator)
  start, start_cpu = time.perf_counter(), time.process_time()
  for _ in range(num):
    batch = next(iterator)
  batch['images'].numpy()  # Make sure the last batch is materialised.
  return time.perf_counter() - start, time.process_time() - start_cpu


def _report(name: str, images: int, seconds: float, cpu_seconds: float) -> str:
  cpu_ms = 1000 * cpu_seconds / images
  return (
    f'{name}: {images / seconds:.0f} images/s; {cpu_ms:.1f} CPU-ms per image '
    f'(= {1000 / cpu_ms:.0f} images/s per busy core)'
  )


def main(argv, *, args: types.SimpleNamespace):
  del argv
  config = imagenet_config.get_config(args.variant.value)
  data = config.data
  data.threadpool_size = args.threads.value
  examples = synthetic_jpegs(
    args.num_images.value, args.height.value, args.width.value, args.quality.value
  )
  mean_kb = np.mean([len(x) for x in examples['image']]) / 1024
  source = tf.data.Dataset.from_tensor_slices(examples)
  batch = args.batch_size.value
  print(
    f'{os.cpu_count()} CPU cores visible. {args.num_images.value} synthetic '
    f'{args.height.value}x{args.width.value} JPEGs ({mean_kb:.0f} KiB on average) -> '
    f'{data.image_size}x{data.image_size}; host '
    f'batch {batch}; tf.data threads: {args.threads.value or "default"}.'
  )

  if args.mode.value in ('train', 'both'):
    ds = imagenet_input.build_train_dataset(
      source,
      num_source_examples=args.num_images.value,
      batch_dims=[batch],
      data=data,
      seed=0,
    )
    seconds, cpu_seconds = _time(ds, args.warmup_batches.value, args.num_batches.value)
    mixing = data.mixup_alpha > 0 or data.cutmix
    name = (
      f'train ({args.variant.value}: RandAugment {data.randaugment_layers}x'
      f'{data.randaugment_magnitude:g}, MixUp {data.mixup_alpha:g}, CutMix '
      f'{data.cutmix}{"; 2 decoded crops per image" if mixing else ""})'
    )
    print(_report(name, batch * args.num_batches.value, seconds, cpu_seconds))

  if args.mode.value in ('eval', 'both'):
    total = batch * (args.warmup_batches.value + args.num_batches.value)
    repeats = -(-total // args.num_images.value)
    ds = imagenet_input.build_eval_dataset(
      source.repeat(repeats),
      batch_dims=[batch],
      data=data,
      num_batches=args.warmup_batches.value + args.num_batches.value,
    )
    seconds, cpu_seconds = _time(ds, args.warmup_batches.value, args.num_batches.value)
    print(
      _report('eval (center crop)', batch * args.num_batches.value, seconds, cpu_seconds)
    )


if __name__ == '__main__':
  cli.run(main, define_flags, name='imagenet_input')
