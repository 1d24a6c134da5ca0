"""Synthetic multi-label sound events with matching visual events (nothing to download).

Every clip holds 1 to `max_events` events of distinct classes at random times and
levels over background noise; its labels are the set of classes present. Each class
has a sound and a picture, both shown while the event lasts:

  sound: one of six kinds (a pure tone, an upward chirp, a harmonic stack, a band of
    noise, a click train, an amplitude-modulated tone), in one of four frequency
    registers (`class_sound(k)`); classes k and k + 6 share the kind.
  picture: a filled shape ('square', 'disc', 'cross') of one of 8 colours
    (`class_picture(k)`: colour k mod 8, shape k // 8), at a random place.

A clip is a pure function of `(seed, split, index)`, so the splits are fixed and
reproducible; different splits draw from different streams.

Shape glossary:
  N: clips; S: samples per clip; T, H, W: frames, height, width; K: classes.
"""

import dataclasses
import functools
from typing import Dict, List, Tuple

import numpy as np

from experiments.training import errors

SOUND_KINDS = ('tone', 'chirp', 'harmonic', 'noise_band', 'clicks', 'am_tone')
REGISTERS_HZ = (250.0, 500.0, 1000.0, 2000.0)
CLICK_RATES_HZ = (8.0, 17.0, 31.0, 61.0)
AM_RATES_HZ = (3.0, 7.0, 13.0, 29.0)
SHAPES = ('square', 'disc', 'cross')
COLOURS = np.array(
  [
    [230, 40, 40],  # red
    [40, 200, 60],  # green
    [50, 80, 240],  # blue
    [240, 220, 40],  # yellow
    [220, 50, 220],  # magenta
    [40, 220, 220],  # cyan
    [250, 250, 250],  # white
    [250, 140, 20],  # orange
  ],
  dtype=np.uint8,
)
MAX_CLASSES = len(SOUND_KINDS) * len(REGISTERS_HZ)  # 24
_SPLIT_STREAMS = {'train': 0, 'test': 1}
_BACKGROUND_GREY = 60


@dataclasses.dataclass(frozen=True)
class Event:
  """One event: class, start and duration (seconds), amplitude, picture place."""

  label: int
  start: float
  duration: float
  amplitude: float
  row: int
  col: int


def class_sound(k: int) -> Tuple[str, int]:
  """`(kind, register)` of class k's sound."""
  return SOUND_KINDS[k % len(SOUND_KINDS)], k // len(SOUND_KINDS)


