"""Keeps TensorFlow, which only feeds input pipelines, off every accelerator.

`requirements.txt` installs the CPU build of TensorFlow on Linux, but Colab and many GPU
images ship the CUDA build, which by default reserves most of each GPU's memory the
first time it runs an op, leaving JAX out of memory. Every module that runs TensorFlow
ops calls `keep_on_host(tf)` right after importing it: GPUs become invisible to
TensorFlow (JAX still sees them), before TensorFlow initialises its devices.
"""

from absl import logging

_hidden = False


def keep_on_host(tf) -> None:
  """Hides every GPU from TensorFlow (module `tf`); idempotent.

  Args:
    tf: the imported `tensorflow` module.
  """
  global _hidden
  if _hidden:
    return
  gpus = tf.config.list_physical_devices('GPU')
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow already initialised its devices: too late.
    if tf.config.get_visible_devices('GPU'):
      logging.warning(
        'TensorFlow initialised GPUs %s before they could be hidden from it; it may '
        'hold GPU memory JAX needs. Import the input pipeline before running '
        'TensorFlow ops.',
        gpus,
      )
      return
  _hidden = True


def is_kept_on_host() -> bool:
  """Whether `keep_on_host` has hidden the GPUs from TensorFlow in this process."""
  return _hidden
