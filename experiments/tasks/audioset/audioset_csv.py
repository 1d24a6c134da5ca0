"""AudioSet's published label files and the user's local clips of its segments.

Label files (as published by Google, https://research.google.com/audioset/download.html):
  class_labels_indices.csv: a header `index,mid,display_name`, then one row per class,
    e.g. `0,/m/09x0r,"Speech"`, indices 0 .. K-1 in order.
  balanced_train_segments.csv, unbalanced_train_segments.csv, eval_segments.csv:
    comment lines starting with `#` (the last one names the columns), then rows
    `YTID, start_seconds, end_seconds, positive_labels`, e.g.
    `--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"`.

Clips: the user downloads the segments themselves; clip files are found by a path
template relative to the data directory, with the fields `{ytid}`, `{start}` and
`{end}` (seconds, floats: `{start:.1f}` writes 30.0), `{start_ms}` and `{end_ms}`
(integer milliseconds) and `{csv}` (the segment file's name without `.csv`), tried
with each of the configured extensions. For example the template
`'{csv}/{ytid}_{start_ms}_{end_ms}'` finds
`balanced_train_segments/--PJHxphWEs_30000_40000.wav`.

Clips are decoded with PyAV (FFmpeg): any audio or video container FFmpeg reads
(WAV, FLAC, MP3, M4A, MP4, MKV, WebM, ...). Audio is resampled and its channels
averaged to mono;
video frames are sampled at given times, resized (shorter side) and centre-cropped.
"""

import csv
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from experiments.training import errors


@dataclasses.dataclass(frozen=True)
class Segment:
  """One row of a segments file: a YouTube clip and its positive class indices."""

  ytid: str
  start: float
  end: float
  labels: Tuple[int, ...]


class ClipError(Exception):
  """A clip file that cannot be used (unreadable, wrong format, too short)."""


def read_class_labels(path: str) -> List[Tuple[str, str]]:
  """`[(mid, display_name)]` in class-index order from `class_labels_indices.csv`."""
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip() for c in rows[0]] != ['index', 'mid', 'display_name']:
    raise errors.DataError(
      f'{path}: expected the header "index,mid,display_name" of '
      f'class_labels_indices.csv, got {rows[0] if rows else "an empty file"!r}.'
    )
  classes = []
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != 3:
      raise errors.DataError(
        f'{path}:{line}: expected 3 fields (index,mid,display_name), got {row!r}.'
      )
    index, mid, name = (c.strip() for c in row)
    if not index.isdigit() or int(index) != len(classes):
      raise errors.DataError(
        f'{path}:{line}: class index {index!r}; expected {len(classes)} (indices must '
        'count up from 0).'
      )
    classes.append((mid, name))
  if not classes:
    raise errors.DataError(f'{path}: no classes.')
  mids = [m for m, _ in classes]
  if len(set(mids)) != len(mids):
    raise errors.DataError(f'{path}: repeated label ids.')
  return classes


def read_segments(path: str, class_index: Dict[str, int]) -> List[Segment]:
  """The segments of an AudioSet segments CSV, labels mapped to class indices.

  Args:
    path: e.g. `balanced_train_segments.csv`.
    class_index: label id (mid) -> class index, from `read_class_labels`.

  Raises:
    ValueError: naming the file and line, for a malformed row or a label id that is
      not in the class file.
  """
  segments = []
  with open(path, newline='', encoding='utf-8') as f:
    for line, row in enumerate(csv.reader(f, skipinitialspace=True), start=1):
      if not row or row[0].lstrip().startswith('#'):
        continue
      if len(row) != 4:
        raise errors.DataError(
          f'{path}:{line}: expected 4 fields (YTID, start_seconds, end_seconds, '
          f'positive_labels), got {len(row)}: {row!r}.'
        )
      ytid, start, end, positives = (c.strip() for c in row)
      try:
        start_s, end_s = float(start), float(end)
      except ValueError:
        raise errors.DataError(
          f'{path}:{line}: bad start/end seconds {start!r}, {end!r}.'
        ) from None
      if not end_s > start_s >= 0:
        raise errors.DataError(
          f'{path}:{line}: end_seconds {end_s} must exceed start_seconds {start_s} >= 0.'
        )
      labels = []
      for mid in positives.split(','):
        mid = mid.strip()
        if mid not in class_index:
          raise errors.DataError(
            f'{path}:{line}: label id {mid!r} of clip {ytid} is not in the class file '
            f'({len(class_index)} classes).'
          )
        labels.append(class_index[mid])
      segments.append(Segment(ytid, start_s, end_s, tuple(sorted(set(labels)))))
  return segments


def multi_hot(segments: Sequence[Segment], num_classes: int) -> np.ndarray:
  """`[N, K]` float32 labels of the segments."""
  out = np.zeros((len(segments), num_classes), np.float32)
  for i, s in enumerate(segments):
    out[i, list(s.labels)] = 1.0
  return out


