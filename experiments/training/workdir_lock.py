"""One trainer per workdir: a lock file naming its holder.

A trainer holds `workdir/lock` while it runs. The file is locked with `fcntl.flock`,
which the kernel releases when the process ends however it ends (kill -9 included),
and holds a JSON record of the holder (host, pid, start time, command) so that a
second trainer on the same workdir stops at once with a message naming it.

A lock file left by a process that is gone (its `flock` is free) is stale: the next
trainer takes it over and logs a warning naming the dead holder. On file systems
where `flock` is not enforced, a record naming a live process on this host still
counts as held. Evaluators (`--mode=eval`, `eval_continuous`) only read checkpoints
and need no lock. On several hosts, host 0 holds the lock for the job.
"""

import fcntl
import json
import os
import socket
import sys
import time
from typing import Any, Dict, Optional

from absl import logging

from experiments.training import errors

LOCK_FILE = 'lock'


class WorkdirBusyError(errors.UserError, RuntimeError):
  """Another live trainer holds the workdir's lock."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by someone else.
    return True
  return True


def read_holder(path: str) -> Optional[Dict[str, Any]]:
  """The holder record in lock file `path`, or None if absent or unreadable."""
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def describe(record: Optional[Dict[str, Any]]) -> str:
  """`process <pid> on host <host> (started <time>: <command>)`."""
  if not record:
    return 'an unknown process'
  started = record.get('started')
  when = (
    time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(started))
    if isinstance(started, (int, float))
    else '?'
  )
  return (
    f'process {record.get("pid")} on host {record.get("host")} (started {when}: '
    f'{record.get("command", "?")})'
  )


class WorkdirLock:
  """The lock of one workdir; use as a context manager or `acquire()` / `release()`."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._fd: Optional[int] = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def acquire(self) -> None:
    """Takes the lock, taking over a stale one with a warning.

    Raises:
      WorkdirBusyError: a live process holds it (the message names it).
    """
    if self._fd is not None:
      return
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    host = socket.gethostname()
    for _ in range(10):
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        os.close(fd)
        raise WorkdirBusyError(
          f'workdir {os.path.dirname(self.path)} is in use by '
          f'{describe(read_holder(self.path))}; stop it or use another --workdir '
          f'(lock file {self.path}).'
        ) from None
      # The holder may have removed the file between our open and flock: retry on
      # the file now at the path.
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if not same:
        os.close(fd)
        continue
      previous = read_holder(self.path)
      if previous and previous.get('pid') != os.getpid():
        if previous.get('host') == host and _pid_alive(int(previous.get('pid', -1))):
          # flock is not enforced here (e.g. some network file systems).
          fcntl.flock(fd, fcntl.LOCK_UN)
          os.close(fd)
          raise WorkdirBusyError(
            f'workdir {os.path.dirname(self.path)} is in use by '
            f'{describe(previous)}; stop it or use another --workdir (lock file '
            f'{self.path}).'
          )
        logging.warning(
          'Taking over the stale lock %s of %s, which is no longer running.',
          self.path,
          describe(previous),
        )
      record = {
        'host': host,
        'pid': os.getpid(),
        'started': time.time(),
        'command': ' '.join(sys.argv)[:500],
      }
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(record).encode(), 0)
      os.fsync(fd)
      self._fd = fd
      return
    raise WorkdirBusyError(f'could not take the lock {self.path}: it keeps changing.')

  def release(self) -> None:
    """Removes the lock file and releases the lock (no-op if not held)."""
    if self._fd is None:
      return
    try:
      if read_holder(self.path) and read_holder(self.path).get('pid') == os.getpid():
        os.remove(self.path)
    except OSError:
      pass
    finally:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()
