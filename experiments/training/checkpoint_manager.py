"""Checkpoints of the train state (orbax-checkpoint) and the final npz export.

Checkpoints live in `workdir/checkpoints/<step>/`. Orbax writes each one into a
temporary directory and renames it into place only once every file is written, so an
interrupted save never replaces or corrupts the latest complete checkpoint; leftover
temporary directories are ignored and cleaned up on the next start of a trainer. Only
the newest `keep` checkpoints stay on disk. Nothing is pickled.

Every checkpoint records, in orbax's step metadata (`<step>/_CHECKPOINT_METADATA`):
  checksum: CRC-32 of every array of the state, checked on restore, so a flipped byte
    is detected instead of silently restored;
  loss: the training loss of the step saved (None when not known);
  params_finite: whether every parameter was finite;
  data_offset: how many batches training skipped so far (rollback past divergence),
    so that a resumed run reads the data where the interrupted one would have.

A checkpoint that cannot be read (a truncated or altered file, a deleted manifest or
metadata file, a checksum that does not match) is *damaged* (`DamagedCheckpointError`);
one whose arrays do not have the shapes of the model built from the config is a
*mismatch* (`CheckpointMismatchError`, a changed config). A trainer moves damaged (and
rolled-back) checkpoints aside into `workdir/checkpoints_set_aside/` and never deletes
them. `CheckpointReader` reads checkpoints without writing, deleting or cleaning
anything, so an evaluator can follow a running trainer.

The final parameters and model state are also exported to `workdir/export/params.npz`
in the model library's npz format (`perceiver.checkpoint.load_npz` reads them back).
"""

import errno
import json
import os
import re
import shutil
import sys
import time
from typing import Any, Dict, List, Optional
import zlib

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.training import errors
from experiments.training import parallel

CHECKPOINT_SUBDIR = 'checkpoints'
SET_ASIDE_SUBDIR = 'checkpoints_set_aside'
EXPORT_PATH = os.path.join('export', 'params.npz')
_ITEM = 'default'  # Orbax's name for the single item of a checkpoint.
_STEP_METADATA = '_CHECKPOINT_METADATA'
_PATH_IN_MESSAGE = re.compile(r'"(/[^"]+)"')


class DamagedCheckpointError(errors.DataError):
  """A checkpoint's files cannot be read back into the state they were saved from.

  Attributes:
    step: the checkpoint's step.
    path: the file (or directory) found damaged.
  """

  def __init__(self, step: int, path: str, reason: str):
    super().__init__(f'checkpoint {step} is damaged ({path}): {reason}')
    self.step = step
    self.path = path


class CheckpointMismatchError(errors.UserError, ValueError):
  """A checkpoint is intact but was saved for another model or optimizer."""


class CheckpointWriteError(errors.UserError, RuntimeError):
  """Writing a checkpoint failed (e.g. the disk is full); earlier ones are intact."""


def state_checksum(tree: Any) -> str:
  """CRC-32 (hex) over the bytes, shapes and dtypes of every array of `tree`."""
  crc = 0
  for leaf in jax.tree.leaves(tree):
    array = np.ascontiguousarray(np.asarray(leaf))
    crc = zlib.crc32(f'{array.shape}{array.dtype.name}'.encode(), crc)
    crc = zlib.crc32(array.reshape(-1).view(np.uint8), crc)
  return f'{crc:08x}'


def params_are_finite(params: Any) -> bool:
  """Whether every floating-point leaf of `params` is finite."""
  return all(
    bool(np.isfinite(np.asarray(x, np.float32)).all())
    for x in jax.tree.leaves(params)
    if np.issubdtype(np.asarray(x).dtype, np.inexact) or np.asarray(x).dtype.kind == 'V'
  )


def _is_no_space(error: BaseException) -> bool:
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
      return True
    text = str(seen)
    if 'No space left on device' in text or "os_error_code='28'" in text:
      return True
    seen = seen.__cause__ or seen.__context__
  return False


def committed_steps(directory: str) -> List[int]:
  """Steps of the complete checkpoints in `directory` (ascending), read-only.

  Orbax renames a checkpoint's temporary directory to `<step>` only once it is
  complete, so names made of digits alone are complete checkpoints.
  """
  try:
    names = os.listdir(directory)
  except FileNotFoundError:
    return []
  return sorted(
    int(name)
    for name in names
    if name.isdigit() and os.path.isdir(os.path.join(directory, name))
  )


