r"""Builds TFDS `imagenet2012` once from the manually downloaded ILSVRC2012 archives.

ImageNet cannot be downloaded automatically: register at
https://image-net.org/download-images, download `ILSVRC2012_img_train.tar` and
`ILSVRC2012_img_val.tar` into one directory, then run

  python -m experiments.tasks.imagenet.prepare --manual_dir=/data/imagenet_archives \
      [--data_dir=/data/tensorflow_datasets]

and train with `--config.data.data_dir=` the same `data_dir` (omit both to use TFDS's
default, `~/tensorflow_datasets`). This calls the TFDS builder directly, so it works
without the `tfds` command line tool (whose `tfds build` also needs `apache-beam`).
"""

import os
import types
from typing import Optional

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from experiments.training import cli
from experiments.training import errors


def define_flags() -> types.SimpleNamespace:
  """Defines the command-line flags; called only when run as a program, so that
  importing this module never clashes with other programs' flags."""
  namespace = types.SimpleNamespace(
    manual_dir=flags.DEFINE_string(
      'manual_dir', None, 'Directory holding the ILSVRC2012 .tar archives.'
    ),
    data_dir=flags.DEFINE_string(
      'data_dir', None, 'TFDS data directory to write (default: TFDS default).'
    ),
    name=flags.DEFINE_string('tfds_name', 'imagenet2012', 'TFDS dataset to build.'),
  )
  return namespace


ARCHIVES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')


def check_archives(manual_dir: str) -> None:
  """Raises FileNotFoundError naming every archive missing from `manual_dir`."""
  missing = [
    name for name in ARCHIVES if not os.path.isfile(os.path.join(manual_dir, name))
  ]
  if missing:
    raise errors.DataError(
      f'--manual_dir={manual_dir!r} lacks {missing}. Download them (after registering '
      'at https://image-net.org/download-images) into that directory.'
    )


def prepare(
  manual_dir: str, data_dir: Optional[str] = None, tfds_name: str = 'imagenet2012'
) -> dict:
  """Builds the dataset; returns `{split: num_examples}`."""
  check_archives(manual_dir)
  try:  # TFDS imports it lazily when building; fail before any work without it.
    import importlib_resources  # noqa: F401
  except ImportError as e:
    raise errors.MissingDependencyError(
      'Building TFDS datasets needs the `importlib_resources` package (a requirement '
      'of this project): pip install importlib_resources'
    ) from e
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
  )
  return {str(name): info.num_examples for name, info in builder.info.splits.items()}


def main(argv, *, args: types.SimpleNamespace):
  del argv
  if not args.manual_dir.value:
    raise app.UsageError('--manual_dir is required.')
  splits = prepare(args.manual_dir.value, args.data_dir.value, args.name.value)
  print(
    f'Prepared {args.name.value}: ' + ', '.join(f'{k}: {v}' for k, v in splits.items())
  )


if __name__ == '__main__':
  cli.run(main, define_flags, name='prepare')
