"""The released Perceiver IO checkpoints: a registry, verified downloads and one-call loading.

  release = pretrained.get_release('imagenet_fourier')
  model = pretrained.load('imagenet_fourier')   # downloads once, verifies, builds
  (logits, _), = ... model.apply(model.params, model.state, None, batch, is_training=False)

Every entry names the experiment config that builds the architecture (`configs/...:variant`,
whose task's `build_model` makes the Haiku model), the release's URL, and the file's size
and SHA-256 where known. DeepMind's release (the colabs of deepmind-research/perceiver)
publishes the URLs only: no sizes and no checksums. For those files the download is checked
against the server's Content-Length (a truncated transfer is refused), then read with the
safe loader (`perceiver.checkpoint.load_params`, which never runs code from the file) and
its parameter tree compared, path by path and shape by shape, with the model its config
builds; the SHA-256 of the first verified download is written beside the file
(`<file>.sha256`) and every later use re-checks the file against it, so a cached file that
changes is refused. Pin a digest you trust with `sha256=` (or `PERCEIVER_SHA256_<NAME>`,
e.g. `PERCEIVER_SHA256_IMAGENET_FOURIER`): a file whose digest differs is refused.

Files are cached in `$PERCEIVER_CACHE` (default `~/.cache/perceiver`), written to a
temporary file in that folder and renamed into place only once complete and verified, so
an interrupted download never leaves a file that looks valid. Without network access the
download fails at once with the URL and how to pass a local file instead: every command's
`--checkpoint` takes a path as well as a registry name.
"""

import dataclasses
import hashlib
import importlib
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Tuple
import urllib.error
import urllib.request

import jax
import ml_collections
import numpy as np

from perceiver import checkpoint as checkpoint_lib

_BASE_URL = 'https://storage.googleapis.com/perceiver_io/'
_CHUNK = 1 << 20


class DownloadError(OSError):
  """A release file could not be downloaded (network error, truncated transfer)."""


class ChecksumError(ValueError):
  """A file's size or SHA-256 differs from the expected one."""


@dataclasses.dataclass(frozen=True)
class Release:
  """One released checkpoint.

  Attributes:
    name: registry name (`--checkpoint=NAME`).
    description: what the model does.
    url: where the release serves the file.
    config: `'configs/<file>.py:<variant>'` building the architecture, or '' when the
      experiment family that builds it is not part of this checkout (the file can still
      be downloaded and verified, not built).
    size: file size in bytes, or None where the release does not publish it.
    sha256: hex SHA-256 of the file, or None where the release does not publish it.
    paper_result: the paper's figure for this model.
  """

  name: str
  description: str
  url: str
  config: str
  size: Optional[int] = None
  sha256: Optional[str] = None
  paper_result: str = ''

  @property
  def filename(self) -> str:
    return self.url.rsplit('/', 1)[-1]


