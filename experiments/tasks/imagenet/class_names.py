"""The names of the 1000 ImageNet classes, in label order.

`data/imagenet_classes.tsv` holds the ILSVRC-2012 classes in label order (the sorted
WordNet ids, as TFDS `imagenet2012` labels them) with their WordNet lemmas, taken from
timm 1.0.31 on PyPI (Apache-2.0): `timm/data/_info/imagenet_synsets.txt` (order) and
`imagenet_synset_to_lemma.txt` (names); `write_class_file` regenerates it from the wheel.
"""

import functools
import os
from typing import Tuple
import zipfile

CLASS_FILE = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'data', 'imagenet_classes.tsv'
)
NUM_CLASSES = 1000
_TIMM_SYNSETS = 'timm/data/_info/imagenet_synsets.txt'
_TIMM_LEMMAS = 'timm/data/_info/imagenet_synset_to_lemma.txt'


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> Tuple[Tuple[str, str], ...]:
  """`((synset, lemmas), ...)` of the 1000 classes, indexed by label."""
  rows = []
  with open(CLASS_FILE, encoding='utf-8') as f:
    for line in f:
      if line.startswith('#') or not line.strip():
        continue
      index, synset, lemmas = line.rstrip('\n').split('\t')
      if int(index) != len(rows):
        raise ValueError(f'{CLASS_FILE}: label {index} out of order.')
      rows.append((synset, lemmas))
  if len(rows) != NUM_CLASSES:
    raise ValueError(f'{CLASS_FILE} holds {len(rows)} classes, expected {NUM_CLASSES}.')
  return tuple(rows)


def class_name(label: int) -> str:
  """The first lemma of class `label` (e.g. 207 -> 'golden retriever')."""
  return imagenet_classes()[label][1].split(',')[0].strip()


def write_class_file(timm_wheel: str, path: str = CLASS_FILE) -> None:
  """Writes the class file from a timm wheel (`pip download --no-deps timm`)."""
  with zipfile.ZipFile(timm_wheel) as wheel:
    synsets = wheel.read(_TIMM_SYNSETS).decode().split()
    lemmas = dict(
      line.split('\t', 1)
      for line in wheel.read(_TIMM_LEMMAS).decode().splitlines()
      if line
    )
  version = os.path.basename(timm_wheel).split('-')[1]
  with open(path, 'w', encoding='utf-8') as f:
    f.write(
      '# ImageNet-1k (ILSVRC 2012) classes in label order: index, WordNet synset, lemmas.\n'
    )
    f.write(f'# Source: timm {version} (PyPI, Apache-2.0), {_TIMM_SYNSETS} and\n')
    f.write(
      '# imagenet_synset_to_lemma.txt; regenerate with '
      'experiments.tasks.imagenet.class_names.write_class_file(wheel).\n'
    )
    for i, synset in enumerate(synsets):
      f.write(f'{i}\t{synset}\t{lemmas[synset]}\n')