def class_picture(k: int) -> Tuple[str, np.ndarray]:
  """`(shape, rgb colour)` of class k's picture."""
  return SHAPES[(k // len(COLOURS)) % len(SHAPES)], COLOURS[k % len(COLOURS)]


def _check_num_classes(num_classes: int) -> None:
  if not 1 <= num_classes <= MAX_CLASSES:
    raise errors.ConfigError(f'num_classes={num_classes} must be in [1, {MAX_CLASSES}].')


def sound(
  k: int, num_samples: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
  """`[num_samples]` waveform of class k's sound at unit peak level (before envelope)."""
  kind, register = class_sound(k)
  base = REGISTERS_HZ[register]
  nyquist = sample_rate / 2
  if base * 1.5 >= nyquist:
    raise errors.ConfigError(
      f'sample_rate={sample_rate} is too low for class {k} ({kind} at {base} Hz); '
      f'it needs at least {int(3 * base) + 1} Hz.'
    )
  t = np.arange(num_samples) / sample_rate
  phase = rng.uniform(0, 2 * np.pi)
  if kind == 'tone':
    x = np.sin(2 * np.pi * base * t + phase)
  elif kind == 'chirp':  # base -> 1.5 base, linear in frequency over the event.
    duration = max(t[-1], 1.0 / sample_rate)
    x = np.sin(2 * np.pi * (base * t + 0.25 * base * t**2 / duration) + phase)
  elif kind == 'harmonic':  # f0 = base / 2 and its harmonics below Nyquist, 1/h.
    f0 = base / 2
    harmonics = [h for h in range(1, 7) if h * f0 < nyquist]
    x = sum(np.sin(2 * np.pi * h * f0 * t + h * phase) / h for h in harmonics)
  elif kind == 'noise_band':  # White noise kept between 0.8 and 1.25 base.
    spectrum = np.fft.rfft(rng.normal(size=num_samples))
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    spectrum[(freqs < 0.8 * base) | (freqs > 1.25 * base)] = 0
    x = np.fft.irfft(spectrum, n=num_samples)
  elif kind == 'clicks':  # Decaying 2 ms bursts at a register-specific rate.
    x = np.zeros(num_samples)
    period = int(round(sample_rate / CLICK_RATES_HZ[register]))
    width = max(2, int(0.002 * sample_rate))
    burst = rng.normal(size=width) * np.exp(-np.arange(width) / (width / 3))
    first = int(rng.integers(0, max(1, min(period, num_samples) // 2)))
    for start in range(first, num_samples, period):
      end = min(num_samples, start + width)
      x[start:end] += burst[: end - start]
  else:  # 'am_tone': carrier 1.25 base, modulated at a register-specific rate.
    x = np.sin(2 * np.pi * 1.25 * base * t + phase)
    x *= 0.5 * (1 + np.sin(2 * np.pi * AM_RATES_HZ[register] * t))
  peak = np.max(np.abs(x))
  return x / peak if peak > 0 else x


def draw_events(
  rng: np.random.Generator,
  num_classes: int,
  clip_seconds: float,
  frame_size: int,
  max_events: int,
) -> List[Event]:
  """1 to `max_events` events of distinct classes."""
  count = int(rng.integers(1, max_events + 1))
  labels = rng.choice(num_classes, size=count, replace=False)
  events = []
  for label in labels:
    duration = float(rng.uniform(0.3, 0.6)) * clip_seconds
    start = float(rng.uniform(0.0, clip_seconds - duration))
    amplitude = float(10 ** rng.uniform(-1.0, -0.3))  # -20 dB to -6 dB.
    size = _shape_size(frame_size)
    row, col = rng.integers(0, frame_size - size + 1, size=2)
    events.append(Event(int(label), start, duration, amplitude, int(row), int(col)))
  return events


def _shape_size(frame_size: int) -> int:
  return max(3, frame_size // 3)


def shape_mask(shape: str, size: int) -> np.ndarray:
  """`[size, size]` boolean mask of a shape."""
  centre = (size - 1) / 2
  yy, xx = np.mgrid[:size, :size]
  if shape == 'square':
    return np.ones((size, size), bool)
  if shape == 'disc':
    return (yy - centre) ** 2 + (xx - centre) ** 2 <= (size / 2) ** 2
  if shape == 'cross':
    arm = max(1, size // 3)
    lo = (size - arm) // 2
    return ((yy >= lo) & (yy < lo + arm)) | ((xx >= lo) & (xx < lo + arm))
  raise ValueError(f'shape={shape!r} is not one of {SHAPES}.')


def render_clip(
  events: List[Event],
  rng: np.random.Generator,
  *,
  sample_rate: int,
  clip_seconds: float,
  num_frames: int,
  frame_size: int,
  noise_level: float,
) -> Tuple[np.ndarray, np.ndarray]:
  """The waveform `[S]` float32 and video `[T, H, W, 3]` uint8 of one clip.

  Sound: background Gaussian noise of standard deviation `noise_level` plus each
  event's sound, scaled by its amplitude, with 10 ms raised-cosine fades. Picture:
  a grey background with pixel noise; frame t (at time `t * clip_seconds /
  num_frames`) shows the picture of every event active at that time.
  """
  num_samples = int(round(sample_rate * clip_seconds))
  audio = rng.normal(scale=noise_level, size=num_samples)
  video = np.clip(
    _BACKGROUND_GREY
    + rng.normal(scale=12.0, size=(num_frames, frame_size, frame_size, 3)),
    0,
    255,
  ).astype(np.uint8)
  frame_times = np.arange(num_frames) * clip_seconds / num_frames
  size = _shape_size(frame_size)
  for event in events:
    first = int(round(event.start * sample_rate))
    length = min(int(round(event.duration * sample_rate)), num_samples - first)
    x = sound(event.label, length, sample_rate, rng)
    fade = min(length // 2, int(0.01 * sample_rate))
    if fade > 0:
      ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
      x[:fade] *= ramp
      x[length - fade :] *= ramp[::-1]
    audio[first : first + length] += event.amplitude * x
    shape, colour = class_picture(event.label)
    mask = shape_mask(shape, size)
    active = (frame_times >= event.start) & (frame_times < event.start + event.duration)
    patch = video[active, event.row : event.row + size, event.col : event.col + size]
    patch[:, mask] = colour
    video[active, event.row : event.row + size, event.col : event.col + size] = patch
  return audio.astype(np.float32), video


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
  if split not in _SPLIT_STREAMS:
    raise errors.ConfigError(f'split={split!r} is not one of {tuple(_SPLIT_STREAMS)}.')
  return np.random.default_rng([seed, _SPLIT_STREAMS[split], index])


@functools.lru_cache(maxsize=4)
def generate(
  split: str,
  num_examples: int,
  *,
  seed: int,
  num_classes: int,
  sample_rate: int,
  clip_seconds: float,
  num_frames: int,
  frame_size: int,
  max_events: int = 3,
  noise_level: float = 0.02,
  with_video: bool = True,
) -> Dict[str, np.ndarray]:
  """The clips `0 .. num_examples - 1` of `split` (cached; do not modify the arrays).

  Returns:
    `audio` `[N, S]` float32, `labels` `[N, K]` float32 multi-hot and, with
    `with_video`, `video` `[N, T, H, W, 3]` uint8.
  """
  _check_num_classes(num_classes)
  if max_events > num_classes:
    raise errors.ConfigError(
      f'max_events={max_events} exceeds num_classes={num_classes}.'
    )
  num_samples = int(round(sample_rate * clip_seconds))
  audio = np.zeros((num_examples, num_samples), np.float32)
  labels = np.zeros((num_examples, num_classes), np.float32)
  video = np.zeros((num_examples, num_frames, frame_size, frame_size, 3), np.uint8)
  for i in range(num_examples):
    rng = clip_rng(seed, split, i)
    events = draw_events(rng, num_classes, clip_seconds, frame_size, max_events)
    audio[i], clip_video = render_clip(
      events,
      rng,
      sample_rate=sample_rate,
      clip_seconds=clip_seconds,
      num_frames=num_frames,
      frame_size=frame_size,
      noise_level=noise_level,
    )
    if with_video:
      video[i] = clip_video
    labels[i, [e.label for e in events]] = 1.0
  out = {'audio': audio, 'labels': labels}
  if with_video:
    out['video'] = video
  return out
