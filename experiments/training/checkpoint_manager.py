"""Checkpoints of the train state (orbax-checkpoint) and the final npz export.

Checkpoints live in `workdir/checkpoints/<step>/`. Orbax writes each one into a
temporary directory and renames it into place only once every file is written, so an
interrupted save never replaces or corrupts the latest complete checkpoint; leftover
temporary directories are ignored and cleaned up on the next start. Only the newest
`keep` checkpoints stay on disk. Nothing is pickled.

The final parameters and model state are also exported to `workdir/export/params.npz`
in the model library's npz format (`perceiver.checkpoint.load_npz` reads them back).
"""

import os
from typing import Any, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.training import parallel

CHECKPOINT_SUBDIR = 'checkpoints'
EXPORT_PATH = os.path.join('export', 'params.npz')


class Checkpointer:
  """Saves and restores host-side (NumPy) train states in `workdir/checkpoints`.

  Every host must call `save`, `restore` and `close` (the hosts synchronise inside);
  the replicated state is written once.
  """

  def __init__(self, workdir: str, *, keep: int):
    """Opens (creating if needed) the checkpoint directory.

    Args:
      workdir: the run's work directory.
      keep: how many of the most recent checkpoints to keep (>= 1).
    """
    if keep < 1:
      raise ValueError(f'training.keep_checkpoints={keep} must be >= 1.')
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=True,
      cleanup_tmp_directories=True,
      enable_async_checkpointing=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    # Orbax removes unfinished saves of an earlier run in a background thread. Finish
    # that here, so that nothing lists the directory behind the caller's back (e.g.
    # while TFDS's test mocks redirect file-system calls).
    await_cleanup = getattr(self._manager, '_maybe_await_cleanup_tmp_directory', None)
    if await_cleanup is not None:
      await_cleanup()

  def latest_step(self) -> Optional[int]:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self):
    """Steps of every complete checkpoint on disk, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, train_state: Any) -> None:
    """Starts writing `train_state` (host NumPy) as checkpoint `step` in the background.

    The write finishes before the next `save` starts and before `close` returns.
    """
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(train_state), force=True)

  def restore(self, target: Any, step: Optional[int] = None) -> Any:
    """Reads checkpoint `step` (default: latest) into the structure of `target`.

    Args:
      target: a host train state with the expected structure, shapes and dtypes.
      step: which checkpoint; the latest when None.

    Raises:
      FileNotFoundError: there is no checkpoint to restore.
      ValueError: the checkpoint does not match `target` (e.g. the config changed).
    """
    self._manager.wait_until_finished()
    if step is None:
      step = self._manager.latest_step()
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(
        f'no checkpoint {"" if step is None else step} in {self.directory}.'
      )
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(
        f'checkpoint {step} in {self.directory} does not match the model and '
        f'optimizer built from this config: {e}'
      ) from e
    restored = jax.tree.map(np.asarray, restored)
    mismatches = [
      f'{jax.tree_util.keystr(path)}: checkpoint {got.shape} {got.dtype}, expected '
      f'{np.shape(want)} {np.asarray(want).dtype}'
      for (path, got), want in zip(
        jax.tree_util.tree_flatten_with_path(restored)[0], jax.tree.leaves(target)
      )
      if got.shape != np.shape(want) or got.dtype != np.asarray(want).dtype
    ]
    if mismatches:
      raise ValueError(
        f'checkpoint {step} in {self.directory} does not match the model and '
        f'optimizer built from this config: {"; ".join(mismatches[:5])}'
      )
    return restored

  def wait(self) -> None:
    """Blocks until the pending save (if any) is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the manager."""
    self._manager.wait_until_finished()
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
