"""The tiny transformers checkpoints of tests/inference/data/transformers/ (see generate.py).

Each family's folder holds `config.json`, `model.safetensors.xz` (compressed to keep the
repository small) and `expected.npz`; `unpack` makes a checkpoint directory of it as
`save_pretrained` wrote it.
"""

import lzma
import os
import shutil

import numpy as np

DATA_DIR = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'inference', 'data', 'transformers'
)
# Family folder -> transformers class.
FAMILIES = {
  'imagenet_learned': 'PerceiverForImageClassificationLearned',
  'imagenet_fourier': 'PerceiverForImageClassificationFourier',
  'imagenet_conv': 'PerceiverForImageClassificationConvProcessing',
  'masked_lm': 'PerceiverForMaskedLM',
  'sequence_classification': 'PerceiverForSequenceClassification',
  'optical_flow': 'PerceiverForOpticalFlow',
  'multimodal_autoencoding': 'PerceiverForMultimodalAutoencoding',
}


def unpack(family: str, directory: str) -> str:
  """Writes `config.json` and `model.safetensors` of `family` into `directory`."""
  os.makedirs(directory, exist_ok=True)
  source = os.path.join(DATA_DIR, family)
  shutil.copyfile(
    os.path.join(source, 'config.json'), os.path.join(directory, 'config.json')
  )
  with lzma.open(os.path.join(source, 'model.safetensors.xz')) as f:
    data = f.read()
  with open(os.path.join(directory, 'model.safetensors'), 'wb') as f:
    f.write(data)
  return directory


def expected(family: str):
  """`expected.npz` of `family`: `hf/<input>` and `outputs/<name>` arrays."""
  return np.load(os.path.join(DATA_DIR, family, 'expected.npz'))
