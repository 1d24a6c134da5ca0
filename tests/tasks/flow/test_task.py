"""The flow task: the release's parameter tree and outputs, checkpoints, every dataset."""

import functools
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import flow as flow_config
from experiments.tasks.flow import formats
from experiments.tasks.flow import task
from experiments.tasks.flow import tiling
from experiments.training import errors
from experiments.training import weights
from perceiver import checkpoint
from tests import helpers

GOLDEN = os.path.join(
  helpers.REPO_ROOT, 'tests', 'perceiver', 'data', 'official_golden', 'optical_flow.npz'
)


def _golden():
  with np.load(GOLDEN) as data:
    flat = {k: data[k] for k in data.files}
  params = {}
  for key, value in flat.items():
    if key.startswith('params/'):
      module, name = key[len('params/') :].rsplit('/', 1)
      params.setdefault(module, {})[name] = value
  return flat, params


def _golden_config(**overrides):
  """The debug config with the golden fixture's sizes (the colab's model, shrunk)."""
  config = flow_config.get_config('debug')
  with config.unlocked():
    config.model = flow_config.model_config(
      image_size=(6, 7),
      num_bands=3,
      num_latents=5,
      num_z_channels=16,
      num_self_attends=1,
      num_self_attend_heads=4,
    )
    for key, value in overrides.items():
      config.model[key] = value
  return config


def test_release_parameter_tree():
  config = flow_config.get_config()
  model = task.build_model(config)
  frames = jax.ShapeDtypeStruct((1, 2, 368, 496, 3), jnp.float32)
  params, state = jax.eval_shape(
    lambda f: model.init(jax.random.PRNGKey(0), {'frames': f}, is_training=True), frames
  )
  assert state == {}
  shapes = {f'{m}/{n}': tuple(v.shape) for m, d in params.items() for n, v in d.items()}
  _, golden = _golden()
  golden_paths = {f'{m}/{n}' for m, d in golden.items() for n in d}
  prefix = 'perceiver_encoder/~/self_attention'
  want = set(golden_paths)
  for i in range(1, 24):
    want |= {
      p.replace(prefix + '/', f'{prefix}_{i}/')
      for p in golden_paths
      if p.startswith(prefix + '/')
    }
  assert set(shapes) == want
  # 64 patch channels + 2 * (2 * 64 + 1) Fourier channels = 322 input channels.
  assert shapes['image_preprocessor/patches_linear/w'] == (54, 64)
  assert shapes['perceiver_encoder/~/trainable_position_encoding/pos_embs'] == (2048, 512)
  assert shapes['perceiver_encoder/~/cross_attention/attention/linear/w'] == (512, 322)
  assert shapes['perceiver_encoder/~/self_attention_23/attention/linear/w'] == (512, 512)
  assert shapes['flow_decoder/~/basic_decoder/cross_attention/attention/linear/w'] == (
    322,
    512,
  )
  assert shapes['flow_decoder/~/basic_decoder/output/w'] == (322, 2)
  assert sum(int(np.prod(s)) for s in shapes.values()) == 41_057_134


@pytest.mark.slow
def test_release_outputs_through_the_task_model(tmp_path):
  flat, golden = _golden()
  images = flat['inputs/images']  # [2, 2, 6, 7, 3]
  want = flat['eval/outputs']
  # As the release's checkpoint file: a pickle of {module: {name: array}}.
  path = str(tmp_path / 'optical_flow_checkpoint.pystate')
  with open(path, 'wb') as f:
    pickle.dump(golden, f)
  model = task.build_model(_golden_config())
  params, state = weights.load(model, {'frames': images}, path)
  for module, entries in golden.items():
    for name, value in entries.items():
      np.testing.assert_array_equal(params[module][name], value)
  apply = jax.jit(functools.partial(model.apply, is_training=False))
  got, _ = apply(params, state, jax.random.PRNGKey(0), {'frames': images})
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  # A checkpoint of another architecture is refused with the offending entries.
  bad = dict(golden)
  bad['image_preprocessor/patches_linear'] = {
    'w': np.zeros((54, 8), np.float32),
    'b': np.zeros(8, np.float32),
  }
  checkpoint.save_npz(str(tmp_path / 'bad.npz'), bad)
  with pytest.raises(errors.DataError, match=r'bad.npz.*does not fit.*patches_linear/w'):
    weights.load(model, {'frames': images}, str(tmp_path / 'bad.npz'))


