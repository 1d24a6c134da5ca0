"""The Kinetics-layout video-folder reader on small files written with PyAV."""

import os
import warnings

import numpy as np
import pytest

from configs import multimodal as multimodal_config
from experiments.tasks.multimodal import task
from experiments.tasks.multimodal import video_folder as vf

SR = 48000
FPS = 25.0


def _frames(num_frames, height=32, width=64):
  """Frame t: left half colour (8t, 200 - 8t, 40), right half (40, 40, 250)."""
  video = np.zeros((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    video[t, :, : width // 2] = (8 * t, 200 - 8 * t, 40)
    video[t, :, width // 2 :] = (40, 40, 250)
  return video


def _noise_audio(num_samples, seed=0):
  rng = np.random.default_rng(seed)
  audio = np.convolve(rng.standard_normal(num_samples), np.ones(8) / 8, 'same')
  return (0.8 * audio / np.abs(audio).max()).astype(np.float32)


def _options(**kw):
  defaults = dict(
    num_frames=5, image_size=16, fps=FPS, sample_rate=SR, samples_per_frame=1920
  )
  defaults.update(kw)
  return vf.ReadOptions(**defaults)


def test_frames_audio_and_crop_are_read_as_written(tmp_path):
  video, audio = _frames(15), _noise_audio(15 * 1920)
  path = str(tmp_path / 'clip.avi')  # MPEG-4 video, 16-bit PCM audio: no codec delay.
  vf.write_clip(path, video, FPS, audio, SR)
  clip = vf.read_clip(path, _options())
  # 15 frames = 0.6 s; 5 frames need 0.2 s; evaluation starts in the middle: 0.2 s.
  assert clip['start'] == pytest.approx(0.2)
  got = clip['video']
  assert got.shape == (5, 16, 16, 3)
  # Shorter side 32 -> 16, width 64 -> 32, centre crop keeps columns 8..24 of 32:
  # 8 columns of the left colour, then 8 of the right colour.
  for k in range(5):
    t = 5 + k
    np.testing.assert_allclose(
      got[k, 4:12, 1:6] * 255,
      np.broadcast_to((8 * t, 200 - 8 * t, 40), (8, 5, 3)),
      atol=12,
    )
    np.testing.assert_allclose(
      got[k, 4:12, 10:15] * 255, np.broadcast_to((40, 40, 250), (8, 5, 3)), atol=12
    )
  np.testing.assert_allclose(clip['audio'], audio[5 * 1920 : 10 * 1920], atol=1e-4)
  # Half the frame rate: every other frame, from the middle of the clip.
  half = vf.read_clip(path, _options(num_frames=4, fps=12.5, samples_per_frame=3840))
  assert half['start'] == pytest.approx(0.14)  # (0.6 - 0.32) / 2
  firsts = np.round(half['video'][:, 8, 2, 0] * 255 / 8)
  np.testing.assert_allclose(firsts, [3, 5, 7, 9], atol=0.6)  # Frames at 0.14 + 0.08 k.


@pytest.mark.parametrize('ext', ['.mp4', '.webm', '.mkv'])
def test_compressed_containers_keep_audio_aligned_within_codec_delay(tmp_path, ext):
  video, audio = _frames(12), _noise_audio(12 * 1920, seed=1)
  path = str(tmp_path / f'clip{ext}')
  vf.write_clip(path, video, FPS, audio, SR)
  clip = vf.read_clip(path, _options(num_frames=6))
  first = int(round(clip['start'] * SR))
  got = clip['audio']
  # Encoder priming (AAC 1024, Opus 312 samples) may shift the audio by < 1 frame.
  lags = range(-1100, 1101, 4)
  scores = [
    np.dot(got[1200:-1200], audio[first + lag + 1200 : first + lag + len(got) - 1200])
    for lag in lags
  ]
  lag = list(lags)[int(np.argmax(scores))]
  expected = audio[first + lag : first + lag + len(got)]
  assert np.corrcoef(got, expected)[0, 1] > 0.9
  assert clip['video'].shape == (6, 16, 16, 3)


def test_random_crops_and_starts_are_seeded(tmp_path):
  path = str(tmp_path / 'clip.avi')
  vf.write_clip(path, _frames(15), FPS, _noise_audio(15 * 1920), SR)
  options = _options(random=True)
  a, b = (
    vf.read_clip(path, options, seed=(1, 2)),
    vf.read_clip(path, options, seed=(1, 2)),
  )
  np.testing.assert_array_equal(a['video'], b['video'])
  starts = {round(vf.read_clip(path, options, seed=(s,))['start'], 3) for s in range(6)}
  assert len(starts) > 1 and all(0 <= s <= 0.4 + 1e-6 for s in starts)


def test_missing_audio_is_silence_with_a_warning_and_bad_files_are_named(tmp_path):
  gif = str(tmp_path / 'silent.gif')
  vf.write_clip(gif, _frames(10), FPS)
  with pytest.warns(UserWarning, match='silent.gif: has no audio'):
    clip = vf.read_clip(gif, _options())
  assert not clip['has_audio'] and not np.any(clip['audio'])
  short = str(tmp_path / 'short.avi')
  vf.write_clip(short, _frames(3), FPS, _noise_audio(3 * 1920), SR)
  with pytest.raises(vf.ClipError, match='short.avi: lasts 0.120s'):
    vf.read_clip(short, _options())
  broken = tmp_path / 'broken.mp4'
  broken.write_bytes(b'not a video' * 50)
  with pytest.raises(vf.ClipError, match='broken.mp4'):
    vf.read_clip(str(broken), _options())
  with pytest.raises(vf.ClipError, match='nothere.mp4: no such file'):
    vf.read_clip(str(tmp_path / 'nothere.mp4'), _options())


def _kinetics_folder(root):
  """train: 3 good clips, one corrupt, one listed without a file; validate: 2 + 1 short."""
  os.makedirs(root / 'annotations')
  rows = {
    'train': [
      ('zumba', 'aaa', 0, 10, 'ok'),
      ('yoga', 'bbb', 5, 15, 'ok'),
      ('abseiling', 'ccc', 0, 10, 'broken'),
      ('zumba', 'ddd', 1, 11, 'ok'),
      ('yoga', 'eee', 0, 10, 'absent'),
    ],
    'validate': [
      ('yoga', 'fff', 0, 10, 'ok'),
      ('zumba', 'ggg', 0, 10, 'short'),
      ('abseiling', 'hhh', 3, 13, 'ok'),
    ],
  }
  for split, entries in rows.items():
    with open(root / 'annotations' / f'{split}.csv', 'w') as f:
      f.write('label,youtube_id,time_start,time_end,split\n')
      for label, vid, start, end, kind in entries:
        f.write(f'{label},{vid},{start},{end},{split}\n')
        folder = root / split / label  # Per-class sub-folders, as the downloader writes.
        os.makedirs(folder, exist_ok=True)
        path = str(folder / (vf.clip_name(vid, start, end) + '.avi'))
        if kind == 'broken':
          open(path, 'wb').write(b'garbage' * 100)
        elif kind != 'absent':
          n = 2 if kind == 'short' else 12
          vf.write_clip(path, _frames(n, 24, 24), FPS, _noise_audio(n * 1920), SR)


def _config(root):
  config = multimodal_config.get_config('debug')
  with config.unlocked():
    config.data.dataset = 'video_folder'
    config.data.video_folder.root = str(root)
    config.data.video_folder.num_workers = 0
    config.data.num_frames = 3
    config.data.image_size = 16
    config.data.samples_per_frame = 1920
    config.data.num_classes = 700
  return config


def test_folder_training_skips_bad_clips_and_evaluation_pads(tmp_path):
  _kinetics_folder(tmp_path)
  config = _config(tmp_path)
  with pytest.warns(UserWarning, match='1 of 5 clips'):
    train = vf.VideoFolder(str(tmp_path), 'train')
  assert len(train) == 4
  from experiments.tasks.multimodal import kinetics700

  assert [kinetics700.CLASSES[i] for i in train.labels] == [
    'zumba',
    'yoga',
    'abseiling',
    'zumba',
  ]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    it = vf.batches(train, config, is_training=True, batch_dims=(1, 2), start_step=0)
    batches = [next(it) for _ in range(5)]  # 10 clips: two and a half epochs.
  messages = [str(w.message) for w in caught]
  assert any('skipping clip' in m and 'ccc_000000_000010.avi' in m for m in messages)
  assert any('epoch 0' in m and '1 clip(s) skipped' in m for m in messages)
  for b in batches:
    assert b['video'].shape == (1, 2, 3, 16, 16, 3) and b['audio'].shape == (
      1,
      2,
      3 * 1920,
    )
    assert not np.any(b['label'] == kinetics700.CLASSES.index('abseiling'))
  # Resuming at step 3 gives the batches an uninterrupted iterator gives.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    resumed = next(
      vf.batches(train, config, is_training=True, batch_dims=(1, 2), start_step=3)
    )
  np.testing.assert_array_equal(resumed['video'], batches[3]['video'])
  valid = vf.VideoFolder(str(tmp_path), 'validate')
  with pytest.warns(UserWarning, match='ggg_000000_000010.avi: lasts'):
    evals = list(vf.batches(valid, config, is_training=False, batch_dims=(1, 3)))
  assert len(evals) == 1
  np.testing.assert_array_equal(evals[0]['mask'], [[1, 1, 0]])
  np.testing.assert_array_equal(
    evals[0]['label'][0, :2],
    [kinetics700.CLASSES.index('yoga'), kinetics700.CLASSES.index('abseiling')],
  )
  assert not np.any(evals[0]['video'][0, 2])


def test_unknown_labels_and_missing_columns_name_the_file(tmp_path):
  os.makedirs(tmp_path / 'annotations')
  os.makedirs(tmp_path / 'train')
  (tmp_path / 'annotations' / 'train.csv').write_text(
    'label,youtube_id,time_start,time_end\nflying carpets,x,0,10\n'
  )
  with pytest.raises(ValueError, match="train.csv: label 'flying carpets'"):
    vf.VideoFolder(str(tmp_path), 'train')
  (tmp_path / 'annotations' / 'validate.csv').write_text('label,youtube_id\nyoga,x\n')
  with pytest.raises(ValueError, match=r'validate.csv: header .* lacks'):
    vf.VideoFolder(str(tmp_path), 'validate')


def test_fake_folder_runs_through_the_task(tmp_path):
  config = multimodal_config.get_config('kinetics')
  with config.unlocked():
    config.data.fake = True
    config.data.video_folder.num_workers = 0
  assert task.num_examples('train', config) == 3
  batch = next(task.load('validate', is_training=False, batch_dims=(1, 2), config=config))
  assert batch['video'].shape == (1, 2, 16, 224, 224, 3)
  assert batch['audio'].shape == (1, 2, 30720)
  assert np.abs(batch['audio']).max() > 0.3  # The 440 Hz tone.
