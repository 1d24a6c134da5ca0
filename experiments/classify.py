r"""Classifies images with an ImageNet Perceiver: a released model or a trained one.

  python -m experiments.classify --checkpoint=imagenet_fourier --image=dog.jpg
  python -m experiments.classify --checkpoint=imagenet_conv --image=a.jpg --image=b.png \
      --top_k=3 --json
  python -m experiments.classify --checkpoint=/tmp/in_debug \
      --config=configs/imagenet.py:debug --image=dog.jpg

`--checkpoint` is a released model's name (`imagenet_fourier`, `imagenet_learned`,
`imagenet_conv`: downloaded once into $PERCEIVER_CACHE and verified), a release
`.pystate` file, this project's `.npz` export or a training workdir. `--config` names
the architecture: by default the release's config for a name,
`configs/imagenet.py:io_fourier` for a file. Images (`--image`, repeatable, or
positional arguments; JPEG, PNG, GIF or BMP, at most `--max_image_pixels` pixels) get
the release's evaluation preprocessing (experiments/tasks/imagenet/classify.py). The
top-k classes and their probabilities go to stdout as text, or as one JSON line per
image with `--json`. Bad input ends with one line and exit status 1.
"""

import os
import types

# Before TensorFlow (image decoding) is first imported: keep its C++ log lines (e.g.
# beside a corrupt JPEG's one-line error) off the terminal unless asked for.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.inference import pretrained
from experiments.tasks.imagenet import classify
from experiments.training import cli
from experiments.training import precision
from experiments.training import registry
from experiments.training import weights

# pylint: enable=g-import-not-at-top,wrong-import-position

DEFAULT_CONFIG = 'configs/imagenet.py:io_fourier'


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      None,
      'ImageNet config of the architecture.',
      lock_config=True,
      flag_values=flag_values,
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint',
      None,
      'Released model name, .pystate or .npz file, or a training workdir.',
      flag_values=flag_values,
    ),
    image=flags.DEFINE_multi_string(
      'image', [], 'Image file to classify (repeatable).', flag_values=flag_values
    ),
    top_k=flags.DEFINE_integer(
      'top_k', 5, 'Classes shown per image.', flag_values=flag_values
    ),
    max_image_pixels=flags.DEFINE_integer(
      'max_image_pixels',
      classify.MAX_PIXELS,
      'Largest image accepted (decoded pixels; checked from the file header).',
      flag_values=flag_values,
    ),
    json=flags.DEFINE_bool(
      'json', False, 'Print one JSON line per image.', flag_values=flag_values
    ),
    compute_dtype=flags.DEFINE_enum(
      'compute_dtype',
      None,
      precision.DTYPES,
      precision.COMMAND_FLAG_HELP,
      flag_values=flag_values,
    ),
  )


def main(argv, *, args: types.SimpleNamespace):
  images = list(args.image.value) + list(argv[1:])
  checkpoint = args.checkpoint.value
  if not checkpoint:
    raise app.UsageError(
      f'--checkpoint is required: one of {sorted(registry.releases())} or a file.'
    )
  if not images:
    raise app.UsageError('Give at least one --image.')
  for path in images:  # Fail on a bad image before any download or model build.
    classify.decode_image(path, max_pixels=args.max_image_pixels.value)
  config = args.config.value
  if config is None and checkpoint not in registry.releases():
    config = registry.load_config(DEFAULT_CONFIG)
  config = pretrained.config_of(checkpoint, config)
  if args.compute_dtype.value:
    precision.set_compute_dtype(config, args.compute_dtype.value)
  classify.check_classifier(config, checkpoint)
  model = weights.load_model(config, checkpoint)
  results = classify.classify(
    model, images, args.top_k.value, max_pixels=args.max_image_pixels.value
  )
  print(
    classify.format_json(results) if args.json.value else classify.format_text(results)
  )


if __name__ == '__main__':
  cli.run(main, define_flags, name='classify')
