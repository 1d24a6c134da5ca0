r"""Autoencodes a video file (frames + audio + masked label) with Perceiver IO.

  python -m experiments.autoencode --checkpoint=video_autoencoding_checkpoint.pystate \
      --video=IN.mp4 --output_dir=/tmp/autoencoded [--num_chunks=128]

`--checkpoint` takes the release's `.pystate` (read by the safe loader, which refuses
files holding code), this project's `.npz` exports (`<workdir>/export/params.npz`), or
the registry name `video_autoencoding` (`experiments/inference/pretrained.py`: the
released file, downloaded once into `$PERCEIVER_CACHE` and verified);
`--config` names the architecture (default `configs/multimodal.py:kinetics`, the
release's). Writes the input and the reconstruction side by side (mp4 with the
reconstructed audio, or gif), `input.wav` and `reconstruction.wav` to `--output_dir`,
and prints one JSON line: video PSNR, audio PSNR / SNR and the top-5 classes (with
Kinetics-700 names for 700-class models). The encoder runs once; the outputs are decoded
in `--num_chunks` groups (default: the config's `model.eval_num_chunks`). Bad input (a
missing or unreadable video, one shorter than the clip, a checkpoint that does not fit
the config) ends with a one-line message and exit status 1.
"""

import functools
import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.tasks.multimodal import autoencode
from perceiver import checkpoint as checkpoint_lib

_DEFAULT_CONFIG = (
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'configs',
    'multimodal.py',
  )
  + ':kinetics'
)


def define_flags():
  """Defines the command-line flags (only when run as a program)."""
  return dict(
    config=config_flags.DEFINE_config_file(
      'config',
      _DEFAULT_CONFIG,
      'Multimodal config naming the architecture.',
      lock_config=True,
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint',
      None,
      "The release's .pystate, this project's .npz parameter file, or a registry name "
      '(video_autoencoding).',
    ),
    video=flags.DEFINE_string(
      'video', None, 'Input video file (mp4, webm, avi, mkv, ...).'
    ),
    output_dir=flags.DEFINE_string('output_dir', None, 'Where the outputs are written.'),
    num_chunks=flags.DEFINE_integer(
      'num_chunks', None, 'Groups of output points decoded one after another.'
    ),
    output_format=flags.DEFINE_enum(
      'output_format', 'mp4', ['mp4', 'gif'], 'Side-by-side video format.'
    ),
  )


def main(argv, *, flag_values):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for name in ('checkpoint', 'video', 'output_dir'):
    if not flag_values[name].value:
      raise app.UsageError(f'--{name} is required.')
  config = flag_values['config'].value
  num_chunks = flag_values['num_chunks'].value or config.model.eval_num_chunks
  try:
    result = autoencode.autoencode(
      flag_values['checkpoint'].value,
      flag_values['video'].value,
      flag_values['output_dir'].value,
      config,
      num_chunks=num_chunks,
      output_format=flag_values['output_format'].value,
    )
  except (ValueError, OSError, checkpoint_lib.UnsafeCheckpointError) as e:
    sys.exit(f'autoencode: error: {e}')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(functools.partial(main, flag_values=define_flags()))
