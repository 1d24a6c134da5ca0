"""Flow between two images of any size with a trained model: `experiments.optical_flow`.

`FlowModel.from_checkpoint(config, source)` loads parameters that fit the architecture
of `config` (`experiments.training.weights`: the release's `.pystate`, this project's
`.npz`, a workdir or the registry name `optical_flow`); its `__call__(frame1, frame2)`
returns the full-resolution flow, computed tile by tile as the release's colab does
(`tiling.tiled_flow`). `compute` is the whole command: it checks every input and output
path before the model loads, and writes its outputs all or nothing.

Shape glossary:
  H, W: image size.
"""

import functools
import os
import tempfile
from typing import Callable, Dict, Optional

import jax
import ml_collections
import numpy as np

from experiments.tasks.flow import formats
from experiments.tasks.flow import metrics
from experiments.tasks.flow import task
from experiments.tasks.flow import tiling
from experiments.tasks.flow import visualization
from experiments.training import errors
from experiments.training import task as task_lib
from experiments.training import weights


class FlowModel:
  """A flow model with parameters, applied to whole images tile by tile."""

  def __init__(self, config: ml_collections.ConfigDict, params, state=None):
    self.config = config
    self.tile = tuple(config.model.image_size)
    self.min_overlap = config.model.tile_min_overlap
    model = task.build_model(config)
    self._params, self._state = params, state or {}
    self._apply = jax.jit(functools.partial(model.apply, is_training=False))

  @classmethod
  def from_checkpoint(
    cls,
    config: ml_collections.ConfigDict,
    source: str,
    *,
    arg_name: str = '--checkpoint',
  ) -> 'FlowModel':
    """Loads `source` (see `weights.py`) and checks it fits `config`'s architecture."""
    params, state = weights.load(
      task.build_model(config),
      task_lib.example_batch(task, config),
      source,
      arg_name=arg_name,
    )
    return cls(config, params, state)

  @classmethod
  def from_pretrained(cls, model) -> 'FlowModel':
    """From `experiments.inference.pretrained.load('optical_flow')` or `smoke_model`."""
    return cls(model.config, model.params, model.state)

  def apply_tile(self, frames):
    """`[B, 2, h, w, 3]` normalised frames -> `[B, h, w, 2]`."""
    out, _ = self._apply(
      self._params, self._state, jax.random.PRNGKey(0), {'frames': frames}
    )
    return out

  def __call__(
    self,
    frame1: np.ndarray,
    frame2: np.ndarray,
    progress: Optional[Callable[[int, int], None]] = None,
  ) -> np.ndarray:
    """Flow `[H, W, 2]` from uint8 frames `[H, W, 3]` of equal size."""
    if frame1.shape != frame2.shape:
      raise errors.DataError(
        f'the frames differ in size: {frame1.shape} vs {frame2.shape}.'
      )
    frames = tiling.normalize(np.stack([frame1, frame2])[None].astype(np.float32))
    flow = tiling.tiled_flow(
      self.apply_tile, frames, self.tile, self.min_overlap, xp=np, progress=progress
    )
    return np.asarray(flow[0], np.float32)


def _check_writable(path: str, flag: str, suffixes) -> None:
  """Raises unless `path` has one of `suffixes` and its folder accepts a new file."""
  if not path.lower().endswith(tuple(suffixes)):
    raise errors.ConfigError(f'{flag}={path!r} must end in {" or ".join(suffixes)}.')
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise errors.ConfigError(f'{flag}={path!r}: the folder {folder} does not exist.')
  try:
    with tempfile.NamedTemporaryFile(dir=folder, prefix='.write_check_'):
      pass
  except OSError as e:
    raise errors.ConfigError(
      f'{flag}={path!r}: cannot write in {folder}: {e.strerror or e}.'
    ) from e


def _write_all(outputs: Dict[str, Callable[[str], None]]) -> None:
  """Writes each `path` with `write(temporary path)`, then renames all into place: no
  output is left behind unless every one was written."""
  written = []
  try:
    for path, write in outputs.items():
      folder = os.path.dirname(os.path.abspath(path))
      suffix = os.path.splitext(path)[1]
      fd, temporary = tempfile.mkstemp(dir=folder, prefix='.partial_', suffix=suffix)
      os.close(fd)
      written.append((temporary, path))
      write(temporary)
    for temporary, path in written:
      os.replace(temporary, path)
    written = []
  finally:
    for temporary, _ in written:
      if os.path.exists(temporary):
        os.remove(temporary)


def compute(
  config: ml_collections.ConfigDict,
  checkpoint: str,
  frame1_path: str,
  frame2_path: str,
  output: str,
  *,
  visualization_path: Optional[str] = None,
  ground_truth: Optional[str] = None,
  progress: Optional[Callable[[int, int], None]] = None,
) -> Optional[Dict[str, float]]:
  """Computes the flow from frame 1 to frame 2, writes it and scores it.

  Writes `output` (Middlebury `.flo`) and, given `visualization_path`, a picture on the
  colour wheel; both or neither. Every input is read and every output folder checked
  before the model loads.

  Returns:
    With `ground_truth` (`.flo`, or a KITTI 16-bit PNG with its validity channel), the
    metrics of `metrics.flow_metrics`; else None.

  Raises:
    errors.ConfigError: an output path that cannot be written or has the wrong suffix.
    errors.DataError: a frame or ground truth that cannot be read or does not match.
  """
  _check_writable(output, '--output', ('.flo',))
  if visualization_path:
    _check_writable(visualization_path, '--visualization', ('.png', '.ppm', '.jpg'))
  frame1 = formats.read_image(frame1_path)
  frame2 = formats.read_image(frame2_path)
  if frame1.shape != frame2.shape:
    raise errors.DataError(
      f'--frame1={frame1_path!r} is {frame1.shape[1]}x{frame1.shape[0]} but '
      f'--frame2={frame2_path!r} is {frame2.shape[1]}x{frame2.shape[0]}.'
    )
  truth = valid = None
  if ground_truth:
    truth, valid = formats.read_flow(ground_truth)
    if truth.shape[:2] != frame1.shape[:2]:
      raise errors.DataError(
        f'--ground_truth={ground_truth!r} is {truth.shape[:2]}, the frames are '
        f'{frame1.shape[:2]}.'
      )
  model = FlowModel.from_checkpoint(config, checkpoint)
  flow = model(frame1, frame2, progress=progress)
  outputs = {output: functools.partial(formats.write_flo, flow=flow)}
  if visualization_path:
    picture = visualization.flow_to_colour(flow)
    outputs[visualization_path] = functools.partial(formats.write_image, image=picture)
  _write_all(outputs)
  if truth is None:
    return None
  return metrics.flow_metrics(flow, truth, valid)
