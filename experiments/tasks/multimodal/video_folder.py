"""Kinetics-layout video folders decoded with PyAV (FFmpeg): frames, audio and labels.

Layout (as the Kinetics-700-2020 downloader writes it):

  <root>/annotations/<split>.csv   header `label,youtube_id,time_start,time_end,split`
  <root>/<split>/[<label>/]<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>

with `ext` one of mp4, webm, avi, mkv. Rows whose file is absent are left out with one
warning per split. A clip is read as `num_frames` frames at `fps` (each target time takes
the latest frame shown at that time), from a random start when training and from the
middle of the clip in evaluation; each frame is resized so that its shorter side is
`image_size` and cropped to a square (a random crop when training, the centre
otherwise). The first audio stream is resampled to `sample_rate` mono float32 and cut to
the frames' time span; a clip without audio gets silence and a warning. Clips that cannot
be decoded (unreadable, corrupt, shorter than `num_frames` frames at `fps`) are skipped
with a warning naming the file; training replaces them by the next clip of the epoch's
order and logs how many were skipped at the end of each epoch.

This module imports neither JAX nor TensorFlow: worker processes decode clips with it.

Shape glossary:
  T: frames; S = image_size; N = T * sample_rate / fps audio samples.
"""

import concurrent.futures
import csv
import dataclasses
import functools
import multiprocessing
import os
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence
import warnings

import numpy as np

from experiments.training import errors

EXTENSIONS = ('.mp4', '.webm', '.avi', '.mkv')
CSV_FIELDS = ('label', 'youtube_id', 'time_start', 'time_end')


class ClipError(errors.DataError):
  """A clip that cannot be used (the message names the file)."""


def clip_name(youtube_id: str, time_start: int, time_end: int) -> str:
  """The Kinetics file stem `<id>_<start:06d>_<end:06d>`."""
  return f'{youtube_id}_{int(time_start):06d}_{int(time_end):06d}'


def _index_files(directory: str) -> Dict[str, str]:
  found = {}
  for dirpath, _, filenames in os.walk(directory):
    for filename in sorted(filenames):
      stem, ext = os.path.splitext(filename)
      if ext.lower() in EXTENSIONS:
        found.setdefault(stem, os.path.join(dirpath, filename))
  return found


def read_annotations(path: str) -> List[Dict[str, str]]:
  """Rows of a Kinetics annotation CSV; raises naming the file and line if malformed."""
  if not os.path.isfile(path):
    raise errors.DataError(f'annotation file {path!r} does not exist.')
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    missing = [k for k in CSV_FIELDS if k not in (reader.fieldnames or ())]
    if missing:
      raise errors.DataError(
        f'{path}: header {reader.fieldnames} lacks the columns {missing} '
        f'(expected {",".join(CSV_FIELDS)},split).'
      )
    rows = []
    for line, row in enumerate(reader, start=2):
      try:
        row['time_start'], row['time_end'] = int(row['time_start']), int(row['time_end'])
      except (TypeError, ValueError) as e:
        raise errors.DataError(
          f'{path}:{line}: time_start/time_end must be integers: {e}'
        ) from e
      rows.append(row)
  return rows


@functools.cache
def _class_list(class_names: str, train_annotations: str):
  if class_names == 'kinetics700':
    from experiments.tasks.multimodal import kinetics700  # pylint: disable=g-import-not-at-top

    return kinetics700.CLASSES
  if class_names:
    raise errors.ConfigError(f"class_names={class_names!r} must be 'kinetics700' or ''.")
  return tuple(sorted({row['label'] for row in read_annotations(train_annotations)}))


