"""The Hugging Face comparison builds transformers' model with our configuration."""

import importlib.util

import pytest

from configs import imagenet as imagenet_config
from experiments.benchmarks import hf_perceiver
from experiments.tasks.imagenet import task as imagenet_task


def test_hf_config_equals_ours():
  kwargs = hf_perceiver.hf_config_kwargs(imagenet_config.get_config('io_fourier'))
  assert kwargs == dict(
    num_latents=512,
    d_latents=1024,
    d_model=261,  # 3 pixels + 2 axes x (sin, cos) x 64 bands + 2 positions.
    num_blocks=8,
    num_self_attends_per_block=6,
    num_self_attention_heads=8,
    num_cross_attention_heads=1,
    qk_channels=None,
    v_channels=None,
    cross_attention_shape_for_attention='kv',
    self_attention_widening_factor=1,
    cross_attention_widening_factor=1,
    attention_probs_dropout_prob=0.0,
    use_query_residual=True,
    image_size=224,
    num_labels=1000,
  )
  with pytest.raises(ValueError, match='224'):
    hf_perceiver.hf_config_kwargs(imagenet_config.get_config('debug'))


@pytest.mark.skipif(
  importlib.util.find_spec('torch') is None
  or importlib.util.find_spec('transformers') is None,
  reason='torch and transformers are not installed (the comparison runs where they are)',
)
def test_parameter_counts_match():
  import transformers  # noqa: PLC0415

  config = imagenet_config.get_config('io_fourier')
  hf_config = transformers.PerceiverConfig(**hf_perceiver.hf_config_kwargs(config))
  model = transformers.PerceiverForImageClassificationFourier(hf_config)
  hf_params = sum(p.numel() for p in model.parameters())
  ours, _ = imagenet_task.count_parameters(config)
  assert hf_params == ours == 48_440_627
