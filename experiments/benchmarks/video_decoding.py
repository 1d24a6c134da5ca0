r"""Throughput of the Kinetics video-folder reader (clips/s) on this machine.

Writes `--num_clips` Kinetics-like clips (10 s at 25 fps, `--width` x `--height` H.264 with
48 kHz AAC audio, as the Kinetics downloader produces them) to a temporary folder, then reads
them through `video_folder.batches` as training does (16 frames at 25 fps, 224x224 random
crops, 48 kHz mono audio) with each `--workers` count, and prints one JSON line per count:
clips per second (wall clock) and CPU seconds per clip of this process and its worker
processes (read from /proc; the latter does not depend on other jobs sharing the machine).

  python -m experiments.benchmarks.video_decoding
  python -m experiments.benchmarks.video_decoding --workers=1,2,4 --num_clips=16
"""

import json
import os
import tempfile
import time
import types
import warnings

from absl import flags
import numpy as np

from configs import multimodal as multimodal_config
from experiments.tasks.multimodal import video_folder
from experiments.training import cli


def define_flags() -> types.SimpleNamespace:
  return types.SimpleNamespace(
    num_clips=flags.DEFINE_integer('num_clips', 8, 'Clips written and read per run.'),
    width=flags.DEFINE_integer('width', 340, 'Width of the written clips.'),
    height=flags.DEFINE_integer('height', 256, 'Height of the written clips.'),
    seconds=flags.DEFINE_float('seconds', 10.0, 'Length of the written clips.'),
    workers=flags.DEFINE_string('workers', '1,2', 'Comma-separated worker counts.'),
    batch_size=flags.DEFINE_integer('batch_size', 4, 'Clips per batch.'),
  )


def _proc_cpu_seconds(pid) -> float:
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _cpu_seconds() -> float:
  """CPU seconds of this process and its live child processes (Linux /proc)."""
  total = _proc_cpu_seconds('self')
  for task in os.listdir('/proc/self/task'):
    try:
      with open(f'/proc/self/task/{task}/children') as f:
        children = f.read().split()
    except OSError:
      continue
    for child in children:
      try:
        total += _proc_cpu_seconds(child)
      except OSError:
        pass
  return total


def write_folder(root: str, num_clips: int, size, seconds: float) -> None:
  """A Kinetics-layout 'train' split of `num_clips` clips."""
  os.makedirs(os.path.join(root, 'annotations'))
  os.makedirs(os.path.join(root, 'train'))
  frames = int(round(seconds * 25))
  with open(os.path.join(root, 'annotations', 'train.csv'), 'w') as f:
    f.write('label,youtube_id,time_start,time_end,split\n')
    for i in range(num_clips):
      f.write(f'yoga,clip{i:05d}abc,0,10,train\n')
      video, audio = video_folder.tone_clip(frames, size, 25.0, 48000, seed=i)
      path = os.path.join(root, 'train', video_folder.clip_name(f'clip{i:05d}abc', 0, 10))
      video_folder.write_clip(path + '.mp4', video, 25.0, audio, 48000)


def main(argv, *, args: types.SimpleNamespace):
  del argv
  config = multimodal_config.get_config('kinetics')
  with tempfile.TemporaryDirectory() as root:
    write_folder(
      root,
      args.num_clips.value,
      (args.height.value, args.width.value),
      args.seconds.value,
    )
    clips = video_folder.VideoFolder(root, 'train')
    for workers in [int(w) for w in args.workers.value.split(',')]:
      with config.unlocked():
        config.data.video_folder.num_workers = workers
      num_batches = max(1, args.num_clips.value // args.batch_size.value)
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        it = video_folder.batches(
          clips, config, is_training=True, batch_dims=(args.batch_size.value,)
        )
        next(it)  # Starts the workers.
        start, cpu = time.perf_counter(), _cpu_seconds()
        for _ in range(num_batches):
          batch = next(it)
      elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
      n = num_batches * args.batch_size.value
      print(
        json.dumps(
          {
            'workers': workers,
            'clips': n,
            'clips_per_s': round(n / elapsed, 3),
            'cpu_s_per_clip': round(cpu / n, 3),
            'video_shape': list(np.shape(batch['video'])[1:]),
            'load_average_1min': round(os.getloadavg()[0], 2),
          }
        )
      )


if __name__ == '__main__':
  cli.run(main, define_flags, name='video_decoding')