def read_step_metadata(directory: str, step: int) -> Dict[str, Any]:
  """The metadata this module records with checkpoint `step` ({} for older ones).

  Raises:
    DamagedCheckpointError: the metadata file exists but is not readable JSON.
  """
  path = os.path.join(directory, str(step), _STEP_METADATA)
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except FileNotFoundError:
    return {}
  try:
    record = json.loads(raw.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DamagedCheckpointError(step, path, f'unreadable metadata: {e}') from e
  if not isinstance(record, dict):
    raise DamagedCheckpointError(step, path, 'metadata is not a JSON object')
  custom = record.get('custom_metadata') or {}
  return dict(custom) if isinstance(custom, dict) else {}


def _stored_shapes(item_dir: str) -> Optional[List[tuple]]:
  """(shape, dtype) of every stored array, or None if the metadata is unreadable."""
  try:
    with ocp.StandardCheckpointer() as reader:
      tree = reader.metadata(item_dir).item_metadata.tree
    return [
      (tuple(x.shape), np.dtype(x.dtype).name)
      for x in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, 'shape'))
    ]
  except Exception:  # pylint: disable=broad-except  # Any failure: not readable.
    return None


def _target_shapes(target: Any) -> List[tuple]:
  return [(np.shape(x), np.asarray(x).dtype.name) for x in jax.tree.leaves(target)]


def _is_closed_loop_callback(unraisable) -> bool:
  return isinstance(unraisable.exc_value, RuntimeError) and (
    str(unraisable.exc_value) == 'Event loop is closed'
  )


def _quiet_closed_loop_callbacks() -> None:
  """Stops the 'Event loop is closed' tracebacks a failed orbax read leaves behind.

  When reading a damaged checkpoint fails, tensorstore still completes the other reads
  and hands their results to the asyncio loop orbax already closed; each one reaches
  `sys.unraisablehook` as a RuntimeError, hundreds of tracebacks around the one-line
  report of the damage, some of them before the failed read returns. From the first
  restore on, those (and only those) are dropped; every other unraisable exception is
  reported as before.
  """
  previous = sys.unraisablehook
  if getattr(previous, '_drops_closed_loop_callbacks', False):
    return

  def hook(unraisable):
    if not _is_closed_loop_callback(unraisable):
      previous(unraisable)

  hook._drops_closed_loop_callbacks = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def _damaged_file(error: BaseException, fallback: str) -> str:
  match = _PATH_IN_MESSAGE.search(str(error))
  return match.group(1) if match else fallback


def restore_step(directory: str, step: int, target: Any) -> Any:
  """Reads checkpoint `step` of `directory` into the structure of `target`, read-only.

  Args:
    directory: a `checkpoints` directory.
    step: the checkpoint's step.
    target: a host train state with the expected structure, shapes and dtypes.

  Returns:
    The restored state (host NumPy).

  Raises:
    FileNotFoundError: there is no checkpoint `step`.
    CheckpointMismatchError: the checkpoint holds arrays of other shapes or dtypes (a
      changed config).
    DamagedCheckpointError: its files cannot be read or its checksum does not match.
  """
  step_dir = os.path.join(directory, str(step))
  item_dir = os.path.join(step_dir, _ITEM)
  if not os.path.isdir(item_dir):
    if not os.path.isdir(step_dir):
      raise FileNotFoundError(f'no checkpoint {step} in {directory}.')
    raise DamagedCheckpointError(step, item_dir, 'the state directory is missing')
  tree_metadata = os.path.join(item_dir, '_METADATA')
  if not os.path.isfile(tree_metadata):
    raise DamagedCheckpointError(step, tree_metadata, 'the file is missing')
  metadata = read_step_metadata(directory, step)
  target = jax.tree.map(np.asarray, target)  # Orbax restores into arrays only.
  want = _target_shapes(target)

  def mismatch(detail):
    return CheckpointMismatchError(
      f'checkpoint {step} in {directory} does not match the model and optimizer '
      f'built from this config: {detail}'
    )

  _quiet_closed_loop_callbacks()
  try:
    with ocp.StandardCheckpointer() as reader:
      restored = reader.restore(item_dir, target)
  except Exception as e:  # pylint: disable=broad-except  # Classified below.
    if 'tree structures do not match' in str(e):
      # Another tree of the same arrays (e.g. the optimizer's clipping turned off):
      # a changed config, not damage.
      raise mismatch(
        'the stored tree has another structure than the train state of this config '
        f'({str(e).splitlines()[0][:200]})'
      ) from e
    stored = _stored_shapes(item_dir)
    # Orbax stores named tuples as mappings (another order): compare as multisets.
    if stored is not None and sorted(stored) != sorted(want):
      missing = sorted(set(want) - set(stored))[:3]
      raise mismatch(
        f'{len(stored)} stored arrays vs {len(want)} expected; expected shapes and '
        f'dtypes not stored: {missing}'
      ) from e
    if not os.path.isdir(step_dir):
      raise FileNotFoundError(
        f'checkpoint {step} in {directory} was removed while being read.'
      ) from e
    raise DamagedCheckpointError(
      step, _damaged_file(e, item_dir), str(e).splitlines()[0][:300]
    ) from e
  restored = jax.tree.map(np.asarray, restored)
  mismatches = [
    f'{jax.tree_util.keystr(path)}: checkpoint {got.shape} {got.dtype}, expected '
    f'{np.shape(want_leaf)} {np.asarray(want_leaf).dtype}'
    for (path, got), want_leaf in zip(
      jax.tree_util.tree_flatten_with_path(restored)[0], jax.tree.leaves(target)
    )
    if got.shape != np.shape(want_leaf) or got.dtype != np.asarray(want_leaf).dtype
  ]
  if mismatches:
    raise mismatch('; '.join(mismatches[:5]))
  expected = metadata.get('checksum')
  if expected is not None and state_checksum(restored) != expected:
    raise DamagedCheckpointError(
      step,
      item_dir,
      f'the arrays read back have checksum {state_checksum(restored)}, saved with '
      f'{expected} (a file was altered)',
    )
  return restored


