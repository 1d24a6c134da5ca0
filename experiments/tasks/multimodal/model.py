"""The multimodal autoencoder, split into an encoder pass and a decoder pass.

The modules are those of the release's video autoencoding colab
(`MultimodalPreprocessor` over audio patches, video patches and a one-hot label; a
`PerceiverEncoder`; a `MultimodalDecoder` whose per-modality decoders only build
queries; one postprocessor per modality), built from the config's model sections
(`configs/multimodal.py`) in the colab's order, so parameter paths are the release's
and its checkpoint applies unchanged.

Unlike `perceiver.Perceiver.__call__`, which encodes and decodes in one call, `encode`
and `decode` are separate: the latents of a clip are computed once and any number of
groups of output points are decoded from them (`decoding.py`). Output points are always
given as flat indices (`subsampled_points`), as the colab does, so a reconstruction
decoded in one group or in many is the same.

Shape glossary:
  B: batch; T: frames; H, W: image size; C = 3 colours.
  N: audio samples; P: samples per audio patch; K: classes.
  Z: latents; D: latent channels.
  O_v: decoded video points (pixels of `[T, H, W]`, flat); O_a: decoded audio patches.
"""

from typing import Dict, Mapping, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections

from experiments.training import errors
from perceiver import io_processors
from perceiver import perceiver

MODALITIES = ('audio', 'image', 'label')


class Shapes(NamedTuple):
  """Static sizes of a batch: `T, H, W`, audio samples `N` and classes `K`."""

  num_frames: int
  height: int
  width: int
  num_samples: int
  num_classes: int

  @property
  def num_pixels(self) -> int:
    return self.num_frames * self.height * self.width

  def num_patches(self, samples_per_patch: int) -> int:
    return self.num_samples // samples_per_patch


def batch_shapes(batch: Mapping[str, jax.Array], num_classes: int) -> Shapes:
  """The `Shapes` of `batch` (`video` `[B, T, H, W, C]`, `audio` `[B, N]`)."""
  video, audio = batch['video'], batch['audio']
  if video.ndim != 5 or video.shape[-1] != 3:
    raise ValueError(f'video must be [B, T, H, W, 3], got shape {tuple(video.shape)}.')
  if audio.ndim != 2:
    raise ValueError(f'audio must be [B, N], got shape {tuple(audio.shape)}.')
  return Shapes(*video.shape[1:4], audio.shape[1], num_classes)


class Modules(NamedTuple):
  preprocessor: hk.Module
  postprocessor: hk.Module
  encoder: hk.Module
  decoder: hk.Module
  samples_per_patch: int


def build_modules(m: ml_collections.ConfigDict, shapes: Shapes) -> Modules:
  """Constructs the modules (inside a Haiku transform) in the release's order."""
  spp = m.audio_preprocessor.samples_per_patch
  if shapes.num_samples % spp:
    raise errors.ConfigError(
      f'audio has {shapes.num_samples} samples, not a multiple of '
      f'model.audio_preprocessor.samples_per_patch={spp}.'
    )
  preprocessor = io_processors.MultimodalPreprocessor(
    modalities={
      'audio': io_processors.AudioPreprocessor(**m.audio_preprocessor.to_dict()),
      'image': io_processors.ImagePreprocessor(**m.image_preprocessor.to_dict()),
      'label': io_processors.OneHotPreprocessor(),
    },
    **m.input_preprocessor.to_dict(),
  )
  postprocessor = io_processors.MultimodalPostprocessor(
    modalities={
      'audio': io_processors.AudioPostprocessor(**m.audio_postprocessor.to_dict()),
      'image': io_processors.ProjectionPostprocessor(num_outputs=3),
      'label': io_processors.ClassificationPostprocessor(num_classes=shapes.num_classes),
    }
  )
  encoder = perceiver.PerceiverEncoder(**m.encoder.to_dict(), name='encoder')
  image_decoder = perceiver.BasicVideoAutoencodingDecoder(
    output_shape=(1, shapes.num_frames, shapes.height, shapes.width),
    **m.image_decoder.to_dict(),
  )
  decoder = perceiver.MultimodalDecoder(
    modalities={
      'audio': perceiver.BasicDecoder(
        output_index_dims=(shapes.num_patches(spp),), **m.audio_decoder.to_dict()
      ),
      'image': image_decoder,
      'label': perceiver.ClassificationDecoder(
        num_classes=shapes.num_classes, **m.label_decoder.to_dict()
      ),
    },
    num_outputs=None,
    **m.decoder.to_dict(),
  )
  return Modules(preprocessor, postprocessor, encoder, decoder, spp)


def model_inputs(
  batch: Mapping[str, jax.Array], num_classes: int
) -> Dict[str, jax.Array]:
  """The preprocessor's inputs: `image`, `audio` `[B, N, 1]` and a one-hot `label`.

  Without `label` in `batch` (inference) the label input is zeros, as in the colab; it
  is replaced by the mask token when `mask_probs['label'] = 1`.
  """
  video = batch['video']
  if 'label' in batch:
    label = jax.nn.one_hot(batch['label'], num_classes, dtype=video.dtype)
  else:
    label = jnp.zeros((video.shape[0], num_classes), video.dtype)
  return {'image': video, 'audio': batch['audio'][..., None], 'label': label}


def encode(
  modules: Modules, batch: Mapping[str, jax.Array], num_classes: int, *, is_training: bool
):
  """Latents `[B, Z, D]` and the modality sizes of the preprocessed inputs."""
  inputs, modality_sizes, _ = modules.preprocessor(
    model_inputs(batch, num_classes), is_training=is_training, network_input_is_1d=True
  )
  z = modules.encoder(inputs, modules.encoder.latents(inputs), is_training=is_training)
  return z, modality_sizes