class VideoFolder:
  """The clips of one split of a Kinetics-layout folder.

  Args:
    root: the folder.
    split: a split name ('train', 'validate', 'test', ...): the clip sub-folder and the
      annotation file's name.
    annotations: the CSV (default `<root>/annotations/<split>.csv`); rows with a
      `split` column keep only those equal to `split`.
    class_names: 'kinetics700' (the released checkpoint's order) or '' (the sorted
      labels of `<annotations folder>/train.csv`).

  Attributes:
    paths: the clip files, in annotation order.
    labels: `[len(self)]` int32 class indices.
    classes: the class names.
  """

  def __init__(
    self,
    root: str,
    split: str,
    *,
    annotations: Optional[str] = None,
    class_names: str = 'kinetics700',
  ):
    if not os.path.isdir(root):
      raise errors.DataError(f'video folder root {root!r} is not a directory.')
    annotations = annotations or os.path.join(root, 'annotations', f'{split}.csv')
    rows = [
      r for r in read_annotations(annotations) if r.get('split') in (None, '', split)
    ]
    self.classes = _class_list(
      class_names, os.path.join(os.path.dirname(annotations), 'train.csv')
    )
    index = {name: i for i, name in enumerate(self.classes)}
    files = _index_files(os.path.join(root, split))
    paths, labels, absent = [], [], []
    for row in rows:
      if row['label'] not in index:
        raise errors.DataError(
          f'{annotations}: label {row["label"]!r} of clip {row["youtube_id"]!r} is not '
          f'one of the {len(self.classes)} classes (class_names={class_names!r}).'
        )
      name = clip_name(row['youtube_id'], row['time_start'], row['time_end'])
      if name not in files:
        absent.append(name)
        continue
      paths.append(files[name])
      labels.append(index[row['label']])
    if absent:
      warnings.warn(
        f'{len(absent)} of {len(rows)} clips of {annotations} have no file under '
        f'{os.path.join(root, split)} (e.g. {absent[:3]}); they are left out.'
      )
    if not paths:
      raise errors.DataError(
        f'no clip of {annotations} was found under {os.path.join(root, split)}.'
      )
    self.root, self.split, self.annotations = root, split, annotations
    self.paths = paths
    self.labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.paths)


@dataclasses.dataclass(frozen=True)
class ReadOptions:
  """How clips are sampled: sizes, rates, and the crop / start policy."""

  num_frames: int
  image_size: int
  fps: float
  sample_rate: int
  samples_per_frame: int
  random: bool = False  # Random start and crop (training) or middle and centre.


def _open(path: str):
  av = errors.import_optional(
    'av', extra='media', purpose='Reading and writing video files'
  )

  if not os.path.isfile(path):
    raise ClipError(f'{path}: no such file.')
  try:
    return av.open(path)
  except Exception as e:  # PyAV raises several error types for unreadable files.
    raise ClipError(f'{path}: cannot be opened as a video: {e}') from e


def _decode_frames(container, path: str):
  """Every video frame as `(time in seconds, av.VideoFrame)`."""
  if not container.streams.video:
    raise ClipError(f'{path}: has no video stream.')
  stream = container.streams.video[0]
  frames = []
  try:
    for frame in container.decode(stream):
      if frame.time is not None:
        frames.append((float(frame.time), frame))
  except Exception as e:
    if not frames:
      raise ClipError(f'{path}: video cannot be decoded: {e}') from e
  if not frames:
    raise ClipError(f'{path}: the video stream holds no frames.')
  return frames


def _decode_audio(path: str, sample_rate: int):
  """`(start time in seconds, float32 mono samples at sample_rate)` or None."""
  av = errors.import_optional(
    'av', extra='media', purpose='Reading and writing video files'
  )

  with _open(path) as container:
    if not container.streams.audio:
      return None
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format='flt', layout='mono', rate=sample_rate)
    start, chunks = None, []
    try:
      for frame in container.decode(stream):
        if start is None and frame.time is not None:
          start = float(frame.time)
        for out in resampler.resample(frame):
          chunks.append(out.to_ndarray().reshape(-1))
      for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    except Exception as e:
      raise ClipError(f'{path}: audio cannot be decoded: {e}') from e
  if not chunks:
    return None
  return start or 0.0, np.concatenate(chunks).astype(np.float32)


def _frame_rgb(frame, image_size: int, offset: np.ndarray) -> np.ndarray:
  """Resizes the shorter side to `image_size` and crops a square at `offset` in [0, 1]."""
  width, height = frame.width, frame.height
  scale = image_size / min(width, height)
  new_w, new_h = (
    max(image_size, round(width * scale)),
    max(image_size, round(height * scale)),
  )
  rgb = frame.reformat(width=new_w, height=new_h, format='rgb24').to_ndarray()
  y = int(round(offset[0] * (new_h - image_size)))
  x = int(round(offset[1] * (new_w - image_size)))
  return rgb[y : y + image_size, x : x + image_size]


