"""The parameter tables between Haiku trees and transformers' Perceiver state dicts.

The tables must name exactly the release's parameter paths (checked against
`data/official_param_names.txt` for the full-size ImageNet and language models), convert
layouts as documented (checked by hand on the tiny transformers checkpoints of
tests/inference/data/transformers), round-trip every family bit for bit in both
directions, and name every missing, unexpected or misshapen tensor. No PyTorch is needed;
tests/inference/test_huggingface.py checks the outputs.
"""

import json
import os

import numpy as np
import pytest

from perceiver import huggingface
from perceiver import safetensors
from tests import transformers_data

PARAM_NAMES = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'data', 'official_param_names.txt'
)


def _official_paths(section):
  paths, current = set(), None
  with open(PARAM_NAMES) as f:
    for line in f:
      if line.startswith('==='):
        current = line.strip('= \n')
      elif current == section and line.strip() and not line.startswith('state:'):
        paths.add(line.split(' ', 1)[0])
  return paths


@pytest.mark.parametrize(
  'architecture, section, num_self_attends',
  [
    ('PerceiverForImageClassificationFourier', 'ImageNet Fourier classifier params', 6),
    ('PerceiverForMaskedLM', 'MLM params', 26),
  ],
)
def test_tables_name_the_release_paths(architecture, section, num_self_attends):
  table = huggingface.parameter_table(architecture, num_self_attends)
  assert {e.haiku for e in table} == _official_paths(section)
  assert len({e.hf for e in table}) == len(table)  # One tensor per parameter.


@pytest.fixture(name='checkpoint', params=sorted(transformers_data.FAMILIES))
def fixture_checkpoint(request, tmp_path):
  directory = transformers_data.unpack(request.param, str(tmp_path / request.param))
  return huggingface.read_transformers_checkpoint(directory)


def test_round_trips_bit_for_bit(checkpoint):
  """transformers -> Haiku -> transformers and Haiku -> transformers -> Haiku."""
  tensors = safetensors.read_safetensors(checkpoint.path)
  back = huggingface.to_transformers(
    checkpoint.architecture, checkpoint.params, checkpoint.state
  )
  assert sorted(back) == sorted(tensors)
  for key, value in tensors.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
    assert back[key].tobytes() == value.tobytes(), key
  params, state, _ = huggingface.from_transformers(
    checkpoint.architecture,
    back,
    num_self_attends=checkpoint.config['num_self_attends_per_block'],
  )
  for tree, again in ((checkpoint.params, params), (checkpoint.state, state)):
    assert sorted(tree) == sorted(again)
    for module, entries in tree.items():
      for name, value in entries.items():
        assert again[module][name].dtype == value.dtype
        assert again[module][name].tobytes() == value.tobytes(), (module, name)
  assert (
    checkpoint.architecture
    == transformers_data.FAMILIES[os.path.basename(os.path.dirname(checkpoint.path))]
  )


def _read(family, tmp_path):
  directory = transformers_data.unpack(family, str(tmp_path / family))
  checkpoint = huggingface.read_transformers_checkpoint(directory)
  return checkpoint, safetensors.read_safetensors(checkpoint.path)


