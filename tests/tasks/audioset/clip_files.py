"""Writers of small real audio/video files and AudioSet CSVs for the tests."""

import os
import wave

import numpy as np

CLASS_CSV = (
  'index,mid,display_name\n'
  '0,/m/09x0r,"Speech"\n'
  '1,/m/05zppz,"Male speech, man speaking"\n'
  '2,/m/04rlf,"Music"\n'
)


def write_wav(path: str, samples: np.ndarray, sample_rate: int) -> None:
  """Mono 16-bit PCM WAV of int16 `samples`, with the standard library."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with wave.open(path, 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(sample_rate)
    f.writeframes(np.asarray(samples, '<i2').tobytes())


def write_flac(path: str, channels: np.ndarray, sample_rate: int) -> None:
  """FLAC of int16 `channels` `[C, S]` (C = 1 or 2), with PyAV."""
  import av  # pylint: disable=g-import-not-at-top

  os.makedirs(os.path.dirname(path), exist_ok=True)
  layout = 'mono' if len(channels) == 1 else 'stereo'
  with av.open(path, 'w') as container:
    stream = container.add_stream('flac', rate=sample_rate, layout=layout)
    interleaved = np.asarray(channels, np.int16).T.reshape(1, -1).copy()
    frame = av.AudioFrame.from_ndarray(interleaved, format='s16', layout=layout)
    frame.sample_rate = sample_rate
    for packet in stream.encode(frame):
      container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
  """H.264 MP4 of uint8 RGB `frames` `[T, H, W, 3]` (no audio), with PyAV."""
  import av  # pylint: disable=g-import-not-at-top

  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv444p'
    stream.options = {'crf': '0'}  # Lossless: colours come back exactly enough.
    for image in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_text(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
