"""Flow file formats and dataset folders, on files written here with known contents."""

import os
import struct
import zlib

import numpy as np
import pytest

from experiments.tasks.flow import datasets
from experiments.tasks.flow import formats


def test_flo_bytes_are_the_middlebury_layout(tmp_path):
  flow = np.array(
    [[[1.5, -2.0], [0.25, 3.0], [7.0, 8.0]], [[-1.0, 0.5], [2.0, -4.5], [0.0, 1.0]]],
    np.float32,
  )  # H=2, W=3.
  path = str(tmp_path / 'a.flo')
  formats.write_flo(path, flow)
  data = open(path, 'rb').read()
  assert data[:4] == b'PIEH'
  assert struct.unpack('<fii', data[:12]) == (202021.25, 3, 2)
  # u, v interleaved row by row.
  assert struct.unpack('<4f', data[12:28]) == (1.5, -2.0, 0.25, 3.0)
  assert len(data) == 12 + 2 * 3 * 2 * 4
  np.testing.assert_array_equal(formats.read_flo(path), flow)


def test_flo_errors_name_the_file(tmp_path):
  good = str(tmp_path / 'good.flo')
  formats.write_flo(good, np.zeros((3, 5, 2), np.float32))
  data = open(good, 'rb').read()
  cases = {
    'magic.flo': (b'PIEH'[::-1] + data[4:], 'magic'),
    'short.flo': (data[:-4], 'truncated'),
    'long.flo': (data + b'\0\0\0\0', 'trailing'),
    'tiny.flo': (data[:6], 'header'),
  }
  for name, (content, message) in cases.items():
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
      formats.read_flo(str(path))
    assert name in str(info.value)


def test_kitti_png_encoding_by_hand(tmp_path):
  flow = np.zeros((3, 5, 2), np.float32)
  flow[1, 2] = [2.5, -1.25]
  valid = np.ones((3, 5), np.float32)
  valid[0, 4] = 0
  path = str(tmp_path / '000000_10.png')
  formats.write_kitti_flow(path, flow, valid)
  raw = _decode_filter0_png(open(path, 'rb').read())
  assert raw.dtype == np.uint16 and raw.shape == (3, 5, 3)
  # u = (R - 2^15) / 64: 2.5 -> 32928, -1.25 -> 32688; zero flow -> 32768.
  assert raw[1, 2].tolist() == [32768 + 160, 32768 - 80, 1]
  assert raw[0, 4].tolist() == [32768, 32768, 0]
  got_flow, got_valid = formats.read_kitti_flow(path)
  np.testing.assert_array_equal(got_flow, flow)
  np.testing.assert_array_equal(got_valid, valid)
  got_flow, got_valid = formats.read_flow(path)
  np.testing.assert_array_equal(got_flow, flow)


def _decode_filter0_png(data):
  """Independent reader of a 16-bit RGB PNG whose rows all use filter 0."""
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and data[12:16] == b'IHDR'
  width, height, depth, colour = struct.unpack('>IIBB', data[16:26])
  assert (depth, colour) == (16, 2)
  idat = data.index(b'IDAT')
  (length,) = struct.unpack('>I', data[idat - 4 : idat])
  raw = zlib.decompress(data[idat + 4 : idat + 4 + length])
  rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * 6)
  assert not rows[:, 0].any()
  return rows[:, 1:].copy().view('>u2').reshape(height, width, 3).astype(np.uint16)


def test_png_sub_and_up_filters_decode(tmp_path):
  image = np.random.default_rng(0).integers(0, 65536, size=(3, 5, 3), dtype=np.uint16)
  rows = image.astype('>u2').reshape(3, 15).view(np.uint8).astype(np.int64)
  raw = []
  for y, kind in enumerate([1, 2, 1]):
    if kind == 1:  # Sub: byte minus the byte 6 places to the left.
      left = np.concatenate([np.zeros(6, np.int64), rows[y, :-6]])
      raw.append(np.concatenate([[1], (rows[y] - left) % 256]))
    else:  # Up: byte minus the byte above.
      raw.append(np.concatenate([[2], (rows[y] - rows[y - 1]) % 256]))
  encoded = formats._encode_png16_rgb(image)
  idat = encoded.index(b'IDAT')
  (length,) = struct.unpack('>I', encoded[idat - 4 : idat])
  payload = zlib.compress(np.concatenate(raw).astype(np.uint8).tobytes())
  chunk = struct.pack('>I', len(payload)) + b'IDAT' + payload
  chunk += struct.pack('>I', zlib.crc32(b'IDAT' + payload))
  filtered = encoded[: idat - 4] + chunk + encoded[idat + 8 + length :]
  path = tmp_path / 'filtered.png'
  path.write_bytes(filtered)
  image[..., 2] = image[..., 2] > 0
  flow, valid = formats.read_kitti_flow(str(path))
  np.testing.assert_array_equal(valid, image[..., 2])
  np.testing.assert_array_equal(flow * 64 + 32768, image[..., :2])


def test_image_reader_refuses_bad_frames(tmp_path):
  from PIL import Image

  rgb = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
  formats.write_image(str(tmp_path / 'ok.png'), rgb)
  formats.write_image(str(tmp_path / 'ok.ppm'), rgb)
  np.testing.assert_array_equal(formats.read_image(str(tmp_path / 'ok.png')), rgb)
  np.testing.assert_array_equal(formats.read_image(str(tmp_path / 'ok.ppm')), rgb)
  assert formats.image_size(str(tmp_path / 'ok.ppm')) == (3, 5)
  Image.fromarray(rgb[..., 0]).save(tmp_path / 'grey.png')
  Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / 'rgba.png')
  formats.write_kitti_flow(str(tmp_path / 'deep.png'), np.zeros((3, 5, 2)))
  (tmp_path / 'text.png').write_text('hello')
  for name, message in [
    ('grey.png', 'grey'),
    ('rgba.png', 'RGBA'),
    ('deep.png', '16-bit'),
    ('text.png', 'not a readable image'),
  ]:
    with pytest.raises(ValueError, match=message) as info:
      formats.read_image(str(tmp_path / name))
    assert name in str(info.value)
  with pytest.raises(ValueError, match='16-bit RGB PNG'):
    formats.read_kitti_flow(str(tmp_path / 'grey.png'))
  with pytest.raises(ValueError, match='unknown flow format'):
    formats.read_flow(str(tmp_path / 'ok.ppm'))