def test_layouts_by_hand(tmp_path):
  ckpt, t = _read('imagenet_conv', tmp_path)
  params, state = ckpt.params, ckpt.state
  query = params['perceiver_encoder/~/cross_attention/attention/linear']['w']
  weight = t['perceiver.encoder.cross_attention.attention.self.query.weight']
  assert query.shape == weight.shape[::-1] == (8, 4)  # [in, out] <- [out, in]
  assert query[5, 3] == weight[3, 5]
  conv = params['image_preprocessor/~/conv2_d_downsample/~/conv']['w']
  conv_t = t['perceiver.input_preprocessor.convnet.conv.weight']
  assert conv.shape == (7, 7, 3, 64) and conv_t.shape == (64, 3, 7, 7)
  assert conv[1, 4, 2, 37] == conv_t[37, 2, 1, 4]
  bn = 'image_preprocessor/~/conv2_d_downsample/~/batchnorm'
  np.testing.assert_array_equal(
    params[bn]['scale'],
    t['perceiver.input_preprocessor.convnet.batchnorm.weight'][None, None, None],
  )
  average = state[f'{bn}/~/var_ema']['average']
  np.testing.assert_array_equal(
    average[0, 0, 0], t['perceiver.input_preprocessor.convnet.batchnorm.running_var']
  )
  assert state[f'{bn}/~/var_ema']['counter'].dtype == np.int32
  assert int(state[f'{bn}/~/mean_ema']['counter']) == 7
  # The un-debiased accumulator Haiku keeps: average = hidden / (1 - 0.9**counter).
  np.testing.assert_allclose(
    state[f'{bn}/~/var_ema']['hidden'] / (1 - 0.9**7), average, rtol=1e-6
  )
  ckpt, t = _read('masked_lm', tmp_path)
  # The decoder's logits use the input embedding: one tensor, no copy.
  np.testing.assert_array_equal(
    ckpt.params['embed']['embeddings'],
    t['perceiver.input_preprocessor.embeddings.weight'],
  )
  assert not any(
    k.startswith('embedding_decoder.') and k != 'embedding_decoder.bias' for k in t
  )


def test_learned_decoder_query_residual_fold(tmp_path):
  ckpt, t = _read('imagenet_learned', tmp_path)
  key = 'perceiver.decoder.decoder.decoding_cross_attention.attention.output.dense.bias'
  query = t['perceiver.decoder.decoder.output_position_encodings.position_embeddings'][0]
  params, state, _ = huggingface.from_transformers(
    ckpt.architecture, t, num_self_attends=1, decoder_query_residual=False
  )
  bias = params[
    'classification_decoder/~/basic_decoder/cross_attention/attention/linear_3'
  ]
  np.testing.assert_array_equal(bias['b'], t[key] + query)
  back = huggingface.to_transformers(
    ckpt.architecture, params, state, decoder_query_residual=False
  )
  # (b + q) - q is b to within one rounding of b + q.
  np.testing.assert_allclose(
    back[key], t[key], rtol=0, atol=np.spacing(np.abs(bias['b'])).max()
  )
  with pytest.raises(
    ValueError, match='only foldable into PerceiverForImageClassificationLearned'
  ):
    huggingface.from_transformers(
      'PerceiverForMaskedLM', {}, num_self_attends=1, decoder_query_residual=False
    )


def test_every_missing_unexpected_or_misshapen_tensor_is_named(tmp_path):
  ckpt, t = _read('imagenet_fourier', tmp_path)
  t = dict(t)
  gone = [
    'perceiver.encoder.self_attends.1.mlp.dense2.bias',
    'perceiver.embeddings.latents',
  ]
  for key in gone:
    del t[key]
  t['perceiver.encoder.self_attends.2.mlp.dense1.weight'] = np.zeros((3, 3), np.float32)
  t['perceiver.decoder.decoder.final_layer.weight'] = np.zeros((4,), np.float32)
  with pytest.raises(huggingface.CheckpointMismatchError) as info:
    huggingface.from_transformers(ckpt.architecture, t, num_self_attends=2, source='F')
  message = str(info.value)
  assert message.startswith(
    "F does not fit transformers' PerceiverForImageClassificationFourier"
  )
  for key in gone:
    assert key in message
  assert '1 unexpected: perceiver.encoder.self_attends.2.mlp.dense1.weight' in message
  assert 'perceiver.decoder.decoder.final_layer.weight: shape [4], expected 2' in message
  # Haiku trees: paper 1's second cross-attend has no place in transformers' models.
  params = dict(ckpt.params)
  params['perceiver_encoder/~/cross_attention_1/attention/linear'] = {
    'w': np.zeros((2, 2))
  }
  del params['perceiver_encoder/~/trainable_position_encoding']
  with pytest.raises(huggingface.CheckpointMismatchError) as info:
    huggingface.to_transformers(ckpt.architecture, params, {})
  assert 'params:perceiver_encoder/~/trainable_position_encoding/pos_embs' in str(
    info.value
  )
  assert 'params:perceiver_encoder/~/cross_attention_1/attention/linear/w' in str(
    info.value
  )