RELEASES: Dict[str, Release] = {
  r.name: r
  for r in (
    Release(
      'imagenet_fourier',
      'ImageNet classifier, pixels + 2D Fourier features (Perceiver IO, 48.4M params)',
      _BASE_URL + 'imagenet_fourier_position_encoding.pystate',
      'configs/imagenet.py:io_fourier',
      paper_result='79.0% top-1 (Perceiver IO paper, ImageNet, 2D Fourier features)',
    ),
    Release(
      'imagenet_learned',
      'ImageNet classifier, 1x1 conv + learned position encoding (Perceiver IO)',
      _BASE_URL + 'imagenet_learned_position_encoding.pystate',
      'configs/imagenet.py:io_learned',
      paper_result='72.7% top-1 (Perceiver IO paper, ImageNet, learned positions)',
    ),
    Release(
      'imagenet_conv',
      'ImageNet classifier, conv + max-pool preprocessing + 2D Fourier features',
      _BASE_URL + 'imagenet_conv_preprocessing.pystate',
      'configs/imagenet.py:io_conv',
      paper_result='82.1% top-1 (Perceiver IO paper, ImageNet, conv preprocessing, no pretraining)',
    ),
    Release(
      'language_bytes',
      'Byte-level masked language model (UTF-8 bytes, 2048 positions)',
      _BASE_URL + 'language_perceiver_io_bytes.pickle',
      'configs/mlm.py:bytes',
      paper_result='81.0 GLUE average after fine-tuning (Perceiver IO paper, GLUE)',
    ),
    Release(
      'optical_flow',
      'Optical flow between two frames (Perceiver IO, AutoFlow-trained)',
      _BASE_URL + 'optical_flow_checkpoint.pystate',
      'configs/flow.py:perceiver_io',
      paper_result='Sintel clean 1.81 / final 2.42, KITTI 4.98 EPE (Perceiver IO paper)',
    ),
    Release(
      'video_autoencoding',
      'Kinetics-700 multimodal autoencoder (video, audio, label)',
      _BASE_URL + 'video_autoencoding_checkpoint.pystate',
      'configs/multimodal.py:kinetics',
      paper_result='Kinetics-700 autoencoding (Perceiver IO paper, Sec. 4.3)',
    ),
    # Google Research's Perceiver AR release (its README and inference.ipynb): a zip
    # of a jaxline snapshot, read by perceiver.checkpoint.load_perceiver_ar_release.
    # Built by configs/perceiver_ar.py:copy_131072 (`experiments.generate` finds it
    # there); `config` stays '' until `load` can build that family (see the report).
    Release(
      'perceiver_ar_copy_131072',
      'Perceiver AR on the 131,072-position copy task (1,024 latents, 6 layers)',
      'https://storage.googleapis.com/perceiver-ar/checkpoints/random_mirrored_131072.zip',
      '',
      paper_result='the copy task at 131,072 positions (Perceiver AR paper)',
    ),
  )
}


