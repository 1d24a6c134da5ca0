"""Optical-flow dataset folders: FlyingChairs, Sintel, KITTI 2015 and AutoFlow.

Each reader lists the examples of a split as `Example(frame1, frame2, flow)` paths, in a
fixed order; `load_example` reads one into arrays. Layouts (relative to `data_dir`):

  flying_chairs: `data/NNNNN_img1.ppm`, `data/NNNNN_img2.ppm`, `data/NNNNN_flow.flo`
    and the split file `FlyingChairs_train_val.txt` (line i holds 1 if example i,
    counted from 1, is a training example, 2 if it is a validation example).
    Split 'train' = 1, 'test' = 2.
  sintel: `training/{clean,final}/<scene>/frame_NNNN.png` and
    `training/flow/<scene>/frame_NNNN.flo` (flow from frame N to N + 1). `passes`
    chooses 'clean', 'final' or 'both'. Only the training set has ground truth: both
    splits list it (the paper reports EPE on Sintel training).
  kitti (2015): `training/image_2/NNNNNN_10.png`, `training/image_2/NNNNNN_11.png`,
    `training/flow_occ/NNNNNN_10.png` (16-bit PNG, see `formats`). Both splits list
    the 200 training pairs.
  autoflow: per-sample folders anywhere below `data_dir` holding `im0.png`, `im1.png`
    and `forward.flo`, sorted by path. 'test' takes every 50th folder (the 1st, 51st,
    ...), 'train' the others.

Missing folders, unpaired files and empty splits raise `errors.DataError` naming the path.
"""

import glob
import os
import re
from typing import Dict, List, NamedTuple

import numpy as np

from experiments.tasks.flow import formats
from experiments.training import errors

DATASETS = ('flying_chairs', 'sintel', 'kitti', 'autoflow')
SINTEL_PASSES = ('clean', 'final', 'both')
SPLITS = ('train', 'test')
AUTOFLOW_TEST_EVERY = 50


class Example(NamedTuple):
  frame1: str
  frame2: str
  flow: str


def _require_dir(path: str, what: str) -> None:
  if not os.path.isdir(path):
    raise errors.DataError(f'{what}: folder {path!r} does not exist.')


def _require_file(path: str, what: str) -> None:
  if not os.path.isfile(path):
    raise errors.DataError(f'{what}: file {path!r} does not exist.')


def flying_chairs(data_dir: str, split: str) -> List[Example]:
  data = os.path.join(data_dir, 'data')
  _require_dir(data, 'flying_chairs')
  split_file = os.path.join(data_dir, 'FlyingChairs_train_val.txt')
  _require_file(split_file, 'flying_chairs')
  with open(split_file) as f:
    labels = [line.strip() for line in f if line.strip()]
  bad = [(i, v) for i, v in enumerate(labels, start=1) if v not in ('1', '2')]
  if bad:
    raise errors.DataError(
      f'{split_file!r}: line {bad[0][0]} holds {bad[0][1]!r}; expected 1 or 2.'
    )
  flows = sorted(glob.glob(os.path.join(data, '*_flow.flo')))
  if len(flows) != len(labels):
    raise errors.DataError(
      f'{split_file!r} has {len(labels)} lines but {data!r} holds {len(flows)} '
      '*_flow.flo files.'
    )
  wanted = '1' if split == 'train' else '2'
  examples = []
  for flow, label in zip(flows, labels):
    if label != wanted:
      continue
    stem = flow[: -len('_flow.flo')]
    example = Example(stem + '_img1.ppm', stem + '_img2.ppm', flow)
    for path in example[:2]:
      _require_file(path, 'flying_chairs')
    examples.append(example)
  return examples


