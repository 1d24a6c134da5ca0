"""Optical-flow file formats: Middlebury `.flo`, KITTI 16-bit PNG flow, RGB frames.

`.flo` (Middlebury): the float32 magic 202021.25 (bytes `PIEH`), int32 width, int32
height, then `H * W * 2` float32 values, `u` and `v` interleaved row by row, all
little-endian. Flow `(u, v)` at pixel `(y, x)` of frame 1 points to `(y + v, x + u)`
in frame 2.

KITTI 2015 flow PNG: 16-bit, 3 channels; `u = (R - 2**15) / 64`,
`v = (G - 2**15) / 64`, `B = 1` where the ground truth is valid (0 elsewhere).

Frames are 8-bit RGB images (PNG, PPM, JPEG...). Grey, 16-bit and 4-channel images are
refused with an error naming the file, as is anything that is not an image.

Shape glossary:
  H, W: image height and width.
"""

import os
import struct
from typing import Tuple
import zlib

import numpy as np

from experiments.training import errors

FLO_MAGIC = 202021.25
_FLO_HEADER = struct.Struct('<fii')
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_COLOUR_TYPES = {0: 'grey', 2: 'RGB', 3: 'palette', 4: 'grey+alpha', 6: 'RGBA'}
KITTI_OFFSET = 2.0**15
KITTI_SCALE = 64.0


def read_flo(path: str) -> np.ndarray:
  """Reads a Middlebury `.flo` file.

  Args:
    path: the file.

  Returns:
    `[H, W, 2]` float32 flow `(u, v)`.

  Raises:
    ValueError: wrong magic, a truncated file, or a size that does not match the header.
  """
  with open(path, 'rb') as f:
    data = f.read()
  if len(data) < _FLO_HEADER.size:
    raise errors.DataError(
      f'{path!r} is not a .flo file: {len(data)} bytes, shorter than the '
      f'{_FLO_HEADER.size}-byte header.'
    )
  magic, width, height = _FLO_HEADER.unpack_from(data)
  if magic != FLO_MAGIC:
    raise errors.DataError(
      f'{path!r} is not a .flo file: magic {magic!r} (bytes {data[:4]!r}), '
      f'expected {FLO_MAGIC} (b"PIEH").'
    )
  if width <= 0 or height <= 0:
    raise errors.DataError(f'{path!r}: invalid .flo size width={width}, height={height}.')
  expected = _FLO_HEADER.size + 4 * 2 * width * height
  if len(data) != expected:
    kind = 'truncated' if len(data) < expected else 'has trailing bytes'
    raise errors.DataError(
      f'{path!r} {kind}: {len(data)} bytes, but the header ({width}x{height}) '
      f'needs {expected}.'
    )
  flow = np.frombuffer(data, dtype='<f4', offset=_FLO_HEADER.size)
  return flow.reshape(height, width, 2).astype(np.float32)


def write_flo(path: str, flow: np.ndarray) -> None:
  """Writes `flow` `[H, W, 2]` as a Middlebury `.flo` file."""
  flow = np.asarray(flow)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f'flow for {path!r} must have shape [H, W, 2], got {flow.shape}.')
  height, width, _ = flow.shape
  with open(path, 'wb') as f:
    f.write(_FLO_HEADER.pack(FLO_MAGIC, width, height))
    f.write(np.ascontiguousarray(flow, dtype='<f4').tobytes())


def _png_header(path: str, data: bytes):
  """(bit depth, colour type) from a PNG's IHDR chunk, or None if not a PNG."""
  if not data.startswith(_PNG_SIGNATURE):
    return None
  if len(data) < 33 or data[12:16] != b'IHDR':
    raise errors.DataError(f'{path!r} is a truncated or corrupt PNG (no IHDR chunk).')
  return data[24], data[25]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
  return (
    struct.pack('>I', len(payload))
    + kind
    + payload
    + struct.pack('>I', zlib.crc32(kind + payload) & 0xFFFFFFFF)
  )


def _encode_png16_rgb(image: np.ndarray) -> bytes:
  """A 16-bit RGB PNG of `image` `[H, W, 3]` uint16 (filter type 0 on every row)."""
  height, width, _ = image.shape
  rows = image.astype('>u2').reshape(height, width * 3).view(np.uint8)
  raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
  header = struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0)
  return (
    _PNG_SIGNATURE
    + _png_chunk(b'IHDR', header)
    + _png_chunk(b'IDAT', zlib.compress(raw, 6))
    + _png_chunk(b'IEND', b'')
  )


# Adam7 passes: (first column, first row, column step, row step).
_ADAM7 = (
  (0, 0, 8, 8),
  (4, 0, 8, 8),
  (0, 4, 4, 8),
  (2, 0, 4, 4),
  (0, 2, 2, 4),
  (1, 0, 2, 2),
)
_ADAM7 += ((0, 1, 1, 2),)
_PNG_FILTERS = ('None', 'Sub', 'Up', 'Average', 'Paeth')


