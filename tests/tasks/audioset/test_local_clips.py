"""The `audioset` dataset end to end: CSVs + WAV/FLAC/MP4 clips -> task batches."""

import logging

import numpy as np
import pytest

from configs import audioset as audioset_config
from experiments.tasks.audioset import local_clips
from experiments.tasks.audioset import task
from tests.tasks.audioset import clip_files

SR = 4000


def _tone(freq, seconds, amplitude=8000):
  t = np.arange(int(seconds * SR)) / SR
  return np.round(amplitude * np.sin(2 * np.pi * freq * t))


def _dataset(root):
  """3 classes; train: 4 segments (1 missing, 1 not audio); test: 3 (1 too short)."""
  clip_files.write_text(str(root / 'class_labels_indices.csv'), clip_files.CLASS_CSV)
  clip_files.write_text(
    str(root / 'balanced_train_segments.csv'),
    '# YTID, start_seconds, end_seconds, positive_labels\n'
    'aaa, 10.000, 20.000, "/m/09x0r"\n'
    'bbb, 0.000, 10.000, "/m/04rlf,/m/05zppz"\n'
    'ccc, 5.000, 15.000, "/m/04rlf"\n'
    'ddd, 1.000, 11.000, "/m/09x0r"\n',
  )
  clip_files.write_text(
    str(root / 'eval_segments.csv'),
    '# YTID, start_seconds, end_seconds, positive_labels\n'
    'eee, 0.000, 10.000, "/m/04rlf"\n'
    'fff, 0.000, 10.000, "/m/09x0r,/m/04rlf"\n'
    'ggg, 0.000, 10.000, "/m/05zppz"\n',
  )
  train, test = root / 'balanced_train_segments', root / 'eval_segments'
  clip_files.write_wav(str(train / 'aaa_10000_20000.wav'), _tone(300, 1.5), SR)
  clip_files.write_flac(str(train / 'bbb_0_10000.flac'), _tone(700, 2.0)[None], SR)
  clip_files.write_text(str(train / 'ccc_5000_15000.wav'), 'not a wav file\n' * 20)
  clip_files.write_wav(str(test / 'eee_0_10000.wav'), _tone(500, 1.2), SR)
  clip_files.write_wav(str(test / 'fff_0_10000.wav'), _tone(900, 0.8), SR)  # < window.
  clip_files.write_wav(str(test / 'ggg_0_10000.wav'), _tone(900, 0.3), SR)  # Too short.


def _config(root, audio_input='raw'):
  config = audioset_config.get_config('debug')
  with config.unlocked():
    config.data.dataset = 'audioset'
    config.data.data_dir = str(root)
    config.data.num_classes = 3
    config.data.audio_input = audio_input
    config.data.use_video = False
    config.data.train_segments = 'balanced_train_segments.csv'
    config.data.clip_seconds = 1.0
    config.data.min_clip_seconds = 0.5
    config.data.class_balanced = True
    config.model.audio_preprocessor.samples_per_patch = 32 if audio_input == 'mel' else 40
    del config.model['video_preprocessor']
    del config.model['input_preprocessor']
  return config


def test_missing_clips_are_counted_with_one_warning_and_bad_clips_skipped(
  tmp_path, caplog
):
  _dataset(tmp_path)
  config = _config(tmp_path)
  with caplog.at_level(logging.WARNING):
    clips = local_clips.LocalClips('train', config.data)
  missing = [r for r in caplog.records if 'missing' in r.getMessage()]
  assert len(missing) == 1 and '1 of 4 clips are missing' in missing[0].getMessage()
  assert clips.num_missing == 1 and len(clips) == 3
  np.testing.assert_array_equal(clips.labels, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])

  caplog.clear()
  with caplog.at_level(logging.WARNING):
    batches = local_clips.train_batches(clips, batch_dims=(1, 5), seed=0, start_step=0)
    batch = next(batches)
  assert batch['audio'].shape == (1, 5, 4000) and batch['labels'].shape == (1, 5, 3)
  assert list(clips.failures) == [
    str(tmp_path / 'balanced_train_segments/ccc_5000_15000.wav')
  ]
  assert any('ccc_5000_15000.wav' in r.getMessage() for r in caplog.records)
  # Every slot holds a decoded clip: a 300 Hz (label 0) or 700 Hz (labels 1, 2) tone.
  for audio, labels in zip(batch['audio'][0], batch['labels'][0]):
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * SR / 4000
    assert peak == (300 if labels[0] else 700)
    assert np.abs(audio).max() == pytest.approx(8000 / 32768, rel=1e-3)
  # Same seed and step: same batch (resumable).
  again = next(local_clips.train_batches(clips, batch_dims=(1, 5), seed=0, start_step=0))
  np.testing.assert_array_equal(again['audio'], batch['audio'])
  second = next(batches)
  resumed = next(
    local_clips.train_batches(clips, batch_dims=(1, 5), seed=0, start_step=1)
  )
  np.testing.assert_array_equal(resumed['audio'], second['audio'])
  np.testing.assert_array_equal(resumed['labels'], second['labels'])


def test_eval_split_drops_too_short_clips_pads_and_centres(tmp_path, caplog):
  _dataset(tmp_path)
  config = _config(tmp_path)
  with caplog.at_level(logging.WARNING):
    assert task.num_examples('test', config) == 2
  assert any('ggg_0_10000.wav' in r.getMessage() for r in caplog.records)
  batches = list(task.load('test', is_training=False, batch_dims=(1, 3), config=config))
  assert len(batches) == 1
  batch = batches[0]
  np.testing.assert_array_equal(batch['mask'], [[1, 1, 0]])
  np.testing.assert_array_equal(batch['labels'][0], [[0, 0, 1], [1, 0, 1], [0, 0, 0]])
  eee = _tone(500, 1.2) / 32768
  np.testing.assert_allclose(batch['audio'][0, 0], eee[400:4400], atol=1e-6)  # Centred.
  fff = batch['audio'][0, 1]
  np.testing.assert_allclose(fff[:3200], _tone(900, 0.8) / 32768, atol=1e-6)
  assert np.all(fff[3200:] == 0)  # Padded with silence.


def test_mel_features_through_the_task(tmp_path):
  _dataset(tmp_path)
  config = _config(tmp_path, audio_input='mel')
  batch = next(task.load('train', is_training=True, batch_dims=(1, 2), config=config))
  assert batch['audio'].shape == (1, 2, 32, 32)  # 4000 // 125 frames x 32 bins.
  np.testing.assert_allclose(batch['audio'][0].mean(axis=(1, 2)), 0, atol=1e-4)


def test_wrong_class_count_and_empty_dir_are_named(tmp_path):
  _dataset(tmp_path)
  config = _config(tmp_path)
  with config.unlocked():
    config.data.num_classes = 527
  with pytest.raises(ValueError, match='has 3 classes; data.num_classes=527'):
    local_clips.LocalClips('train', config.data)
  config = _config(tmp_path)
  with config.unlocked():
    config.data.clip_template = 'nowhere/{ytid}'
  with pytest.raises(ValueError, match='no usable clip .4 missing'):
    local_clips.LocalClips('train', config.data)
