"""Moving digits with sound: short clips of scikit-learn digit sprites and their tones.

Each clip shows `num_digits` of scikit-learn's 8x8 handwritten digits (scaled up by
`digit_scale`, each in its own colour) moving in straight lines over a grey background
and bouncing off the borders. Every digit is on screen for one contiguous run of
frames (at least a quarter of the clip) and, exactly while it is on screen, the audio
track carries that digit's tone: a sine with `tone_bin(c)` whole cycles per frame for
class `c`, so the tone of a frame's audio window sits on one bin of that window's DFT.
Gaussian noise of `noise_std` is added to the audio. The label is the class of digit 0
(the one drawn on top).

Clips are a pure function of `(seed, split, index)`. The sprites come from disjoint
parts of the scikit-learn digits (a fixed permutation with seed 0: 300 for 'test', 300
for 'validation', the remaining 1,197 for 'train'), so held-out clips show handwriting
never seen in training. Nothing is downloaded: the digits ship with scikit-learn.

Shape glossary:
  T: frames; H = W: image size; S: audio samples per frame.
  D: digits per clip.
"""

import dataclasses
import functools
from typing import Dict

import numpy as np

from experiments.training import errors

SPLITS = ('train', 'validation', 'test')
NUM_CLASSES = 10
SPRITE_SIZE = 8
_SPLIT_SIZES = {'test': 300, 'validation': 300}  # 'train': the remaining 1,197.
_SPLIT_CODES = {'train': 0, 'validation': 1, 'test': 2}
_SPRITE_PERMUTATION_SEED = 0


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """What a clip looks like.

  Attributes:
    num_frames: T.
    image_size: H = W, in pixels.
    samples_per_frame: S, audio samples per frame.
    num_digits: D, digits per clip.
    digit_scale: each sprite pixel becomes a `digit_scale` x `digit_scale` block.
    max_speed: largest speed along each axis, in pixels per frame (at least 1).
    tone_amplitude: peak amplitude of all tones together (each digit gets 1 / D).
    noise_std: standard deviation of the Gaussian audio noise.
    max_background: the background grey level is uniform in [0, max_background].
  """

  num_frames: int
  image_size: int
  samples_per_frame: int
  num_digits: int = 1
  digit_scale: int = 2
  max_speed: int = 2
  tone_amplitude: float = 0.5
  noise_std: float = 0.01
  max_background: float = 0.3

  def __post_init__(self):
    sprite = SPRITE_SIZE * self.digit_scale
    if self.num_frames < 1:
      raise errors.ConfigError(f'num_frames={self.num_frames} must be >= 1.')
    if self.image_size < sprite:
      raise errors.ConfigError(
        f'image_size={self.image_size} is smaller than a digit '
        f'({SPRITE_SIZE} x digit_scale={self.digit_scale} = {sprite} pixels).'
      )
    if self.samples_per_frame <= 2 * tone_bin(NUM_CLASSES - 1):
      raise errors.ConfigError(
        f'samples_per_frame={self.samples_per_frame} must exceed '
        f'{2 * tone_bin(NUM_CLASSES - 1)} so that every tone is below Nyquist.'
      )
    if self.num_digits < 1:
      raise errors.ConfigError(f'num_digits={self.num_digits} must be >= 1.')
    if self.max_speed < 1:
      raise errors.ConfigError(f'max_speed={self.max_speed} must be >= 1.')


def tone_bin(digit_class: int) -> int:
  """Whole sine cycles per frame of the tone of `digit_class` (its DFT bin)."""
  return 2 + 2 * int(digit_class)


@functools.cache
def _all_digits():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  bunch = datasets.load_digits()
  images = (bunch.images / 16.0).astype(np.float32)  # [1797, 8, 8] in [0, 1]
  return images, bunch.target.astype(np.int32)


def split_sprites(split: str, *, fake: bool = False):
  """The sprites `[N, 8, 8]` in [0, 1] and classes `[N]` that clips of `split` use.

  With `fake`, random sprites of the same shapes (no scikit-learn needed).
  """
  if split not in SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {SPLITS}.')
  if fake:
    rng = np.random.default_rng([_SPRITE_PERMUTATION_SEED, _SPLIT_CODES[split]])
    n = _SPLIT_SIZES.get(split, 1197)
    images = rng.uniform(size=(n, SPRITE_SIZE, SPRITE_SIZE)).astype(np.float32)
    return images, (np.arange(n) % NUM_CLASSES).astype(np.int32)
  images, labels = _all_digits()
  order = np.random.default_rng(_SPRITE_PERMUTATION_SEED).permutation(len(images))
  n_test, n_valid = _SPLIT_SIZES['test'], _SPLIT_SIZES['validation']
  indices = {
    'test': order[:n_test],
    'validation': order[n_test : n_test + n_valid],
    'train': order[n_test + n_valid :],
  }[split]
  return images[indices], labels[indices]


