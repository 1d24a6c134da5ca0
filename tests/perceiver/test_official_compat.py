"""Drop-in compatibility with DeepMind's official Perceiver IO release.

The model definitions below follow the official colabs (ImageNet classification, masked
language modelling, optical flow, video autoencoding) at tiny sizes, written the way a user
with official code would write them: only through the public modules
`from perceiver import perceiver, io_processors, position_encoding`.

`tests/perceiver/data/official_golden/<family>.npz` holds, for each family, parameters and state that
the official modules created (perturbed so that zero-initialised layers matter), the inputs,
and the outputs that the official modules computed from them in evaluation mode and, where
training mode computes something else (BatchNorm statistics and state updates, dropout
masks), in training mode. Here our modules must create exactly the same parameter paths and
shapes, reproduce those outputs from those parameters, and (for the language model) create
the same initial values as the official modules from the same seed.
`tests/perceiver/data/official_golden/generate.py` documents how the fixtures were made.

The full-size ImageNet Fourier classifier and byte-level language model must create exactly
the parameter paths and shapes listed in `tests/perceiver/data/official_param_names.txt` (computed with
`jax.eval_shape`, nothing is allocated).
"""

import functools
import os
import types
from typing import Callable, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver import io_processors
from perceiver import perceiver
from perceiver import position_encoding

OURS = types.SimpleNamespace(
  perceiver=perceiver, io_processors=io_processors, position_encoding=position_encoding
)

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
GOLDEN_DIR = os.path.join(DATA_DIR, 'official_golden')
PARAM_NAMES_FILE = os.path.join(DATA_DIR, 'official_param_names.txt')

RTOL = 1e-5
ATOL = 1e-6  # relative to the largest magnitude in the array: float32 rounding differs
# between XLA versions, by a few ulps of the array's scale.


def _atol(want):
  return ATOL * max(1.0, float(np.max(np.abs(want)))) if want.size else ATOL


#  ----------------------------------------------------------------------------
#  Model definitions. `ns` is a namespace with the modules `perceiver`,
#  `io_processors` and `position_encoding` (ours, or the official ones).
#  ----------------------------------------------------------------------------


def _encoder_config(**overrides):
  """ImageNet colab encoder settings, shrunk."""
  config = dict(
    cross_attend_widening_factor=1,
    cross_attention_shape_for_attn='kv',
    dropout_prob=0,
    num_blocks=2,
    num_cross_attend_heads=1,
    num_self_attend_heads=4,
    num_self_attends_per_block=2,
    num_z_channels=16,
    self_attend_widening_factor=1,
    use_query_residual=True,
    z_index_dim=5,
    z_pos_enc_init_scale=0.02,
  )
  config.update(overrides)
  return config


# The three ImageNet colab configurations (learned positions + conv1x1, Fourier features on
# raw pixels, conv + max-pool preprocessing), tiny.
IMAGENET_TINY = {
  'imagenet_learned_pos': dict(
    image_shape=(2, 8, 10, 3),
    num_classes=7,
    input_preprocessor=dict(
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(init_scale=0.02, num_channels=10),
      prep_type='conv1x1',
      project_pos_dim=6,
      num_channels=12,
      spatial_downsample=2,
      concat_or_add_pos='concat',
    ),
    encoder=_encoder_config(
      num_cross_attend_heads=2,
      cross_attend_widening_factor=2,
      self_attend_widening_factor=3,
      num_blocks=1,
      num_self_attends_per_block=1,
    ),
    decoder=dict(
      num_z_channels=16,
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(init_scale=0.02, num_channels=16),
      use_query_residual=False,
    ),
  ),
  'imagenet_fourier': dict(
    image_shape=(3, 7, 9, 3),
    num_classes=7,
    input_preprocessor=dict(
      position_encoding_type='fourier',
      fourier_position_encoding_kwargs=dict(
        concat_pos=True, max_resolution=(7, 9), num_bands=4, sine_only=False
      ),
      prep_type='pixels',
      spatial_downsample=1,
    ),
    # Dropout (training mode only) checks that dropout masks match the official ones.
    encoder=_encoder_config(dropout_prob=0.1),
    decoder=dict(
      num_z_channels=16,
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(init_scale=0.02, num_channels=16),
      use_query_residual=True,
    ),
  ),
  'imagenet_conv': dict(
    image_shape=(3, 12, 16, 3),
    num_classes=7,
    input_preprocessor=dict(
      position_encoding_type='fourier',
      fourier_position_encoding_kwargs=dict(
        concat_pos=True, max_resolution=(3, 4), num_bands=3, sine_only=False
      ),
      prep_type='conv',
      num_channels=8,
    ),
    encoder=_encoder_config(num_blocks=1, num_self_attends_per_block=1),
    decoder=dict(
      num_z_channels=16,
      position_encoding_type='trainable',
      trainable_position_encoding_kwargs=dict(init_scale=0.02, num_channels=16),
      use_query_residual=True,
    ),
  ),
}

