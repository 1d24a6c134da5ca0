"""Autoencodes one video file with a multimodal checkpoint (`python -m experiments.autoencode`).

The clip is read as in evaluation (`video_folder.read_clip`: the config's frames, frame
rate and image size from the middle of the file, centre crop, audio resampled to
`samples_per_frame * fps` mono), encoded once, decoded in `num_chunks` groups of output
points (`decoding.Reconstructor`), and written to `output_dir`:

  side_by_side.mp4 (or .gif)  the input (left) and the reconstruction (right); the mp4
                              carries the reconstructed audio
  input.wav, reconstruction.wav
  result.json                 the JSON line printed on stdout

The JSON line holds video PSNR, audio PSNR and SNR (null for a video without an audio
track, whose input is silence: the reconstruction is then not scored against it), and
the top-5 classes of the label logits (the label is masked at the input), with
Kinetics-700 names when the config has 700 classes (the release's order,
`kinetics700.py`).
"""

import json
import os
from typing import Dict, Optional

import jax
import ml_collections
import numpy as np

from experiments.tasks.multimodal import decoding
from experiments.tasks.multimodal import kinetics700
from experiments.tasks.multimodal import metrics
from experiments.tasks.multimodal import model as model_lib
from experiments.tasks.multimodal import task
from experiments.tasks.multimodal import video_folder
from experiments.training import errors
from experiments.training import task as task_lib
from experiments.training import weights


def class_names(config: ml_collections.ConfigDict):
  """Names of the label classes: Kinetics-700's, digits' or None (indices only)."""
  k = config.data.num_classes
  if k == kinetics700.NUM_CLASSES:
    return kinetics700.CLASSES
  if config.data.dataset == 'moving_digits':
    return tuple(str(i) for i in range(k))
  return None


def _score(metric, audio: np.ndarray, clip) -> Optional[float]:
  """`metric` of the reconstructed audio against the clip's, or None without audio."""
  if not clip['has_audio']:
    return None
  return float(metric(audio[None], clip['audio'][None])[0])


def autoencode(
  checkpoint: str,
  video_path: str,
  output_dir: str,
  config: ml_collections.ConfigDict,
  *,
  num_chunks: int,
  output_format: str = 'mp4',
  progress=True,
) -> Dict[str, object]:
  """Runs the whole command; returns the JSON-able result (also written to disk)."""
  if output_format not in ('mp4', 'gif'):
    raise errors.ConfigError(f"--output_format={output_format!r} must be 'mp4' or 'gif'.")
  options = video_folder.options_from_config(config, is_training=False)
  try:
    clip = video_folder.read_clip(video_path, options)
  except video_folder.ClipError as e:
    raise errors.DataError(f'--video: {e}') from e
  shapes = model_lib.Shapes(
    options.num_frames,
    options.image_size,
    options.image_size,
    options.num_frames * options.samples_per_frame,
    config.data.num_classes,
  )
  rec = decoding.Reconstructor(config, shapes, num_chunks=num_chunks, progress=progress)
  params, state = weights.load(
    task.build_model(config), task_lib.example_batch(task, config), checkpoint
  )
  batch = {'video': clip['video'][None], 'audio': clip['audio'][None]}
  out = rec(params, state, jax.random.PRNGKey(42), batch)
  image = np.clip(out['image'][0], 0.0, 1.0)
  audio = np.clip(out['audio'][0], -1.0, 1.0)
  probs, classes = decoding.top_k(out['label'], min(5, config.data.num_classes))
  names = class_names(config)
  result = {
    'video': video_path,
    'checkpoint': checkpoint,
    'video_psnr': float(metrics.psnr(image[None], clip['video'][None])[0]),
    # Without an audio track the input is silence: no score against it means anything.
    'audio_psnr': _score(metrics.psnr, audio, clip),
    'audio_snr': _score(metrics.snr, audio, clip),
    'has_audio': bool(clip['has_audio']),
    'top5': [
      {'class': int(c), 'name': names[c] if names else None, 'probability': float(p)}
      for c, p in zip(classes[0], probs[0])
    ],
  }
  os.makedirs(output_dir, exist_ok=True)
  side = np.concatenate([clip['video'], image], axis=2)  # [T, H, 2W, 3]
  side_path = os.path.join(output_dir, f'side_by_side.{output_format}')
  video_folder.write_clip(side_path, side, options.fps, audio, options.sample_rate)
  video_folder.write_wav(
    os.path.join(output_dir, 'input.wav'), clip['audio'], options.sample_rate
  )
  video_folder.write_wav(
    os.path.join(output_dir, 'reconstruction.wav'), audio, options.sample_rate
  )
  result['outputs'] = sorted(os.listdir(output_dir) + ['result.json'])
  with open(os.path.join(output_dir, 'result.json'), 'w') as f:
    json.dump(result, f)
  return result