def read_clip(path: str, options: ReadOptions, seed: Optional[Sequence[int]] = None):
  """Reads one clip.

  Args:
    path: a video file.
    options: sizes and sampling.
    seed: with `options.random`, seeds the start time and the crop.

  Returns:
    `video` `[T, S, S, 3]` float32 in [0, 1], `audio` `[T * samples_per_frame]` float32,
    `start` (seconds from the first frame) and `has_audio`.

  Raises:
    ClipError: naming the file, if it cannot be opened or decoded or is too short.
  """
  with _open(path) as container:
    frames = _decode_frames(container, path)
    t0 = frames[0][0]
    times = np.array([t for t, _ in frames]) - t0
    # A frame is shown until the next one; the last for one nominal frame period.
    period = 1.0 / options.fps
    end = times[-1] + (times[-1] - times[-2] if len(times) > 1 else period)
    span = options.num_frames * period
    slack = end - span
    if slack < -1e-6:
      raise ClipError(
        f'{path}: lasts {end:.3f}s; {options.num_frames} frames at {options.fps} fps '
        f'need {span:.3f}s.'
      )
    rng = np.random.default_rng(seed) if options.random else None
    start = rng.uniform(0, max(slack, 0.0)) if rng is not None else max(slack, 0.0) / 2
    offset = rng.uniform(size=2) if rng is not None else np.array([0.5, 0.5])
    targets = start + np.arange(options.num_frames) * period
    picks = np.searchsorted(times, targets + 1e-6, side='right') - 1
    video = np.stack(
      [_frame_rgb(frames[max(p, 0)][1], options.image_size, offset) for p in picks]
    )
  video = video.astype(np.float32) / 255.0
  num_samples = options.num_frames * options.samples_per_frame
  decoded = _decode_audio(path, options.sample_rate)
  audio = np.zeros(num_samples, np.float32)
  if decoded is None:
    warnings.warn(f'{path}: has no audio stream; using silence.')
  else:
    audio_start, samples = decoded
    first = int(round((t0 + start - audio_start) * options.sample_rate))
    piece = samples[max(first, 0) : max(first, 0) + num_samples]
    lead = max(-first, 0)
    audio[lead : lead + len(piece)] = piece[: num_samples - lead]
  return {
    'video': video,
    'audio': audio,
    'start': start,
    'has_audio': decoded is not None,
  }


def _read_or_error(args):
  path, options, seed = args
  try:
    clip = read_clip(path, options, seed)
    return clip['video'], clip['audio'], None
  except ClipError as e:
    return None, None, str(e)
  except Exception as e:  # A broken file must never stop training.
    return None, None, f'{path}: {type(e).__name__}: {e}'


def options_from_config(config, *, is_training: bool) -> ReadOptions:
  """Reading options of `config.data`: the audio rate is `samples_per_frame * fps`."""
  d = config.data
  sample_rate = d.samples_per_frame * d.fps
  if abs(sample_rate - round(sample_rate)) > 1e-6:
    raise errors.ConfigError(
      f'config.data.samples_per_frame={d.samples_per_frame} x fps={d.fps} must be a '
      'whole number of audio samples per second.'
    )
  return ReadOptions(
    num_frames=d.num_frames,
    image_size=d.image_size,
    fps=d.fps,
    sample_rate=int(round(sample_rate)),
    samples_per_frame=d.samples_per_frame,
    random=is_training and d.video_folder.random_crop,
  )


class _Decoder:
  """Decodes lists of clips, in worker processes when `num_workers > 1`."""

  def __init__(self, num_workers: int):
    self._pool = None
    if num_workers > 1:
      self._pool = concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context('spawn')
      )

  def submit(self, jobs):
    if self._pool is None:
      return [_read_or_error(job) for job in jobs]
    return [self._pool.submit(_read_or_error, job) for job in jobs]

  @staticmethod
  def results(handles):
    return [
      h.result() if isinstance(h, concurrent.futures.Future) else h for h in handles
    ]


def batches(
  clips: VideoFolder,
  config,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  start_step: int = 0,
) -> Iterator[Dict[str, np.ndarray]]:
  """Batches of `video`, `audio`, `label` (and `mask` in evaluation), as `task.load`."""
  options = options_from_config(config, is_training=is_training)
  decoder = _Decoder(config.data.video_folder.num_workers)
  if is_training:
    return _train_batches(clips, options, decoder, config.seed, batch_dims, start_step)
  return _eval_batches(clips, options, decoder, batch_dims)


def _stack(results, labels, batch_dims):
  video = np.stack([r[0] for r in results])
  audio = np.stack([r[1] for r in results])
  dims = tuple(batch_dims)
  return {
    'video': video.reshape(dims + video.shape[1:]),
    'audio': audio.reshape(dims + audio.shape[1:]),
    'label': np.asarray(labels, np.int32).reshape(dims),
  }