def get_release(name: str) -> Release:
  """The registry entry `name`; ValueError listing the names if there is none."""
  if name not in RELEASES:
    raise ValueError(
      f'Unknown pretrained model {name!r}; expected one of {sorted(RELEASES)} '
      '(or a path to a checkpoint file).'
    )
  return RELEASES[name]


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
        length = int(length) if length and length.isdigit() else None
        bar = _Progress(f'{release.filename}', length or release.size, progress)
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
      out.flush()
      os.fsync(out.fileno())
    if length is not None and done != length:
      raise DownloadError(
        f'The download of {release.url} ended after {done} of {length} bytes. '
        'Run the command again to retry; ' + _offline_hint(release, target)
      )
    if release.size is not None and done != release.size:
      raise ChecksumError(
        f'{release.url} has {done} bytes; the {release.name!r} release file has '
        f'{release.size}. Refusing it.'
      )
    got = digest.hexdigest()
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
  name_or_path: str,
  *,
  sha256: Optional[str] = None,
  progress: bool = True,
  cache: Optional[str] = None,
) -> str:
  """A local, verified checkpoint file for a registry name or a path.

  A path to an existing file is returned as it is. A registry name is looked up in the
  cache (`cache` or `cache_dir()`), downloaded there once if missing, and verified.

  Raises:
    ValueError: neither a file nor a registry name.
    DownloadError, ChecksumError: see `download` / `verify_file`.
  """
  if os.path.isfile(name_or_path):
    return name_or_path
  if name_or_path not in RELEASES:
    raise ValueError(
      f'--checkpoint={name_or_path!r} is neither a file nor a released model; '
      f'released models: {sorted(RELEASES)}.'
    )
  release = RELEASES[name_or_path]
  target = os.path.join(cache or cache_dir(), release.filename)
  if not os.path.exists(target):
    download(release, target, sha256=sha256, progress=progress)
  verify_file(release, target, sha256=sha256)
  return target


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The config of `'configs/<file>.py[:variant]'` (resolved against this repository)."""
  module_path, _, variant = spec.partition(':')
  module = os.path.splitext(os.path.normpath(module_path))[0].replace(os.sep, '.')
  try:
    config_module = importlib.import_module(module)
  except ImportError as e:
    raise ValueError(f'Cannot import the config {spec!r}: {e}.') from e
  return config_module.get_config(variant) if variant else config_module.get_config()


def example_batch(config) -> Dict[str, np.ndarray]:
  """A one-example batch of zeros in the task's input format (for shapes only).

  Raises:
    ValueError: the task has no known input format here.
  """
  if config.task == 'experiments.tasks.imagenet.task':
    size = config.data.image_size
    return {'images': np.zeros([1, size, size, 3], np.float32)}
  if config.task in ('experiments.tasks.language.mlm',):
    length = config.model.max_seq_len
    return {
      'inputs': np.zeros([1, length], np.int32),
      'input_mask': np.ones([1, length], np.int32),
    }
  if config.task == 'experiments.tasks.digits.task':
    return {'images': np.zeros([1, 8, 8, 1], np.float32)}
  if config.task == 'experiments.tasks.multimodal.task':
    d = config.data
    return {
      'video': np.zeros([1, d.num_frames, d.image_size, d.image_size, 3], np.float32),
      'audio': np.zeros([1, d.num_frames * d.samples_per_frame], np.float32),
    }
  if config.task == 'experiments.tasks.flow.task':
    return {'frames': np.zeros([1, 2, *config.model.image_size, 3], np.float32)}
  raise ValueError(f'No example batch is known for task {config.task!r}.')


def check_params_fit(params, state, model, batch) -> None:
  """Raises ValueError unless `params`/`state` have the paths and shapes `model` makes."""
  # Initialised as in training (batch norm creates its statistics there).
  want_params, want_state = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), batch, is_training=True)
  )
  problems = []
  for label, want, have in (
    ('parameter', want_params, params),
    ('state', want_state, state),
  ):
    want = {f'{m}/{n}': tuple(v.shape) for m, d in want.items() for n, v in d.items()}
    have = {
      f'{m}/{n}': tuple(np.shape(v))
      for m, d in (have or {}).items()
      for n, v in d.items()
    }
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = sorted(
      f'{k}: file {have[k]} vs model {want[k]}'
      for k in set(want) & set(have)
      if want[k] != have[k]
    )
    if missing:
      problems.append(f'{len(missing)} missing {label}s {missing[:3]}')
    if extra and label == 'parameter':
      problems.append(f'{len(extra)} unexpected {label}s {extra[:3]}')
    if shapes:
      problems.append(f'{len(shapes)} {label}s with other shapes {shapes[:3]}')
  if problems:
    raise ValueError(
      'The checkpoint does not fit the config architecture: ' + '; '.join(problems) + '.'
    )


@dataclasses.dataclass
class Pretrained:
  """A ready model: `model.apply(params, state, rng, batch, is_training=False)`.

  Attributes:
    name: the registry name or the checkpoint path.
    config: the experiment config the model was built from.
    model: `hk.TransformedWithState` of the config's task.
    params, state: the checkpoint's parameters and state.
    preprocess: inputs -> batch for this model (images for ImageNet, marked text for
      the language model; see `experiments.inference.preprocessing`), or None.
    path: the checkpoint file.
  """

  name: str
  config: Any
  model: Any
  params: Any
  state: Any
  preprocess: Optional[Callable]
  path: str


def load(
  name_or_path: str,
  *,
  config: Optional[ml_collections.ConfigDict] = None,
  sha256: Optional[str] = None,
  progress: bool = True,
) -> Pretrained:
  """Returns the model of a registry name (downloaded once) or a checkpoint path.

  Args:
    name_or_path: a `RELEASES` name, or a `.pystate` / `.pickle` / `.npz` file.
    config: the architecture; default: the release's config (required for a path).
    sha256: pin the file's digest (see the module docstring).
    progress: draw the download progress bar.

  Raises:
    ValueError: unknown name, no config for a path, or parameters that do not fit.
    DownloadError, ChecksumError: see `download`.
  """
  from experiments.inference import preprocessing  # pylint: disable=import-outside-toplevel

  if config is None:
    if name_or_path not in RELEASES:
      raise ValueError(
        f'{name_or_path!r} is not a released model: pass config= (--config=) for a file.'
      )
    spec = RELEASES[name_or_path].config
    if not spec:
      raise ValueError(
        f'The {name_or_path!r} release is downloadable (checkpoint_path) but this '
        'checkout has no config for its architecture yet.'
      )
    config = load_config(spec)
  path = checkpoint_path(name_or_path, sha256=sha256, progress=progress)
  params, state = checkpoint_lib.load_params(path)
  task = importlib.import_module(config.task)
  model = task.build_model(config)
  check_params_fit(params, state, model, example_batch(config))
  return Pretrained(
    name=name_or_path,
    config=config,
    model=model,
    params=params,
    state=state,
    preprocess=preprocessing.for_config(config),
    path=path,
  )


def tiny_config(name: str) -> ml_collections.ConfigDict:
  """The release's config shrunk to a few thousand parameters, same kind of model.

  ImageNet: 32 x 32 images, 8 latents of 16 channels, one self-attend; the input
  preprocessing of the release (Fourier pixels, learned positions or conv) is kept.
  Language: `configs/mlm.py:debug` (64 bytes).
  Optical flow: `configs/flow.py:debug` (13 x 19 tiles, 5 latents of 16 channels).
  Video autoencoding: `configs/multimodal.py:debug` (3 frames of 16 x 16, 144 audio
  samples, 10 classes).

  Raises:
    ValueError: no config for `name`.
  """
  release = get_release(name)
  if not release.config:
    raise ValueError(f'The {name!r} release has no config in this checkout.')
  if release.config.startswith('configs/mlm.py'):
    return load_config('configs/mlm.py:debug')
  if release.config.startswith('configs/multimodal.py'):
    return load_config('configs/multimodal.py:debug')
  if release.config.startswith('configs/flow.py'):
    return load_config('configs/flow.py:debug')
  config = load_config(release.config)
  with config.unlocked():
    config.data.image_size = 32
    encoder = config.model.encoder
    encoder.update(
      dict(
        z_index_dim=8,
        num_z_channels=16,
        num_blocks=1,
        num_self_attends_per_block=1,
        num_self_attend_heads=2,
      )
    )
    config.model.decoder.num_z_channels = 16
    config.model.decoder.trainable_position_encoding_kwargs.num_channels = 16
    prep = config.model.input_preprocessor
    if prep.get('position_encoding_type') == 'fourier':
      side = 32 // prep.get('spatial_downsample', 1)
      prep.fourier_position_encoding_kwargs.num_bands = 4
      prep.fourier_position_encoding_kwargs.max_resolution = (side, side)
    if prep.get('position_encoding_type') == 'trainable':
      prep.num_channels = 8
      prep.project_pos_dim = 8
      prep.trainable_position_encoding_kwargs.num_channels = 8
    if prep.get('prep_type') == 'conv':
      prep.num_channels = 8
  return config


def smoke_model(name: str, seed: int = 0) -> Pretrained:
  """A tiny randomly initialised stand-in for release `name` (`tiny_config`): the
  same interface as `load(name)`, with no download (for smoke tests and demos)."""
  from experiments.inference import preprocessing  # pylint: disable=import-outside-toplevel

  config = tiny_config(name)
  task = importlib.import_module(config.task)
  model = task.build_model(config)
  batch = example_batch(config)
  params, state = jax.jit(lambda rng: model.init(rng, batch, is_training=True))(
    jax.random.PRNGKey(seed)
  )
  return Pretrained(
    name=f'{name} (smoke: tiny random model)',
    config=config,
    model=model,
    params=jax.device_get(params),
    state=jax.device_get(state),
    preprocess=preprocessing.for_config(config),
    path='',
  )


def describe() -> Tuple[str, ...]:
  """One line per release: name, URL, config, size / checksum status."""
  lines = []
  for r in RELEASES.values():
    size = f'{r.size} bytes' if r.size else 'size unpublished'
    digest = f'sha256 {r.sha256[:12]}...' if r.sha256 else 'sha256 unpublished'
    lines.append(f'{r.name}: {r.url} ({r.config or "no config yet"}; {size}; {digest})')
  return tuple(lines)
