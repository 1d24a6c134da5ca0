"""Models exported here, run by transformers itself (skipped without torch/transformers).

This project never installs PyTorch; these tests run where `torch` and `transformers`
are importable next to it (docs/interop.md says how). Each family's tiny model is
initialised here with random weights, exported, loaded with the transformers class its
`config.json` names, and run on the same inputs: the outputs must agree at float32
tolerance. transformers' pipelines must work from the exported directory alone
(`fill-mask` for the byte model, `image-classification` for ImageNet), and the
`safetensors` package must read what `perceiver.safetensors` writes.
"""

import jax
import ml_dtypes
import numpy as np
import pytest

from experiments.inference import hf_checkpoints
from experiments.inference import huggingface
from experiments.training import task as task_lib
from perceiver import huggingface as hf_lib
from perceiver import safetensors as safetensors_lib
from tests import transformers_data
from tests.inference import test_huggingface as without_torch

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


def _random_model(config, seed=1):
  """Initial parameters of `config`'s model, every array perturbed (so zero-initialised
  biases and output layers matter) and BatchNorm statistics made non-trivial."""
  task = task_lib.load_task(config.task)
  model = task.build_model(config)
  batch = task_lib.example_batch(task, config)
  init = jax.jit(lambda rng, b: model.init(rng, b, is_training=True))
  params, state = init(jax.random.PRNGKey(seed), batch)
  rs = np.random.RandomState(seed)
  noisy = lambda v: np.asarray(v + rs.normal(0, 0.1, np.shape(v)), np.float32)
  params = {m: {n: noisy(v) for n, v in d.items()} for m, d in params.items()}
  state = {m: dict(d) for m, d in state.items()}
  for module, entries in state.items():
    if module.endswith('_ema'):
      entries['average'] = np.abs(noisy(entries['average'])) + 0.5
      entries['counter'] = np.asarray(5, np.int32)
      entries['hidden'] = entries['average'] * np.float32(1 - 0.9**5)
  return params, state


def _hf_outputs(model, family, hf):
  with torch.no_grad():
    if family.startswith('imagenet'):
      out = model(inputs=torch.from_numpy(hf['hf/pixel_values'])).logits
    elif family in ('masked_lm', 'sequence_classification'):
      out = model(
        inputs=torch.from_numpy(hf['hf/input_ids']),
        attention_mask=torch.from_numpy(hf['hf/attention_mask']),
      ).logits
    elif family == 'optical_flow':
      out = model(inputs=torch.from_numpy(hf['hf/patches'])).logits
    else:
      video, audio = hf['hf/video'], hf['hf/audio']
      config = model.config
      inputs = {
        'image': torch.from_numpy(np.ascontiguousarray(video.transpose(0, 1, 4, 2, 3))),
        'audio': torch.from_numpy(audio[..., None]),
        'label': torch.zeros(video.shape[0], config.num_labels),
      }
      points = {
        'image': torch.arange(int(np.prod(video.shape[1:4]))),
        'audio': torch.arange(audio.shape[1] // config.samples_per_patch),
        'label': None,
      }
      out = model(inputs=inputs, subsampled_output_points=points).logits
      return {k: v.numpy() for k, v in out.items()}
  return {'logits': out.numpy()}


def _compare(family, got, want, valid=None):
  for name, expected in want.items():
    actual = got[name]
    if valid is not None:
      expected, actual = expected[valid], actual[valid]
    tol = without_torch.tolerance(family)
    atol = tol * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=atol, err_msg=name)


def _export_and_load(config, params, state, directory):
  translation = hf_checkpoints.export(config, params, state, directory)
  model = getattr(transformers, translation.architecture).from_pretrained(directory)
  return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(transformers_data.FAMILIES))
def test_exported_models_compute_the_same_in_transformers(family, tmp_path):
  source = transformers_data.unpack(family, str(tmp_path / 'source'))
  config = huggingface.project_config(hf_lib.read_config(source))
  params, state = _random_model(config)
  model = _export_and_load(config, params, state, str(tmp_path / 'export'))
  hf = transformers_data.expected(family)
  ours = without_torch.model_outputs(
    config, params, state, without_torch.model_batch(family, hf)
  )
  valid = hf['hf/attention_mask'].astype(bool) if family == 'masked_lm' else None
  _compare(family, ours, _hf_outputs(model, family, hf), valid)


