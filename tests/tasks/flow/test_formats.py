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


def _filter_rows(image, kinds):
  """PNG scanlines of `image` [h, w, 3] uint16, row y filtered with `kinds[y]`.

  A per-byte reference implementation of the PNG spec's filters (section 9): the
  filtered byte is the byte minus the prediction from a (left, 6 bytes back), b (above)
  and c (above-left), modulo 256.
  """
  height, width, _ = image.shape
  rows = image.astype('>u2').reshape(height, width * 3).view(np.uint8).astype(int)
  out = []
  for y, kind in enumerate(kinds):
    line = [kind]
    for i in range(width * 6):
      a = rows[y, i - 6] if i >= 6 else 0
      b = rows[y - 1, i] if y > 0 else 0
      c = rows[y - 1, i - 6] if y > 0 and i >= 6 else 0
      p = a + b - c
      if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c):
        paeth = a
      elif abs(p - b) <= abs(p - c):
        paeth = b
      else:
        paeth = c
      prediction = [0, a, b, (a + b) // 2, paeth][kind]
      line.append((rows[y, i] - prediction) % 256)
    out.append(line)
  return np.array(out, np.uint8).reshape(height, 1 + width * 6).tobytes()


def _png16(image, raw, interlace=0):
  height, width, _ = image.shape
  header = struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, interlace)
  return (
    formats._PNG_SIGNATURE
    + formats._png_chunk(b'IHDR', header)
    + formats._png_chunk(b'IDAT', zlib.compress(raw))
    + formats._png_chunk(b'IEND', b'')
  )


def test_png_average_and_paeth_rows_by_hand(tmp_path):
  # Row 0 Paeth (predicts `a` on the first row), row 1 Average.
  image = np.array(
    [
      [[32768 + 96, 32768 - 16, 1], [32768 - 640, 32768 + 3, 0]],
      [[32768 + 97, 32768 - 17, 1], [65535, 0, 1]],
    ],
    np.uint16,
  )
  path = tmp_path / 'avg_paeth.png'
  path.write_bytes(_png16(image, _filter_rows(image, [4, 3])))
  flow, valid = formats.read_kitti_flow(str(path))
  # u = (R - 2^15) / 64, v = (G - 2^15) / 64, valid = B > 0.
  np.testing.assert_array_equal(
    flow,
    [[[1.5, -0.25], [-10.0, 3 / 64]], [[97 / 64, -17 / 64], [32767 / 64, -512.0]]],
  )
  np.testing.assert_array_equal(valid, [[1, 0], [1, 1]])


@pytest.mark.parametrize('interlace', [0, 1])
def test_png_every_filter_type_decodes(tmp_path, interlace):
  rng = np.random.default_rng(interlace)
  # Values near the extremes and near each other, so Paeth picks a, b and c.
  image = rng.integers(0, 65536, size=(7, 5, 3)).astype(np.uint16)
  image[2:4] = rng.integers(32700, 32800, size=(2, 5, 3))
  kinds = [0, 1, 2, 3, 4, 3, 4]
  if interlace:  # Adam7: seven sub-images, each filtered on its own, concatenated.
    raw = b''
    for x0, y0, dx, dy in formats._ADAM7:
      sub = image[y0::dy, x0::dx]
      if sub.size:
        raw += _filter_rows(sub, [kinds[y % 5] for y in range(sub.shape[0])])
  else:
    raw = _filter_rows(image, kinds)
    assert raw[:: 1 + 5 * 6] == bytes(kinds)
  path = tmp_path / 'filters.png'
  path.write_bytes(_png16(image, raw, interlace))
  flow, valid = formats.read_kitti_flow(str(path))
  np.testing.assert_array_equal(flow * 64 + 32768, image[..., :2])
  np.testing.assert_array_equal(valid, image[..., 2] > 0)


def test_png_bad_filter_type_and_length_name_the_file(tmp_path):
  image = np.zeros((3, 5, 3), np.uint16)
  raw = bytearray(_filter_rows(image, [0, 1, 2]))
  raw[31] = 7  # Row 1's filter type.
  path = tmp_path / 'bad.png'
  path.write_bytes(_png16(image, bytes(raw)))
  with pytest.raises(ValueError, match=r'bad\.png.*scanline 1 has filter type 7'):
    formats.read_kitti_flow(str(path))
  path.write_bytes(_png16(image, bytes(raw[:-1])))
  with pytest.raises(ValueError, match=r'bad\.png.*truncated'):
    formats.read_kitti_flow(str(path))


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
