"""The multimodal autoencoder: the release's parameters and outputs, chunked decoding
equal to decoding every point at once, and the encoder run once per clip."""

import functools
import os

import jax
import ml_collections
import numpy as np
import pytest

from configs import multimodal as multimodal_config
from experiments.tasks.multimodal import decoding
from experiments.tasks.multimodal import model as model_lib
from experiments.tasks.multimodal import task
from perceiver import perceiver
from tests import helpers
from tests.tasks.multimodal import fixtures

GOLDEN = os.path.join(
  helpers.REPO_ROOT,
  'tests',
  'perceiver',
  'data',
  'official_golden',
  'video_autoencoding.npz',
)


def _golden_config():
  """The tiny video autoencoder of tests/perceiver/test_official_compat.py."""
  sizes = dict(
    num_frames=4,
    image_size=8,
    samples_per_frame=6,
    num_classes=5,
    fps=25.0,
    image_bands=2,
    audio_bands=3,
    num_latents=7,
    num_z_channels=16,
    num_self_attends=1,
    self_heads=4,
    decoder_channels=12,
    label_query=9,
  )
  config = multimodal_config.get_config('debug')
  with config.unlocked():
    config.model = multimodal_config.model_fields(sizes, samples_per_patch=4)
    config.data.num_classes = 5
  return config


def _golden():
  with np.load(GOLDEN) as data:
    golden = dict(data)
  params = {}
  for key, value in golden.items():
    if key.startswith('params/'):
      module, name = key[len('params/') :].rsplit('/', 1)
      params.setdefault(module, {})[name] = value
  batch = {'video': golden['inputs/images'], 'audio': golden['inputs/audio'][..., 0]}
  return golden, params, batch


def test_chunked_reconstruction_matches_the_release():
  num_chunks = (
    2  # The colab's chunking at this size: 128 pixels and 3 audio patches each.
  )
  golden, params, batch = _golden()
  config = _golden_config()
  shapes = model_lib.batch_shapes(batch, 5)
  rec = decoding.Reconstructor(config, shapes, num_chunks=num_chunks)
  fresh, _ = jax.eval_shape(rec.init, jax.random.PRNGKey(0), batch)
  assert jax.tree.map(lambda x: tuple(x.shape), fresh) == jax.tree.map(np.shape, params)
  rng = jax.random.PRNGKey(int(golden['rng_seed']))
  out = rec(params, {}, rng, batch)
  for key in ('image', 'label'):
    np.testing.assert_allclose(
      out[key], golden[f'eval/outputs/{key}'], rtol=1e-5, atol=1e-5
    )
  np.testing.assert_allclose(
    out['audio'], golden['eval/outputs/audio'][..., 0], rtol=1e-5, atol=1e-5
  )
  assert rec.encoder_calls == 1 and rec.decoder_calls == num_chunks


def _debug_batch(config, n=3):
  it = task.load('test', is_training=False, batch_dims=(n,), config=config)
  batch = next(it)
  return {k: batch[k] for k in ('video', 'audio', 'label')}


@pytest.mark.slow
def test_chunks_equal_one_group_and_training_model_shares_parameters():
  config = multimodal_config.get_config('debug')
  batch = _debug_batch(config)
  shapes = model_lib.batch_shapes(batch, config.data.num_classes)
  model = task.build_model(config)
  params, state = fixtures.random_params(
    functools.partial(model.init, is_training=True), jax.random.PRNGKey(1), batch
  )
  rng = jax.random.PRNGKey(2)
  whole = decoding.Reconstructor(config, shapes, num_chunks=1)(params, state, rng, batch)
  seen = []
  chunked = decoding.Reconstructor(
    config, shapes, num_chunks=3, progress=lambda *a: seen.append(a[:2])
  )(params, state, rng, batch)
  assert seen == [(i, 3) for i in range(1, 4)]
  apply = jax.jit(functools.partial(model.apply, is_training=False))
  in_graph, _ = apply(params, state, rng, batch)
  for key in ('image', 'audio', 'label'):
    assert chunked[key].shape == whole[key].shape
    np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(in_graph[key], whole[key], rtol=1e-5, atol=1e-6)
  assert whole['image'].shape == batch['video'].shape
  assert whole['audio'].shape == batch['audio'].shape


def test_in_graph_evaluation_runs_the_encoder_once(monkeypatch):
  config = multimodal_config.get_config('debug')  # eval_num_chunks = 3
  batch = _debug_batch(config, n=1)
  model = task.build_model(config)
  params, state = fixtures.random_params(
    functools.partial(model.init, is_training=True), jax.random.PRNGKey(1), batch
  )
  calls = {'encoder': 0, 'decoder': 0}
  for cls, key in (
    (perceiver.PerceiverEncoder, 'encoder'),
    (perceiver.MultimodalDecoder, 'decoder'),
  ):
    original = cls.__call__

    def counted(self, *args, _original=original, _key=key, **kwargs):
      calls[_key] += 1
      return _original(self, *args, **kwargs)

    monkeypatch.setattr(cls, '__call__', counted)
  jax.make_jaxpr(
    lambda p: model.apply(p, state, jax.random.PRNGKey(0), batch, is_training=False)
  )(params)
  assert calls == {'encoder': 1, 'decoder': config.model.eval_num_chunks}


def test_bad_chunk_counts_are_named():
  config = multimodal_config.get_config('debug')
  batch = _debug_batch(config, n=1)
  shapes = model_lib.batch_shapes(batch, config.data.num_classes)
  with pytest.raises(ValueError, match='num_chunks=10'):
    decoding.Reconstructor(config, shapes, num_chunks=10)  # Only 9 audio patches.
  assert isinstance(config.model.encoder, ml_collections.ConfigDict)
