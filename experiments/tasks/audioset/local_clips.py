"""The `audioset` dataset: the published segment lists + the clips the user has.

`config.data`:
  data_dir: folder with `class_file` and the segments CSVs (see `audioset_csv.py`).
  train_segments: comma-separated CSV names read for the 'train' split, e.g.
    'balanced_train_segments.csv' or
    'balanced_train_segments.csv,unbalanced_train_segments.csv'.
  eval_segments: CSV read for the 'test' split ('eval_segments.csv').
  clip_template, clip_extensions: where each segment's clip is (`audioset_csv`).
  class_balanced, balance_power: draw training clips with class-balanced weights.
  min_clip_seconds: shorter decoded clips are skipped (counted, with a warning).

Segments whose clip file is missing are counted and left out of the split, with one
warning. A clip that fails to decode or is too short is skipped when met, with a
warning naming it: in training when met (the batch slot takes another clip, drawn
from the seed, step and slot); in evaluation when the split is read (every clip's
header is opened and its duration checked), so that the split is fixed.

Shape glossary: as `pipeline.py`.
"""

import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import jax
import ml_collections
import numpy as np

from experiments.tasks.audioset import audioset_csv
from experiments.tasks.audioset import pipeline
from experiments.tasks.audioset import sampling
from experiments.training import errors

_WINDOW_STREAM = 3
_FALLBACK_STREAM = 5
_MAX_ATTEMPTS = 50
_MAX_NAMED_FAILURES = 10


def segment_files(split: str, data: ml_collections.ConfigDict) -> List[str]:
  names = data.train_segments if split == 'train' else data.eval_segments
  files = [n.strip() for n in names.split(',') if n.strip()]
  if not files:
    raise errors.ConfigError(f'no segments file configured for split {split!r}.')
  return [os.path.join(data.data_dir, f) for f in files]