class CheckpointReader:
  """Reads the checkpoints of a workdir without writing, deleting or cleaning anything.

  Safe to use while a trainer writes to the same workdir (e.g. an evaluator).
  """

  def __init__(self, workdir: str):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)

  def all_steps(self) -> List[int]:
    """Steps of every complete checkpoint on disk, ascending."""
    return committed_steps(self.directory)

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def metadata(self, step: int) -> Dict[str, Any]:
    """The metadata recorded with checkpoint `step` (see the module docstring)."""
    return read_step_metadata(self.directory, step)

  def restore(self, target: Any, step: Optional[int] = None) -> Any:
    """Reads checkpoint `step` (default: latest) into the structure of `target`."""
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f'no checkpoint in {self.directory}.')
    return restore_step(self.directory, step, target)


class Checkpointer:
  """Saves and restores host-side (NumPy) train states in `workdir/checkpoints`.

  Every host must call `save`, `restore` and `close` (the hosts synchronise inside);
  the replicated state is written once. Only a trainer (which holds the workdir lock)
  should open one: it cleans up unfinished saves and deletes old checkpoints.
  """

  def __init__(self, workdir: str, *, keep: int):
    """Opens (creating if needed) the checkpoint directory.

    Args:
      workdir: the run's work directory.
      keep: how many of the most recent checkpoints to keep (>= 1).
    """
    if keep < 1:
      raise errors.ConfigError(f'training.keep_checkpoints={keep} must be >= 1.')
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, CHECKPOINT_SUBDIR)
    self._keep = keep
    self._pending_step: Optional[int] = None
    self._manager = self._open_manager()

  def _open_manager(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
      max_to_keep=self._keep,
      create=True,
      cleanup_tmp_directories=True,
      enable_async_checkpointing=True,
    )
    manager = ocp.CheckpointManager(self.directory, options=options)
    # Orbax removes unfinished saves of an earlier run in a background thread. Finish
    # that here, so that nothing lists the directory behind the caller's back (e.g.
    # while TFDS's test mocks redirect file-system calls).
    await_cleanup = getattr(manager, '_maybe_await_cleanup_tmp_directory', None)
    if await_cleanup is not None:
      await_cleanup()
    return manager

  def latest_step(self) -> Optional[int]:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self):
    """Steps of every complete checkpoint on disk, ascending."""
    return sorted(self._manager.all_steps())

  def metadata(self, step: int) -> Dict[str, Any]:
    """The metadata recorded with checkpoint `step` (see the module docstring)."""
    return read_step_metadata(self.directory, step)

  def _write_error(self, error: BaseException, step: Optional[int]) -> BaseException:
    if _is_no_space(error):
      return CheckpointWriteError(
        f'no space left on device while writing checkpoint {step} in '
        f'{self.directory}; the earlier checkpoints are intact. Free space and run '
        'the same command again to resume.'
      )
    return error

  def _finish_pending(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # Rewritten or re-raised.
      error = self._write_error(e, self._pending_step)
      if error is e:
        raise
      raise error from None
    finally:
      self._pending_step = None

  def save(
    self,
    step: int,
    train_state: Any,
    *,
    loss: Optional[float] = None,
    data_offset: int = 0,
  ) -> None:
    """Starts writing `train_state` (host NumPy) as checkpoint `step` in the background.

    The write finishes before the next `save` starts and before `close` returns.

    Args:
      step: the checkpoint's step.
      train_state: the host state.
      loss: the training loss of that step, recorded in the metadata.
      data_offset: batches skipped by rollbacks so far, recorded in the metadata.

    Raises:
      CheckpointWriteError: the disk filled while writing this or the previous save.
    """
    if step in self._manager.all_steps():
      return
    self._finish_pending()
    metadata = {
      'checksum': state_checksum(train_state),
      'loss': None if loss is None or not np.isfinite(loss) else float(loss),
      'loss_finite': loss is None or bool(np.isfinite(loss)),
      'params_finite': params_are_finite(getattr(train_state, 'params', train_state)),
      'data_offset': int(data_offset),
    }
    self._pending_step = step
    try:
      self._manager.save(
        step,
        args=ocp.args.StandardSave(train_state),
        force=True,
        custom_metadata=metadata,
      )
    except Exception as e:  # pylint: disable=broad-except  # Rewritten or re-raised.
      error = self._write_error(e, step)
      if error is e:
        raise
      raise error from None

  def restore(self, target: Any, step: Optional[int] = None) -> Any:
    """Reads checkpoint `step` (default: latest) into the structure of `target`.

    Args:
      target: a host train state with the expected structure, shapes and dtypes.
      step: which checkpoint; the latest when None.

    Raises:
      FileNotFoundError: there is no checkpoint to restore.
      CheckpointMismatchError: the checkpoint does not match `target` (e.g. the
        config changed).
      DamagedCheckpointError: the checkpoint's files are damaged.
    """
    self._finish_pending()
    if step is None:
      step = self._manager.latest_step()
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(
        f'no checkpoint {"" if step is None else step} in {self.directory}.'
      )
    return restore_step(self.directory, step, target)

  def set_aside(self, step: int, reason: str) -> str:
    """Moves checkpoint `step` to `workdir/checkpoints_set_aside/` (never deletes it).

    Returns:
      Where it went (`<step>.<reason>.<time>`).
    """
    self._finish_pending()
    destination = os.path.join(
      self.workdir,
      SET_ASIDE_SUBDIR,
      f'{step}.{reason}.{time.strftime("%Y%m%dT%H%M%S")}.{os.getpid()}',
    )
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(destination), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), destination)
    parallel.sync_hosts(f'set_aside_{step}')
    self._manager.reload()
    return destination

  def restore_latest_intact(self, target: Any):
    """Restores the newest checkpoint that is not damaged, setting damaged ones aside.

    Returns:
      `(step, state)`, or `(None, None)` when there is no intact checkpoint.

    Raises:
      CheckpointMismatchError: the newest intact checkpoint was saved for another
        model or optimizer.
    """
    for step in reversed(self.all_steps()):
      try:
        return step, self.restore(target, step)
      except DamagedCheckpointError as e:
        destination = self.set_aside(step, 'damaged')
        # The message names the step, the damaged file and the reason.
        logging.warning('%s. Moved it to %s; trying the previous one.', e, destination)
    return None, None

  def wait(self) -> None:
    """Blocks until the pending save (if any) is on disk.

    Raises:
      CheckpointWriteError: the disk filled while writing it.
    """
    self._finish_pending()

  def close(self) -> None:
    """Finishes pending saves and releases the manager.

    Raises:
      CheckpointWriteError: the disk filled while writing the pending save.
    """
    try:
      self._finish_pending()
    except BaseException:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except  # The first error is the one.
        pass
      raise
    self._manager.close()


def export_npz(workdir: str, params: Any, state: Any) -> Optional[str]:
  """Writes `params` and `state` to `workdir/export/params.npz` (host 0 only).

  `perceiver.checkpoint.save_npz` writes atomically, so a reader never sees a partial
  export.

  Returns:
    The path written, or None on the other hosts.
  """
  # Imported here: the model library's file format is only needed at export time.
  from perceiver import checkpoint as npz_format  # pylint: disable=g-import-not-at-top

  path = os.path.join(os.path.abspath(workdir), EXPORT_PATH)
  if jax.process_index() == 0:
    npz_format.save_npz(path, params, state or None)
    logging.info('Exported parameters to %s', path)
  parallel.sync_hosts('export_npz')
  return path if jax.process_index() == 0 else None
