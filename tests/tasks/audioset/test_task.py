"""The AudioSet task: paper-1 input sizes, every variant's model learning, the summary."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import audioset as audioset_config
from experiments.tasks.audioset import task
from perceiver import io_processors


def _paper_inputs(config):
  """`(N, C)` of the encoder's input array, from shapes only."""
  data = config.data
  batch = {'labels': jax.ShapeDtypeStruct((1, data.num_classes), jnp.float32)}
  if data.audio_input == 'raw':
    batch['audio'] = jax.ShapeDtypeStruct((1, 61_440), jnp.float32)
  elif data.audio_input == 'mel':
    batch['audio'] = jax.ShapeDtypeStruct((1, 96, 50), jnp.float32)
  if data.use_video:
    batch['video'] = jax.ShapeDtypeStruct((1, 32, 224, 224, 3), jnp.uint8)
  m = config.model.to_dict()

  def preprocess(b):
    inputs = task.model_inputs(b, data)
    mods = {}
    if 'audio' in inputs:
      mods['audio'] = io_processors.AudioPreprocessor(**m['audio_preprocessor'])
    if 'video' in inputs:
      mods['video'] = io_processors.ImagePreprocessor(**m['video_preprocessor'])
    if len(mods) == 1:
      ((name, p),) = mods.items()
      return p(inputs[name], is_training=False)[0]
    return io_processors.MultimodalPreprocessor(mods, **m['input_preprocessor'])(
      inputs, is_training=False
    )[0]

  f = hk.transform(preprocess)
  out = jax.eval_shape(
    lambda b: f.apply(f.init(jax.random.PRNGKey(0), b), None, b), batch
  )
  return out.shape[1:]


def test_paper_one_input_sizes():
  get = audioset_config.get_config
  assert _paper_inputs(get('audio_video')) == (13_024, 487)  # Paper 1: 13,024 x 487.
  mel_av = get('audio_video')
  mel_av.data.audio_input = 'mel'
  mel_av.model.audio_preprocessor.samples_per_patch = 1
  mel_av.model.audio_preprocessor.fourier_position_encoding_kwargs.max_resolution = (
    4800,
  )
  assert _paper_inputs(mel_av) == (17_344, 487)  # Paper 1: 17,344 x 487.
  assert _paper_inputs(get('video')) == (12_544, 483)
  assert _paper_inputs(get('audio_raw')) == (480, 128 + 1 + 2 * 64)
  assert _paper_inputs(get('audio_mel')) == (4800, 1 + 1 + 2 * 64)


def _tiny(variant):
  """The variant's modality layout, shrunk: a few fake clips through the pipeline."""
  config = audioset_config.get_config(variant)
  d, m = config.data, config.model
  d.fake = True
  d.fake_num_examples = 5
  d.num_classes = 7
  d.sample_rate = 1600  # The generator's 7 classes need > 1500 Hz.
  d.clip_seconds = 1.0
  d.num_frames = 4
  d.frame_size = 8
  d.mel.update(dict(window_length=64, hop_length=50, num_mel_bins=5, upper_edge_hz=0.0))
  if 'audio_preprocessor' in m:
    m.audio_preprocessor.samples_per_patch = 5 if d.audio_input == 'mel' else 40
    m.audio_preprocessor.fourier_position_encoding_kwargs.num_bands = 3
    m.audio_preprocessor.fourier_position_encoding_kwargs.max_resolution = (
      (32,) if d.audio_input == 'mel' else (40,)
    )
  if 'video_preprocessor' in m:
    m.video_preprocessor.spatial_downsample = 4
    m.video_preprocessor.fourier_position_encoding_kwargs.num_bands = 3
    m.video_preprocessor.fourier_position_encoding_kwargs.max_resolution = (2, 2, 2)
  m.encoder.update(
    dict(
      num_self_attends_per_block=1,
      num_blocks=1,
      z_index_dim=3,
      num_z_channels=16,
      num_self_attend_heads=2,
      num_cross_attends=1,
      cross_attend_placement='start',
    )
  )
  return config


# Raw audio + video through the multimodal preprocessor (the paper's audio_video),
# and mel + video on generated events: between them every preprocessor path (the
# single-modality variants use the same preprocessors unwrapped; tests/test_configs
# builds every variant). Each case costs a few seconds of compilation.
@pytest.mark.slow
@pytest.mark.parametrize('variant', ('audio_video', 'synthetic_audio_video'))
def test_fused_variants_learn_their_fake_batch(variant):
  config = _tiny(variant)
  batch = next(task.load('train', is_training=True, batch_dims=(5,), config=config))
  assert batch['labels'].shape == (5, 7)
  model = task.build_model(config)
  init = jax.jit(functools.partial(model.init, is_training=True))
  params, state = init(jax.random.PRNGKey(0), batch)
  optimizer = optax.adam(3e-2)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits, _ = model.apply(p, state, jax.random.PRNGKey(1), batch, is_training=True)
      return task.train_loss(logits, batch, config)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  losses = []
  for _ in range(12):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[0] == pytest.approx(np.log(2), rel=1e-3)  # Zero-initialised logits.
  assert losses[-1] < 0.5 * losses[0], losses


def test_summary_reports_map_beside_the_baseline_and_excluded_classes():
  logits = np.array(
    [[2.0, -1.0, 0.0], [1.0, 0.5, 0.0], [-1.0, 0.2, 0.0], [0.0, -3.0, 0.0]]
  )
  labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], np.float32)
  xent = np.asarray(task.sigmoid_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
  summary = task.summarize_eval(
    {'logits': logits, 'labels': labels, 'sigmoid_xent': xent}, config=None
  )
  # Class 0 ranked perfectly (AP 1, AUC 1); class 1: positives at ranks 1 and 2 of
  # the scores 0.5, 0.2, -1, -3 (AP 1, AUC 1); class 2 has no positives.
  assert summary['mAP'] == pytest.approx(1.0)
  assert summary['mAP_label_frequency_baseline'] == pytest.approx(0.5)
  assert summary['num_classes_without_positives'] == 1
  want = np.mean(
    np.log1p(np.exp(-logits)) * labels + np.log1p(np.exp(logits)) * (1 - labels)
  )
  assert summary['sigmoid_xent'] == pytest.approx(want, rel=1e-5)


def test_bad_fields_are_named():
  config = audioset_config.get_config('debug')
  config.data.audio_input = 'wave'
  with pytest.raises(ValueError, match='data.audio_input'):
    task.num_examples('train', config)
  config = audioset_config.get_config('debug')
  config.data.dataset = 'youtube'
  with pytest.raises(ValueError, match='data.dataset'):
    task.num_examples('train', config)
  with pytest.raises(ValueError, match="variant 'audio'"):
    audioset_config.get_config('audio')
