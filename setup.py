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
        return line.split('=', 1)[1].strip().strip('"')
  raise RuntimeError('perceiver/__init__.py defines no __version__')


setuptools.setup(
  name='perceiver-jax',
  version=_version(),
  description=(
    'Perceiver and Perceiver IO in JAX + Haiku: drop-in compatible with '
    "DeepMind's release, with training for every experiment."
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
  python_requires='>=3.11',
  install_requires=_requirements(),
  extras_require={
    'test': ['pytest>=7', 'pytest-xdist>=3'],
    'plot': ['matplotlib>=3.7'],
  },
  license='Apache-2.0',
  classifiers=[
    'Programming Language :: Python :: 3',
    'Programming Language :: Python :: 3.11',
    'Programming Language :: Python :: 3.12',
    'Topic :: Scientific/Engineering :: Artificial Intelligence',
  ],
)
