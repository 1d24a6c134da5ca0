"""Released checkpoints: where each is declared, downloaded, cached and verified.

Each experiment family names the checkpoints its config builds, in its config file:

  # configs/flow.py
  RELEASES = {
    'optical_flow': dict(
      variant='perceiver_io',
      url='https://storage.googleapis.com/perceiver_io/optical_flow_checkpoint.pystate',
      description='Optical flow between two frames (Perceiver IO, AutoFlow-trained)',
      smoke_variant='debug',
      paper_result='Sintel clean 1.81 / final 2.42, KITTI 4.98 EPE',
    ),
  }

`releases()` gathers the `RELEASES` of every module in the `configs` package, so a new
family adds its entries in its own file and edits no shared list. A name then resolves
to its file (`checkpoint_path`) and its config (`load_config(release.config)`).

DeepMind's release publishes URLs only: no sizes and no checksums. A download is
checked against the server's Content-Length (a truncated transfer is refused); the
SHA-256 of the first download is written beside the file (`<file>.sha256`) and every
later use re-checks the file against it, so a cached file that changes is refused. Pin
a digest with `sha256=` (or `PERCEIVER_SHA256_<NAME>`, e.g.
`PERCEIVER_SHA256_IMAGENET_FOURIER`): a file whose digest differs is refused. Whether
the file's parameters fit the model is checked where it is loaded (`weights.py`).

Files are cached in `$PERCEIVER_CACHE` (default `~/.cache/perceiver`), written to a
temporary file in that folder and renamed into place only once complete and verified,
so an interrupted download never leaves a file that looks valid. Without network access
the download fails at once with the URL and how to pass a local file instead: every
`--checkpoint` and `init_checkpoint` takes a path as well as a name.
"""

import dataclasses
import functools
import hashlib
import importlib
import os
import pkgutil
import sys
import tempfile
import time
from typing import Dict, Optional, Tuple
import urllib.error
import urllib.request

import ml_collections

from experiments.training import errors

_CHUNK = 1 << 20


class DownloadError(errors.UserError, OSError):
  """A release file could not be downloaded (network error, truncated transfer)."""


class ChecksumError(errors.DataError):
  """A file's size or SHA-256 differs from the expected one."""


@dataclasses.dataclass(frozen=True)
class Release:
  """One released checkpoint.

  Attributes:
    name: registry name (`--checkpoint=NAME`).
    description: what the model does.
    url: where the release serves the file.
    config: `'configs/<file>.py:<variant>'`, the config that builds the architecture
      ('' for a file that is downloaded only, such as a sample input).
    smoke_config: a tiny config of the same kind of model (same inputs and
      preprocessing), for notebooks and tests that run without the download.
    size: file size in bytes, or None where the release does not publish it.
    sha256: hex SHA-256 of the file, or None where the release does not publish it.
    paper_result: the paper's figure for this model.
  """

  name: str
  description: str
  url: str
  config: str = ''
  smoke_config: str = ''
  size: Optional[int] = None
  sha256: Optional[str] = None
  paper_result: str = ''

  @property
  def filename(self) -> str:
    return self.url.rsplit('/', 1)[-1]


def _declared(module_name: str, declarations: Dict[str, dict]) -> Dict[str, Release]:
  """`Release`s of one config module's `RELEASES` declarations."""
  file = f'configs/{module_name}.py'
  out = {}
  for name, fields in declarations.items():
    fields = dict(fields)
    variant = fields.pop('variant', None)
    if variant is None:
      raise ValueError(
        f"{file}: RELEASES[{name!r}] names no 'variant' ('' for the default)."
      )
    smoke = fields.pop('smoke_variant', None)
    try:
      out[name] = Release(
        name=name,
        config=f'{file}:{variant}' if variant else file,
        smoke_config='' if smoke is None else (f'{file}:{smoke}' if smoke else file),
        **fields,
      )
    except TypeError as e:
      raise ValueError(f'{file}: RELEASES[{name!r}]: {e}') from e
  return out