def _train_batches(clips, options, decoder, seed, batch_dims, start_step):
  """Shuffled per epoch by `(seed, epoch)`; a failed clip is replaced by the next one."""
  import jax  # pylint: disable=g-import-not-at-top  (the host's share of the batch)

  n = len(clips)
  host_batch = int(np.prod(batch_dims))
  first_slot = jax.process_index() * host_batch
  global_batch = host_batch * jax.process_count()
  orders = {}
  failed = {}  # Position in the epoch's order -> error, for this process.
  skipped_in_epoch = {}

  def clip_at(position):
    epoch, offset = divmod(position, n)
    if epoch not in orders:
      orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
      for old in [e for e in orders if e < epoch - 1]:
        del orders[old]
    return epoch, int(orders[epoch][offset])

  def jobs_for(step):
    base = step * global_batch + first_slot
    return [(base + slot, slot) for slot in range(host_batch)]

  def submit(step):
    jobs = []
    for position, slot in jobs_for(step):
      _, index = clip_at(position)
      jobs.append((clips.paths[index], options, (seed, step, slot)))
    return decoder.submit(jobs)

  step = start_step
  pending = submit(step)
  last_epoch = (step * global_batch) // n
  while True:
    results = decoder.results(pending)
    pending = submit(step + 1)  # Decode the next batch while this one trains.
    batch_results, labels = [], []
    for (position, slot), result in zip(jobs_for(step), results):
      attempt = 0
      while result[2] is not None:
        epoch, _ = clip_at(position + attempt)
        if (position + attempt) not in failed:
          failed[position + attempt] = result[2]
          skipped_in_epoch[epoch] = skipped_in_epoch.get(epoch, 0) + 1
          warnings.warn(f'skipping clip: {result[2]}')
        attempt += 1
        if attempt >= n:
          raise errors.DataError(f'no clip of {clips.annotations} can be decoded.')
        _, index = clip_at(position + attempt)
        result = _read_or_error(
          (clips.paths[index], options, (seed, step, slot, attempt))
        )
      _, index = clip_at(position + attempt)
      batch_results.append(result)
      labels.append(clips.labels[index])
    yield _stack(batch_results, labels, batch_dims)
    step += 1
    epoch = (step * global_batch) // n
    if epoch != last_epoch:
      warnings.warn(
        f'epoch {last_epoch} of {clips.annotations}: '
        f'{skipped_in_epoch.pop(last_epoch, 0)} clip(s) skipped.'
      )
      last_epoch = epoch


def _eval_batches(clips, options, decoder, batch_dims):
  """Every decodable clip once, in order, padded; undecodable clips are skipped."""
  host_batch = int(np.prod(batch_dims))
  ready, labels, skipped = [], [], 0
  jobs = [(path, options, None) for path in clips.paths]
  for start in range(0, len(jobs), host_batch):
    results = decoder.results(decoder.submit(jobs[start : start + host_batch]))
    for i, result in enumerate(results):
      if result[2] is not None:
        warnings.warn(f'skipping clip: {result[2]}')
        skipped += 1
        continue
      ready.append(result)
      labels.append(clips.labels[start + i])
    while len(ready) >= host_batch:
      batch = _stack(ready[:host_batch], labels[:host_batch], batch_dims)
      batch['mask'] = np.ones(tuple(batch_dims), np.float32)
      ready, labels = ready[host_batch:], labels[host_batch:]
      yield batch
  if skipped:
    warnings.warn(f'{clips.annotations}: {skipped} clip(s) skipped in evaluation.')
  if ready:
    real = len(ready)
    pad = (np.zeros_like(ready[0][0]), np.zeros_like(ready[0][1]), None)
    batch = _stack(
      ready + [pad] * (host_batch - real), labels + [0] * (host_batch - real), batch_dims
    )
    batch['mask'] = (
      (np.arange(host_batch) < real).astype(np.float32).reshape(tuple(batch_dims))
    )
    yield batch


def eval_videos(paths, options: ReadOptions, block: int = 16):
  """Yields the frames `[n, T, H, W, 3]` of `paths`, read as evaluation reads them
  (`options`), in blocks of up to `block` clips; undecodable files are skipped with a
  warning naming them."""
  ready = []
  for path in paths:
    video, _, error = _read_or_error((path, options, None))
    if error is not None:
      warnings.warn(f'skipping clip: {error}')
      continue
    ready.append(video)
    if len(ready) == block:
      yield np.stack(ready)
      ready = []
  if ready:
    yield np.stack(ready)


# ---------------------------------------------------------------------------- writing


