"""Full-clip reconstruction in chunks of output points, with the encoder run once.

The release's colab calls the whole model once per chunk of output points, so the
encoder runs `num_chunks` times on the same clip. Here `Reconstructor` runs the encoder
once per clip (one compiled call), keeps the latents, and decodes the video pixels and
audio patches in `num_chunks` near-equal contiguous groups (one compiled decoder call
each, with a progress line on stderr); only one group's decoder activations are alive
at a time. Because output points are always given as indices, the result equals
decoding every point in one group, up to float32 rounding.

Shape glossary:
  B: batch; T: frames; H, W: image size; C = 3; N: audio samples; K: classes.
"""

import sys
import time
from typing import Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.multimodal import model as model_lib


def _progress_line(stream):
  def report(done: int, total: int, elapsed: float) -> None:
    width = 30
    filled = int(width * done / total)
    stream.write(
      f'\rdecoding [{"#" * filled}{"." * (width - filled)}] {done}/{total} chunks '
      f'{elapsed:.1f}s'
    )
    if done == total:
      stream.write('\n')
    stream.flush()

  return report


class Reconstructor:
  """Encodes a clip once and decodes all of its output points chunk by chunk.

  Args:
    config: the experiment config (`configs/multimodal.py`).
    shapes: the clip sizes (`model.Shapes`).
    num_chunks: groups of output points decoded one after another.
    progress: None (silent), True (a progress line on stderr) or a callable
      `(done_chunks, num_chunks, elapsed_seconds)`.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    shapes: model_lib.Shapes,
    *,
    num_chunks: int,
    progress=None,
  ):
    self.shapes = shapes
    self.num_chunks = int(num_chunks)
    self._codec = model_lib.build_codec(config, shapes)
    spp = config.model.audio_preprocessor.samples_per_patch
    self._points = model_lib.all_points(shapes, spp)
    # Validates num_chunks against the number of points of each modality.
    model_lib.chunk_points(self._points, self.num_chunks, 0)
    if progress is True:
      progress = _progress_line(sys.stderr)
    self._progress: Optional[Callable] = progress or None
    encode_apply, decode_apply = self._codec.apply['encode'], self._codec.apply['decode']
    self._encode = jax.jit(lambda p, s, r, b: encode_apply(p, s, r, b, False)[0][0])
    self._sizes = None
    self._decode_apply = decode_apply
    self._decode = None
    self._compiled = None  # (batch shapes, chunk shapes, encoder, decoder): `compile`.
    self.encoder_calls = 0  # Counted per call of the compiled encoder (tests read it).
    self.decoder_calls = 0

  def init(self, rng: jax.Array, batch: Mapping[str, np.ndarray]):
    """`(params, state)` of a freshly initialised model for batches like `batch`."""
    return jax.jit(lambda r, b: self._codec.init(r, b, True))(rng, batch)

  def modality_sizes(self, params, state, batch) -> Dict[str, int]:
    """Preprocessed input elements per modality (static, from shapes only)."""
    if self._sizes is None:
      encode_apply = self._codec.apply['encode']
      sizes_box = {}

      def trace(p, s, b):
        (z, sizes), _ = encode_apply(p, s, jax.random.PRNGKey(0), b, False)
        sizes_box.update({k: int(v) for k, v in sizes.items()})
        return z

      jax.eval_shape(trace, params, state, batch)
      self._sizes = sizes_box
      decode_apply, sizes = self._decode_apply, dict(sizes_box)
      self._decode = jax.jit(
        lambda p, s, r, z, points: decode_apply(p, s, r, z, sizes, points, False)[0]
      )
    return self._sizes

  def lower(self, params, state, rng, batch: Mapping[str, np.ndarray]):
    """`(encoder, decoder)`: the lowered encoder and the lowered decoder call of one
    chunk (`.compile()` them to time compilation or read XLA's buffer sizes)."""
    self.modality_sizes(params, state, batch)
    z = jax.eval_shape(self._encode, params, state, rng, batch)
    points = model_lib.chunk_points(self._points, self.num_chunks, 0)
    return (
      self._encode.lower(params, state, rng, batch),
      self._decode.lower(params, state, rng, z, points),
    )

  def compile(self, params, state, rng, batch: Mapping[str, np.ndarray]):
    """Compiles the encoder and the decoder call ahead of time for clips shaped like
    `batch`, and returns them `(encoder, decoder)` (e.g. for XLA's `memory_analysis()`).

    Later calls on batches of the same shapes use these compiled functions; a chunk of
    another size (when the points do not divide evenly) compiles on first use.
    """
    encoder, decoder = (
      lowered.compile() for lowered in self.lower(params, state, rng, batch)
    )
    points = model_lib.chunk_points(self._points, self.num_chunks, 0)
    self._compiled = (_signature(batch), _signature(points), encoder, decoder)
    return encoder, decoder

  def __call__(self, params, state, rng, batch: Mapping[str, np.ndarray]):
    """The full reconstruction of `batch` (`video` `[B, T, H, W, C]`, `audio` `[B, N]`).

    Returns:
      `image` `[B, T, H, W, C]`, `audio` `[B, N]`, `label` `[B, K]` logits (NumPy).
    """
    self.modality_sizes(params, state, batch)
    encode, decode, points_signature = self._encode, self._decode, None
    if self._compiled is not None and self._compiled[0] == _signature(batch):
      points_signature, encode, compiled_decode = self._compiled[1:]
    start = time.perf_counter()
    z = encode(params, state, rng, batch)
    self.encoder_calls += 1
    chunks = []
    for i in range(self.num_chunks):
      points = model_lib.chunk_points(self._points, self.num_chunks, i)
      if points_signature is not None and _signature(points) == points_signature:
        decode = compiled_decode
      else:
        decode = self._decode
      out = decode(params, state, rng, z, points)
      self.decoder_calls += 1
      chunks.append(jax.tree_util.tree_map(np.asarray, out))
      if self._progress:
        jax.block_until_ready(out)
        self._progress(i + 1, self.num_chunks, time.perf_counter() - start)
    out = {
      'image': np.concatenate([c['image'] for c in chunks], axis=1),
      'audio': np.concatenate([c['audio'] for c in chunks], axis=1),
      'label': chunks[0]['label'],
    }
    s = self.shapes
    out['image'] = out['image'].reshape((-1, s.num_frames, s.height, s.width, 3))
    return out


def _signature(tree) -> tuple:
  """The shapes and dtypes of a tree's leaves, with its structure."""
  leaves, structure = jax.tree.flatten(tree)
  return structure, tuple(
    (np.shape(x), str(getattr(x, 'dtype', type(x)))) for x in leaves
  )


def top_k(logits: np.ndarray, k: int = 5):
  """`(probabilities [B, k], classes [B, k])` of the `k` most likely classes."""
  probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  values, indices = jax.lax.top_k(probs, k)
  return np.asarray(values), np.asarray(indices)
