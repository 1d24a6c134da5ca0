r"""Autoencodes a video file (frames + audio + masked label) with Perceiver IO.

  python -m experiments.autoencode --checkpoint=video_autoencoding_checkpoint.pystate \
      --video=IN.mp4 --output_dir=/tmp/autoencoded [--num_chunks=128]

`--checkpoint` takes the release's `.pystate` (read by the safe loader, which refuses
files holding code), this project's `.npz` exports, a training workdir, or the registry
name `video_autoencoding` (the released file, downloaded once into `$PERCEIVER_CACHE`
and verified);
`--config` names the architecture (default `configs/multimodal.py:kinetics`, the
release's). Writes the input and the reconstruction side by side (mp4 with the
reconstructed audio, or gif), `input.wav` and `reconstruction.wav` to `--output_dir`,
and prints one JSON line: video PSNR, audio PSNR / SNR and the top-5 classes (with
Kinetics-700 names for 700-class models). The encoder runs once; the outputs are decoded
in `--num_chunks` groups (default: the config's `model.eval_num_chunks`). Bad input (a
missing or unreadable video, one shorter than the clip, a checkpoint that does not fit
the config) ends with a one-line message and exit status 1.
"""

import json
import types

from absl import flags
from ml_collections import config_flags

from experiments.tasks.multimodal import autoencode
from experiments.training import cli
from experiments.training import errors
from experiments.training import registry

DEFAULT_CONFIG = 'configs/multimodal.py:kinetics'


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  return types.SimpleNamespace(
    config=config_flags.DEFINE_config_file(
      'config',
      registry.config_file(DEFAULT_CONFIG),
      'Multimodal config naming the architecture.',
      lock_config=True,
      flag_values=flag_values,
    ),
    checkpoint=flags.DEFINE_string(
      'checkpoint',
      None,
      "The release's .pystate, this project's .npz, a training workdir, or a registry "
      'name (video_autoencoding).',
      required=True,
      flag_values=flag_values,
    ),
    video=flags.DEFINE_string(
      'video',
      None,
      'Input video file (mp4, webm, avi, mkv, ...).',
      required=True,
      flag_values=flag_values,
    ),
    output_dir=flags.DEFINE_string(
      'output_dir',
      None,
      'Where the outputs are written.',
      required=True,
      flag_values=flag_values,
    ),
    num_chunks=flags.DEFINE_integer(
      'num_chunks',
      None,
      'Groups of output points decoded one after another.',
      flag_values=flag_values,
    ),
    output_format=flags.DEFINE_enum(
      'output_format',
      'mp4',
      ['mp4', 'gif'],
      'Side-by-side video format.',
      flag_values=flag_values,
    ),
  )


def main(argv, *, args: types.SimpleNamespace):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {argv[1:]}')
  config = args.config.value
  result = autoencode.autoencode(
    args.checkpoint.value,
    args.video.value,
    args.output_dir.value,
    config,
    num_chunks=args.num_chunks.value or config.model.eval_num_chunks,
    output_format=args.output_format.value,
  )
  print(json.dumps(result))


if __name__ == '__main__':
  cli.run(main, define_flags, name='autoencode')
