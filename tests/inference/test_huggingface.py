"""transformers checkpoints in this project's models, without PyTorch.

For each of transformers' seven Perceiver classes, `data/transformers/<family>/` holds a
tiny model that transformers built and saved (random weights, odd sizes) and its outputs
on fixed inputs (data/transformers/generate.py). Importing it here must give a config of
this project whose model reproduces those outputs at float32 tolerance, and exporting
then importing must give back the same parameters bit for bit. The config translation
must refuse, naming them, the fields transformers cannot express.
"""

import importlib
import json
import os

import jax
import numpy as np
import pytest

from experiments.inference import hf_checkpoints
from experiments.inference import huggingface
from experiments.training import errors
from experiments.training import weights
from perceiver import huggingface as hf_lib
from perceiver import safetensors
from tests import transformers_data

# float32 tolerance, relative to each output's largest magnitude: torch and XLA sum in
# different orders. Fourier position features need more: transformers' and JAX's
# `linspace` round the top frequencies (112 for 224 pixels) differently by an ulp, which
# `sin(pi * f * x)` turns into up to 7.6e-5 (measured on the 64-band, 224-resolution
# features of a 5 x 7 grid).
FOURIER_FAMILIES = (
  'imagenet_fourier',
  'imagenet_conv',
  'optical_flow',
  'multimodal_autoencoding',
)


def tolerance(family):
  return 1e-4 if family in FOURIER_FAMILIES else 1e-5


def model_batch(family, hf):
  """The stored inputs (transformers' layout) in this project's batch layout."""
  if family.startswith('imagenet'):
    return {'images': hf['hf/pixel_values'].transpose(0, 2, 3, 1)}
  if family in ('masked_lm', 'sequence_classification'):
    return {
      'inputs': hf['hf/input_ids'].astype(np.int32),
      'input_mask': hf['hf/attention_mask'].astype(np.int32),
    }
  if family == 'optical_flow':
    return {'frames': hf['hf/frames']}
  return {'video': hf['hf/video'], 'audio': hf['hf/audio']}


def model_outputs(config, params, state, batch):
  """This project's outputs, in the shapes transformers returns them."""
  model = importlib.import_module(config.task).build_model(config)
  apply = jax.jit(
    lambda p, s, b: model.apply(p, s, jax.random.PRNGKey(0), b, is_training=False)
  )
  out, _ = apply(params, state, batch)  # One compilation: faster than op by op.
  if config.task == 'experiments.tasks.flow.task':  # transformers' logits are unscaled.
    return {'logits': np.asarray(out) / config.model.flow_scale_factor}
  if isinstance(out, dict):
    batch_size = out['image'].shape[0]
    return {
      'image': np.asarray(out['image']).reshape(batch_size, -1, 3),
      'audio': np.asarray(out['audio']),
      'label': np.asarray(out['label']),
    }
  return {'logits': np.asarray(out)}


def assert_outputs_match(family, got):
  want = transformers_data.expected(family)
  for key in want.files:
    if not key.startswith('outputs/'):
      continue
    name = key.split('/', 1)[1]
    expected, actual = want[key], got[name]
    if family == 'masked_lm':  # Padded positions: this project's queries are masked.
      valid = want['hf/attention_mask'].astype(bool)
      expected, actual = expected[valid], actual[valid]
    tol = tolerance(family)
    atol = tol * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=atol, err_msg=key)


@pytest.mark.parametrize('family', sorted(transformers_data.FAMILIES))
def test_import_reproduces_transformers_outputs(family, tmp_path):
  directory = transformers_data.unpack(family, str(tmp_path / 'hf'))
  imported = hf_checkpoints.import_checkpoint(directory)
  assert imported.checkpoint.architecture == transformers_data.FAMILIES[family]
  assert imported.notes == []  # The data declare hidden_act='gelu_new'.
  batch = model_batch(family, transformers_data.expected(family))
  got = model_outputs(imported.config, imported.params, imported.state, batch)
  assert_outputs_match(family, got)
  # Export, then import again: the same parameters, bit for bit, and the same config.
  out = str(tmp_path / 'export')
  hf_checkpoints.export(imported.config, imported.params, imported.state, out)
  again = hf_checkpoints.import_checkpoint(out, imported.config)
  for tree, other in ((imported.params, again.params), (imported.state, again.state)):
    assert sorted(tree) == sorted(other)
    for module, entries in tree.items():
      for name, value in entries.items():
        assert other[module][name].dtype == value.dtype
        assert other[module][name].tobytes() == value.tobytes(), (module, name)
  rebuilt = huggingface.project_config(hf_lib.read_config(out))
  assert (
    huggingface.differences(imported.config, rebuilt, huggingface.family_of(rebuilt))
    == []
  )
  ours = safetensors.read_safetensors(os.path.join(out, 'model.safetensors'))
  theirs = safetensors.read_safetensors(os.path.join(directory, 'model.safetensors'))
  assert sorted(ours) == sorted(theirs)
  assert all(ours[k].tobytes() == theirs[k].tobytes() for k in theirs)