def sintel(data_dir: str, split: str, passes: str = 'clean') -> List[Example]:
  del split  # Both splits are the training set (the only one with ground truth).
  if passes not in SINTEL_PASSES:
    raise errors.ConfigError(f'sintel passes={passes!r} is not one of {SINTEL_PASSES}.')
  flow_root = os.path.join(data_dir, 'training', 'flow')
  _require_dir(flow_root, 'sintel')
  examples = []
  for name in ('clean', 'final') if passes == 'both' else (passes,):
    root = os.path.join(data_dir, 'training', name)
    _require_dir(root, 'sintel')
    for scene in sorted(os.listdir(flow_root)):
      for flow in sorted(glob.glob(os.path.join(flow_root, scene, 'frame_*.flo'))):
        number = int(re.fullmatch(r'frame_(\d+)\.flo', os.path.basename(flow)).group(1))
        frame1 = os.path.join(root, scene, f'frame_{number:04d}.png')
        frame2 = os.path.join(root, scene, f'frame_{number + 1:04d}.png')
        _require_file(frame1, 'sintel')
        _require_file(frame2, 'sintel')
        examples.append(Example(frame1, frame2, flow))
  return examples


def kitti(data_dir: str, split: str) -> List[Example]:
  del split  # Both splits are the 200 training pairs.
  images = os.path.join(data_dir, 'training', 'image_2')
  flows = os.path.join(data_dir, 'training', 'flow_occ')
  _require_dir(images, 'kitti')
  _require_dir(flows, 'kitti')
  examples = []
  for flow in sorted(glob.glob(os.path.join(flows, '*_10.png'))):
    stem = os.path.basename(flow)[: -len('_10.png')]
    example = Example(
      os.path.join(images, stem + '_10.png'), os.path.join(images, stem + '_11.png'), flow
    )
    _require_file(example.frame1, 'kitti')
    _require_file(example.frame2, 'kitti')
    examples.append(example)
  return examples


def autoflow(data_dir: str, split: str) -> List[Example]:
  _require_dir(data_dir, 'autoflow')
  folders = sorted(
    os.path.dirname(p)
    for p in glob.glob(os.path.join(data_dir, '**', 'forward.flo'), recursive=True)
  )
  examples = []
  for i, folder in enumerate(folders):
    if (i % AUTOFLOW_TEST_EVERY == 0) != (split == 'test'):
      continue
    example = Example(
      os.path.join(folder, 'im0.png'),
      os.path.join(folder, 'im1.png'),
      os.path.join(folder, 'forward.flo'),
    )
    _require_file(example.frame1, 'autoflow')
    _require_file(example.frame2, 'autoflow')
    examples.append(example)
  return examples


def list_examples(
  dataset: str, data_dir: str, split: str, sintel_passes: str = 'clean'
) -> List[Example]:
  """The examples of `split` of `dataset` under `data_dir` (see the module docstring)."""
  if dataset not in DATASETS:
    raise errors.ConfigError(f'dataset={dataset!r} is not one of {DATASETS}.')
  if split not in SPLITS:
    raise errors.ConfigError(f'split={split!r} is not one of {SPLITS}.')
  if not data_dir:
    raise errors.ConfigError(f'dataset={dataset!r} needs config.data.data_dir.')
  if dataset == 'sintel':
    examples = sintel(data_dir, split, sintel_passes)
  else:
    examples = globals()[dataset](data_dir, split)
  if not examples:
    raise errors.DataError(
      f'{dataset} split {split!r} under {data_dir!r} holds no examples.'
    )
  return examples


def load_example(example: Example) -> Dict[str, np.ndarray]:
  """Reads one example.

  Returns:
    `frames` `[2, H, W, 3]` uint8, `flow` `[H, W, 2]` float32, `valid` `[H, W]` float32.
  """
  frame1 = formats.read_image(example.frame1)
  frame2 = formats.read_image(example.frame2)
  if frame1.shape != frame2.shape:
    raise errors.DataError(
      f'frames {example.frame1!r} {frame1.shape} and {example.frame2!r} '
      f'{frame2.shape} differ in size.'
    )
  flow, valid = formats.read_flow(example.flow)
  if flow.shape[:2] != frame1.shape[:2]:
    raise errors.DataError(
      f'flow {example.flow!r} is {flow.shape[:2]} but frame {example.frame1!r} is '
      f'{frame1.shape[:2]}.'
    )
  return {'frames': np.stack([frame1, frame2]), 'flow': flow, 'valid': valid}