def test_directories(tmp_path):
  directory = transformers_data.unpack('masked_lm', str(tmp_path / 'mlm'))
  ckpt = huggingface.read_transformers_checkpoint(directory)
  # Sharded weights (an index naming two files) read the same.
  sharded = tmp_path / 'sharded'
  sharded.mkdir()
  tensors = safetensors.read_safetensors(ckpt.path)
  names = sorted(tensors)
  weight_map = {}
  for i, part in enumerate((names[::2], names[1::2])):
    shard = f'model-0000{i + 1}-of-00002.safetensors'
    safetensors.write_safetensors(str(sharded / shard), {k: tensors[k] for k in part})
    weight_map.update({k: shard for k in part})
  (sharded / 'model.safetensors.index.json').write_text(
    json.dumps({'weight_map': weight_map})
  )
  (sharded / 'config.json').write_text((tmp_path / 'mlm' / 'config.json').read_text())
  again = huggingface.read_transformers_checkpoint(str(sharded))
  assert again.path.endswith('model.safetensors.index.json')
  for module, entries in ckpt.params.items():
    for name, value in entries.items():
      np.testing.assert_array_equal(again.params[module][name], value)
  # Writing: config.json names the class; the weights read back exactly.
  out = tmp_path / 'out'
  huggingface.write_transformers_checkpoint(
    str(out), ckpt.config, ckpt.params, ckpt.state
  )
  written = json.loads((out / 'config.json').read_text())
  assert written['architectures'] == ['PerceiverForMaskedLM']
  assert written['model_type'] == 'perceiver'
  assert sorted(safetensors.read_safetensors(str(out / 'model.safetensors'))) == names
  assert safetensors.read_header(str(out / 'model.safetensors'))['__metadata__'] == {
    'format': 'pt'
  }


def test_refusals(tmp_path):
  directory = tmp_path / 'ckpt'
  with pytest.raises(ValueError, match='is not a directory'):
    huggingface.read_transformers_checkpoint(str(directory))
  directory.mkdir()
  with pytest.raises(ValueError, match='has no config.json'):
    huggingface.read_transformers_checkpoint(str(directory))
  config = {'architectures': ['PerceiverForMaskedLM'], 'model_type': 'perceiver'}
  (directory / 'config.json').write_text(json.dumps(config))
  (directory / 'pytorch_model.bin').write_bytes(b'\x80\x02}q\x00.')
  with pytest.raises(
    ValueError, match=r'pytorch_model.bin is a pickle, and loading a pickle can run code'
  ):
    huggingface.read_transformers_checkpoint(str(directory))
  (directory / 'pytorch_model.bin').unlink()
  with pytest.raises(ValueError, match='has no model.safetensors'):
    huggingface.read_transformers_checkpoint(str(directory))
  for bad, match in (
    (
      {'model_type': 'bert', 'architectures': ['BertModel']},
      "model_type 'bert' is not 'perceiver'",
    ),
    (
      {'architectures': ['PerceiverModel']},
      "architecture 'PerceiverModel' is not mapped",
    ),
    ({'architectures': []}, r'"architectures" is \[\]'),
  ):
    (directory / 'config.json').write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=match):
      huggingface.read_transformers_checkpoint(str(directory))
  (directory / 'config.json').write_text('{"architectures": ')
  with pytest.raises(ValueError, match='is not valid JSON'):
    huggingface.read_transformers_checkpoint(str(directory))
