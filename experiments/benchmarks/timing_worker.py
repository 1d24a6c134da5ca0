"""The line protocol between `experiments.benchmarks.side_by_side` and its two workers.

Each side of a side-by-side comparison (this project's JAX model, Hugging Face's PyTorch
port) runs in its own process, possibly in its own virtual environment, so this module
uses the standard library alone: the PyTorch worker imports it without JAX installed.

A worker builds its model and compiles or warms it up, then writes one JSON line
(`{"ready": true, ...}` with its parameter count and setup figures) to stdout and
waits. For each `run <n>` line on stdin it runs the workload `n` times and answers
`{"times": [seconds, ...], "cpu_times": [...]}` (wall-clock and process CPU seconds); `quit` (or the end of stdin) ends it. Anything else a worker
prints goes to stderr, so stdout carries only the protocol.
"""

import json
import sys
import time
from typing import Any, Callable, Dict, List, TextIO, Tuple


def time_calls(fn: Callable[[], Any], count: int) -> List[float]:
  """Wall-clock seconds of `count` calls of `fn` (which must wait for its result)."""
  return [wall for wall, _ in time_and_cpu(fn, count)]


def time_and_cpu(fn: Callable[[], Any], count: int) -> List[Tuple[float, float]]:
  """`(wall seconds, process CPU seconds)` of each of `count` calls of `fn`."""
  times = []
  for _ in range(count):
    cpu_start, start = time.process_time(), time.perf_counter()
    fn()
    times.append((time.perf_counter() - start, time.process_time() - cpu_start))
  return times


def serve(
  run_once: Callable[[], Any],
  ready: Dict[str, Any],
  *,
  stdin: TextIO = sys.stdin,
  stdout: TextIO = sys.stdout,
) -> None:
  """Announces `ready`, then answers `run <n>` lines until `quit` or end of input.

  Args:
    run_once: one run of the workload (a train step or a forward pass), returning
      once its result is computed.
    ready: figures of the setup (e.g. `num_params`), sent with `"ready": true`.
    stdin, stdout: the protocol's streams.
  """
  stdout.write(json.dumps(dict(ready, ready=True)) + '\n')
  stdout.flush()
  for line in stdin:
    words = line.split()
    if not words:
      continue
    if words[0] == 'quit':
      return
    if words[0] != 'run' or len(words) != 2 or not words[1].isdigit():
      raise ValueError(f'timing_worker: expected "run <n>" or "quit", got {line!r}.')
    times = time_and_cpu(run_once, int(words[1]))
    reply = {'times': [w for w, _ in times], 'cpu_times': [c for _, c in times]}
    stdout.write(json.dumps(reply) + '\n')
    stdout.flush()


def read_reply(stream: TextIO, who: str) -> Dict[str, Any]:
  """The next JSON line a worker wrote; RuntimeError naming `who` if it ended."""
  line = stream.readline()
  if not line:
    raise RuntimeError(f'the {who} worker exited without answering (see its stderr).')
  return json.loads(line)