# The released ImageNet Fourier classifier (colab `fourier_pos_configs`).
IMAGENET_FOURIER_FULL = dict(
  image_shape=(1, 224, 224, 3),
  num_classes=1000,
  input_preprocessor=dict(
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=dict(
      concat_pos=True, max_resolution=(224, 224), num_bands=64, sine_only=False
    ),
    prep_type='pixels',
    spatial_downsample=1,
  ),
  encoder=_encoder_config(
    num_blocks=8,
    num_self_attend_heads=8,
    num_self_attends_per_block=6,
    num_z_channels=1024,
    z_index_dim=512,
  ),
  decoder=dict(
    num_z_channels=1024,
    position_encoding_type='trainable',
    trainable_position_encoding_kwargs=dict(init_scale=0.02, num_channels=1024),
    use_query_residual=True,
  ),
)


def imagenet_classifier(ns, config, inputs, *, is_training):
  """The ImageNet colab's `imagenet_classifier`."""
  input_preprocessor = ns.io_processors.ImagePreprocessor(**config['input_preprocessor'])
  encoder = ns.perceiver.PerceiverEncoder(**config['encoder'])
  decoder = ns.perceiver.ClassificationDecoder(config['num_classes'], **config['decoder'])
  model = ns.perceiver.Perceiver(
    encoder=encoder, decoder=decoder, input_preprocessor=input_preprocessor
  )
  return model(inputs['images'], is_training=is_training)


MLM_TINY = dict(
  d_model=12,
  d_latents=16,
  max_seq_len=11,
  z_index_dim=5,
  num_self_attends=2,
  num_heads=2,
  qk_channels=2 * 4,
  batch_size=2,
)
MLM_FULL = dict(
  d_model=768,
  d_latents=1280,
  max_seq_len=2048,
  z_index_dim=256,
  num_self_attends=26,
  num_heads=8,
  qk_channels=8 * 32,
  batch_size=1,
)
VOCAB_SIZE = 262  # bytes_tokenizer.BytesTokenizer().vocab_size