class LocalClips:
  """The segments of one split whose clip files exist, and their decoding.

  Args:
    split: 'train' or 'test'.
    data: `config.data`.
  """

  def __init__(self, split: str, data: ml_collections.ConfigDict):
    if split not in ('train', 'test'):
      raise errors.ConfigError(f"split={split!r} is not one of ('train', 'test').")
    if not data.data_dir:
      raise errors.ConfigError('data.data_dir is empty: set it to the AudioSet folder.')
    self.data = data
    classes = audioset_csv.read_class_labels(os.path.join(data.data_dir, data.class_file))
    if len(classes) != data.num_classes:
      raise errors.DataError(
        f'{os.path.join(data.data_dir, data.class_file)} has {len(classes)} classes; '
        f'data.num_classes={data.num_classes}.'
      )
    class_index = {mid: i for i, (mid, _) in enumerate(classes)}
    extensions = tuple(e.strip() for e in data.clip_extensions.split(','))
    self.segments, self.paths, missing = [], [], []
    for path in segment_files(split, data):
      csv_name = os.path.splitext(os.path.basename(path))[0]
      for segment in audioset_csv.read_segments(path, class_index):
        found = audioset_csv.find_clip(
          data.data_dir, data.clip_template, segment, csv_name, extensions
        )
        if found is None:
          missing.append(audioset_csv.clip_stem(data.clip_template, segment, csv_name))
        else:
          self.segments.append(segment)
          self.paths.append(found)
    self.num_missing = len(missing)
    if missing:
      logging.warning(
        'AudioSet %s: %d of %d clips are missing and skipped (e.g. %s with extensions %s '
        'under %s).',
        split,
        len(missing),
        len(missing) + len(self.paths),
        missing[0],
        extensions,
        data.data_dir,
      )
    self.num_unusable = 0
    if split == 'test':
      self._drop_unusable()
    if not self.paths:
      raise errors.DataError(
        f'AudioSet {split}: no usable clip ({len(missing)} missing, '
        f'{self.num_unusable} unusable) under '
        f'{data.data_dir!r} with clip_template={data.clip_template!r} and '
        f'extensions {extensions}.'
      )
    self.labels = audioset_csv.multi_hot(self.segments, data.num_classes)
    self.failures: Dict[str, str] = {}

  def _drop_unusable(self) -> None:
    """Probes every clip's header; unreadable or too short clips leave the split."""
    data, kept, skipped = self.data, [], []
    for i, path in enumerate(self.paths):
      try:
        duration = audioset_csv.probe(path, data.audio_input != 'none', data.use_video)
        if duration < data.min_clip_seconds:
          raise audioset_csv.ClipError(
            f'{path}: {duration:.3f} s long, shorter than data.min_clip_seconds='
            f'{data.min_clip_seconds}.'
          )
        kept.append(i)
      except audioset_csv.ClipError as e:
        skipped.append(str(e))
    if skipped:
      logging.warning(
        'AudioSet test: %d clips are unreadable or too short and skipped, e.g. %s',
        len(skipped),
        skipped[0],
      )
    self.num_unusable = len(skipped)
    self.segments = [self.segments[i] for i in kept]
    self.paths = [self.paths[i] for i in kept]

  def __len__(self) -> int:
    return len(self.paths)

  def window(
    self, index: int, rng: Optional[np.random.Generator]
  ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The `[S]` audio and `[T, H, W, 3]` video window of clip `index`.

    Raises:
      audioset_csv.ClipError: the clip cannot be decoded or is too short.
    """
    data, path = self.data, self.paths[index]
    waveform = None
    if data.audio_input != 'none':
      waveform = audioset_csv.decode_audio(path, data.sample_rate)
      duration = len(waveform) / data.sample_rate
    else:
      duration = audioset_csv.video_duration(path)
    if duration < data.min_clip_seconds:
      raise audioset_csv.ClipError(
        f'{path}: {duration:.3f} s long, shorter than data.min_clip_seconds='
        f'{data.min_clip_seconds}.'
      )
    offset = pipeline.window_offset(duration, data, rng)
    audio = None if waveform is None else pipeline.crop_audio(waveform, offset, data)
    video = None
    if data.use_video:
      video = audioset_csv.decode_video(
        path, pipeline.frame_times(data, offset), data.frame_size
      )
    return audio, video

  def failed(self, index: int, error: Exception) -> None:
    path = self.paths[index]
    if path not in self.failures:
      self.failures[path] = str(error)
      if len(self.failures) <= _MAX_NAMED_FAILURES:
        logging.warning(
          'Skipping clip %d (%d skipped so far): %s', index, len(self.failures), error
        )
      elif len(self.failures) in (_MAX_NAMED_FAILURES + 1, 100, 1000, 10000):
        logging.warning(
          '%d clips skipped so far (unreadable or too short).', len(self.failures)
        )


def _host_slice(global_batch_values: np.ndarray, host_batch: int) -> np.ndarray:
  first = jax.process_index() * host_batch
  return global_batch_values[first : first + host_batch]


def _batch(
  clips: LocalClips, items: Sequence[Tuple[np.ndarray, np.ndarray, int]], batch_dims
) -> Dict[str, np.ndarray]:
  data = clips.data
  n = len(items)
  audio = np.zeros((n, pipeline.num_samples(data)), np.float32)
  video = np.zeros((n, data.num_frames, data.frame_size, data.frame_size, 3), np.uint8)
  labels = np.zeros((n, data.num_classes), np.float32)
  for i, (a, v, index) in enumerate(items):
    if a is not None:
      audio[i] = a
    if v is not None:
      video[i] = v
    if index >= 0:
      labels[i] = clips.labels[index]
  out = pipeline.features(audio, video, labels, data)
  return {k: x.reshape(tuple(batch_dims) + x.shape[1:]) for k, x in out.items()}


def train_batches(
  clips: LocalClips, *, batch_dims: Sequence[int], seed: int, start_step: int
) -> Iterator[Dict[str, np.ndarray]]:
  """Training batches forever from `start_step` (order and windows fixed by seed)."""
  data = clips.data
  host_batch = int(np.prod(batch_dims))
  global_batch = host_batch * jax.process_count()
  weights = None
  if data.class_balanced:
    weights = sampling.class_balanced_weights(clips.labels, data.balance_power)
  step = start_step
  while True:
    indices = sampling.train_indices(
      step, num_examples=len(clips), global_batch=global_batch, seed=seed, weights=weights
    )
    slots = _host_slice(np.arange(global_batch), host_batch)
    items = []
    for slot in slots:
      index = int(indices[slot])
      for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, _WINDOW_STREAM, step, slot, attempt])
        try:
          audio, video = clips.window(index, rng)
          break
        except audioset_csv.ClipError as e:
          clips.failed(index, e)
          fallback = np.random.default_rng([seed, _FALLBACK_STREAM, step, slot, attempt])
          index = int(fallback.integers(len(clips)))
      else:
        raise RuntimeError(
          f'{_MAX_ATTEMPTS} clips in a row failed to decode; the last: '
          f'{clips.paths[index]}: {clips.failures.get(clips.paths[index])}.'
        )
      items.append((audio, video, index))
    yield _batch(clips, items, batch_dims)
    step += 1


def eval_batches(
  clips: LocalClips, *, batch_dims: Sequence[int]
) -> Iterator[Dict[str, np.ndarray]]:
  """Every clip once, centred windows, padded (padding has mask 0)."""
  host_batch = int(np.prod(batch_dims))
  global_batch = host_batch * jax.process_count()
  num_batches = -(-len(clips) // global_batch)
  for step in range(num_batches):
    first = step * global_batch + jax.process_index() * host_batch
    items, mask = [], np.zeros(host_batch, np.float32)
    for slot, position in enumerate(range(first, first + host_batch)):
      if position >= len(clips):
        items.append((None, None, -1))
        continue
      try:
        audio, video = clips.window(position, None)
      except audioset_csv.ClipError as e:
        raise errors.DataError(
          f'{e} (the clip passed the header check when the split was read; an '
          'evaluation cannot skip it without changing the split).'
        ) from None
      items.append((audio, video, position))
      mask[slot] = 1.0
    batch = _batch(clips, items, batch_dims)
    batch['mask'] = mask.reshape(tuple(batch_dims))
    yield batch