def _pair(seed, size=(3, 5)):
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, size=(2,) + size + (3,), dtype=np.uint8)
  flow = rng.normal(size=size + (2,)).astype(np.float32)
  return frames, flow


def test_flying_chairs_split_file(tmp_path):
  os.makedirs(tmp_path / 'data')
  written = {}
  for i in range(1, 4):
    frames, flow = _pair(i)
    formats.write_image(str(tmp_path / 'data' / f'{i:05d}_img1.ppm'), frames[0])
    formats.write_image(str(tmp_path / 'data' / f'{i:05d}_img2.ppm'), frames[1])
    formats.write_flo(str(tmp_path / 'data' / f'{i:05d}_flow.flo'), flow)
    written[i] = (frames, flow)
  (tmp_path / 'FlyingChairs_train_val.txt').write_text('1\n2\n1\n')
  train = datasets.list_examples('flying_chairs', str(tmp_path), 'train')
  test = datasets.list_examples('flying_chairs', str(tmp_path), 'test')
  assert [os.path.basename(e.flow) for e in train] == ['00001_flow.flo', '00003_flow.flo']
  assert [os.path.basename(e.frame2) for e in test] == ['00002_img2.ppm']
  example = datasets.load_example(test[0])
  np.testing.assert_array_equal(example['frames'], written[2][0])
  np.testing.assert_array_equal(example['flow'], written[2][1])
  np.testing.assert_array_equal(example['valid'], np.ones((3, 5)))
  (tmp_path / 'FlyingChairs_train_val.txt').write_text('1\n2\n')
  with pytest.raises(ValueError, match='2 lines but'):
    datasets.list_examples('flying_chairs', str(tmp_path), 'train')


def test_sintel_passes_and_kitti_and_autoflow(tmp_path):
  sintel = tmp_path / 'sintel'
  for name in ('clean', 'final', 'flow'):
    os.makedirs(sintel / 'training' / name / 'alley_1')
  for n in (1, 2, 3):
    frames, flow = _pair(10 + n)
    for name in ('clean', 'final'):
      formats.write_image(
        str(sintel / 'training' / name / 'alley_1' / f'frame_{n:04d}.png'), frames[0]
      )
    if n < 3:
      formats.write_flo(
        str(sintel / 'training' / 'flow' / 'alley_1' / f'frame_{n:04d}.flo'), flow
      )
  both = datasets.list_examples('sintel', str(sintel), 'test', sintel_passes='both')
  assert len(both) == 4
  assert both[0].frame1.endswith(os.path.join('clean', 'alley_1', 'frame_0001.png'))
  assert both[1].frame2.endswith(os.path.join('clean', 'alley_1', 'frame_0003.png'))
  assert both[2].frame1.endswith(os.path.join('final', 'alley_1', 'frame_0001.png'))
  assert both[3].flow == both[1].flow
  assert len(datasets.list_examples('sintel', str(sintel), 'train', 'final')) == 2

  kitti = tmp_path / 'kitti'
  os.makedirs(kitti / 'training' / 'image_2')
  os.makedirs(kitti / 'training' / 'flow_occ')
  frames, flow = _pair(20)
  valid = np.zeros((3, 5))
  valid[1:, 2:] = 1
  formats.write_image(str(kitti / 'training' / 'image_2' / '000007_10.png'), frames[0])
  formats.write_image(str(kitti / 'training' / 'image_2' / '000007_11.png'), frames[1])
  formats.write_kitti_flow(
    str(kitti / 'training' / 'flow_occ' / '000007_10.png'), flow, valid
  )
  (example,) = datasets.list_examples('kitti', str(kitti), 'train')
  loaded = datasets.load_example(example)
  np.testing.assert_array_equal(loaded['frames'], frames)
  np.testing.assert_allclose(loaded['flow'], np.round(flow * 64) / 64)
  np.testing.assert_array_equal(loaded['valid'], valid)

  auto = tmp_path / 'autoflow'
  for i in range(3):
    folder = auto / 'static_40k' / f'table_{i}'
    os.makedirs(folder)
    frames, flow = _pair(30 + i)
    formats.write_image(str(folder / 'im0.png'), frames[0])
    formats.write_image(str(folder / 'im1.png'), frames[1])
    formats.write_flo(str(folder / 'forward.flo'), flow)
  test = datasets.list_examples('autoflow', str(auto), 'test')
  train = datasets.list_examples('autoflow', str(auto), 'train')
  assert [os.path.basename(os.path.dirname(e.flow)) for e in test] == ['table_0']
  assert len(train) == 2
  np.testing.assert_array_equal(datasets.load_example(train[1])['flow'], _pair(32)[1])

  os.remove(kitti / 'training' / 'image_2' / '000007_11.png')
  with pytest.raises(ValueError, match='000007_11.png'):
    datasets.list_examples('kitti', str(kitti), 'train')
  with pytest.raises(ValueError, match='does not exist'):
    datasets.list_examples('sintel', str(tmp_path / 'nowhere'), 'train')
