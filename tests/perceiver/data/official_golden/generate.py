"""Regenerates the golden fixtures used by tests/perceiver/test_official_compat.py.

The fixtures hold what DeepMind's official Perceiver IO modules compute for the tiny model
definitions in tests/perceiver/test_official_compat.py, so that the test suite checks compatibility
without the official code. This script needs a local copy of the official release's
`perceiver.py`, `io_processors.py` and `position_encoding.py` (google-deepmind/
deepmind-research, directory `perceiver/`), saved as a package named `official_perceiver`
(its imports `from perceiver import ...` changed to `from official_perceiver import ...`,
and `jax.tree_map` -> `jax.tree.map` where present). That code is not part of this project.

    python tests/perceiver/data/official_golden/generate.py --official_path=DIR

where DIR contains the `official_perceiver/` package (or set OFFICIAL_PERCEIVER_PATH).
Run it from the repository root. It is never run by the test suite.

For each family it:
  1. builds the inputs from `np.random.RandomState(seed)`;
  2. initialises the model with the official modules, then adds N(0, 0.1^2) noise to every
     parameter, so that zero-initialised layers (biases, the flow decoder's output layer,
     the embedding decoder's bias) influence the outputs;
  3. for models with state (BatchNorm), runs one official training step on other random
     inputs so the stored state holds real moving averages, which differ from the
     statistics of the fixture's batch;
  4. applies the official model in evaluation mode (and, for the families in
     TRAIN_MODE_FAMILIES, in training mode) with PRNGKey(rng_seed) and stores the outputs
     and the new state;
  5. writes `<family>.npz`: `params/<module>/<name>`, `state/<module>/<name>`,
     `inputs/<name>`, `rng_seed`, `{eval,train}/outputs[/<key>]`,
     `{eval,train}/state/<module>/<name>`, and for the families in INIT_FAMILIES the
     official initial parameters before the noise, `init/<module>/<name>`, created with
     `PRNGKey(init_seed)`.
"""

import argparse
import importlib
import importlib.util
import os
import sys
import types

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(os.path.dirname(HERE))  # tests/perceiver
REPO_ROOT = os.path.dirname(os.path.dirname(TESTS_DIR))
PARAM_NOISE = 0.1
RNG_SEED = 7


def load_test_module():
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  spec = importlib.util.spec_from_file_location(
    'test_official_compat', os.path.join(TESTS_DIR, 'test_official_compat.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_official(path):
  sys.path.insert(0, os.path.abspath(path))
  names = ('perceiver', 'io_processors', 'position_encoding')
  return types.SimpleNamespace(
    **{n: importlib.import_module(f'official_perceiver.{n}') for n in names}
  )


def perturb(params, rs):
  return jax.tree.map(
    lambda p: (np.asarray(p) + PARAM_NOISE * rs.standard_normal(p.shape)).astype(p.dtype),
    params,
  )


def generate(compat, official, name, seed):
  family = compat.FAMILIES[name]
  rs = np.random.RandomState(seed)
  inputs = family.make_inputs(rs)
  init_params, state = compat.init(family, official, jax.random.PRNGKey(seed), inputs)
  params = perturb(init_params, rs)
  rng = jax.random.PRNGKey(RNG_SEED)
  if state:  # one training step on other data: real moving averages, unlike this batch's
    _, state = compat.run(
      family, official, params, state, rng, family.make_inputs(rs), is_training=True
    )
  arrays = {
    **compat.flatten_tree('params', params),
    **compat.flatten_tree('state', state),
    **{f'inputs/{k}': np.asarray(v) for k, v in inputs.items()},
    'rng_seed': np.asarray(RNG_SEED, np.int32),
  }
  if name in compat.INIT_FAMILIES:
    arrays.update(compat.flatten_tree('init', init_params))
    arrays['init_seed'] = np.asarray(seed, np.int32)
  for mode in ('eval', 'train') if name in compat.TRAIN_MODE_FAMILIES else ('eval',):
    outputs, new_state = compat.run(
      family, official, params, state, rng, inputs, is_training=(mode == 'train')
    )
    arrays.update(compat.flatten_tree(f'{mode}/outputs', outputs))
    arrays.update(compat.flatten_tree(f'{mode}/state', new_state))
  path = os.path.join(HERE, f'{name}.npz')
  np.savez_compressed(path, **arrays)
  print(f'{path}: {len(arrays)} arrays, {os.path.getsize(path)} bytes')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--official_path',
    default=os.environ.get('OFFICIAL_PERCEIVER_PATH'),
    help='directory containing the official_perceiver package',
  )
  parser.add_argument('--families', nargs='*', default=None)
  args = parser.parse_args()
  if not args.official_path:
    parser.error('pass --official_path or set OFFICIAL_PERCEIVER_PATH')
  official = load_official(args.official_path)
  compat = load_test_module()
  for seed, name in enumerate(sorted(compat.FAMILIES)):
    if args.families is None or name in args.families:
      generate(compat, official, name, seed)


if __name__ == '__main__':
  main()