def _unfilter(path: str, rows: np.ndarray, bpp: int) -> np.ndarray:
  """Reverses the PNG filters of scanlines (PNG spec section 9).

  Every filter predicts a byte from `a` (the byte `bpp` places to the left), `b` (the
  byte above) and `c` (above-left), all reconstructed values and 0 outside the image:
  None 0, Sub `a`, Up `b`, Average `floor((a + b) / 2)`, Paeth the one of `a, b, c`
  closest to `a + b - c` (ties in that order). A pixel depends only on its left, upper
  and upper-left neighbours, so all pixels on one anti-diagonal `y + x = d` are
  reconstructed together (H + W - 1 vectorised steps).

  Args:
    path: the file (for errors).
    rows: `[H, 1 + W * bpp]` uint8: each scanline's filter type, then its bytes.
    bpp: bytes per pixel.

  Returns:
    `[H, W * bpp]` uint8 reconstructed bytes.
  """
  height = rows.shape[0]
  width = (rows.shape[1] - 1) // bpp
  types = rows[:, 0].astype(np.int64)
  bad = np.flatnonzero(types > 4)
  if bad.size:
    raise errors.DataError(
      f'{path!r} is a corrupt PNG: scanline {bad[0]} has filter type '
      f'{types[bad[0]]} (valid: 0-4, {", ".join(_PNG_FILTERS)}).'
    )
  filtered = rows[:, 1:].reshape(height, width, bpp).astype(np.int32)
  # Skewed layout: pixel (y, x) at [y + x + 2, y + 1], so diagonal d is the contiguous
  # slice [d + 2] and its left (a), upper (b), upper-left (c) neighbours are slices
  # d + 1 (rows y + 1 and y) and d (row y); the padding stays 0.
  ys, xs = np.mgrid[:height, :width]
  skewed_filtered = np.zeros((height + width + 1, height + 1, bpp), np.int32)
  skewed_filtered[ys + xs + 2, ys + 1] = filtered
  out = np.zeros_like(skewed_filtered)
  inside = np.zeros((height + width + 1, height + 1, 1), bool)
  inside[ys + xs + 2, ys + 1] = True
  t = np.concatenate([[0], types])[:, None]
  sub, up, average, paeth_rows = t == 1, t == 2, t == 3, t == 4
  for k in range(2, height + width + 1):
    a = out[k - 1, 1:]
    b = out[k - 1, :-1]
    c = out[k - 2, :-1]
    prediction = np.where(sub[1:], a, 0)
    prediction += np.where(up[1:], b, 0)
    prediction += np.where(average[1:], (a + b) >> 1, 0)
    if paeth_rows.any():
      p = a + b - c
      pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
      paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
      prediction += np.where(paeth_rows[1:], paeth, 0)
    out[k, 1:] = np.where(inside[k, 1:], (skewed_filtered[k, 1:] + prediction) & 255, 0)
  return out[ys + xs + 2, ys + 1].reshape(height, width * bpp).astype(np.uint8)


