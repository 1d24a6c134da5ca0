"""Perceiver AR: the public module (Hawthorne et al., "General-purpose, long-context
autoregressive modeling with Perceiver AR", ICML 2022).

Compatible with `perceiver_ar.perceiver_ar_model` of Google Research's release
(`google-research/perceiver-ar`): `PerceiverAR` takes the same constructor keywords,
call arguments and memories, computes the same values and creates the same Haiku
parameter paths, so the release's checkpoints load unchanged.

`Sampler` generates with per-layer key/value caches, so each new token costs one
latent step instead of a full call:

  sampler = perceiver_ar.Sampler(model_kwargs)
  tokens = sampler.generate(params, prompt, num_tokens=100, temperature=0.8, top_k=40)

Shape glossary:
  B: batch size; M: input positions; N: latents; K: vocabulary.
"""

from perceiver._src.ar_attention import AttentionState
from perceiver._src.ar_masks import Masks
from perceiver._src.ar_masks import latent_last_steps
from perceiver._src.ar_masks import make_block_causal_masks
from perceiver._src.ar_masks import sequence_length
from perceiver._src.ar_masks import terminal_relative_positions
from perceiver._src.ar_masks import truncate_sequence
from perceiver._src.ar_model import Output
from perceiver._src.ar_model import PerceiverAR
from perceiver._src.ar_positions import apply_rotary
from perceiver._src.ar_positions import apply_rotary_to_subset
from perceiver._src.ar_positions import fourier_features
from perceiver._src.ar_positions import linear_features
from perceiver._src.ar_positions import sinusoidal_features
from perceiver._src.ar_sampling import Sampler
from perceiver._src.ar_sampling import latent_counts
from perceiver._src.ar_sampling import sample_logits
from perceiver._src.attention import record_attention_weights

__all__ = [
  'AttentionState',
  'Masks',
  'Output',
  'PerceiverAR',
  'Sampler',
  'apply_rotary',
  'apply_rotary_to_subset',
  'fourier_features',
  'latent_counts',
  'latent_last_steps',
  'linear_features',
  'make_block_causal_masks',
  'record_attention_weights',
  'sample_logits',
  'sequence_length',
  'sinusoidal_features',
  'terminal_relative_positions',
  'truncate_sequence',
]
