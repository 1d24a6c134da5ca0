"""ImageNet classification of image files with a released or trained Perceiver.

The logic behind `python -m experiments.classify` (see that module for the command).
"""

import functools
import json
from typing import Dict, List, Optional, Sequence

import jax
import ml_collections

from experiments.inference import preprocessing
from experiments.inference import pretrained

DEFAULT_CONFIG = 'configs/imagenet.py:io_fourier'


def resolve_config(
  checkpoint: str, config: Optional[ml_collections.ConfigDict]
) -> ml_collections.ConfigDict:
  """`config`, else the release's config for a registry name, else io_fourier's."""
  if checkpoint in pretrained.RELEASES:
    spec = pretrained.RELEASES[checkpoint].config
    if not spec.startswith('configs/imagenet.py'):
      imagenet = sorted(
        n for n, r in pretrained.RELEASES.items() if 'imagenet' in r.config
      )
      raise ValueError(
        f'--checkpoint={checkpoint!r} is no ImageNet classifier; released ones: {imagenet}.'
      )
    if config is None:
      return pretrained.load_config(spec)
  return config if config is not None else pretrained.load_config(DEFAULT_CONFIG)


@functools.lru_cache(maxsize=4)
def _logits_fn(model):
  return jax.jit(
    lambda params, state, batch: model.apply(
      params, state, None, batch, is_training=False
    )[0]
  )


def classify(
  model: pretrained.Pretrained, image_paths: Sequence[str], top_k: int = 5
) -> List[Dict]:
  """The top-k classes of each image.

  Args:
    model: a loaded ImageNet classifier (`pretrained.load`).
    image_paths: image files (JPEG, PNG, GIF or BMP).
    top_k: classes per image, 1..1000.

  Returns:
    One dict per image: `{'image': path, 'top_k': [{'label', 'synset', 'name',
    'probability'}, ...]}`, most likely first.

  Raises:
    preprocessing.BadImageError: an image cannot be read or decoded (names the file).
    ValueError: `top_k` out of range, or the model is no ImageNet classifier.
  """
  if model.config.task != 'experiments.tasks.imagenet.task':
    raise ValueError(
      f'{model.name!r} is not an ImageNet classifier ({model.config.task}).'
    )
  num_classes = model.config.data.num_classes
  if not 1 <= top_k <= num_classes:
    raise ValueError(f'--top_k={top_k} must be in [1, {num_classes}].')
  batch = preprocessing.imagenet_batch(image_paths, model.config.data.image_size)
  logits = _logits_fn(model.model)(model.params, model.state, batch)
  classes = preprocessing.imagenet_classes()
  results = []
  for path, best in zip(image_paths, preprocessing.top_k(logits, top_k)):
    results.append(
      dict(
        image=path,
        top_k=[
          dict(
            label=label,
            synset=classes[label][0],
            name=preprocessing.class_name(label),
            probability=round(prob, 6),
          )
          for label, prob in best
        ],
      )
    )
  return results


def format_text(results: Sequence[Dict]) -> str:
  """Human-readable lines: the image, then `rank. probability name (synset)`."""
  lines = []
  for result in results:
    lines.append(f'{result["image"]}:')
    for rank, entry in enumerate(result['top_k'], start=1):
      lines.append(
        f'  {rank}. {entry["probability"]:.4f}  {entry["name"]} ({entry["synset"]}, '
        f'label {entry["label"]})'
      )
  return '\n'.join(lines)


def format_json(results: Sequence[Dict]) -> str:
  """One JSON object per line and image."""
  return '\n'.join(json.dumps(result, sort_keys=True) for result in results)
