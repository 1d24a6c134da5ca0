"""Notices a preemption (SIGTERM) so that training can checkpoint and stop cleanly.

Cluster schedulers (TPU pods, Slurm, Kubernetes) send SIGTERM some time before they
kill a job. Without a handler the process dies at once and loses the work since its
last periodic checkpoint; with `PreemptionWatch`, the training loop finishes the step
it is running, saves a checkpoint of it and raises `Preempted`.

On one host the watch installs its own SIGTERM handler (main thread only). On several
hosts, JAX's distributed runtime already receives the notice on whichever host gets it,
and `multihost_utils.reached_preemption_sync_point` has every host agree on the same
step to stop at, so all of them save the same checkpoint.
"""

import signal
import threading
import types
from typing import Optional

from absl import logging
import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """Training stopped on a preemption notice after checkpointing `step`."""

  def __init__(self, step: int, directory: str):
    super().__init__(
      f'Preempted (SIGTERM): saved checkpoint {step} in {directory}; run the same '
      'command again to resume.'
    )
    self.step = step


class PreemptionWatch:
  """`should_stop(step)` is True once a preemption notice arrived (between `start` and
  `stop`, or inside a `with` block).

  Call `should_stop` after every step on every host (on several hosts it is a
  collective agreement on the stopping step).
  """

  def __init__(self):
    self._received = threading.Event()
    self._previous = None
    self._installed = False
    self._sync_unavailable = False

  def start(self) -> None:
    """Starts listening (installs the SIGTERM handler on a single host)."""
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True

  def stop(self) -> None:
    """Restores the previous SIGTERM handler."""
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def __enter__(self) -> 'PreemptionWatch':
    self.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self.stop()

  def _handle(self, signum: int, frame: Optional[types.FrameType]) -> None:
    del signum, frame
    self._received.set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      if self._sync_unavailable:
        return False
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError as e:  # E.g. jax_enable_preemption_service is off.
        logging.warning('Preemption notices are not watched: %s', e)
        self._sync_unavailable = True
        return False
    return self._received.is_set()
