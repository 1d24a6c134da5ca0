r"""Computes the optical flow between two images with a Perceiver IO flow model.

  python -m experiments.optical_flow --checkpoint=optical_flow_checkpoint.pystate \
      --frame1=frame_0001.png --frame2=frame_0002.png --output=flow.flo \
      [--visualization=flow.png] [--ground_truth=frame_0001.flo|000000_10.png] \
      [--config=configs/flow.py[:variant]]

`--checkpoint` takes the release's `.pystate` (read by the safe loader, which refuses
files holding code), this project's `.npz` export, a training workdir, or the registry
name `optical_flow` (downloaded once into `$PERCEIVER_CACHE`, verified, then read as the
`.pystate`);
`--config` names the architecture (default `configs/flow.py`, the released one).
Frames are 8-bit RGB images of equal size, any size: they are split into overlapping
tiles of the model's size and the tiles' flows blended as the release's colab does
(frames smaller than a tile are padded by repeating their last row / column).
Writes Middlebury `.flo`, optionally a PNG on the standard flow colour wheel, shows
progress over the tiles on stderr and, given a ground truth (`.flo`, or a KITTI 16-bit
PNG with its validity channel), prints one JSON line of metrics (EPE, 1/3/5-pixel
accuracy, Fl-all, and the zero-flow baseline). Every output path is checked before the
model loads, and the outputs are written all or nothing. Bad input ends with one line
and exit status 1.
"""

import json
import sys
import types

from absl import flags
from ml_collections import config_flags

from experiments.tasks.flow import optical_flow
from experiments.training import cli
from experiments.training import errors
from experiments.training import precision
from experiments.training import registry

DEFAULT_CONFIG = 'configs/flow.py:perceiver_io'


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  def string(name, help_text, **kwargs):
    return flags.DEFINE_string(name, None, help_text, flag_values=flag_values, **kwargs)

  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      registry.config_file(DEFAULT_CONFIG),
      'Flow config naming the architecture.',
      lock_config=True,
      flag_values=flag_values,
    ),
    checkpoint=string(
      'checkpoint',
      "Release .pystate, this project's .npz, a training workdir, or the registry name "
      'optical_flow (downloaded once into $PERCEIVER_CACHE).',
      required=True,
    ),
    frame1=string('frame1', 'First frame (8-bit RGB image).', required=True),
    frame2=string('frame2', 'Second frame (8-bit RGB image).', required=True),
    output=string('output', 'Where to write the flow (.flo).', required=True),
    visualization=string(
      'visualization', 'Optional PNG of the flow on the colour wheel.'
    ),
    ground_truth=string(
      'ground_truth', 'Optional ground truth (.flo or KITTI .png) to score against.'
    ),
    compute_dtype=flags.DEFINE_enum(
      'compute_dtype',
      None,
      precision.DTYPES,
      precision.COMMAND_FLAG_HELP,
      flag_values=flag_values,
    ),
  )


def _progress(done, total):
  print(
    f'\rtile {done}/{total}',
    end='\n' if done == total else '',
    file=sys.stderr,
    flush=True,
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {argv[1:]}')
  config = args.config.value
  if args.compute_dtype.value:
    precision.set_compute_dtype(config, args.compute_dtype.value)
  result = optical_flow.compute(
    config,
    args.checkpoint.value,
    args.frame1.value,
    args.frame2.value,
    args.output.value,
    visualization_path=args.visualization.value,
    ground_truth=args.ground_truth.value,
    progress=_progress,
  )
  if result is not None:
    print(json.dumps(result, sort_keys=True))


if __name__ == '__main__':
  cli.run(main, define_flags, name='optical_flow')