def _bounce(start: float, velocity: float, limit: int, num_frames: int) -> np.ndarray:
  """Positions `[T]` moving at `velocity` and reflecting off 0 and `limit`."""
  if limit == 0:
    return np.zeros(num_frames)
  raw = start + velocity * np.arange(num_frames)
  period = 2 * limit
  folded = np.mod(raw, period)
  return np.where(folded > limit, period - folded, folded)


def render_clip(
  spec: ClipSpec, rng: np.random.Generator, sprites: np.ndarray, classes: np.ndarray
) -> Dict[str, np.ndarray]:
  """Draws one clip.

  Args:
    spec: the clip's sizes.
    rng: the source of every random choice.
    sprites: `[N, 8, 8]` sprites in [0, 1] to pick from.
    classes: `[N]` their digit classes.

  Returns:
    `video` `[T, H, W, 3]` float32 in [0, 1]; `audio` `[T * S]` float32; `label` int32
    (class of digit 0); `classes` `[D]`; `visible` `[D, T]` bool (digit d is on screen
    in frame t); `positions` `[D, T, 2]` int (top-left corner, row and column).
  """
  t, size, s = spec.num_frames, spec.image_size, spec.samples_per_frame
  sprite_px = SPRITE_SIZE * spec.digit_scale
  background = rng.uniform(0.0, spec.max_background)
  video = np.full((t, size, size, 3), background, np.float32)
  n = np.arange(t * s)
  audio = np.zeros(t * s, np.float64)
  picks = rng.integers(0, len(sprites), size=spec.num_digits)
  visible = np.zeros((spec.num_digits, t), bool)
  positions = np.zeros((spec.num_digits, t, 2), np.int64)
  limit = size - sprite_px
  # Digit 0 is drawn last, on top of the others.
  for d in reversed(range(spec.num_digits)):
    sprite = np.kron(sprites[picks[d]], np.ones((spec.digit_scale, spec.digit_scale)))
    color = rng.uniform(0.5, 1.0, size=3)
    duration = rng.integers(max(1, -(-t // 4)), t + 1)
    first = rng.integers(0, t - duration + 1)
    visible[d, first : first + duration] = True
    speeds = rng.integers(1, spec.max_speed + 1, size=2) * rng.choice([-1, 1], size=2)
    start = rng.uniform(0, limit, size=2)
    for axis in range(2):
      positions[d, :, axis] = np.round(_bounce(start[axis], speeds[axis], limit, t))
    for frame in np.flatnonzero(visible[d]):
      y, x = positions[d, frame]
      patch = video[frame, y : y + sprite_px, x : x + sprite_px]
      alpha = sprite[..., None]
      patch[...] = patch * (1 - alpha) + alpha * color
    phase = rng.uniform(0, 2 * np.pi)
    gate = np.repeat(visible[d], s)
    tone = np.sin(2 * np.pi * tone_bin(classes[picks[d]]) * n / s + phase)
    audio += gate * tone * spec.tone_amplitude / spec.num_digits
  audio += rng.normal(0.0, spec.noise_std, size=audio.shape)
  return {
    'video': video,
    'audio': audio.astype(np.float32),
    'label': np.int32(classes[picks[0]]),
    'classes': classes[picks].astype(np.int32),
    'visible': visible,
    'positions': positions,
  }


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of clip `index` of `split` (disjoint streams per split and index)."""
  return np.random.default_rng([seed, _SPLIT_CODES[split], int(index)])


def make_clips(
  spec: ClipSpec, split: str, indices, *, seed: int, fake: bool = False
) -> Dict[str, np.ndarray]:
  """Clips `indices` of `split`, stacked: `video` `[N, T, H, W, 3]`, `audio` `[N, T * S]`,
  `label` `[N]` (and `visible` `[N, D, T]`)."""
  sprites, classes = split_sprites(split, fake=fake)
  clips = [render_clip(spec, clip_rng(seed, split, i), sprites, classes) for i in indices]
  keys = ('video', 'audio', 'label', 'visible')
  return {k: np.stack([c[k] for c in clips]) for k in keys}


def labels(spec: ClipSpec, split: str, indices, *, seed: int, fake: bool = False):
  """The labels `[N]` of clips `indices` (drawn without rendering)."""
  sprites, classes = split_sprites(split, fake=fake)
  out = []
  for i in indices:
    rng = clip_rng(seed, split, i)
    rng.uniform(0.0, spec.max_background)  # The background, drawn first.
    picks = rng.integers(0, len(sprites), size=spec.num_digits)
    out.append(classes[picks[0]])
  return np.asarray(out, np.int32)
