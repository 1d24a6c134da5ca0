"""Log-mel spectrograms of mono waveforms, computed in NumPy in the input pipeline.

The spectrogram (parameters in `MelParams`):
  1. Frames: `F = S // hop_length` frames; frame t holds samples
     `[t * hop_length, t * hop_length + window_length)`, zeros past the end.
  2. Each frame is multiplied by a periodic Hann window of `window_length` samples and
     zero-padded to `fft_length` (the next power of two >= `window_length` when 0);
     its power spectrum `|rfft|^2` has `fft_length // 2 + 1` bins at frequencies
     `k * sample_rate / fft_length`.
  3. Mel bands: `num_mel_bins` triangular filters on the HTK mel scale
     `mel(f) = 2595 log10(1 + f / 700)`, with `num_mel_bins + 2` points equally spaced
     in mel from `lower_edge_hz` to `upper_edge_hz` (0 = Nyquist); filter m rises
     linearly (in Hz) from point m to 1 at point m + 1 and falls to 0 at point m + 2.
  4. `log(mel_power + log_offset)`.

Shape glossary:
  S: samples; F: frames; M: mel bins; Q = fft_length // 2 + 1 frequency bins.
"""

import dataclasses

import numpy as np

from experiments.training import errors


@dataclasses.dataclass(frozen=True)
class MelParams:
  """Parameters of `log_mel_spectrogram` (see the module docstring)."""

  sample_rate: int
  window_length: int
  hop_length: int
  num_mel_bins: int
  fft_length: int = 0
  lower_edge_hz: float = 0.0
  upper_edge_hz: float = 0.0
  log_offset: float = 1e-6

  def __post_init__(self):
    for name in ('sample_rate', 'window_length', 'hop_length', 'num_mel_bins'):
      if int(getattr(self, name)) <= 0:
        raise errors.ConfigError(
          f'mel {name} must be a positive integer, got {getattr(self, name)!r}.'
        )
    if self.fft_length and self.fft_length < self.window_length:
      raise errors.ConfigError(
        f'mel fft_length={self.fft_length} is shorter than window_length='
        f'{self.window_length}.'
      )
    if not 0 <= self.lower_edge_hz < self.upper_hz <= self.sample_rate / 2:
      raise errors.ConfigError(
        f'mel edges must satisfy 0 <= lower_edge_hz ({self.lower_edge_hz}) < '
        f'upper_edge_hz ({self.upper_hz}) <= sample_rate / 2 ({self.sample_rate / 2}).'
      )
    if self.log_offset <= 0:
      raise errors.ConfigError(f'mel log_offset must be > 0, got {self.log_offset!r}.')

  @property
  def fft_size(self) -> int:
    if self.fft_length:
      return int(self.fft_length)
    return 1 << (int(self.window_length) - 1).bit_length()

  @property
  def upper_hz(self) -> float:
    return float(self.upper_edge_hz) if self.upper_edge_hz else self.sample_rate / 2

  def num_frames(self, num_samples: int) -> int:
    return num_samples // self.hop_length

  @classmethod
  def from_config(cls, mel_config) -> 'MelParams':
    return cls(**{f.name: mel_config[f.name] for f in dataclasses.fields(cls)})


def hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(params: MelParams) -> np.ndarray:
  """`[Q, M]` weights mapping a power spectrum to mel bands."""
  edges = mel_to_hz(
    np.linspace(
      hz_to_mel(params.lower_edge_hz), hz_to_mel(params.upper_hz), params.num_mel_bins + 2
    )
  )
  freqs = np.arange(params.fft_size // 2 + 1) * params.sample_rate / params.fft_size
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # [M] each.
  rising = (freqs[:, None] - lower) / (center - lower)
  falling = (upper - freqs[:, None]) / (upper - center)
  return np.maximum(0.0, np.minimum(rising, falling))


def hann_window(length: int) -> np.ndarray:
  """Periodic Hann window `0.5 - 0.5 cos(2 pi n / length)`."""
  return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def power_spectrogram(waveforms: np.ndarray, params: MelParams) -> np.ndarray:
  """`[..., S]` -> `[..., F, Q]` power spectra of the windowed frames."""
  waveforms = np.asarray(waveforms, np.float64)
  num_samples = waveforms.shape[-1]
  num_frames = params.num_frames(num_samples)
  if num_frames < 1:
    raise errors.ConfigError(
      f'{num_samples} samples give no frame with hop_length={params.hop_length}.'
    )
  needed = (num_frames - 1) * params.hop_length + params.window_length
  padding = [(0, 0)] * (waveforms.ndim - 1) + [(0, max(0, needed - num_samples))]
  padded = np.pad(waveforms, padding)
  starts = np.arange(num_frames) * params.hop_length
  frames = padded[..., starts[:, None] + np.arange(params.window_length)]
  spectrum = np.fft.rfft(frames * hann_window(params.window_length), n=params.fft_size)
  return np.abs(spectrum) ** 2


def log_mel_spectrogram(waveforms: np.ndarray, params: MelParams) -> np.ndarray:
  """Log-mel spectrogram.

  Args:
    waveforms: `[..., S]` mono samples (any leading dims).
    params: the spectrogram's parameters.

  Returns:
    `[..., F, M]` float32 `log(mel power + log_offset)`, `F = S // hop_length`.
  """
  mel_power = power_spectrogram(waveforms, params) @ mel_filterbank(params)
  return np.log(mel_power + params.log_offset).astype(np.float32)
