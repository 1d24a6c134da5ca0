"""Input preprocessors and output postprocessors of the Perceiver (public module).

This module gathers, under the import path of DeepMind's release
(`from perceiver import io_processors`), every processor and array helper. The code
lives in focused modules:

  patches.py                 space_to_depth, reverse_space_to_depth, extract_patches,
                             patches_for_flow
  conv_resampling.py         Conv2DDownsample, Conv2DUpsample, Conv3DUpsample
  image_processors.py        ImagePreprocessor, ImagePostprocessor
  audio_processors.py        AudioPreprocessor, AudioPostprocessor
  basic_processors.py        OneHotPreprocessor, IdentityPostprocessor,
                             ClassificationPostprocessor, ProjectionPostprocessor,
                             EmbeddingDecoder
  multimodal_processors.py   restructure, MultimodalPreprocessor,
                             MultimodalPostprocessor
  point_cloud_processors.py  PointCloudPreprocessor
  positional_inputs.py       the position-encoding step shared by the image and audio
                             preprocessors

Interface shared by all preprocessors:
  `pre(inputs, *, is_training, pos=None, network_input_is_1d=True)`
    -> `(inputs_with_pos [B, N, C], modality_sizes or None, inputs_without_pos)`.
and by all postprocessors:
  `post(outputs, *, is_training, pos=None, modality_sizes=None) -> outputs`.

Constructor keywords, defaults, numerics and Haiku parameter paths are those of the
release, so its checkpoints load unchanged.
"""

from typing import Any, Callable, Mapping, Optional, Tuple

import jax.numpy as jnp

from perceiver._src.audio_processors import AudioPostprocessor
from perceiver._src.audio_processors import AudioPreprocessor
from perceiver._src.basic_processors import ClassificationPostprocessor
from perceiver._src.basic_processors import EmbeddingDecoder
from perceiver._src.basic_processors import IdentityPostprocessor
from perceiver._src.basic_processors import OneHotPreprocessor
from perceiver._src.basic_processors import ProjectionPostprocessor
from perceiver._src.conv_resampling import Conv2DDownsample
from perceiver._src.conv_resampling import Conv2DUpsample
from perceiver._src.conv_resampling import Conv3DUpsample
from perceiver._src.image_processors import ImagePostprocessor
from perceiver._src.image_processors import ImagePreprocessor
from perceiver._src.multimodal_processors import MultimodalPostprocessor
from perceiver._src.multimodal_processors import MultimodalPreprocessor
from perceiver._src.multimodal_processors import restructure
from perceiver._src.patches import extract_patches
from perceiver._src.patches import patches_for_flow
from perceiver._src.patches import reverse_space_to_depth
from perceiver._src.patches import space_to_depth
from perceiver._src.point_cloud_processors import PointCloudPreprocessor

ModalitySizeT = Mapping[str, int]
PreprocessorOutputT = Tuple[jnp.ndarray, Optional[ModalitySizeT], Any]
PreprocessorT = Callable[..., PreprocessorOutputT]
PostprocessorT = Callable[..., Any]

__all__ = [
  'AudioPostprocessor',
  'AudioPreprocessor',
  'ClassificationPostprocessor',
  'Conv2DDownsample',
  'Conv2DUpsample',
  'Conv3DUpsample',
  'EmbeddingDecoder',
  'IdentityPostprocessor',
  'ImagePostprocessor',
  'ImagePreprocessor',
  'ModalitySizeT',
  'MultimodalPostprocessor',
  'MultimodalPreprocessor',
  'OneHotPreprocessor',
  'PointCloudPreprocessor',
  'PostprocessorT',
  'PreprocessorOutputT',
  'PreprocessorT',
  'ProjectionPostprocessor',
  'extract_patches',
  'patches_for_flow',
  'restructure',
  'reverse_space_to_depth',
  'space_to_depth',
]
