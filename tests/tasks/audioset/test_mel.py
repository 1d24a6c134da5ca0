"""The log-mel spectrogram against a frame-by-frame SciPy computation."""

import math

import numpy as np
import pytest
from scipy import signal

from experiments.tasks.audioset import mel


def _reference_log_mel(x, sample_rate, window, hop, nfft, num_bins, low, high, offset):
  """Independent: one frame at a time, SciPy's window, filters built bin by bin."""
  hann = signal.get_window('hann', window)  # Periodic by default.
  to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
  from_mel = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  step = (to_mel(high) - to_mel(low)) / (num_bins + 1)
  points = [from_mel(to_mel(low) + i * step) for i in range(num_bins + 2)]
  filters = np.zeros((num_bins, nfft // 2 + 1))
  for m in range(num_bins):
    a, b, c = points[m], points[m + 1], points[m + 2]
    for k in range(nfft // 2 + 1):
      f = k * sample_rate / nfft
      if a < f <= b:
        filters[m, k] = (f - a) / (b - a)
      elif b < f < c:
        filters[m, k] = (c - f) / (c - b)
  rows = []
  for t in range(len(x) // hop):
    frame = np.zeros(window)
    chunk = x[t * hop : t * hop + window]
    frame[: len(chunk)] = chunk
    power = np.abs(np.fft.fft(frame * hann, nfft)[: nfft // 2 + 1]) ** 2
    rows.append(np.log(filters @ power + offset))
  return np.array(rows)


def test_matches_an_independent_implementation_on_a_chirp_plus_tone():
  sample_rate = 8000
  t = np.arange(2003) / sample_rate  # Not a multiple of the hop: zeros past the end.
  x = 0.5 * signal.chirp(t, f0=200, t1=t[-1], f1=3000) + 0.3 * np.sin(
    2 * np.pi * 1234 * t
  )
  params = mel.MelParams(
    sample_rate=sample_rate,
    window_length=200,
    hop_length=80,
    num_mel_bins=23,
    fft_length=0,
    lower_edge_hz=60.0,
    upper_edge_hz=3800.0,
    log_offset=1e-6,
  )
  got = mel.log_mel_spectrogram(x, params)
  assert params.fft_size == 256
  assert got.shape == (2003 // 80, 23) == (25, 23)
  want = _reference_log_mel(x, sample_rate, 200, 80, 256, 23, 60.0, 3800.0, 1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_tone_peaks_in_the_band_centred_nearest_its_frequency():
  params = mel.MelParams(
    sample_rate=16000, window_length=400, hop_length=160, num_mel_bins=40
  )
  centres = mel.mel_to_hz(np.linspace(mel.hz_to_mel(0), mel.hz_to_mel(8000), 42))[1:-1]
  for f0 in (300.0, 1000.0, 4100.0):
    x = np.sin(2 * np.pi * f0 * np.arange(16000) / 16000)
    spec = mel.log_mel_spectrogram(x, params)
    assert spec.shape == (100, 40)
    assert np.argmax(spec[50]) == np.argmin(np.abs(centres - f0))


def test_batched_equals_one_at_a_time():
  params = mel.MelParams(
    sample_rate=4000, window_length=64, hop_length=32, num_mel_bins=7
  )
  x = np.random.default_rng(0).normal(size=(3, 5, 321))
  batched = mel.log_mel_spectrogram(x, params)
  assert batched.shape == (3, 5, 10, 7)
  np.testing.assert_allclose(batched[2, 4], mel.log_mel_spectrogram(x[2, 4], params))


def test_bad_parameters_name_the_field():
  with pytest.raises(ValueError, match='hop_length'):
    mel.MelParams(sample_rate=8000, window_length=200, hop_length=0, num_mel_bins=8)
  with pytest.raises(ValueError, match='upper_edge_hz'):
    mel.MelParams(
      sample_rate=8000,
      window_length=200,
      hop_length=80,
      num_mel_bins=8,
      upper_edge_hz=5000,
    )
