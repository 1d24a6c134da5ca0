r"""Throughput of the point-cloud input pipelines (clouds/s) on this machine.

Measures, with the code the task runs:
  generate: `shapes.generate`, the synthetic_shapes generator (clouds/s);
  train_pipeline: the task's training iterator over in-memory clouds (subsample,
    normalise, augment), with the config variant's `data` settings (clouds/s);
  eval_pipeline: the evaluation iterator (clouds/s);
  off_sampling: reading a generated OFF mesh of `--mesh_faces` triangles and sampling
    `num_points` on it by area (meshes/s), as `modelnet40_off` does once per mesh.

Each figure is wall-clock and the process CPU time per cloud; the latter does not
depend on other jobs sharing the machine.

  python -m experiments.benchmarks.point_cloud_input
  python -m experiments.benchmarks.point_cloud_input --variant=synthetic --clouds=2000
"""

import json
import os
import tempfile
import time
import types

from absl import flags
import numpy as np

from configs import modelnet40 as modelnet40_config
from experiments.tasks.point_clouds import modelnet40
from experiments.tasks.point_clouds import shapes
from experiments.tasks.point_clouds import task
from experiments.training import cli


def define_flags() -> types.SimpleNamespace:
  """Defines the flags; called only when run as a program."""
  return types.SimpleNamespace(
    variant=flags.DEFINE_enum(
      'variant', 'perceiver', modelnet40_config.VARIANTS, 'configs/modelnet40.py variant.'
    ),
    clouds=flags.DEFINE_integer('clouds', 1024, 'Clouds per measurement.'),
    batch_size=flags.DEFINE_integer('batch_size', 64, 'Host batch of the pipelines.'),
    mesh_faces=flags.DEFINE_integer(
      'mesh_faces', 10_000, 'Triangles of the OFF mesh sampled by off_sampling.'
    ),
  )


def _timed(fn, count):
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {'per_s': count / wall, 'cpu_ms_per_item': 1e3 * cpu / count}


def _write_off(path, num_faces, rng):
  vertices = rng.normal(size=(num_faces // 2 + 2, 3))
  faces = rng.integers(0, len(vertices), size=(num_faces, 3))
  with open(path, 'w') as f:
    f.write(f'OFF\n{len(vertices)} {num_faces} 0\n')
    f.writelines(f'{x:.6f} {y:.6f} {z:.6f}\n' for x, y, z in vertices)
    f.writelines(f'3 {a} {b} {c}\n' for a, b, c in faces)


def benchmark(variant: str, clouds: int, batch_size: int, mesh_faces: int) -> dict:
  """The figures described in the module docstring, as one dict."""
  config = modelnet40_config.get_config(variant)
  num_points = config.data.num_points
  report = {'variant': variant, 'num_points': num_points, 'clouds': clouds}
  report['generate'] = _timed(
    lambda: shapes.generate('train', clouds, num_points, seed=1), clouds
  )
  config.unlock()
  config.data.dataset = 'synthetic_shapes'
  config.data.synthetic.num_train = clouds
  config.data.synthetic.num_test = clouds
  task.split_arrays('train', config)  # Generate outside the timed loops.
  task.split_arrays('test', config)
  steps = max(1, clouds // batch_size)

  def train():
    it = task.load('train', is_training=True, batch_dims=[1, batch_size], config=config)
    for _ in range(steps):
      next(it)

  def evaluate():
    for _ in task.load(
      'test', is_training=False, batch_dims=[1, batch_size], config=config
    ):
      pass

  report['train_pipeline'] = _timed(train, steps * batch_size)
  report['eval_pipeline'] = _timed(evaluate, clouds)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'mesh.off')
    _write_off(path, mesh_faces, np.random.default_rng(0))
    meshes = 20
    report['off_sampling'] = _timed(
      lambda: [
        modelnet40.sample_mesh_file(path, num_points, np.random.default_rng(i))
        for i in range(meshes)
      ],
      meshes,
    )
  report['mesh_faces'] = mesh_faces
  report['load_average_1min'] = os.getloadavg()[0]
  return report


def main(argv, *, args: types.SimpleNamespace):
  del argv
  print(
    json.dumps(
      benchmark(
        args.variant.value,
        args.clouds.value,
        args.batch_size.value,
        args.mesh_faces.value,
      ),
      indent=1,
    )
  )


if __name__ == '__main__':
  cli.run(main, define_flags, name='point_cloud_input')
