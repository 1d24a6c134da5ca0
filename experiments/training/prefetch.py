"""Copying the next batches to the devices while the current step runs.

`jax.device_put` and friends return at once and copy in the background, so keeping
`size` batches already handed to the devices ahead of the one being consumed overlaps
the host-to-device transfer (and the host's work of producing the batch) with the
step that runs on the devices.
"""

import collections
from typing import Any, Callable, Iterable, Iterator


def prefetch_to_device(
  iterable: Iterable[Any], size: int, put: Callable[[Any], Any]
) -> Iterator[Any]:
  """Yields `put(batch)` for each batch of `iterable`, in order, `size` batches ahead.

  Before yielding a batch, the next `size` batches are read and passed to `put` (which
  starts their transfer), so they travel while the consumer runs its step. `size = 0`
  puts each batch only when it is asked for. A finite `iterable` ends the iterator
  after its last batch; an exception raised by `iterable` is raised to the consumer
  after the batches read before it (none is lost or reordered).

  Args:
    iterable: host batches.
    size: batches placed ahead of the one consumed (>= 0).
    put: places a host batch on the devices, e.g. `strategy.put_batch`.

  Raises:
    ValueError: `size` is negative.
  """
  if size < 0:
    raise ValueError(f'config.training.prefetch_to_device={size} must be >= 0.')
  return _prefetch(iter(iterable), size, put)


def _prefetch(iterator, size, put):
  queue = collections.deque()
  error = None

  def fill(target):
    nonlocal error
    while error is None and len(queue) < target:
      try:
        batch = next(iterator)
      except StopIteration:
        return False
      except Exception as e:  # pylint: disable=broad-except
        error = e  # Raised once the batches before it are consumed.
        return False
      queue.append(put(batch))
    return True

  more = True
  while True:
    more = more and fill(size + 1)
    if not queue:
      break
    yield queue.popleft()
  if error is not None:
    raise error