def _decode_png16_rgb(path: str, data: bytes) -> np.ndarray:
  """`[H, W, 3]` uint16 from a 16-bit RGB PNG (any filter types, Adam7 or not)."""
  width, height = struct.unpack('>II', data[16:24])
  interlace = data[28]
  if interlace not in (0, 1):
    raise errors.DataError(f'{path!r} is a corrupt PNG: interlace method {interlace}.')
  chunks, offset = [], 8
  while offset + 8 <= len(data):
    (length,) = struct.unpack('>I', data[offset : offset + 4])
    kind = data[offset + 4 : offset + 8]
    if kind == b'IDAT':
      chunks.append(data[offset + 8 : offset + 8 + length])
    offset += 12 + length
  try:
    raw = zlib.decompress(b''.join(chunks))
  except zlib.error as e:
    raise errors.DataError(f'{path!r} is a corrupt PNG: {e}') from e
  bpp = 6
  passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
  shapes = [
    (-(-(height - y0) // dy), -(-(width - x0) // dx)) for x0, y0, dx, dy in passes
  ]
  needed = sum(h * (1 + w * bpp) for h, w in shapes if h and w)
  if len(raw) != needed:
    kind = 'truncated' if len(raw) < needed else 'corrupt'
    raise errors.DataError(
      f'{path!r} is a {kind} PNG: {len(raw)} image bytes, {width}x{height} needs '
      f'{needed}.'
    )
  image = np.zeros((height, width * bpp), np.uint8).reshape(height, width, bpp)
  start = 0
  for (x0, y0, dx, dy), (h, w) in zip(passes, shapes):
    if not (h and w):
      continue  # An empty pass has no scanlines at all.
    size = h * (1 + w * bpp)
    rows = np.frombuffer(raw, np.uint8, size, start).reshape(h, 1 + w * bpp)
    image[y0::dy, x0::dx] = _unfilter(path, rows, bpp).reshape(h, w, bpp)
    start += size
  return (
    image.reshape(height, width * bpp)
    .view('>u2')
    .reshape(height, width, 3)
    .astype(np.uint16)
  )


def read_kitti_flow(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a KITTI 16-bit PNG flow map.

  Args:
    path: the PNG file.

  Returns:
    `(flow [H, W, 2] float32, valid [H, W] float32 in {0, 1})`.

  Raises:
    ValueError: not a PNG, or not a 16-bit 3-channel PNG.
  """
  with open(path, 'rb') as f:
    data = f.read()
  header = _png_header(path, data)
  if header is None:
    raise errors.DataError(f'{path!r} is not a PNG file (KITTI flow is a 16-bit PNG).')
  depth, colour = header
  if depth != 16 or colour != 2:
    raise errors.DataError(
      f'{path!r} is a {depth}-bit {_PNG_COLOUR_TYPES.get(colour, colour)} PNG; a '
      'KITTI flow map is a 16-bit RGB PNG.'
    )
  image = _decode_png16_rgb(path, data)
  image = image.astype(np.float64)
  flow = ((image[..., :2] - KITTI_OFFSET) / KITTI_SCALE).astype(np.float32)
  valid = (image[..., 2] > 0).astype(np.float32)
  return flow, valid


def write_kitti_flow(path: str, flow: np.ndarray, valid: np.ndarray = None) -> None:
  """Writes `flow` `[H, W, 2]` (and `valid` `[H, W]`) as a KITTI 16-bit PNG."""
  flow = np.asarray(flow, np.float64)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f'flow for {path!r} must have shape [H, W, 2], got {flow.shape}.')
  if valid is None:
    valid = np.ones(flow.shape[:2])
  encoded = np.round(flow * KITTI_SCALE + KITTI_OFFSET)
  if encoded.min(initial=0) < 0 or encoded.max(initial=0) > 65535:
    raise ValueError(
      f'flow for {path!r} exceeds the KITTI range of +-{KITTI_OFFSET / KITTI_SCALE} px.'
    )
  image = np.concatenate(
    [encoded, (np.asarray(valid) > 0)[..., None].astype(np.float64)], axis=-1
  ).astype(np.uint16)
  with open(path, 'wb') as f:
    f.write(_encode_png16_rgb(image))


def read_flow(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a ground truth: `.flo` (all pixels valid) or a KITTI PNG.

  Returns:
    `(flow [H, W, 2] float32, valid [H, W] float32)`.
  """
  extension = os.path.splitext(path)[1].lower()
  if extension == '.flo':
    flow = read_flo(path)
    return flow, np.ones(flow.shape[:2], np.float32)
  if extension == '.png':
    return read_kitti_flow(path)
  raise errors.DataError(
    f'{path!r}: unknown flow format {extension!r}; expected .flo or a KITTI .png.'
  )


def read_image(path: str) -> np.ndarray:
  """Reads an 8-bit RGB frame.

  Args:
    path: a PNG, PPM, JPEG or other image Pillow reads.

  Returns:
    `[H, W, 3]` uint8.

  Raises:
    ValueError: not an image, or a grey, 16-bit, palette-less 4-channel image.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from PIL import UnidentifiedImageError  # pylint: disable=g-import-not-at-top

  with open(path, 'rb') as f:
    data = f.read()
  header = _png_header(path, data)
  if header is not None:
    depth, colour = header
    if depth == 16:
      raise errors.DataError(
        f'{path!r} is a 16-bit PNG; frames must be 8-bit RGB images.'
      )
    if colour in (0, 4, 6):
      raise errors.DataError(
        f'{path!r} is a {_PNG_COLOUR_TYPES[colour]} PNG; frames must be 8-bit RGB.'
      )
  import io  # pylint: disable=g-import-not-at-top

  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise errors.DataError(f'{path!r} is not a readable image: {e}') from e
  if image.mode == 'P' and 'transparency' not in image.info:
    image = image.convert('RGB')
  if image.mode != 'RGB':
    raise errors.DataError(
      f'{path!r} is a {image.mode!r} image ({len(image.getbands())} channel(s)); '
      'frames must be 8-bit RGB.'
    )
  return np.asarray(image, dtype=np.uint8)


def image_size(path: str) -> Tuple[int, int]:
  """`(H, W)` of an image, reading only its header."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as image:
      width, height = image.size
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DataError(f'{path!r} is not a readable image: {e}') from e
  return height, width


def write_image(path: str, image: np.ndarray) -> None:
  """Writes a uint8 `[H, W, 3]` image (format from the extension: .png, .ppm...)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(
      f'image for {path!r} must be uint8 [H, W, 3], got {image.dtype} {image.shape}.'
    )
  Image.fromarray(image).save(path)
