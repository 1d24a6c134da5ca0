r"""Computes the optical flow between two images with a Perceiver IO flow model.

  python -m experiments.optical_flow --checkpoint=optical_flow_checkpoint.pystate \
      --frame1=frame_0001.png --frame2=frame_0002.png --output=flow.flo \
      [--visualization=flow.png] [--ground_truth=frame_0001.flo|000000_10.png] \
      [--config=configs/flow.py[:variant]]

`--checkpoint` takes the release's `.pystate` (read by the safe loader, which refuses
files holding code), this project's `.npz` export (`<workdir>/export/params.npz`), or
the registry name `optical_flow` (`experiments/inference/pretrained.py`: downloaded once
into `$PERCEIVER_CACHE`, verified, then read as the `.pystate`);
`--config` names the architecture (default `configs/flow.py`, the released one).
Frames are 8-bit RGB images of equal size, any size: they are split into overlapping
tiles of the model's size and the tiles' flows blended as the release's colab does
(frames smaller than a tile are padded by repeating their last row / column).
Writes Middlebury `.flo`, optionally a PNG on the standard flow colour wheel, shows
progress over the tiles on stderr and, given a ground truth (`.flo`, or a KITTI 16-bit
PNG with its validity channel), prints one JSON line of metrics (EPE, 1/3/5-pixel
accuracy, Fl-all, and the zero-flow baseline). Bad input ends with one line and exit
status 1.
"""

import functools
import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.tasks.flow import compute
from experiments.tasks.flow import formats
from experiments.tasks.flow import metrics
from perceiver import checkpoint as checkpoint_lib

_DEFAULT_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'flow.py'
)


def define_flags():
  """Defines the command-line flags (only when run as a program)."""
  return dict(
    config=config_flags.DEFINE_config_file(
      'config', _DEFAULT_CONFIG, 'Flow config naming the architecture.', lock_config=True
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint',
      None,
      "Release .pystate, this project's .npz parameter file, or the registry name "
      'optical_flow (downloaded once into $PERCEIVER_CACHE).',
    ),
    frame1=flags.DEFINE_string('frame1', None, 'First frame (8-bit RGB image).'),
    frame2=flags.DEFINE_string('frame2', None, 'Second frame (8-bit RGB image).'),
    output=flags.DEFINE_string('output', None, 'Where to write the flow (.flo).'),
    visualization=flags.DEFINE_string(
      'visualization', None, 'Optional PNG of the flow on the colour wheel.'
    ),
    ground_truth=flags.DEFINE_string(
      'ground_truth', None, 'Optional ground truth (.flo or KITTI .png) to score against.'
    ),
  )


def _progress(done, total):
  print(
    f'\rtile {done}/{total}',
    end='\n' if done == total else '',
    file=sys.stderr,
    flush=True,
  )


def run(flag_values):
  """Computes, writes and scores the flow; returns the metrics (or None)."""
  config = flag_values['config'].value
  frame1 = formats.read_image(flag_values['frame1'].value)
  frame2 = formats.read_image(flag_values['frame2'].value)
  if frame1.shape != frame2.shape:
    raise ValueError(
      f'--frame1={flag_values["frame1"].value!r} is {frame1.shape[1]}x{frame1.shape[0]} '
      f'but --frame2={flag_values["frame2"].value!r} is {frame2.shape[1]}x{frame2.shape[0]}.'
    )
  truth = None
  if flag_values['ground_truth'].value:
    truth, valid = formats.read_flow(flag_values['ground_truth'].value)
    if truth.shape[:2] != frame1.shape[:2]:
      raise ValueError(
        f'--ground_truth={flag_values["ground_truth"].value!r} is {truth.shape[:2]}, '
        f'the frames are {frame1.shape[:2]}.'
      )
  output = flag_values['output'].value
  if not output.endswith('.flo'):
    raise ValueError(f'--output={output!r} must end in .flo.')
  model = compute.FlowModel.from_checkpoint(config, flag_values['checkpoint'].value)
  flow = model(frame1, frame2, progress=_progress)
  formats.write_flo(output, flow)
  if flag_values['visualization'].value:
    formats.write_image(flag_values['visualization'].value, compute.flow_to_colour(flow))
  if truth is None:
    return None
  return metrics.flow_metrics(flow, truth, valid)


def main(argv, *, flag_values):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for name in ('checkpoint', 'frame1', 'frame2', 'output'):
    if not flag_values[name].value:
      raise app.UsageError(f'--{name} is required.')
  try:
    result = run(flag_values)
  except (ValueError, OSError, checkpoint_lib.UnsafeCheckpointError) as e:
    sys.exit(f'optical_flow: error: {e}')
  if result is not None:
    print(json.dumps(result, sort_keys=True))


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
