"""The benchmark's 'pipeline' input mode times the input apart from the step."""

import pytest

from configs import digits as digits_configs
from experiments.benchmarks import train_step as benchmark_train_step


def test_pipeline_mode_times_the_input_within_each_step():
  config = digits_configs.get_config('tiny')
  report = benchmark_train_step.benchmark(
    config, num_steps=3, matmul_size=128, input_mode='pipeline'
  )
  assert report['input_mode'] == 'pipeline'
  # Each step's input time is part of that step's time, so their medians keep order.
  assert 0 < report['input_s_median'] <= report['step_s_median']
  assert 0 <= report['input_process_cpu_s_median'] <= report['step_process_cpu_s_median']


def test_unknown_input_mode_is_named():
  with pytest.raises(ValueError, match="input_mode='disk' is not one of"):
    benchmark_train_step.benchmark(digits_configs.get_config('tiny'), input_mode='disk')
