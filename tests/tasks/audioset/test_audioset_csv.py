"""AudioSet label files and clip decoding on files written in the real formats."""

import os

import numpy as np
import pytest

from experiments.tasks.audioset import audioset_csv
from tests.tasks.audioset import clip_files

SEGMENTS_CSV = (
  '# Segments csv created Sun Mar  5 10:54:31 2017\n'
  '# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n'
  '# YTID, start_seconds, end_seconds, positive_labels\n'
  '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/05zppz"\n'
  '-0RWZT-miFs, 420.000, 430.000, "/m/04rlf"\n'
  'AbC_dEf-123, 0.500, 10.500, "/m/04rlf"\n'
)


def test_class_file(tmp_path):
  path = str(tmp_path / 'class_labels_indices.csv')
  clip_files.write_text(path, clip_files.CLASS_CSV)
  assert audioset_csv.read_class_labels(path) == [
    ('/m/09x0r', 'Speech'),
    ('/m/05zppz', 'Male speech, man speaking'),
    ('/m/04rlf', 'Music'),
  ]
  clip_files.write_text(path, 'index,mid,display_name\n0,/m/a,"A"\n2,/m/b,"B"\n')
  with pytest.raises(ValueError, match=r'class_labels_indices.csv:3: class index'):
    audioset_csv.read_class_labels(path)


def test_segments_file(tmp_path):
  path = str(tmp_path / 'eval_segments.csv')
  clip_files.write_text(path, SEGMENTS_CSV)
  index = {'/m/09x0r': 0, '/m/05zppz': 1, '/m/04rlf': 2}
  segments = audioset_csv.read_segments(path, index)
  assert segments == [
    audioset_csv.Segment('--PJHxphWEs', 30.0, 40.0, (0, 1)),
    audioset_csv.Segment('-0RWZT-miFs', 420.0, 430.0, (2,)),
    audioset_csv.Segment('AbC_dEf-123', 0.5, 10.5, (2,)),
  ]
  np.testing.assert_array_equal(
    audioset_csv.multi_hot(segments, 3), [[1, 1, 0], [0, 0, 1], [0, 0, 1]]
  )
  assert (
    audioset_csv.clip_stem(
      '{csv}/{ytid}_{start_ms}_{end_ms}', segments[2], 'eval_segments'
    )
    == 'eval_segments/AbC_dEf-123_500_10500'
  )
  assert (
    audioset_csv.clip_stem('Y{ytid}_{start:.1f}', segments[0], 'x') == 'Y--PJHxphWEs_30.0'
  )


def test_unknown_label_id_names_the_file_line_and_id(tmp_path):
  path = str(tmp_path / 'balanced_train_segments.csv')
  clip_files.write_text(path, SEGMENTS_CSV)
  with pytest.raises(
    ValueError,
    match=r"balanced_train_segments.csv:4: label id '/m/05zppz' of clip --PJHxphWEs",
  ):
    audioset_csv.read_segments(path, {'/m/09x0r': 0, '/m/04rlf': 1})
  clip_files.write_text(path, 'abc, 1.0, "/m/09x0r"\n')
  with pytest.raises(
    ValueError, match=r'balanced_train_segments.csv:1: expected 4 fields'
  ):
    audioset_csv.read_segments(path, {'/m/09x0r': 0})


def test_wav_decodes_exactly_and_resamples(tmp_path):
  path = str(tmp_path / 'a.wav')
  clip_files.write_wav(path, [0, 16384, -16384, 32767, -32768, 8192], 16000)
  np.testing.assert_array_equal(
    audioset_csv.decode_audio(path, 16000), [0, 0.5, -0.5, 32767 / 32768, -1, 0.25]
  )
  t = np.arange(16000) / 16000
  clip_files.write_wav(path, np.round(16000 * np.sin(2 * np.pi * 440 * t)), 16000)
  y = audioset_csv.decode_audio(path, 8000)
  assert abs(len(y) - 8000) <= 32
  spectrum = np.abs(np.fft.rfft(y[:8000]))
  assert np.argmax(spectrum) == 440  # 1 Hz bins over one second.
  assert audioset_csv.probe(path, True, False) == pytest.approx(1.0)


def test_flac_stereo_is_averaged_to_mono(tmp_path):
  path = str(tmp_path / 'b.flac')
  left = np.array([1000, 2000, -4000, 0] * 50)
  right = np.array([3000, 0, 0, 8000] * 50)
  clip_files.write_flac(path, np.stack([left, right]), 8000)
  np.testing.assert_allclose(
    audioset_csv.decode_audio(path, 8000), (left + right) / 2 / 32768, atol=1e-7
  )


def test_video_frames_at_requested_times(tmp_path):
  path = str(tmp_path / 'c.mp4')
  frames = np.zeros((10, 24, 32, 3), np.uint8)  # 10 frames at 10 fps.
  for i in range(10):
    frames[i, ..., 0] = 20 * i + 10
    frames[i, :, :8, 1] = 200  # Left quarter green: cropped away.
  clip_files.write_mp4(path, frames, fps=10)
  got = audioset_csv.decode_video(path, [0.0, 0.05, 0.35, 0.95, 3.0], frame_size=12)
  assert got.shape == (5, 12, 12, 3)
  # Shown at those times: frames 0, 0, 3, 9 and the last one, 9.
  np.testing.assert_allclose(
    got[..., 0].mean(axis=(1, 2)), [10, 10, 70, 190, 190], atol=3
  )
  # 32 x 24 -> 16 x 12, centre crop keeps columns 2..13 of 16: the green quarter
  # (columns 0..3) keeps its columns 2..3.
  assert np.all(got[0, :, :2, 1] > 150) and np.all(got[0, :, 3:, 1] < 50)


def test_wrong_format_and_missing_streams_name_the_file(tmp_path):
  path = str(tmp_path / 'not_audio.wav')
  clip_files.write_text(path, 'this is not a WAV file\n' * 10)
  with pytest.raises(audioset_csv.ClipError, match='not_audio.wav'):
    audioset_csv.decode_audio(path, 16000)
  wav = str(tmp_path / 'a.wav')
  clip_files.write_wav(wav, np.zeros(100), 8000)
  with pytest.raises(audioset_csv.ClipError, match='a.wav: has no video stream'):
    audioset_csv.decode_video(wav, [0.0], 8)
  assert os.path.exists(wav)