def decode(
  modules: Modules,
  z: jax.Array,
  modality_sizes: Mapping[str, int],
  points: Mapping[str, jax.Array],
  *,
  is_training: bool,
) -> Dict[str, jax.Array]:
  """Decodes the output points `points` from the latents `z`.

  Args:
    modules: from `build_modules`.
    z: `[B, Z, D]` latents.
    modality_sizes: input elements per modality (from `encode`).
    points: `image` `[O_v]` flat indices into `[T, H, W]`, `audio` `[O_a]` indices of
      audio patches.
    is_training: passed to the modules.

  Returns:
    `image` `[B, O_v, C]`, `audio` `[B, O_a * P]`, `label` `[B, K]` logits.
  """
  batch_size = z.shape[0]
  # The queries depend only on the batch size and the modality sizes (no input is
  # concatenated to them), so an empty stand-in for the preprocessed inputs suffices.
  stand_in = jnp.zeros((batch_size, sum(modality_sizes.values()), 0), z.dtype)
  query = modules.decoder.decoder_query(
    stand_in,
    dict(modality_sizes),
    None,
    subsampled_points={'image': points['image'], 'audio': points['audio']},
  )
  outputs = modules.decoder(query, z, is_training=is_training)
  sizes = {
    'audio': points['audio'].shape[0],
    'image': points['image'].shape[0],
    'label': 1,
  }
  return modules.postprocessor(outputs, is_training=is_training, modality_sizes=sizes)


def all_points(shapes: Shapes, samples_per_patch: int) -> Dict[str, jax.Array]:
  """Every output point: `image` `[T * H * W]`, `audio` `[N / P]`."""
  return {
    'image': jnp.arange(shapes.num_pixels),
    'audio': jnp.arange(shapes.num_patches(samples_per_patch)),
  }


def random_points(
  key: jax.Array, shapes: Shapes, samples_per_patch: int, num_image: int, num_audio: int
) -> Dict[str, jax.Array]:
  """Random distinct output points (all of a modality when its count is <= 0)."""
  image_key, audio_key = jax.random.split(key)
  points = all_points(shapes, samples_per_patch)

  def pick(k, everything, count):
    if count <= 0 or count >= everything.shape[0]:
      return everything
    return jnp.sort(jax.random.permutation(k, everything.shape[0])[:count])

  return {
    'image': pick(image_key, points['image'], num_image),
    'audio': pick(audio_key, points['audio'], num_audio),
  }


def chunk_points(
  points: Mapping[str, jax.Array], num_chunks: int, chunk: int
) -> Dict[str, jax.Array]:
  """Chunk `chunk` of `num_chunks` near-equal contiguous groups of each modality's points."""
  out = {}
  for name, values in points.items():
    n = values.shape[0]
    if not 1 <= num_chunks <= n:
      raise errors.ConfigError(
        f'num_chunks={num_chunks} must be in [1, {n}] ({n} {name} output points).'
      )
    start, stop = (n * chunk) // num_chunks, (n * (chunk + 1)) // num_chunks
    out[name] = values[start:stop]
  return out


def concat_chunks(chunks) -> Dict[str, jax.Array]:
  """Joins decoded chunks along the point axis; the label comes from the first chunk."""
  return {
    'image': jnp.concatenate([c['image'] for c in chunks], axis=1),
    'audio': jnp.concatenate([c['audio'] for c in chunks], axis=1),
    'label': chunks[0]['label'],
  }


def reconstruct_in_graph(
  modules: Modules,
  batch: Mapping[str, jax.Array],
  shapes: Shapes,
  num_chunks: int,
  *,
  is_training: bool,
) -> Dict[str, jax.Array]:
  """Encodes once and decodes every point in `num_chunks` groups, in one traced function.

  Returns:
    `image` `[B, T, H, W, C]`, `audio` `[B, N]`, `label` `[B, K]` logits.
  """
  z, sizes = encode(modules, batch, shapes.num_classes, is_training=is_training)
  points = all_points(shapes, modules.samples_per_patch)
  chunks = [
    decode(
      modules, z, sizes, chunk_points(points, num_chunks, i), is_training=is_training
    )
    for i in range(num_chunks)
  ]
  out = concat_chunks(chunks)
  batch_size = z.shape[0]
  out['image'] = out['image'].reshape(
    (batch_size, shapes.num_frames, shapes.height, shapes.width, -1)
  )
  return out


def build_codec(config: ml_collections.ConfigDict, shapes: Shapes):
  """`hk.multi_transform_with_state` with `encode(batch, is_training)` -> `(z, sizes)`
  and `decode(z, sizes, points, is_training)` -> outputs, sharing the parameters of
  `task.build_model` (same paths)."""
  m = config.model

  def fns():
    modules = build_modules(m, shapes)

    def enc(batch, is_training):
      return encode(modules, batch, shapes.num_classes, is_training=is_training)

    def dec(z, sizes, points, is_training):
      return decode(modules, z, sizes, points, is_training=is_training)

    def template(batch, is_training):
      z, sizes = enc(batch, is_training)
      return dec(
        z,
        sizes,
        chunk_points(all_points(shapes, modules.samples_per_patch), 1, 0),
        is_training,
      )

    return template, {'encode': enc, 'decode': dec}

  return hk.multi_transform_with_state(fns)