def clip_stem(template: str, segment: Segment, csv_name: str) -> str:
  """The template's path of one segment's clip, without extension."""
  return template.format(
    ytid=segment.ytid,
    start=segment.start,
    end=segment.end,
    start_ms=int(round(segment.start * 1000)),
    end_ms=int(round(segment.end * 1000)),
    csv=csv_name,
  )


def find_clip(
  data_dir: str, template: str, segment: Segment, csv_name: str, extensions: Sequence[str]
) -> Optional[str]:
  """The first existing `data_dir/<template><extension>`, or None."""
  stem = os.path.join(data_dir, clip_stem(template, segment, csv_name))
  for ext in extensions:
    if os.path.isfile(stem + ext):
      return stem + ext
  return None


def _open(path: str):
  av = errors.import_optional(
    'av', extra='media', purpose='Reading audio and video clips'
  )

  try:
    return av.open(path)
  except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise ClipError(f'{path}: cannot be decoded ({type(e).__name__}: {e}).') from None


def decode_audio(path: str, sample_rate: int) -> np.ndarray:
  """`[S]` float32 samples of the file's first audio stream at `sample_rate`.

  Samples are in [-1, 1] for integer formats; channels are averaged to mono.
  """
  av = errors.import_optional(
    'av', extra='media', purpose='Reading audio and video clips'
  )

  with _open(path) as container:
    if not container.streams.audio:
      raise ClipError(f'{path}: has no audio stream.')
    resampler = None
    chunks = []
    try:
      for frame in container.decode(audio=0):
        if resampler is None:  # Keeps the channels; they are averaged below.
          resampler = av.AudioResampler(
            format='fltp', layout=frame.layout.name, rate=sample_rate
          )
        chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(frame))
      if resampler is not None:
        chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(None))
    except av.FFmpegError as e:
      raise ClipError(f'{path}: audio cannot be decoded ({e}).') from None
  if not chunks:
    return np.zeros(0, np.float32)
  return np.concatenate(chunks).astype(np.float32)


def _resize_crop(frame, size: int) -> np.ndarray:
  """RGB `[size, size, 3]`: shorter side resized to `size`, then centre-cropped."""
  width, height = frame.width, frame.height
  scale = size / min(width, height)
  new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
  rgb = frame.reformat(width=new_w, height=new_h, format='rgb24').to_ndarray()
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return rgb[top : top + size, left : left + size]


def decode_video(path: str, times: Sequence[float], frame_size: int) -> np.ndarray:
  """`[T, H, W, 3]` uint8: at each of `times` (seconds), the frame shown then.

  The frame shown at time t is the last one whose timestamp is <= t (the first frame
  for earlier times; the last frame for times past the end).
  """
  av = errors.import_optional(
    'av', extra='media', purpose='Reading audio and video clips'
  )

  times = np.asarray(times, np.float64)
  with _open(path) as container:
    if not container.streams.video:
      raise ClipError(f'{path}: has no video stream.')
    out = np.zeros((len(times), frame_size, frame_size, 3), np.uint8)
    filled = np.zeros(len(times), bool)
    previous = None
    try:
      for frame in container.decode(video=0):
        t = frame.time if frame.time is not None else 0.0
        if previous is not None:
          take = (~filled) & (times < t)
          if take.any():
            out[take] = _resize_crop(previous, frame_size)
            filled |= take
        previous = frame
        if filled.all():
          break
    except av.FFmpegError as e:
      raise ClipError(f'{path}: video cannot be decoded ({e}).') from None
    if previous is None:
      raise ClipError(f'{path}: has no video frames.')
    if not filled.all():
      out[~filled] = _resize_crop(previous, frame_size)
  return out


def probe(path: str, need_audio: bool, need_video: bool) -> float:
  """Opens the file's header: the streams needed exist; returns its duration (s).

  Raises:
    ClipError: the file cannot be opened or lacks a needed stream.
  """
  with _open(path) as container:
    if need_audio and not container.streams.audio:
      raise ClipError(f'{path}: has no audio stream.')
    if need_video and not container.streams.video:
      raise ClipError(f'{path}: has no video stream.')
    streams = list(container.streams.audio[:1]) + list(container.streams.video[:1])
    durations = [
      float(s.duration * s.time_base)
      for s in streams
      if s.duration is not None and s.time_base is not None
    ]
    if durations:
      return min(durations)
    return container.duration / 1e6 if container.duration is not None else 0.0


def video_duration(path: str) -> float:
  """Seconds of the first video stream (0 when unknown)."""
  with _open(path) as container:
    if not container.streams.video:
      raise ClipError(f'{path}: has no video stream.')
    stream = container.streams.video[0]
    if stream.duration is not None and stream.time_base is not None:
      return float(stream.duration * stream.time_base)
    if container.duration is not None:
      return container.duration / 1e6
  return 0.0