def test_flow_patches_layout():
  """The generator's 3x3 patches (transformers' `[B, T, 27, H, W]` input) are this
  project's `patches_for_flow` in channels-first layout."""
  from perceiver import io_processors  # noqa: PLC0415

  want = transformers_data.expected('optical_flow')
  patches = np.asarray(io_processors.patches_for_flow(want['hf/frames']))
  np.testing.assert_array_equal(patches.transpose(0, 1, 4, 2, 3), want['hf/patches'])


def test_learned_positions_without_query_residual(tmp_path):
  """The release's learned-positions decoder has no query residual; transformers' always
  adds it. Imported into such a config, the bias absorbs it: the same outputs."""
  directory = transformers_data.unpack('imagenet_learned', str(tmp_path / 'hf'))
  config = huggingface.project_config(hf_lib.read_config(directory))
  assert config.model.decoder.use_query_residual
  config.unlock()
  config.model.decoder.use_query_residual = False
  config.lock()
  imported = hf_checkpoints.import_checkpoint(directory, config)
  batch = model_batch('imagenet_learned', transformers_data.expected('imagenet_learned'))
  got = model_outputs(config, imported.params, imported.state, batch)
  assert_outputs_match('imagenet_learned', got)
  translation = huggingface.transformers_config(config)
  assert translation.decoder_query_residual is False


def _config(spec, **overrides):
  config = huggingface.load_config(spec)
  config.unlock()
  for path, value in overrides.items():
    section = config
    *parents, leaf = path.split('__')
    for name in parents:
      section = section[name]
    section[leaf] = value
  config.lock()
  return config


@pytest.mark.parametrize(
  'spec, overrides',
  [
    ('configs/imagenet.py:io_learned', {}),
    ('configs/imagenet.py:io_fourier', {}),
    (
      'configs/imagenet.py:io_conv',
      {'model__input_preprocessor__conv2d_padding': 'transformers'},
    ),
    ('configs/mlm.py:bytes', {}),
    (
      'configs/glue.py:mnli',
      {'model__decoder__num_heads': 1, 'model__decoder__qk_channels': 1280},
    ),
    ('configs/flow.py', {}),
    ('configs/multimodal.py:kinetics', {}),
  ],
)
def test_release_configs_translate_both_ways(spec, overrides):
  """Each released architecture has a transformers config that describes all of it."""
  config = _config(spec, **overrides)
  translation = huggingface.transformers_config(config)
  family = huggingface.family_of(config)
  assert translation.hf_config['architectures'] == [family.architecture]
  assert translation.hf_config['hidden_act'] == 'gelu_new'
  json.dumps(translation.hf_config)  # config.json material.
  derived = huggingface.project_config(translation.hf_config)
  assert huggingface.differences(config, derived, family) == []
  if spec.startswith('configs/imagenet.py'):  # transformers' pipelines show names.
    assert translation.hf_config['id2label']['207'] == 'golden retriever'


@pytest.mark.parametrize(
  'spec, overrides, named',
  [
    (
      'configs/imagenet.py:io_conv',
      {},
      "model.input_preprocessor.conv2d_padding='same': transformers' "
      "PerceiverForImageClassificationConvProcessing has 'transformers'",
    ),
    (
      'configs/glue.py:mrpc',
      {},
      "model.decoder.num_heads=8: transformers' PerceiverForSequenceClassification has 1;"
      " model.decoder.qk_channels=256: transformers' PerceiverForSequenceClassification "
      'has 1280',
    ),
    (
      'configs/imagenet.py:io_fourier',
      {'model__encoder__num_cross_attends': 2},
      'model.encoder.num_cross_attends=2',
    ),
    (
      'configs/imagenet.py:io_fourier',
      {'model__encoder__compute_dtype': 'bfloat16'},
      "model.encoder.compute_dtype='bfloat16'",
    ),
    (
      'configs/imagenet.py:io_fourier',
      {'model__permute_inputs': True},
      'model.permute_inputs=True',
    ),
    ('configs/imagenet.py:perceiver', {}, "model.decoder_type='projection'"),
    ('configs/digits.py', {}, "config.task='experiments.tasks.digits.task'"),
    (
      'configs/flow.py:synthetic',
      {},
      "model.decoder.rescale_factor=20.0: transformers' PerceiverForOpticalFlow has 100.0",
    ),
  ],
)
def test_inexpressible_fields_are_refused_by_name(spec, overrides, named):
  with pytest.raises(huggingface.ConfigMismatchError) as info:
    huggingface.transformers_config(_config(spec, **overrides))
  assert named in str(info.value)
  assert '\n' not in str(info.value)