def masked_language_model(ns, sizes, inputs, *, is_training):
  """The masked language modelling colab's `apply_perceiver`."""
  d_model, d_latents = sizes['d_model'], sizes['d_latents']
  encoder_config = dict(
    num_self_attends_per_block=sizes['num_self_attends'],
    num_blocks=1,
    z_index_dim=sizes['z_index_dim'],
    num_z_channels=d_latents,
    num_self_attend_heads=sizes['num_heads'],
    num_cross_attend_heads=sizes['num_heads'],
    qk_channels=sizes['qk_channels'],
    v_channels=d_latents,
    use_query_residual=True,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=1,
  )
  decoder_config = dict(
    output_num_channels=d_latents,
    position_encoding_type='trainable',
    output_index_dims=sizes['max_seq_len'],
    num_z_channels=d_latents,
    qk_channels=sizes['qk_channels'],
    v_channels=d_model,
    num_heads=sizes['num_heads'],
    final_project=False,
    use_query_residual=False,
    trainable_position_encoding_kwargs=dict(num_channels=d_model),
  )

  tokens, input_mask = inputs['inputs'], inputs['input_mask']
  embedding_layer = hk.Embed(vocab_size=VOCAB_SIZE, embed_dim=d_model)
  embedded_inputs = embedding_layer(tokens)
  batch_size = embedded_inputs.shape[0]
  input_pos_encoding = ns.perceiver.position_encoding.TrainablePositionEncoding(
    index_dim=sizes['max_seq_len'], num_channels=d_model
  )
  embedded_inputs = embedded_inputs + input_pos_encoding(batch_size)
  perceiver_mod = ns.perceiver.Perceiver(
    encoder=ns.perceiver.PerceiverEncoder(**encoder_config),
    decoder=ns.perceiver.BasicDecoder(**decoder_config),
  )
  output_embeddings = perceiver_mod(
    embedded_inputs, is_training=is_training, input_mask=input_mask, query_mask=input_mask
  )
  return ns.io_processors.EmbeddingDecoder(embedding_matrix=embedding_layer.embeddings)(
    output_embeddings
  )


def _mlm_inputs(sizes, rs):
  b, n = sizes['batch_size'], sizes['max_seq_len']
  tokens = rs.randint(6, VOCAB_SIZE, size=(b, n)).astype(np.int32)
  tokens[0, 3:6] = 3  # MASK
  input_mask = np.ones((b, n), np.int32)
  if b > 1:  # second example padded after 6 tokens
    tokens[1, 6:] = 0
    input_mask[1, 6:] = 0
  return {'inputs': tokens, 'input_mask': input_mask}


FLOW_SIZE = (6, 7)
FLOW_SCALE_FACTOR = 20


def optical_flow(ns, inputs, *, is_training):
  """The optical flow colab's `optical_flow` (images `[B, 2, H, W, C]`)."""
  input_preprocessor = ns.io_processors.ImagePreprocessor(
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=dict(
      num_bands=3, max_resolution=FLOW_SIZE, sine_only=False, concat_pos=True
    ),
    n_extra_pos_mlp=0,
    prep_type='patches',
    spatial_downsample=1,
    conv_after_patching=True,
    temporal_downsample=2,
  )
  encoder = ns.perceiver.PerceiverEncoder(
    num_self_attends_per_block=1,
    num_blocks=1,
    z_index_dim=5,
    num_cross_attend_heads=1,
    num_z_channels=16,
    num_self_attend_heads=4,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=1,
    dropout_prob=0.0,
    z_pos_enc_init_scale=0.02,
    cross_attention_shape_for_attn='kv',
    name='perceiver_encoder',
  )
  decoder = ns.perceiver.FlowDecoder(
    FLOW_SIZE,
    rescale_factor=100.0,
    use_query_residual=False,
    output_num_channels=2,
    output_w_init=jnp.zeros,
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=dict(
      concat_pos=True, max_resolution=FLOW_SIZE, num_bands=3, sine_only=False
    ),
  )
  model = ns.perceiver.Perceiver(
    input_preprocessor=input_preprocessor,
    encoder=encoder,
    decoder=decoder,
    output_postprocessor=None,
  )
  return (
    model(ns.io_processors.patches_for_flow(inputs['images']), is_training=is_training)
    * FLOW_SCALE_FACTOR
  )


NUM_FRAMES = 4
IMG_SIZE = 8
AUDIO_SAMPLES_PER_FRAME = 6
SAMPLES_PER_PATCH = 4
NUM_CLASSES = 5
NUM_CHUNKS = 2