@functools.cache
def releases() -> Dict[str, Release]:
  """Every release declared by a module of the `configs` package, by name."""
  import configs  # pylint: disable=import-outside-toplevel

  found: Dict[str, Release] = {}
  for info in sorted(pkgutil.iter_modules(configs.__path__), key=lambda m: m.name):
    module = importlib.import_module(f'configs.{info.name}')
    for name, release in _declared(info.name, getattr(module, 'RELEASES', {})).items():
      if name in found:
        raise ValueError(
          f'Release {name!r} is declared twice: in {found[name].config} and '
          f'{release.config}.'
        )
      found[name] = release
  return found


def get_release(name: str) -> Release:
  """The registry entry `name`.

  Raises:
    errors.ConfigError: no release has that name (the message lists them).
  """
  known = releases()
  if name not in known:
    raise errors.ConfigError(
      f'Unknown pretrained model {name!r}; expected one of {sorted(known)} (or a path '
      'to a checkpoint file).'
    )
  return known[name]


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The config of `'configs/<file>.py[:variant]'`, from the installed `configs`."""
  module_path, _, variant = spec.partition(':')
  module = os.path.splitext(os.path.normpath(module_path))[0].replace(os.sep, '.')
  try:
    config_module = importlib.import_module(module)
  except ImportError as e:
    raise errors.ConfigError(f'Cannot import the config {spec!r}: {e}.') from e
  return config_module.get_config(variant) if variant else config_module.get_config()


def config_file(spec: str) -> str:
  """`'configs/<file>.py[:variant]'` as the path of that file in the installed `configs`
  package (with the variant), for a command's `--config` default."""
  import configs  # pylint: disable=import-outside-toplevel

  module_path, sep, variant = spec.partition(':')
  path = os.path.join(os.path.dirname(configs.__file__), os.path.basename(module_path))
  return path + sep + variant


def cache_dir() -> str:
  """`$PERCEIVER_CACHE`, or `~/.cache/perceiver`."""
  return os.path.expanduser(
    os.environ.get('PERCEIVER_CACHE') or os.path.join('~', '.cache', 'perceiver')
  )