@pytest.mark.slow
def test_large_frames_are_tiled_in_evaluation():
  config = _golden_config(tile_min_overlap=2)
  model = task.build_model(config)
  frames = np.random.default_rng(0).uniform(-1, 1, (1, 2, 9, 11, 3)).astype(np.float32)
  params, state = model.init(
    jax.random.PRNGKey(1), {'frames': frames[:, :, :6, :7]}, is_training=True
  )
  params = jax.tree.map(
    lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params
  )
  rng = jax.random.PRNGKey(0)

  @jax.jit
  def apply(x):
    return model.apply(params, state, rng, {'frames': x}, is_training=False)[0]

  def tile(x):
    assert x.shape == (1, 2, 6, 7, 3)
    return apply(x)

  got = apply(frames)
  want = tiling.tiled_flow(tile, frames, (6, 7), 2, xp=np)
  assert got.shape == (1, 9, 11, 2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _write_datasets(root):
  """One tiny folder per format, every frame 15x21; and per format, the `(flow,
  valid)` of each example of its test split (as stored: KITTI keeps 1/64 px)."""
  rng = np.random.default_rng(0)
  test_flows = {}

  def pair():
    frames = rng.integers(0, 256, (2, 15, 21, 3), dtype=np.uint8)
    return frames, rng.normal(size=(15, 21, 2)).astype(np.float32)

  dirs = {}
  d = dirs['flying_chairs'] = root / 'chairs'
  os.makedirs(d / 'data')
  for i in (1, 2, 3):
    frames, flow = pair()
    formats.write_image(str(d / 'data' / f'{i:05d}_img1.ppm'), frames[0])
    formats.write_image(str(d / 'data' / f'{i:05d}_img2.ppm'), frames[1])
    formats.write_flo(str(d / 'data' / f'{i:05d}_flow.flo'), flow)
    if i == 3:  # The one validation ('test') pair of the split file below.
      test_flows['flying_chairs'] = [(flow, np.ones(flow.shape[:2], bool))]
  (d / 'FlyingChairs_train_val.txt').write_text('1\n1\n2\n')
  d = dirs['sintel'] = root / 'sintel'
  for name in ('clean', 'final', 'flow'):
    os.makedirs(d / 'training' / name / 'cave_2')
  for n in (1, 2, 3):
    frames, flow = pair()
    formats.write_image(
      str(d / 'training/clean/cave_2' / f'frame_{n:04d}.png'), frames[0]
    )
    formats.write_image(
      str(d / 'training/final/cave_2' / f'frame_{n:04d}.png'), frames[1]
    )
    if n < 3:
      formats.write_flo(str(d / 'training/flow/cave_2' / f'frame_{n:04d}.flo'), flow)
      test_flows.setdefault('sintel', []).append((flow, np.ones(flow.shape[:2], bool)))
  d = dirs['kitti'] = root / 'kitti'
  os.makedirs(d / 'training' / 'image_2')
  os.makedirs(d / 'training' / 'flow_occ')
  for i in (0, 1):
    frames, flow = pair()
    formats.write_image(str(d / 'training/image_2' / f'{i:06d}_10.png'), frames[0])
    formats.write_image(str(d / 'training/image_2' / f'{i:06d}_11.png'), frames[1])
    valid = rng.uniform(size=(15, 21)) < 0.5
    formats.write_kitti_flow(
      str(d / 'training/flow_occ' / f'{i:06d}_10.png'), flow, valid
    )
    stored = np.round(flow * formats.KITTI_SCALE) / formats.KITTI_SCALE
    test_flows.setdefault('kitti', []).append((stored, valid))
  d = dirs['autoflow'] = root / 'autoflow'
  for i in range(2):
    os.makedirs(d / f'sample_{i}')
    frames, flow = pair()
    formats.write_image(str(d / f'sample_{i}' / 'im0.png'), frames[0])
    formats.write_image(str(d / f'sample_{i}' / 'im1.png'), frames[1])
    formats.write_flo(str(d / f'sample_{i}' / 'forward.flo'), flow)
    if i == 0:  # Every 50th folder, from the first, is a test pair.
      test_flows['autoflow'] = [(flow, np.ones(flow.shape[:2], bool))]
  return dirs, test_flows


@pytest.mark.slow
def test_training_steps_and_evaluation_on_every_format(tmp_path):
  dirs, test_flows = _write_datasets(tmp_path)
  config = flow_config.get_config('debug')
  model = task.build_model(config)
  batch_dims = (1, 2)
  optimizer = optax.adam(1e-2)

  @jax.jit
  def step(params, state, opt_state, batch):
    def loss_fn(p):
      outputs, _ = model.apply(p, state, None, batch, is_training=True)
      return task.train_loss(outputs, batch, config)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def evaluate(params, state, batch):
    outputs, _ = model.apply(params, state, None, batch, is_training=False)
    return task.eval_outputs(outputs, batch, config)

  params = None
  for dataset, data_dir in dirs.items():
    with config.unlocked():
      config.data.dataset = dataset
      config.data.data_dir = str(data_dir)
    batches = task.load('train', is_training=True, batch_dims=batch_dims, config=config)
    batch = {k: v[0] for k, v in next(batches).items()}
    assert batch['frames'].shape == (2, 2, 13, 19, 3)
    assert batch['frames'].min() >= -1 and batch['frames'].max() <= 1
    if params is None:
      params, state = model.init(jax.random.PRNGKey(0), batch, is_training=True)
      opt_state = optimizer.init(params)
    losses = []
    for _ in range(2):
      params, opt_state, loss = step(params, state, opt_state, batch)
      losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[1] < losses[0], (dataset, losses)
    sums = []
    for eval_batch in task.load(
      'test', is_training=False, batch_dims=batch_dims, config=config
    ):
      eval_batch = {k: v[0] for k, v in eval_batch.items()}
      assert eval_batch['frames'].shape == (2, 2, 15, 21, 3)
      out = evaluate(params, state, {k: v for k, v in eval_batch.items() if k != 'mask'})
      keep = eval_batch['mask'] > 0
      sums.append({k: np.asarray(v)[keep] for k, v in out.items()})
    merged = {k: np.concatenate([s[k] for s in sums]) for k in sums[0]}
    assert len(merged['epe_sum']) == task.num_examples('test', config)
    summary = task.summarize_eval(merged, config)
    # The zero-flow baseline from the flows the test wrote: mean |flow| over valid pixels.
    norms = [
      np.linalg.norm(f.astype(np.float64), axis=-1)[v] for f, v in test_flows[dataset]
    ]
    want = np.concatenate(norms).mean()
    assert summary['zero_epe'] == pytest.approx(want, rel=1e-5), dataset
    assert np.isfinite(summary['epe'])
    if dataset == 'kitti':
      assert 0.3 < summary['valid_fraction'] < 0.7