def video_autoencoder(ns, inputs, *, is_training, subsampling, mask_probs=None):
  """The video autoencoding colab's `video_autoencoder` (one chunk of output points)."""
  images, audio = inputs['images'], inputs['audio']
  n_audio_samples = NUM_FRAMES * AUDIO_SAMPLES_PER_FRAME
  patched = IMG_SIZE // 4
  input_preprocessor = ns.io_processors.MultimodalPreprocessor(
    min_padding_size=4,
    modalities={
      'audio': ns.io_processors.AudioPreprocessor(
        position_encoding_type='fourier',
        fourier_position_encoding_kwargs=dict(
          num_bands=3, max_resolution=(n_audio_samples,), sine_only=False, concat_pos=True
        ),
        n_extra_pos_mlp=0,
        prep_type='patches',
        samples_per_patch=SAMPLES_PER_PATCH,
      ),
      'image': ns.io_processors.ImagePreprocessor(
        position_encoding_type='fourier',
        fourier_position_encoding_kwargs=dict(
          num_bands=2,
          max_resolution=(NUM_FRAMES, patched, patched),
          sine_only=False,
          concat_pos=True,
        ),
        n_extra_pos_mlp=0,
        prep_type='patches',
        spatial_downsample=4,
        temporal_downsample=1,
      ),
      'label': ns.io_processors.OneHotPreprocessor(),
    },
    mask_probs=mask_probs or {'image': 0.0, 'audio': 0.0, 'label': 1.0},
  )
  output_postprocessor = ns.io_processors.MultimodalPostprocessor(
    modalities={
      'audio': ns.io_processors.AudioPostprocessor(samples_per_patch=SAMPLES_PER_PATCH),
      'image': ns.io_processors.ProjectionPostprocessor(num_outputs=3),
      'label': ns.io_processors.ClassificationPostprocessor(num_classes=NUM_CLASSES),
    }
  )
  encoder = ns.perceiver.PerceiverEncoder(
    num_self_attends_per_block=1,
    num_blocks=1,
    z_index_dim=7,
    num_z_channels=16,
    num_cross_attend_heads=1,
    num_self_attend_heads=4,
    cross_attend_widening_factor=1,
    self_attend_widening_factor=1,
    dropout_prob=0.0,
    z_pos_enc_init_scale=0.02,
    cross_attention_shape_for_attn='kv',
    name='encoder',
  )
  subsampled_index_dims = {
    'audio': subsampling['audio'].shape[0],
    'image': subsampling['image'].shape[0],
    'label': 1,
  }
  image_decoder = ns.perceiver.BasicVideoAutoencodingDecoder(
    concat_preprocessed_input=False,
    subsampled_index_dims=subsampling['image'],
    output_shape=images.shape[:4],
    num_z_channels=1024,
    output_num_channels=12,
    use_query_residual=False,
    position_encoding_type='fourier',
    fourier_position_encoding_kwargs=dict(
      num_bands=2,
      max_resolution=(NUM_FRAMES, patched, patched),
      sine_only=False,
      concat_pos=True,
    ),
  )
  decoder = ns.perceiver.MultimodalDecoder(
    concat_preprocessed_input=False,
    subsampled_index_dims=subsampled_index_dims,
    modalities={
      'audio': ns.perceiver.BasicDecoder(
        concat_preprocessed_input=False,
        subsampled_index_dims=subsampling['audio'],
        output_index_dims=(n_audio_samples // SAMPLES_PER_PATCH,),
        num_z_channels=1024,
        output_num_channels=12,
        use_query_residual=False,
        position_encoding_type='fourier',
        fourier_position_encoding_kwargs=dict(
          num_bands=3, max_resolution=(n_audio_samples,), sine_only=False, concat_pos=True
        ),
      ),
      'image': image_decoder,
      'label': ns.perceiver.ClassificationDecoder(
        concat_preprocessed_input=False,
        num_classes=NUM_CLASSES,
        num_z_channels=1024,
        use_query_residual=False,
        position_encoding_type='trainable',
        trainable_position_encoding_kwargs=dict(num_channels=9, init_scale=0.02),
      ),
    },
    num_outputs=None,
    output_num_channels=12,
    use_query_residual=False,
  )
  model = ns.perceiver.Perceiver(
    input_preprocessor=input_preprocessor,
    encoder=encoder,
    decoder=decoder,
    output_postprocessor=output_postprocessor,
  )
  return model(
    {
      'image': images,
      'audio': audio,
      'label': np.zeros((images.shape[0], NUM_CLASSES), np.float32),
    },
    is_training=is_training,
    subsampled_output_points=subsampling,
  )


def video_chunks(inputs):
  """The colab's `autoencode_video` chunking of the output points."""
  images, audio = inputs['images'], inputs['audio']
  image_chunk_size = np.prod(images.shape[1:-1]) // NUM_CHUNKS
  audio_chunk_size = audio.shape[1] // SAMPLES_PER_PATCH // NUM_CHUNKS
  return [
    {
      'image': jnp.arange(image_chunk_size * i, image_chunk_size * (i + 1)),
      'audio': jnp.arange(audio_chunk_size * i, audio_chunk_size * (i + 1)),
      'label': None,
    }
    for i in range(NUM_CHUNKS)
  ]


def _video_inputs(rs):
  n_audio = NUM_FRAMES * AUDIO_SAMPLES_PER_FRAME
  return {
    'images': rs.uniform(size=(1, NUM_FRAMES, IMG_SIZE, IMG_SIZE, 3)).astype(np.float32),
    'audio': rs.uniform(-1, 1, size=(1, n_audio, 1)).astype(np.float32),
  }


class Family(NamedTuple):
  forward: Callable  # (ns, inputs, *, is_training[, subsampling]) -> outputs
  make_inputs: Callable  # (np.random.RandomState) -> dict of arrays
  chunks: Optional[Callable] = None  # inputs -> list of subsampling dicts


def _image_inputs(shape):
  return lambda rs: {'images': rs.uniform(-1, 1, size=shape).astype(np.float32)}


FAMILIES = {
  **{
    name: Family(
      functools.partial(imagenet_classifier, config=config),
      _image_inputs(config['image_shape']),
    )
    for name, config in IMAGENET_TINY.items()
  },
  'mlm': Family(
    functools.partial(masked_language_model, sizes=MLM_TINY),
    functools.partial(_mlm_inputs, MLM_TINY),
  ),
  'optical_flow': Family(optical_flow, _image_inputs((2, 2) + FLOW_SIZE + (3,))),
  'video_autoencoding': Family(video_autoencoder, _video_inputs, video_chunks),
}


# Training mode differs from evaluation only through BatchNorm (imagenet_conv) and dropout
# (imagenet_fourier's encoder); in the other families both modes compute the same.
TRAIN_MODE_FAMILIES = ('imagenet_conv', 'imagenet_fourier')
# Families whose fixture also holds the official initial parameters for `init_seed`.
INIT_FAMILIES = ('mlm',)


def transform(family, ns):
  return hk.transform_with_state(
    lambda inputs, is_training, **kw: family.forward(
      ns, inputs=inputs, is_training=is_training, **kw
    )
  )


def init(family, ns, rng, inputs):
  """Initial params and state (training mode: BatchNorm creates its state only then)."""
  kwargs = {} if family.chunks is None else {'subsampling': family.chunks(inputs)[0]}
  return transform(family, ns).init(rng, inputs, True, **kwargs)


def run(family, ns, params, state, rng, inputs, is_training):
  """Applies the model; the video family decodes chunk by chunk, as its colab does."""
  apply = jax.jit(transform(family, ns).apply, static_argnums=4)
  if family.chunks is None:
    return apply(params, state, rng, inputs, is_training)
  reconstruction = {}
  for subsampling in family.chunks(inputs):
    output, state = apply(
      params, state, rng, inputs, is_training, subsampling=subsampling
    )
    reconstruction['label'] = output['label']
    for key in ('image', 'audio'):
      if key in reconstruction:
        reconstruction[key] = jnp.concatenate([reconstruction[key], output[key]], axis=1)
      else:
        reconstruction[key] = output[key]
  reconstruction['image'] = jnp.reshape(reconstruction['image'], inputs['images'].shape)
  reconstruction['audio'] = jnp.reshape(reconstruction['audio'], inputs['audio'].shape)
  return reconstruction, state


#  ----------------------------------------------------------------------------
#  Flat `<prefix>/<module>/<name>` <-> nested Haiku mapping helpers.
#  ----------------------------------------------------------------------------


def flatten_tree(prefix, tree):
  """Nested Haiku mapping (or array, or dict of arrays) -> {'prefix/...': leaf}."""
  if not hasattr(tree, 'items'):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(flatten_tree(f'{prefix}/{key}', value))
  return flat


def unflatten_haiku(flat, prefix):
  """{'prefix/<module>/<name>': array} -> {module: {name: array}}."""
  tree = {}
  for key, value in flat.items():
    if key.startswith(prefix + '/'):
      module, name = key[len(prefix) + 1 :].rsplit('/', 1)
      tree.setdefault(module, {})[name] = jnp.asarray(value)
  return tree


def load_golden(name):
  with np.load(os.path.join(GOLDEN_DIR, f'{name}.npz')) as data:
    return {key: data[key] for key in data.files}


def unflatten_inputs(golden):
  return {k[len('inputs/') :]: v for k, v in golden.items() if k.startswith('inputs/')}


def _shapes(flat, prefix):
  return {
    k[len(prefix) + 1 :]: tuple(v.shape)
    for k, v in flat.items()
    if k.startswith(prefix + '/')
  }


#  ----------------------------------------------------------------------------
#  Tests against the golden fixtures.
#  ----------------------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_parameter_paths_and_shapes_match_official(name):
  golden = load_golden(name)
  family = FAMILIES[name]
  inputs = unflatten_inputs(golden)
  params, state = jax.eval_shape(
    functools.partial(init, family, OURS), jax.random.PRNGKey(0), inputs
  )
  assert _shapes(flatten_tree('params', params), 'params') == _shapes(golden, 'params')
  assert _shapes(flatten_tree('state', state), 'state') == _shapes(golden, 'state')


@pytest.mark.parametrize(
  'name,mode',
  [(name, 'eval') for name in sorted(FAMILIES)]
  + [(name, 'train') for name in TRAIN_MODE_FAMILIES],
)
def test_outputs_match_official(name, mode):
  golden = load_golden(name)
  family = FAMILIES[name]
  params = unflatten_haiku(golden, 'params')
  state = unflatten_haiku(golden, 'state')
  rng = jax.random.PRNGKey(int(golden['rng_seed']))
  outputs, new_state = run(
    family,
    OURS,
    params,
    state,
    rng,
    unflatten_inputs(golden),
    is_training=(mode == 'train'),
  )
  got = {
    **flatten_tree(f'{mode}/outputs', outputs),
    **flatten_tree(f'{mode}/state', new_state),
  }
  want = {k: v for k, v in golden.items() if k.startswith(mode + '/')}
  assert sorted(got) == sorted(want)
  for key in sorted(want):
    got[key] = np.asarray(got[key])
    assert got[key].shape == want[key].shape, key
    assert got[key].dtype == want[key].dtype, key
    np.testing.assert_allclose(
      got[key], want[key], rtol=RTOL, atol=_atol(want[key]), err_msg=key
    )


@pytest.mark.slow
@pytest.mark.parametrize('name', INIT_FAMILIES)
def test_initial_parameters_match_official_for_the_same_seed(name):
  """Same seed, same initial values: official training recipes reproduce exactly.

  Holds when every module draws its RNG keys in the official order (the official modules
  draw a key for every dropout call, even at rate 0).
  """
  golden = load_golden(name)
  family = FAMILIES[name]
  params, _ = jax.jit(functools.partial(init, family, OURS))(
    jax.random.PRNGKey(int(golden['init_seed'])), unflatten_inputs(golden)
  )
  got = flatten_tree('init', params)
  want = {k: v for k, v in golden.items() if k.startswith('init/')}
  assert sorted(got) == sorted(want)
  for key in sorted(want):
    np.testing.assert_allclose(
      np.asarray(got[key]), want[key], rtol=RTOL, atol=_atol(want[key]), err_msg=key
    )


def test_golden_fixtures_exercise_every_output():
  """Guards the fixtures themselves: non-trivial outputs, BatchNorm state that moves."""
  for name in FAMILIES:
    golden = load_golden(name)
    for key, value in golden.items():
      if key.startswith('eval/outputs'):
        assert np.std(value) > 1e-3, key
  conv = load_golden('imagenet_conv')
  moved = [
    k
    for k in conv
    if k.startswith('train/state/')
    and k.endswith('/average')
    and not np.allclose(conv[k], conv['state/' + k[len('train/state/') :]])
  ]
  assert len(moved) == 2, 'training step did not update the BatchNorm averages'
  for name in TRAIN_MODE_FAMILIES:  # batch statistics / dropout change the outputs
    golden = load_golden(name)
    assert np.max(np.abs(golden['train/outputs'] - golden['eval/outputs'])) > 1e-2, name


def test_colab_style_access_to_position_encoding_through_perceiver_module():
  """The language colab writes `perceiver.position_encoding.TrainablePositionEncoding`."""
  assert perceiver.position_encoding is position_encoding
  assert perceiver.io_processors is io_processors


#  ----------------------------------------------------------------------------
#  Full-size released models: parameter paths, shapes and counts.
#  ----------------------------------------------------------------------------


def read_official_param_names():
  """Parses official_param_names.txt -> {section title: {path: shape}}."""
  sections, current = {}, None
  with open(PARAM_NAMES_FILE) as f:
    for line in f:
      line = line.strip()
      if line.startswith('==='):
        current = sections.setdefault(line.strip('= '), {})
      elif current is not None and line and not line.startswith('state:'):
        path, shape = line.split(' ', 1)
        current[path] = tuple(int(d) for d in shape.strip('()').split(',') if d.strip())
  return sections


def _full_size_shapes(fn, inputs):
  params, state = jax.eval_shape(
    hk.transform_with_state(fn).init, jax.random.PRNGKey(0), inputs
  )
  flat = flatten_tree('params', params)
  return _shapes(flat, 'params'), state


@pytest.mark.parametrize(
  'section,count',
  [
    ('ImageNet Fourier classifier params', 48_440_627),
    ('MLM params', 201_108_230),
  ],
)
def test_full_size_models_match_official_parameter_listing(section, count):
  official = read_official_param_names()[section]
  if section.startswith('ImageNet'):
    inputs = {
      'images': jax.ShapeDtypeStruct(IMAGENET_FOURIER_FULL['image_shape'], jnp.float32)
    }
    fn = functools.partial(
      imagenet_classifier, OURS, IMAGENET_FOURIER_FULL, is_training=False
    )
  else:
    shape = (1, MLM_FULL['max_seq_len'])
    inputs = {
      'inputs': jax.ShapeDtypeStruct(shape, jnp.int32),
      'input_mask': jax.ShapeDtypeStruct(shape, jnp.int32),
    }
    fn = functools.partial(masked_language_model, OURS, MLM_FULL, is_training=False)
  shapes, state = _full_size_shapes(fn, inputs)
  assert shapes == official
  assert not state
  assert sum(int(np.prod(s)) for s in shapes.values()) == count