def write_clip(
  path: str,
  video: np.ndarray,
  fps: float,
  audio: Optional[np.ndarray] = None,
  sample_rate: int = 48000,
) -> None:
  """Writes `video` `[T, H, W, 3]` (uint8, or float in [0, 1]) and mono `audio` to `path`.

  The container follows the extension: .mp4 (H.264 + AAC), .webm (VP8 + Opus), .mkv
  (H.264 + AAC), .avi (MPEG-4 + 16-bit PCM), .gif (video only).
  """
  import fractions  # pylint: disable=g-import-not-at-top

  av = errors.import_optional(
    'av', extra='media', purpose='Reading and writing video files'
  )

  ext = os.path.splitext(path)[1].lower()
  codecs = {
    '.mp4': ('libx264', 'aac'),
    '.mkv': ('libx264', 'aac'),
    '.webm': ('libvpx', 'libopus'),
    '.avi': ('mpeg4', 'pcm_s16le'),
    '.gif': ('gif', None),
  }
  if ext not in codecs:
    raise errors.ConfigError(f'{path}: extension must be one of {sorted(codecs)}.')
  if video.dtype != np.uint8:
    video = np.clip(np.round(np.asarray(video, np.float32) * 255), 0, 255).astype(
      np.uint8
    )
  video_codec, audio_codec = codecs[ext]
  rate = fractions.Fraction(fps).limit_denominator(1001)
  with av.open(path, mode='w') as container:
    vs = container.add_stream(video_codec, rate=rate)
    vs.width, vs.height = video.shape[2], video.shape[1]
    vs.pix_fmt = 'rgb8' if ext == '.gif' else 'yuv420p'
    if video_codec == 'libx264':
      vs.options = {'crf': '18', 'preset': 'veryfast'}
    if audio is not None and audio_codec:
      # AAC and Opus take standard rates only: they carry the audio resampled to 48 kHz.
      audio_rate = sample_rate if audio_codec == 'pcm_s16le' else 48000
      aus = container.add_stream(audio_codec, rate=audio_rate)
      aus.layout = 'mono'
    for frame in video:
      for packet in vs.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in vs.encode(None):
      container.mux(packet)
    if audio is not None and audio_codec:
      samples = np.clip(np.asarray(audio, np.float32), -1, 1)[None]
      frame = av.AudioFrame.from_ndarray(samples, format='flt', layout='mono')
      frame.sample_rate = sample_rate
      frame.pts = 0
      frame.time_base = fractions.Fraction(1, int(sample_rate))
      resampler = av.AudioResampler(
        format=aus.codec_context.format.name, layout='mono', rate=audio_rate
      )
      for out in list(resampler.resample(frame)) + list(resampler.resample(None)):
        for packet in aus.encode(out):
          container.mux(packet)
      for packet in aus.encode(None):
        container.mux(packet)


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
  """Writes mono float `audio` in [-1, 1] as a 16-bit PCM WAV file."""
  import wave  # pylint: disable=g-import-not-at-top

  pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32767), -32768, 32767)
  with wave.open(path, 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(int(sample_rate))
    f.writeframes(pcm.astype('<i2').tobytes())


def tone_clip(num_frames: int, size, fps: float, sample_rate: int, seed: int):
  """A test clip: a bright square moving right over a gradient, and a 440 Hz tone."""
  height, width = size
  rng = np.random.default_rng(seed)
  video = np.zeros((num_frames, height, width, 3), np.uint8)
  video[..., 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, None, :]
  video[..., 2] = int(rng.integers(0, 255))
  for t in range(num_frames):
    x = (4 * t) % max(1, width - 8)
    video[t, height // 2 - 4 : height // 2 + 4, x : x + 8] = 255
  n = int(round(num_frames * sample_rate / fps))
  audio = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(n) / sample_rate)
  return video, audio.astype(np.float32)


@functools.cache
def fake_folder() -> str:
  """A small Kinetics-layout folder written to a temporary directory (cached per process):
  3 clips per split ('train', 'validate', 'test') of 1.2 s at 25 fps, 64x48, with a
  440 Hz tone, labelled with Kinetics-700 classes."""
  root = tempfile.mkdtemp(prefix='fake_kinetics_')
  labels = ('abseiling', 'playing violin', 'zumba')
  os.makedirs(os.path.join(root, 'annotations'))
  for s, split in enumerate(('train', 'validate', 'test')):
    os.makedirs(os.path.join(root, split))
    with open(os.path.join(root, 'annotations', f'{split}.csv'), 'w') as f:
      f.write('label,youtube_id,time_start,time_end,split\n')
      for i, label in enumerate(labels):
        vid = f'fake{s}{i}abcde'
        f.write(f'{label},{vid},{10 * i},{10 * i + 10},{split}\n')
        video, audio = tone_clip(30, (48, 64), 25.0, 48000, seed=10 * s + i)
        write_clip(
          os.path.join(root, split, clip_name(vid, 10 * i, 10 * i + 10) + '.mp4'),
          video,
          25.0,
          audio,
          48000,
        )
  return root
