r"""Classifies images with an ImageNet Perceiver: a released model or a trained one.

  python -m experiments.classify --checkpoint=imagenet_fourier --image=dog.jpg
  python -m experiments.classify --checkpoint=imagenet_conv --image=a.jpg --image=b.png \
      --top_k=3 --json
  python -m experiments.classify --checkpoint=/tmp/in_debug/export/params.npz \
      --config=configs/imagenet.py:debug --image=dog.jpg

`--checkpoint` is a released model's name (`imagenet_fourier`, `imagenet_learned`,
`imagenet_conv`: downloaded once into $PERCEIVER_CACHE and verified, see
experiments/inference/pretrained.py), a release `.pystate` file, or this project's `.npz`
export. `--config` names the architecture: by default the release's config for a name,
`configs/imagenet.py:io_fourier` for a file. Images (`--image`, repeatable, or positional
arguments; JPEG, PNG, GIF or BMP) get the release's evaluation preprocessing (centre crop
of 224/256 of the shorter side, bicubic resize, ImageNet normalisation; see
experiments/inference/preprocessing.py for how it differs from the colab's OpenCV
resize). The top-k classes (ImageNet names from timm's class list) and their
probabilities go to stdout as text, or as one JSON line per image with `--json`. A
missing or undecodable image, an unknown name or a file that does not fit the
architecture ends with a one-line message and exit status 1.
"""

import functools
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.inference import classify
from experiments.inference import preprocessing
from experiments.inference import pretrained
from perceiver import checkpoint as checkpoint_lib


def define_flags():
  """Defines the command-line flags (only when run as a program)."""
  return dict(
    config=config_flags.DEFINE_config_file(
      'config', None, 'ImageNet config of the architecture.', lock_config=True
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint', None, 'Released model name, .pystate or .npz parameter file.'
    ),
    image=flags.DEFINE_multi_string('image', [], 'Image file to classify (repeatable).'),
    top_k=flags.DEFINE_integer('top_k', 5, 'Classes shown per image.'),
    json=flags.DEFINE_bool('json', False, 'Print one JSON line per image.'),
  )


def main(argv, *, flag_values):
  images = list(flag_values['image'].value) + list(argv[1:])
  if not flag_values['checkpoint'].value:
    raise app.UsageError(
      f'--checkpoint is required: one of {sorted(pretrained.RELEASES)[:3]}... or a file.'
    )
  if not images:
    raise app.UsageError('Give at least one --image.')
  checkpoint = flag_values['checkpoint'].value
  try:
    for path in images:  # Fail on a bad image before any download or model build.
      preprocessing.decode_image(path)
    config = classify.resolve_config(checkpoint, flag_values['config'].value)
    model = pretrained.load(checkpoint, config=config)
    results = classify.classify(model, images, top_k=flag_values['top_k'].value)
  except (ValueError, OSError, checkpoint_lib.UnsafeCheckpointError) as e:
    sys.exit(f'classify: error: {e}')
  print(
    classify.format_json(results)
    if flag_values['json'].value
    else classify.format_text(results)
  )


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
