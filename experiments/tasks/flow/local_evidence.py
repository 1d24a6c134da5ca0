r"""How much of the flow of generated pairs the pixels' neighbourhoods determine.

  python -m experiments.tasks.flow.local_evidence --config=configs/flow.py:synthetic \
      [--count=48] [--split=test]

prints one JSON line about `count` pairs of the config's synthetic data: the mean flow
magnitude on valid pixels (= the zero-flow EPE), the mean absolute horizontal grey-level
difference between neighbouring pixels (texture contrast), and the EPE of Lucas-Kanade
(least squares on brightness constancy, `lucas_kanade`) over 3x3, 5x5 and 9x9 windows
with its ratio to the zero-flow EPE. The 3x3 window sees what one pixel's input patch
holds in the flow model: where it leaves most of the zero-flow EPE, the pairs give a
small model little to learn from locally (docs/flow.md).

Shape glossary:
  N: pairs.
  H, W: frame size.
"""

import json
import types

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
from scipy import ndimage

from experiments.tasks.flow import synthetic
from experiments.tasks.flow import task
from experiments.training import cli

WINDOWS = (3, 5, 9)


def lucas_kanade(frames: np.ndarray, window: int, eps: float = 1e-2) -> np.ndarray:
  """Lucas-Kanade flow `[N, H, W, 2]` of uint8 pairs `[N, 2, H, W, 3]`.

  Grey levels (channel mean); spatial gradients are central differences averaged over
  both frames, the temporal one `I2 - I1`; each pixel solves the 2x2 normal equations
  of `Ix u + Iy v + It = 0` summed over a `window` x `window` box (`eps` is added to
  the determinant).
  """
  grey = np.asarray(frames, np.float64).mean(axis=-1)
  first, second = grey[:, 0], grey[:, 1]
  ix = 0.5 * (np.gradient(first, axis=2) + np.gradient(second, axis=2))
  iy = 0.5 * (np.gradient(first, axis=1) + np.gradient(second, axis=1))
  it = second - first

  def box(a):
    return ndimage.uniform_filter(a, size=(1, window, window))

  a, b, c = box(ix * ix), box(ix * iy), box(iy * iy)
  p, q = box(ix * it), box(iy * it)
  det = a * c - b * b + eps
  return np.stack([-(c * p - b * q) / det, -(a * q - b * p) / det], axis=-1)


def local_evidence(config, count: int = 48, split: str = 'test') -> dict:
  """The statistics of the module docstring for `count` pairs of `split`."""
  options = task.scene_options(config)
  data = synthetic.generate_split(
    split, 0, count, seed=config.data.synthetic_seed, options=options
  )
  flow, valid = data['flow'], data['valid'] > 0
  zero = float(np.linalg.norm(flow, axis=-1)[valid].mean())
  grey = data['frames'][:, 0].astype(np.float64).mean(axis=-1)
  result = {
    'pairs': count,
    'mean_flow_magnitude': zero,
    'mean_abs_grey_difference': float(np.abs(np.diff(grey, axis=2)).mean()),
  }
  for window in WINDOWS:
    error = np.linalg.norm(lucas_kanade(data['frames'], window) - flow, axis=-1)
    result[f'lucas_kanade_{window}x{window}_epe'] = float(error[valid].mean())
    result[f'lucas_kanade_{window}x{window}_ratio'] = float(error[valid].mean() / zero)
  return result


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags (only when run as a program)."""
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config', None, 'Flow config (its synthetic data).', lock_config=True
    ),
    count=flags.DEFINE_integer('count', 48, 'Number of generated pairs.'),
    split=flags.DEFINE_enum('split', 'test', task.SYNTHETIC_SPLITS, 'Split.'),
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if args.config.value is None:
    raise app.UsageError('--config is required.')
  if args.count.value < 1:
    raise app.UsageError(f'--count={args.count.value} must be at least 1.')
  result = local_evidence(args.config.value, args.count.value, args.split.value)
  print(json.dumps(result, sort_keys=True))


if __name__ == '__main__':
  cli.run(main, define_flags, name='local_evidence')
