r"""Regenerates the tiny transformers checkpoints of tests/inference/test_huggingface.py.

For each of transformers' seven Perceiver classes it builds a tiny model (odd, distinct
sizes), gives every tensor random values, saves it with `save_pretrained` and records its
outputs on fixed random inputs. The tests import the checkpoints without PyTorch and
reproduce those outputs with this project's models.

Needs PyTorch and transformers, which this project does not install: run it in a
virtual environment of its own, from the repository root:

  python3.11 -m venv /tmp/venv-torch
  /tmp/venv-torch/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  /tmp/venv-torch/bin/pip install transformers numpy
  /tmp/venv-torch/bin/python tests/inference/data/transformers/generate.py

It writes, per family, `<family>/config.json` (as `save_pretrained` wrote it),
`<family>/model.safetensors.xz` (the `model.safetensors` it wrote, xz-compressed: the
tests decompress it into a temporary directory) and `<family>/expected.npz` (the inputs
in transformers' layout, as `hf/<name>`, and the outputs, as `outputs/<name>`).

The random values lie on a coarse grid (a power of two times a small integer; weights
have a standard deviation of about 1/sqrt(fan-in)) so that the compressed files stay
small: the optical flow and multimodal classes hard-code 322- and 387-channel decoder
queries whatever the configuration. The data were made with the versions recorded in
each `expected.npz` (`versions`).
"""

import argparse
import lzma
import os
import shutil
import tempfile

import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20240527
BATCH = 2


def family_configs():
  """`{family: (class name, PerceiverConfig keywords)}` of the tiny models."""
  common = dict(hidden_act='gelu_new', attention_probs_dropout_prob=0.0)
  return {
    'imagenet_learned': (
      'PerceiverForImageClassificationLearned',
      dict(
        num_latents=5,
        d_latents=12,
        num_blocks=2,
        num_self_attends_per_block=1,
        num_self_attention_heads=3,
        num_cross_attention_heads=2,
        qk_channels=6,
        v_channels=12,
        cross_attention_widening_factor=2,
        self_attention_widening_factor=3,
        image_size=3,
        num_labels=7,
      ),
    ),
    'imagenet_fourier': (
      'PerceiverForImageClassificationFourier',
      dict(
        num_latents=7,
        d_latents=10,
        num_blocks=1,
        num_self_attends_per_block=2,
        num_self_attention_heads=5,
        num_cross_attention_heads=1,
        qk_channels=5,
        v_channels=10,
        use_query_residual=False,
        num_labels=4,
      ),
    ),
    'imagenet_conv': (
      'PerceiverForImageClassificationConvProcessing',
      dict(
        num_latents=3,
        d_latents=8,
        num_blocks=3,
        num_self_attends_per_block=1,
        num_self_attention_heads=4,
        num_cross_attention_heads=2,
        qk_channels=4,
        v_channels=8,
        num_labels=5,
      ),
    ),
    'masked_lm': (
      'PerceiverForMaskedLM',
      dict(
        num_latents=5,
        d_latents=12,
        d_model=16,
        num_blocks=1,
        num_self_attends_per_block=2,
        num_self_attention_heads=2,
        num_cross_attention_heads=3,
        cross_attention_shape_for_attention='q',
        max_position_embeddings=11,
      ),
    ),
    'sequence_classification': (
      'PerceiverForSequenceClassification',
      dict(
        num_latents=6,
        d_latents=9,
        d_model=24,
        num_blocks=2,
        num_self_attends_per_block=1,
        num_self_attention_heads=3,
        num_cross_attention_heads=1,
        max_position_embeddings=13,
        num_labels=3,
      ),
    ),
    'optical_flow': (
      'PerceiverForOpticalFlow',
      dict(
        num_latents=5,
        d_latents=12,
        num_blocks=1,
        num_self_attends_per_block=1,
        num_self_attention_heads=4,
        num_cross_attention_heads=1,
        qk_channels=8,
        v_channels=12,
        train_size=[3, 5],
      ),
    ),
    'multimodal_autoencoding': (
      'PerceiverForMultimodalAutoencoding',
      dict(
        num_latents=5,
        d_latents=12,
        num_blocks=1,
        num_self_attends_per_block=1,
        num_self_attention_heads=3,
        num_cross_attention_heads=1,
        qk_channels=6,
        v_channels=12,
        num_frames=2,
        audio_samples_per_frame=8,
        samples_per_patch=4,
        image_size=2,
        output_shape=[1, 2, 8, 8],
        output_num_channels=9,
        num_labels=5,
        _label_trainable_num_channels=11,
      ),
    ),
  }, common


def grid(rs, shape, std):
  """N(0, std^2) values rounded to multiples of a power of two near std / 2 (near std
  for tensors of more than 4096 values, which then take about two bits each)."""
  step = 2.0 ** np.round(np.log2(std if np.prod(shape) > 4096 else std / 2))
  return (np.round(rs.normal(0, std, shape) / step) * step).astype(np.float32)


