"""Installs the `perceiver` model library, the `experiments` and the `configs`."""

import os

import setuptools

_HERE = os.path.dirname(os.path.abspath(__file__))


def _requirements():
  with open(os.path.join(_HERE, 'requirements.txt')) as f:
    lines = (line.split('#', 1)[0].strip() for line in f)
    return [line for line in lines if line]


def _version():
  with open(os.path.join(_HERE, 'perceiver', '__init__.py')) as f:
    for line in f:
      if line.startswith('__version__'):
        return line.split('=', 1)[1].strip().strip('\'"')
  raise RuntimeError('perceiver/__init__.py defines no __version__')


_MEDIA = ['av>=12']
# Reading frames (PNG, PPM) for optical flow, and scikit-learn's sample photographs.
_FLOW = ['Pillow>=9']
_POINTCLOUDS = ['h5py>=3.8']
_PLOT = ['matplotlib>=3.7']
_NOTEBOOKS = ['nbclient>=0.9', 'nbformat>=5.9', 'ipykernel>=6'] + _PLOT


setuptools.setup(
  name='perceiver-jax',
  version=_version(),
  description=(
    'Perceiver and Perceiver IO in JAX + Haiku: drop-in compatible with '
    "DeepMind's release, with training and evaluation code for its experiments."
  ),
  long_description=open(os.path.join(_HERE, 'README.md')).read(),
  long_description_content_type='text/markdown',
  packages=setuptools.find_packages(
    include=[
      'perceiver',
      'perceiver.*',
      'experiments',
      'experiments.*',
      'configs',
      'configs.*',
    ]
  ),
  # The ImageNet class names of `experiments.classify`.
  package_data={'experiments.tasks.imagenet': ['data/*.tsv']},
  python_requires='>=3.11',
  install_requires=_requirements(),
  extras_require={
    # JAX for NVIDIA GPUs (CUDA 12 wheels from PyPI) and for Cloud TPUs; the input
    # pipelines keep using the CPU build of TensorFlow, which never claims accelerators.
    'cuda12': ['jax[cuda12]>=0.10.2'],
    'tpu': ['jax[tpu]>=0.10.2'],
    # Decoding audio and video files (FFmpeg through PyAV).
    'media': _MEDIA,
    # Optical flow: frame files and the photographs textures are cut from.
    'flow': _FLOW,
    # The HDF5 files of ModelNet40.
    'pointclouds': _POINTCLOUDS,
    'plot': _PLOT,
    # Running the notebooks in colabs/ outside Colab.
    'notebooks': _NOTEBOOKS,
    # The side-by-side speed comparison with Hugging Face's PyTorch Perceiver
    # (experiments.benchmarks.side_by_side; docs/performance.md). Not needed by the
    # library, the experiments or the tests. For PyTorch's CPU build, install torch
    # first: pip install torch --index-url https://download.pytorch.org/whl/cpu
    'compare': ['torch>=2.1', 'transformers>=4.40'],
    # The test suite and the style check (the formatter is pinned to a minor version:
    # its output is the enforced style).
    'test': ['pytest>=7', 'pytest-xdist>=3', 'ruff~=0.17.0']
    + _MEDIA
    + _FLOW
    + _POINTCLOUDS
    + _NOTEBOOKS,
  },
  license='Apache-2.0',
  classifiers=[
    'Programming Language :: Python :: 3',
    'Programming Language :: Python :: 3.11',
    'Programming Language :: Python :: 3.12',
    'Topic :: Scientific/Engineering :: Artificial Intelligence',
  ],
)