def sha256_of(path: str) -> str:
  """Hex SHA-256 of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_CHUNK), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _pinned_sha256(release: Release, sha256: Optional[str]) -> Optional[str]:
  env = os.environ.get(f'PERCEIVER_SHA256_{release.name.upper()}')
  value = sha256 or env or release.sha256
  return value.lower() if value else None


def _offline_hint(release: Release, target: str) -> str:
  return (
    f'Download {release.url} on a machine with network access and pass the file '
    f'(--checkpoint=/path/{release.filename}), or copy it to {target}.'
  )


class _Progress:
  """A one-line progress bar on stderr, redrawn at most every 0.2 s."""

  def __init__(self, label: str, total: Optional[int], enabled: bool):
    self._label, self._total, self._enabled = label, total, enabled
    self._last = 0.0

  def update(self, done: int, final: bool = False):
    now = time.monotonic()
    if not self._enabled or (not final and now - self._last < 0.2):
      return
    self._last = now
    mib = done / 2**20
    if self._total:
      frac = done / self._total
      bar = '#' * int(30 * frac)
      text = f'{self._label} [{bar:<30}] {100 * frac:5.1f}% {mib:.1f} MiB'
    else:
      text = f'{self._label} {mib:.1f} MiB'
    sys.stderr.write('\r' + text + ('\n' if final else ''))
    sys.stderr.flush()


def _fetch(
  release: Release, out, target: str, progress: bool, timeout: float
) -> Tuple[int, str, int]:
  """Streams `release.url` into the open file `out`: `(bytes, sha256, Content-Length
  or -1)`."""
  try:
    response = urllib.request.urlopen(release.url, timeout=timeout)
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, 'reason', e)
    raise DownloadError(
      f'Cannot download {release.name!r} from {release.url}: {reason}. '
      + _offline_hint(release, target)
    ) from e
  with response:
    length = response.headers.get('Content-Length')
    length = int(length) if length and length.isdigit() else -1
    bar = _Progress(release.filename, release.size or max(length, 0), progress)
    digest = hashlib.sha256()
    done = 0
    try:
      for chunk in iter(lambda: response.read(_CHUNK), b''):
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        bar.update(done)
    except (OSError, ValueError) as e:  # http.client.IncompleteRead, resets.
      raise DownloadError(
        f'The download of {release.url} broke off after {done} bytes: {e}. '
        'Run the command again to retry; ' + _offline_hint(release, target)
      ) from e
    bar.update(done, final=True)
  return done, digest.hexdigest(), length


def download(
  release: Release,
  target: str,
  *,
  sha256: Optional[str] = None,
  progress: bool = True,
  timeout: float = 30.0,
) -> str:
  """Downloads `release.url` to `target` atomically, verifying size and SHA-256.

  The bytes go to a temporary file beside `target`, renamed to `target` only when the
  transfer is complete (as long as the server's Content-Length and `release.size`) and
  the digest matches `sha256` / `release.sha256` where one is known. On any failure the
  temporary file is removed and `target` is left as it was.

  Returns:
    `target`.

  Raises:
    DownloadError: the server cannot be reached, answers with an error, or the transfer
      ends early; the message holds the URL and how to pass a local file.
    ChecksumError: the size or the SHA-256 differs from the expected one.
  """
  folder = os.path.dirname(os.path.abspath(target))
  os.makedirs(folder, exist_ok=True)
  expected_sha = _pinned_sha256(release, sha256)
  fd, partial = tempfile.mkstemp(
    prefix=f'.{release.filename}.', suffix='.partial', dir=folder
  )
  try:
    with os.fdopen(fd, 'wb') as out:
      done, got, length = _fetch(release, out, target, progress, timeout)
      out.flush()
      os.fsync(out.fileno())
    if length >= 0 and done != length:
      raise DownloadError(
        f'The download of {release.url} ended after {done} of {length} bytes. '
        'Run the command again to retry; ' + _offline_hint(release, target)
      )
    if release.size is not None and done != release.size:
      raise ChecksumError(
        f'{release.url} has {done} bytes; the {release.name!r} release file has '
        f'{release.size}. Refusing it.'
      )
    if expected_sha is not None and got != expected_sha:
      raise ChecksumError(
        f'{release.url} has SHA-256 {got}; expected {expected_sha}. Refusing it '
        '(a corrupted or altered file).'
      )
    os.replace(partial, target)
    with open(target + '.sha256', 'w') as f:
      f.write(f'{got}  {release.filename}\n')
    return target
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def verify_file(release: Release, path: str, *, sha256: Optional[str] = None) -> str:
  """Checks a local copy of a release file: size and SHA-256 where known, else the
  digest recorded at download (`<path>.sha256`). Returns the file's SHA-256.

  Raises:
    ChecksumError: a mismatch (the message names the file and both values).
  """
  size = os.path.getsize(path)
  if release.size is not None and size != release.size:
    raise ChecksumError(
      f'{path} has {size} bytes; the {release.name!r} release file has {release.size}.'
    )
  got = sha256_of(path)
  expected = _pinned_sha256(release, sha256)
  source = 'expected'
  if expected is None and os.path.exists(path + '.sha256'):
    with open(path + '.sha256') as f:
      expected = f.read().split()[0].lower()
    source = f'recorded in {path}.sha256 at download'
  if expected is not None and got != expected:
    raise ChecksumError(
      f'{path} has SHA-256 {got}; {source}: {expected}. Refusing it: delete the file '
      'to download it again.'
    )
  return got


def checkpoint_path(
  name: str,
  *,
  sha256: Optional[str] = None,
  progress: bool = True,
  cache: Optional[str] = None,
) -> str:
  """The local, verified file of release `name`: from the cache (`cache` or
  `cache_dir()`), downloaded there once if missing.

  Raises:
    errors.ConfigError: no release has that name.
    DownloadError, ChecksumError: see `download` / `verify_file`.
  """
  release = get_release(name)
  target = os.path.join(cache or cache_dir(), release.filename)
  if not os.path.exists(target):
    download(release, target, sha256=sha256, progress=progress)
  verify_file(release, target, sha256=sha256)
  return target


def describe() -> Tuple[str, ...]:
  """One line per release: name, URL, config, size / checksum status."""
  lines = []
  for r in releases().values():
    size = f'{r.size} bytes' if r.size else 'size unpublished'
    digest = f'sha256 {r.sha256[:12]}...' if r.sha256 else 'sha256 unpublished'
    lines.append(f'{r.name}: {r.url} ({r.config}; {size}; {digest})')
  return tuple(lines)
