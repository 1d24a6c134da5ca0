"""The bfloat16 recipe: which config fields switch an experiment to mixed precision.

On GPUs and TPUs every experiment trains with bfloat16 compute and float32 state: set
`compute_dtype='bfloat16'` in each model section that has the field (encoder, decoder
and, for multimodal models, the per-modality decoders). Within such a module
(`perceiver._src.attention.compute_dtype_scope`):

  * parameters are created, stored, checkpointed and updated in float32, and so is the
    optimizer state; each layer receives a bfloat16 copy, so matrix products (the bulk
    of the FLOPs) run in bfloat16;
  * LayerNorm parameters are never cast and layer norms normalise in float32;
  * the attention softmax normalises its (bfloat16) logits in float32;
  * the encoder returns its latents and the decoders their outputs in float32, so
    output postprocessors, losses and metrics run in float32.

Preprocessors (Fourier features, patches, convolutions) stay in float32: they are a
small share of the work and position features need the precision.
"""

from typing import List

import ml_collections

FIELD = 'compute_dtype'
DTYPES = ('float32', 'bfloat16')
COMMAND_FLAG_HELP = (
  "Compute dtype of the model's matrix products (default: the config's). bfloat16 "
  'keeps float32 parameters and outputs; it is fast on processors with bfloat16 '
  'matrix units (AMX, AVX-512 BF16) and on GPUs/TPUs (docs/performance.md).'
)


def compute_dtype_fields(config: ml_collections.ConfigDict) -> List[str]:
  """Dotted paths (below `config`) of every `compute_dtype` field of `config.model`."""

  def walk(section, prefix):
    for key in sorted(section.keys()):
      value = section[key]
      if isinstance(value, ml_collections.ConfigDict):
        yield from walk(value, f'{prefix}{key}.')
      elif key == FIELD:
        yield prefix + key

  return list(walk(config.model, 'model.'))


def bfloat16_overrides(config: ml_collections.ConfigDict) -> List[str]:
  """The command-line overrides that switch `config` to the bfloat16 recipe."""
  return [f'--config.{path}=bfloat16' for path in compute_dtype_fields(config)]


def set_compute_dtype(config: ml_collections.ConfigDict, dtype: str) -> None:
  """Sets every `compute_dtype` field of `config.model` to `dtype` (in place).

  Args:
    config: an experiment config (may be locked: the fields exist).
    dtype: 'bfloat16', 'float32', or '' (off).
  """
  for path in compute_dtype_fields(config):
    section = config
    *parents, leaf = path.split('.')
    for name in parents:
      section = section[name]
    section[leaf] = dtype