def test_learned_positions_without_query_residual_in_transformers(tmp_path):
  source = transformers_data.unpack('imagenet_learned', str(tmp_path / 'source'))
  config = huggingface.project_config(hf_lib.read_config(source))
  config.unlock()
  config.model.decoder.use_query_residual = False  # The release's learned model.
  config.lock()
  params, state = _random_model(config, seed=2)
  model = _export_and_load(config, params, state, str(tmp_path / 'export'))
  hf = transformers_data.expected('imagenet_learned')
  batch = without_torch.model_batch('imagenet_learned', hf)
  ours = without_torch.model_outputs(config, params, state, batch)
  _compare('imagenet_learned', ours, _hf_outputs(model, 'imagenet_learned', hf))


def test_fill_mask_pipeline(tmp_path):
  source = transformers_data.unpack('masked_lm', str(tmp_path / 'source'))
  config = huggingface.project_config(hf_lib.read_config(source))
  params, state = _random_model(config, seed=3)
  directory = str(tmp_path / 'export')
  hf_checkpoints.export(config, params, state, directory)
  fill = transformers.pipeline('fill-mask', model=directory, top_k=3)
  text = 'ab[MASK]d'
  predictions = fill(text)
  ids = fill.tokenizer(text)['input_ids']
  assert ids == [4, ord('a') + 6, ord('b') + 6, 3, ord('d') + 6, 5]  # [CLS] ... [SEP]
  batch = {'inputs': np.asarray([ids], np.int32), 'input_mask': np.ones((1, 6), np.int32)}
  logits = without_torch.model_outputs(config, params, state, batch)['logits'][0, 3]
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  top = np.argsort(-probs)[:3]
  assert [p['token'] for p in predictions] == list(top)
  np.testing.assert_allclose([p['score'] for p in predictions], probs[top], rtol=1e-5)


def test_image_classification_pipeline(tmp_path):
  from PIL import Image  # noqa: PLC0415

  source = transformers_data.unpack('imagenet_fourier', str(tmp_path / 'source'))
  config = huggingface.project_config(hf_lib.read_config(source))
  config.unlock()
  config.data.image_size = 32  # The processor's output size.
  config.lock()
  params, state = _random_model(config, seed=4)
  directory = str(tmp_path / 'export')
  hf_checkpoints.export(config, params, state, directory)
  classify = transformers.pipeline('image-classification', model=directory, top_k=4)
  image = Image.fromarray(np.random.RandomState(5).randint(0, 256, (40, 52, 3), np.uint8))
  predictions = classify(image)
  pixels = classify.image_processor(image, return_tensors='np')['pixel_values']
  assert pixels.shape == (1, 3, 32, 32)  # Crop 32/37 of the shorter side, resize.
  batch = {'images': np.asarray(pixels, np.float32).transpose(0, 2, 3, 1)}
  logits = without_torch.model_outputs(config, params, state, batch)['logits'][0]
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  by_label = {p['label']: p['score'] for p in predictions}
  want = {f'LABEL_{i}': probs[i] for i in range(4)}
  assert sorted(by_label) == sorted(want)
  for label, score in want.items():
    np.testing.assert_allclose(by_label[label], score, rtol=1e-4)


def test_safetensors_package_reads_our_files(tmp_path):
  import safetensors.numpy  # noqa: PLC0415
  import safetensors.torch  # noqa: PLC0415

  rs = np.random.RandomState(0)
  tensors = {
    'f32': rs.randn(3, 5).astype(np.float32),
    'f16': rs.randn(7).astype(np.float16),
    'i64': np.arange(4, dtype=np.int64),
    'bool': np.array([True, False, True]),
    'zero_dim': np.array(1.5, np.float32),
  }
  path = str(tmp_path / 'ours.safetensors')
  safetensors_lib.write_safetensors(path, tensors, metadata={'format': 'pt'})
  read = safetensors.numpy.load_file(path)
  assert sorted(read) == sorted(tensors)
  for name, value in tensors.items():
    assert read[name].dtype == value.dtype and read[name].shape == value.shape
    np.testing.assert_array_equal(read[name], value)
  bf16 = str(tmp_path / 'bf16.safetensors')
  safetensors_lib.write_safetensors(
    bf16,
    {'b': np.array([0.5, -1.25, 3.0], ml_dtypes.bfloat16)},
    metadata={'format': 'pt'},
  )
  loaded = safetensors.torch.load_file(bf16)['b']
  assert loaded.dtype == torch.bfloat16
  assert loaded.float().tolist() == [0.5, -1.25, 3.0]
