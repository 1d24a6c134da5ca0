r"""Throughput of the AudioSet input pipelines (clips/s) on this machine.

`--source=decode`: writes `--num_clips` clips of `--file_seconds` to a temporary
AudioSet-style folder (class file, segments CSV and, for the video variants, MP4s
with H.264 video at 25 fps and AAC audio at 48 kHz; for audio variants, 48 kHz FLAC),
then times the real training pipeline of `experiments/tasks/audioset/local_clips.py`
(decode with PyAV, resample, random window, mel spectrogram, video frame sampling,
resizing and cropping) over `--batches` batches of `--batch_size`.
`--source=synthetic`: times generating the synthetic events and their features
(`events.generate` + `pipeline.features`) for the config variant.

Prints the wall-clock rate and the process's CPU time per clip (all threads), which
does not depend on other jobs sharing the machine.

  python -m experiments.benchmarks.audioset_input --variant=audio_raw
  python -m experiments.benchmarks.audioset_input --variant=audio_video
  python -m experiments.benchmarks.audioset_input --variant=synthetic --source=synthetic
"""

import json
import os
import resource
import tempfile
import time
import types

from absl import app
from absl import flags
import numpy as np

from configs import audioset as audioset_config
from experiments.tasks.audioset import events
from experiments.tasks.audioset import local_clips
from experiments.tasks.audioset import pipeline
from experiments.training import cli


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags (only when run as a program)."""
  return types.SimpleNamespace(
    variant=flags.DEFINE_enum(
      'variant', 'audio_video', audioset_config.VARIANTS, 'Config variant.'
    ),
    source=flags.DEFINE_enum(
      'source', 'decode', ('decode', 'synthetic'), 'What to time.'
    ),
    num_clips=flags.DEFINE_integer(
      'num_clips', 8, 'Clips written (decode) or generated.'
    ),
    file_seconds=flags.DEFINE_float('file_seconds', 10.0, 'Length of the written clips.'),
    frame_width=flags.DEFINE_integer('frame_width', 320, 'Width of written videos.'),
    frame_height=flags.DEFINE_integer('frame_height', 240, 'Height of written videos.'),
    batch_size=flags.DEFINE_integer('batch_size', 4, 'Clips per batch (decode).'),
    batches=flags.DEFINE_integer('batches', 4, 'Timed batches (decode).'),
  )


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def write_clip(
  path: str, seconds: float, with_video: bool, width: int, height: int, seed: int
):
  """An MP4 (H.264 + AAC) or FLAC clip of noise bursts and moving colours."""
  import av  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  rate = 48_000
  audio = (0.1 * rng.normal(size=int(seconds * rate))).astype(np.float32)
  with av.open(path, 'w') as container:
    if with_video:
      video = container.add_stream('libx264', rate=25)
      video.width, video.height, video.pix_fmt = width, height, 'yuv420p'
      stream = container.add_stream('aac', rate=rate, layout='mono')
    else:
      stream = container.add_stream('flac', rate=rate, layout='mono')
    if with_video:
      for i in range(int(seconds * 25)):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, (i * 7) % width :, :] = rng.integers(0, 256, 3, dtype=np.uint8)
        for packet in video.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
          container.mux(packet)
      for packet in video.encode():
        container.mux(packet)
    chunk = 1024
    for start in range(0, len(audio) - chunk + 1, chunk):
      frame = av.AudioFrame.from_ndarray(
        audio[None, start : start + chunk], format='fltp', layout='mono'
      )
      frame.sample_rate, frame.pts = rate, start
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def time_decode(config, args) -> dict:
  data = config.data
  with tempfile.TemporaryDirectory() as root:
    with open(os.path.join(root, 'class_labels_indices.csv'), 'w') as f:
      f.write('index,mid,display_name\n')
      f.writelines(f'{k},/m/c{k},"class {k}"\n' for k in range(data.num_classes))
    ext = '.mp4' if data.use_video else '.flac'
    os.makedirs(os.path.join(root, 'clips'))
    with open(os.path.join(root, 'segments.csv'), 'w') as f:
      f.write('# YTID, start_seconds, end_seconds, positive_labels\n')
      for i in range(args.num_clips.value):
        f.write(
          f'clip{i}, 0.000, {args.file_seconds.value:.3f}, "/m/c{i % data.num_classes}"\n'
        )
        write_clip(
          os.path.join(root, 'clips', f'clip{i}{ext}'),
          args.file_seconds.value,
          data.use_video,
          args.frame_width.value,
          args.frame_height.value,
          i,
        )
    with config.unlocked():
      data.data_dir, data.train_segments = root, 'segments.csv'
      data.clip_template, data.class_balanced = 'clips/{ytid}', False
    clips = local_clips.LocalClips('train', data)
    batches = local_clips.train_batches(
      clips, batch_dims=(args.batch_size.value,), seed=0, start_step=0
    )
    next(batches)  # Warm-up (imports, codec initialisation).
    wall, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(args.batches.value):
      batch = next(batches)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  n = args.batches.value * args.batch_size.value
  return {
    'clips_per_s': n / wall,
    'cpu_s_per_clip': cpu / n,
    'shapes': {k: list(v.shape) for k, v in batch.items()},
  }


def time_synthetic(config, args) -> dict:
  data = config.data
  n = args.num_clips.value
  wall, cpu = time.perf_counter(), _cpu_seconds()
  raw = events.generate.__wrapped__(
    'train',
    n,
    seed=1,
    num_classes=data.num_classes,
    sample_rate=data.sample_rate,
    clip_seconds=data.clip_seconds,
    num_frames=data.num_frames,
    frame_size=data.frame_size,
    with_video=data.use_video,
  )
  out = pipeline.features(raw['audio'], raw.get('video'), raw['labels'], data)
  wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  return {
    'clips_per_s': n / wall,
    'cpu_s_per_clip': cpu / n,
    'shapes': {k: list(v.shape) for k, v in out.items()},
  }


def main(argv, *, args: types.SimpleNamespace):
  del argv
  config = audioset_config.get_config(args.variant.value)
  if args.source.value == 'synthetic':
    if config.data.dataset != 'synthetic_events':
      raise app.UsageError(
        f'--source=synthetic needs a synthetic variant, not {args.variant.value}.'
      )
    report = time_synthetic(config, args)
  else:
    report = time_decode(config, args)
  report.update(
    variant=args.variant.value,
    source=args.source.value,
    load_average_1min=os.getloadavg()[0],
  )
  print(json.dumps(report))


if __name__ == '__main__':
  cli.run(main, define_flags, name='audioset_input')
