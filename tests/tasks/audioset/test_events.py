"""The synthetic sound+picture events: labels, timing, spectra, pictures, determinism."""

import numpy as np
import pytest

from experiments.tasks.audioset import events

_KW = dict(
  num_classes=17, sample_rate=8000, clip_seconds=0.5, num_frames=5, frame_size=15
)


def test_labels_are_the_classes_present_and_clips_are_deterministic():
  a = events.generate('train', 7, seed=3, **_KW)
  b = events.generate('train', 7, seed=3, with_video=True, max_events=3, **_KW)
  assert a['audio'].shape == (7, 4000) and a['video'].shape == (7, 5, 15, 15, 3)
  assert a['labels'].shape == (7, 17)
  for i in range(7):
    rng = events.clip_rng(3, 'train', i)
    drawn = events.draw_events(rng, 17, 0.5, 15, 3)
    want = np.zeros(17)
    want[[e.label for e in drawn]] = 1
    np.testing.assert_array_equal(a['labels'][i], want)
    assert 1 <= a['labels'][i].sum() <= 3
  np.testing.assert_array_equal(a['audio'], b['audio'])
  test = events.generate('test', 7, seed=3, **_KW)
  assert not np.allclose(test['audio'], a['audio'])


def test_event_sound_is_where_and_what_the_class_says():
  rng = np.random.default_rng(0)
  tone_class = 6 * 2  # 'tone' in register 2: 1000 Hz.
  assert events.class_sound(tone_class) == ('tone', 2)
  event = events.Event(tone_class, start=0.25, duration=0.5, amplitude=0.5, row=2, col=9)
  audio, video = events.render_clip(
    [event],
    rng,
    sample_rate=8000,
    clip_seconds=1.0,
    num_frames=4,
    frame_size=15,
    noise_level=0.01,
  )
  inside, outside = audio[2000:6000], np.r_[audio[:2000], audio[6000:]]
  assert np.std(outside) == pytest.approx(0.01, rel=0.1)
  assert np.std(inside) > 20 * np.std(outside)
  spectrum = np.abs(np.fft.rfft(inside))
  assert np.fft.rfftfreq(4000, 1 / 8000)[np.argmax(spectrum)] == pytest.approx(
    1000, abs=2
  )
  # Frames at t = 0, .25, .5, .75 s: the picture shows in frames 1 and 2 only.
  shape, colour = events.class_picture(tone_class)
  assert shape == 'disc'  # 12 // 8 = 1.
  np.testing.assert_array_equal(video[1, 2 + 2, 9 + 2], colour)  # Centre of the disc.
  np.testing.assert_array_equal(video[2, 2 + 2, 9 + 2], colour)
  for t in (0, 3):
    assert not np.array_equal(video[t, 4, 11], colour)


@pytest.mark.parametrize('k', range(events.MAX_CLASSES))
def test_every_class_sound_is_finite_and_normalised(k):
  x = events.sound(k, 1000, 16000, np.random.default_rng(k))
  assert np.all(np.isfinite(x)) and np.max(np.abs(x)) == pytest.approx(1.0)


def test_shapes_differ():
  masks = [events.shape_mask(s, 5) for s in events.SHAPES]
  assert masks[0].sum() == 25
  assert masks[1].sum() == 21  # Disc of radius 2.5 on the 5x5 grid.
  assert masks[2].sum() == 9  # Cross with arms 1 pixel wide.


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='num_classes'):
    events.generate('train', 2, seed=0, **{**_KW, 'num_classes': 25})
  with pytest.raises(ValueError, match='sample_rate'):
    events.sound(6 * 3, 100, 4000, np.random.default_rng(0))
  with pytest.raises(ValueError, match='split'):
    events.clip_rng(0, 'validation', 0)