def randomize(model, rs):
  """Gives every parameter and BatchNorm statistic a random value on a coarse grid."""
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      shape = tuple(tensor.shape)
      if name.endswith('num_batches_tracked'):
        tensor.fill_(7)
        continue
      if name.endswith('running_var'):
        value = 0.5 + np.abs(grid(rs, shape, 0.5))
      elif 'norm' in name and name.endswith('weight'):
        value = 1.0 + grid(rs, shape, 0.25)
      elif name.endswith('weight') and len(shape) >= 2 and 'embeddings' not in name:
        value = grid(rs, shape, 1.0 / np.sqrt(np.prod(shape[1:])))
      else:  # Biases, norms' offsets, embeddings, latents, queries, paddings, masks.
        value = grid(rs, shape, 0.5)
      tensor.copy_(torch.from_numpy(value))


def flow_patches(frames):
  """`[B, T, 27, H, W]` 3x3 patches (channels `(ph pw c)`) of `[B, T, H, W, 3]` frames,
  zero-padded by one pixel: the layout of the release's `patches_for_flow`."""
  b, t, h, w, c = frames.shape
  padded = np.pad(frames, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  patches = np.stack(
    [padded[:, :, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=4
  ).reshape(b, t, h, w, 9 * c)
  return np.ascontiguousarray(patches.transpose(0, 1, 4, 2, 3))


def token_inputs(rs, length):
  ids = rs.randint(6, 262, size=(BATCH, length)).astype(np.int64)
  ids[0, 2:5] = 3  # [MASK]
  mask = np.ones((BATCH, length), np.int64)
  ids[1, 7:] = 0  # The second example is padded after 7 ids.
  mask[1, 7:] = 0
  return {'input_ids': ids, 'attention_mask': mask}


def family_inputs(family, config, rs):
  """Inputs in transformers' layout (NumPy) and the keyword arguments of `forward`."""
  if family.startswith('imagenet'):
    size = {'imagenet_learned': (3, 3), 'imagenet_fourier': (5, 7)}.get(family, (13, 10))
    pixels = rs.normal(size=(BATCH, 3, *size)).astype(np.float32)
    return {'pixel_values': pixels}, {'inputs': torch.from_numpy(pixels)}
  if family in ('masked_lm', 'sequence_classification'):
    inputs = token_inputs(rs, config.max_position_embeddings)
    return inputs, {k: torch.from_numpy(v) for k, v in inputs.items()}
  if family == 'optical_flow':
    frames = rs.uniform(-1, 1, size=(BATCH, 2, *config.train_size, 3)).astype(np.float32)
    patches = flow_patches(frames)
    return {'frames': frames, 'patches': patches}, {'inputs': torch.from_numpy(patches)}
  # Multimodal: every output point decoded at once.
  _, t, h, w = config.output_shape
  n_audio = config.num_frames * config.audio_samples_per_frame
  video = rs.uniform(-1, 1, size=(BATCH, t, h, w, 3)).astype(np.float32)
  audio = rs.uniform(-1, 1, size=(BATCH, n_audio)).astype(np.float32)
  inputs = {
    'image': torch.from_numpy(np.ascontiguousarray(video.transpose(0, 1, 4, 2, 3))),
    'audio': torch.from_numpy(audio[..., None]),
    'label': torch.zeros(BATCH, config.num_labels),
  }
  points = {
    'image': torch.arange(t * h * w),
    'audio': torch.arange(n_audio // config.samples_per_patch),
    'label': None,
  }
  return {'video': video, 'audio': audio}, {
    'inputs': inputs,
    'subsampled_output_points': points,
  }


def generate(family, class_name, kwargs, output_dir, seed):
  rs = np.random.RandomState(seed)
  config = transformers.PerceiverConfig(**kwargs)
  model = getattr(transformers, class_name)(config)
  randomize(model, rs)
  model.eval()
  hf_inputs, forward_kwargs = family_inputs(family, config, rs)
  with torch.no_grad():
    logits = model(**forward_kwargs).logits
  if isinstance(logits, dict):
    outputs = {f'outputs/{k}': v.numpy() for k, v in logits.items()}
  else:
    outputs = {'outputs/logits': logits.numpy()}
  target = os.path.join(output_dir, family)
  os.makedirs(target, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    shutil.copyfile(os.path.join(tmp, 'config.json'), os.path.join(target, 'config.json'))
    with open(os.path.join(tmp, 'model.safetensors'), 'rb') as f:
      raw = f.read()
  with lzma.open(os.path.join(target, 'model.safetensors.xz'), 'wb', preset=9) as f:
    f.write(raw)
  versions = f'torch {torch.__version__}, transformers {transformers.__version__}'
  np.savez_compressed(
    os.path.join(target, 'expected.npz'),
    versions=np.array(versions),
    **{f'hf/{k}': v for k, v in hf_inputs.items()},
    **outputs,
  )
  return len(raw)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output_dir', default=HERE)
  args = parser.parse_args()
  torch.manual_seed(SEED)
  configs, common = family_configs()
  for index, (family, (class_name, kwargs)) in enumerate(configs.items()):
    size = generate(
      family, class_name, {**common, **kwargs}, args.output_dir, SEED + index
    )
    print(f'{family}: {class_name}, model.safetensors {size} bytes')


if __name__ == '__main__':
  main()
