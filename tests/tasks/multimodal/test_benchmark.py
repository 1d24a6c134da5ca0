"""`experiments.benchmarks.reconstruction` on the debug variant: consistent figures."""

from configs import multimodal as multimodal_config
from experiments.benchmarks import reconstruction


def test_reconstruction_benchmark_reports_one_encoder_call_and_the_chunks():
  config = multimodal_config.get_config('debug')  # 3 frames of 16x16: 768 pixels.
  report = reconstruction.measure(config, 3)
  assert report['ran'] and report['num_chunks'] == 3
  assert report['pixel_queries_per_chunk'] == 256
  assert (report['encoder_calls_per_clip'], report['decoder_calls_per_clip']) == (1, 3)
  assert report['modality_sizes'] == {'audio': 9, 'image': 48, 'label': 1}
  assert report['xla_decoder_call_temp_bytes'] > 0 and report['peak_rss_bytes'] > 0
  assert report['reconstruct_s'] >= 0 and report['memory_budget_bytes'] > 0