def test_compute_only_fields_are_carried():
  config = _config(
    'configs/imagenet.py:io_fourier',
    model__encoder__remat=True,
    model__encoder__scan_layers=True,
    model__encoder__attention_key_chunk_size=512,
    model__encoder__compute_dtype='',
    model__encoder__dropout_prob=0.1,
  )
  assert (
    huggingface.transformers_config(config).hf_config['attention_probs_dropout_prob']
    == 0.1
  )


def test_checkpoint_config_checks(tmp_path):
  directory = transformers_data.unpack('imagenet_fourier', str(tmp_path / 'hf'))
  hf_config = hf_lib.read_config(directory)
  with pytest.raises(huggingface.ConfigMismatchError) as info:
    hf_checkpoints.import_checkpoint(directory, _config('configs/imagenet.py:io_fourier'))
  message = str(info.value)
  assert 'model.encoder.z_index_dim: checkpoint 7, config 512' in message
  assert 'data.num_classes: checkpoint 4, config 1000' in message
  with pytest.raises(
    huggingface.ConfigMismatchError, match='the checkpoint is a Perceiver'
  ):
    huggingface.check_checkpoint_config(hf_config, _config('configs/mlm.py:bytes'))
  assert huggingface.notes({**hf_config, 'hidden_act': 'gelu'})  # Exact GELU: a note.
  for field, value, match in (
    ('hidden_act', 'relu', "hidden_act='relu'"),
    (
      'cross_attention_shape_for_attention',
      'q',
      "cross_attention_shape_for_attention='q'",
    ),
    ('architectures', ['PerceiverModel'], "architectures=\\['PerceiverModel'\\]"),
  ):
    with pytest.raises(huggingface.ConfigMismatchError, match=match):
      huggingface.project_config({**hf_config, field: value})


def test_glue_from_a_masked_language_model_checks_the_encoder(tmp_path):
  """A GLUE classifier starts from an MLM checkpoint's inputs and encoder: only those
  fields are compared."""
  directory = transformers_data.unpack('masked_lm', str(tmp_path / 'hf'))
  hf_config = hf_lib.read_config(directory)
  mlm = huggingface.project_config(hf_config)
  glue = _config('configs/glue.py:mrpc')
  glue.unlock()
  glue.model.d_model, glue.model.max_seq_len = mlm.model.d_model, mlm.model.max_seq_len
  glue.model.encoder = mlm.model.encoder
  glue.data.seq_len = mlm.model.max_seq_len
  glue.lock()
  prefixes = huggingface.TEXT_ENCODER_FIELDS
  huggingface.check_checkpoint_config(hf_config, glue, prefixes=prefixes)
  glue.unlock()
  glue.model.encoder.z_index_dim = 9
  glue.lock()
  with pytest.raises(huggingface.ConfigMismatchError) as info:
    huggingface.check_checkpoint_config(hf_config, glue, prefixes=prefixes)
  assert str(info.value).endswith(
    '1 field(s): model.encoder.z_index_dim: checkpoint 5, config 9.'
  )


def test_fit_check_names_every_tensor(tmp_path):
  directory = transformers_data.unpack('masked_lm', str(tmp_path / 'hf'))
  imported = hf_checkpoints.import_checkpoint(directory)
  config = imported.config
  config.unlock()
  config.model.d_model = 24  # Other embedding widths than the file's.
  config.model.decoder.v_channels = 24
  config.model.decoder.output_num_channels = 24
  config.model.decoder.trainable_position_encoding_kwargs.num_channels = 24
  config.lock()
  with pytest.raises(errors.DataError) as info:
    weights.fit(
      (imported.params, imported.state),
      hf_checkpoints.model_shapes(config),
      source='F',
      arg_name='--input_dir',
      file_keys=imported.checkpoint.sources,
      shown=None,
    )
  message = str(info.value)
  assert message.startswith("--input_dir='F' does not fit the config's architecture: ")
  assert (
    'embed/embeddings (perceiver.input_preprocessor.embeddings.weight): file (262, 16) '
    'vs model (262, 24)'
  ) in message


def test_a_transformers_directory_is_a_weight_source(tmp_path):
  """`--checkpoint=DIR` and `--config.model.init_checkpoint=DIR` read a transformers
  checkpoint directory through the one weight loader, as `import_hf` does."""
  directory = transformers_data.unpack('masked_lm', str(tmp_path / 'hf'))
  imported = hf_checkpoints.import_checkpoint(directory)
  loaded = weights.load_model(imported.config, directory)
  assert loaded.path == directory
  for tree, other in ((loaded.params, imported.params), (loaded.state, imported.state)):
    assert sorted(tree) == sorted(other)
    for module, entries in tree.items():
      for name, value in entries.items():
        assert value.tobytes() == other[module][name].tobytes(), (module, name)
  # A config of other sizes: the loader names each tensor with its key in the file.
  config = imported.config
  config.unlock()
  config.model.encoder.num_z_channels = 42
  config.lock()
  with pytest.raises(errors.DataError, match=r'\(perceiver\.decoder\.[^)]*\): file'):
    weights.load_model(config, directory)
