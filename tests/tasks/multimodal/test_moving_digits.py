"""Moving digits with sound: each digit's tone sounds exactly while it is on screen."""

import numpy as np
import pytest

from experiments.tasks.multimodal import moving_digits

SPEC = moving_digits.ClipSpec(num_frames=7, image_size=21, samples_per_frame=48)


def _tone_magnitudes(audio, spec):
  """`[T, S // 2 + 1]`: DFT magnitude of each frame's audio window."""
  frames = audio.reshape(spec.num_frames, spec.samples_per_frame)
  return np.abs(np.fft.rfft(frames, axis=1))


@pytest.mark.parametrize('num_digits', [1, 3])
def test_each_tone_is_present_exactly_while_its_digit_is_on_screen(num_digits):
  spec = moving_digits.ClipSpec(
    num_frames=7, image_size=21, samples_per_frame=48, num_digits=num_digits
  )
  sprites, classes = moving_digits.split_sprites('train')
  saw_hidden = 0
  for index in range(12):
    clip = moving_digits.render_clip(
      spec, moving_digits.clip_rng(3, 'train', index), sprites, classes
    )
    mags = _tone_magnitudes(clip['audio'], spec)
    # A whole-bin sine of amplitude a has DFT magnitude a * S / 2 in its bin.
    expected = spec.tone_amplitude / num_digits * spec.samples_per_frame / 2
    for c in range(moving_digits.NUM_CLASSES):
      sounding = np.any(clip['visible'][clip['classes'] == c], axis=0)  # [T]
      bin_mag = mags[:, moving_digits.tone_bin(c)]
      np.testing.assert_array_less(0.8 * expected, bin_mag[sounding] + 1e-9)
      np.testing.assert_array_less(bin_mag[~sounding], 0.15 * expected)
    saw_hidden += int(np.sum(~clip['visible']))
  assert saw_hidden > 0  # Digits do leave the screen in some frames.


def test_a_digit_is_drawn_exactly_in_its_visible_frames():
  sprites, classes = moving_digits.split_sprites('validation')
  for index in range(10):
    clip = moving_digits.render_clip(
      SPEC, moving_digits.clip_rng(0, 'validation', index), sprites, classes
    )
    video, visible = clip['video'], clip['visible'][0]
    spread = np.ptp(video.reshape(SPEC.num_frames, -1), axis=1)
    assert np.all(spread[~visible] == 0)  # Only the uniform background.
    assert np.all(spread[visible] > 0.05)
    for t in np.flatnonzero(visible):  # The digit lies inside its bounding box.
      y, x = clip['positions'][0, t]
      box = np.zeros(video.shape[1:3], bool)
      box[y : y + 16, x : x + 16] = True
      assert np.ptp(video[t][~box]) == 0
    assert video.min() >= 0 and video.max() <= 1
    assert clip['label'] == clip['classes'][0]


def test_digits_bounce_inside_the_frame():
  sprites, classes = moving_digits.split_sprites('train')
  spec = moving_digits.ClipSpec(num_frames=40, image_size=19, samples_per_frame=48)
  clip = moving_digits.render_clip(
    spec, moving_digits.clip_rng(1, 'train', 0), sprites, classes
  )
  pos = clip['positions'][0]
  assert pos.min() >= 0 and pos.max() <= 19 - 16
  steps = np.abs(np.diff(pos, axis=0))
  assert steps.max() <= spec.max_speed and np.any(steps > 0)


def test_clips_are_deterministic_and_splits_use_disjoint_sprites():
  a = moving_digits.make_clips(SPEC, 'test', [0, 5], seed=7)
  b = moving_digits.make_clips(SPEC, 'test', [0, 5], seed=7)
  c = moving_digits.make_clips(SPEC, 'train', [0, 5], seed=7)
  np.testing.assert_array_equal(a['video'], b['video'])
  np.testing.assert_array_equal(a['audio'], b['audio'])
  assert not np.array_equal(a['video'], c['video'])
  assert a['video'].shape == (2, 7, 21, 21, 3) and a['audio'].shape == (2, 7 * 48)
  sizes = [len(moving_digits.split_sprites(s)[0]) for s in moving_digits.SPLITS]
  assert sizes == [1197, 300, 300]
  flat = [moving_digits.split_sprites(s)[0].reshape(-1, 64) for s in moving_digits.SPLITS]
  assert len(np.unique(np.concatenate(flat), axis=0)) <= 1797
  np.testing.assert_array_equal(
    moving_digits.labels(SPEC, 'test', range(9), seed=7),
    moving_digits.make_clips(SPEC, 'test', range(9), seed=7)['label'],
  )


def test_bad_sizes_name_the_argument():
  with pytest.raises(ValueError, match='samples_per_frame'):
    moving_digits.ClipSpec(num_frames=3, image_size=16, samples_per_frame=20)
  with pytest.raises(ValueError, match='image_size'):
    moving_digits.ClipSpec(num_frames=3, image_size=9, samples_per_frame=48)
