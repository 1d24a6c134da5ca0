"""The training loop on the digits task (one device, in process).

Covers: a short real run and its outputs, evaluation of a checkpoint, resuming after a
preemption with identical results, resuming a pmap checkpoint under the sharded
strategy, the non-finite guard, and evaluation that counts
every example exactly once.
"""

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from configs import digits as digits_config
from experiments.tasks.digits import task as digits
from experiments.training import array_data
from experiments.training import checkpoint_manager as checkpointing
from experiments.training import evaluation
from experiments.training import experiment
from experiments.training import host_memory
from experiments.training import task as task_lib
from experiments.training import trainer
from tests import helpers

REPO_ROOT = helpers.REPO_ROOT


# One config for the runs of this file, so that they share compiled steps.
RUN = dict(
  num_steps=6,
  batch_size=20,
  log_every_steps=3,
  checkpoint_every_steps=3,
  eval_every_steps=3,
)


def tiny_config(**training):
  config = digits_config.get_config('tiny')
  config.model.encoder.dropout_prob = 0.1  # Resumed runs must reproduce the dropout keys.
  for key, value in dict(RUN, **training).items():
    config.training[key] = value
  return config


def register_task(name, **functions):
  """A task module `name`: the digits task with some functions replaced."""
  module = types.ModuleType(name)
  for fn in task_lib.REQUIRED_FUNCTIONS:
    setattr(module, fn, getattr(digits, fn))
  for fn, value in functions.items():
    setattr(module, fn, value)
  sys.modules[name] = module
  return name


def training_batches_task(name, transform):
  """The digits task whose training iterator is `transform(batches, start_step)`,
  registered as `name`; returns the name."""

  def load(split, *, is_training, batch_dims, config, start_step=0):
    batches = digits.load(
      split,
      is_training=is_training,
      batch_dims=batch_dims,
      config=config,
      start_step=start_step,
    )
    return transform(batches, start_step) if is_training else batches

  return register_task(name, load=load)


def poisoned_task(bad_positions, seen=None):
  """The digits task whose training batches at `bad_positions` (1-based data positions)
  hold a NaN, registered under a new name; returns the name. With a list `seen`, the
  position of every training batch read is appended to it."""

  def poisoned(batches, start_step):
    for position, batch in enumerate(batches, start=start_step + 1):
      if seen is not None:
        seen.append(position)
      if position in bad_positions:
        batch['images'][0, 0, 0, 0, 0] = np.nan
      yield batch

  name = 'poisoned_' + '_'.join(str(p) for p in sorted(bad_positions))
  return training_batches_task(name + ('_recorded' if seen is not None else ''), poisoned)


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('digits'))
  config = tiny_config()
  final = trainer.train(config, workdir, evaluate=True)
  return config, workdir, final


def test_short_run_outputs(trained, test_split_logits):
  config, workdir, final = trained
  assert int(final.step) == 6
  records = read_metrics(workdir)
  train = [r for r in records if r['split'] == 'train']
  evals = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in train] == [3, 6]
  assert [r['step'] for r in evals] == [3, 6]
  for r in train:
    assert np.isfinite(r['loss']) and r['learning_rate'] > 0
    assert {'steps_per_sec', 'examples_per_sec', 'top_1_acc', 'grad_norm'} <= set(r)
  for r in evals:
    assert r['num_examples'] == 360
  # The final evaluation is the final model's accuracy on every test image, computed
  # here in one batch without the evaluator.
  logits, labels = test_split_logits
  assert evals[-1]['top_1_acc'] == pytest.approx(np.mean(logits.argmax(-1) == labels))
  # Checkpoints every 3 steps; the export holds the final parameters.
  assert checkpointing.Checkpointer(workdir, keep=3).all_steps() == [3, 6]
  from perceiver import checkpoint as npz_format  # pylint: disable=g-import-not-at-top

  params, _ = npz_format.load_npz(os.path.join(workdir, 'export', 'params.npz'))
  assert_trees_equal(params, final.params)
  assert tensorboard_scalars(workdir)['train/loss'] == [
    (r['step'], pytest.approx(r['loss'], rel=1e-6)) for r in train
  ]
  assert [step for step, _ in tensorboard_scalars(workdir)['eval/top_1_acc']] == [3, 6]
  del config


def tensorboard_scalars(workdir):
  """{tag: [(step, value)]} from the TensorBoard event files in `workdir`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  scalars = {}
  for name in sorted(os.listdir(workdir)):
    if not name.startswith('events.out.tfevents'):
      continue
    for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
      for value in event.summary.value:
        assert value.metadata.plugin_data.plugin_name == 'scalars'
        scalars.setdefault(value.tag, []).append(
          (event.step, float(tf.make_ndarray(value.tensor)))
        )
  return scalars


def test_eval_mode_matches_final_evaluation(trained):
  config, workdir, _ = trained
  metrics = trainer.evaluate_checkpoint(config, workdir)
  final_eval = [r for r in read_metrics(workdir) if r['split'] == 'eval'][-1]
  assert final_eval['step'] == 6
  np.testing.assert_allclose(metrics['top_1_acc'], final_eval['top_1_acc'])
  np.testing.assert_allclose(metrics['loss'], final_eval['loss'], rtol=1e-5)


def test_rerun_of_finished_run_trains_nothing(trained):
  config, workdir, final = trained
  again = trainer.train(config, workdir)
  assert_trees_equal(again.params, final.params)


def test_pmap_checkpoint_resumes_sharded_with_fsdp(trained, tmp_path):
  """Checkpoint 3 of the pmap run, resumed under 'sharded' + FSDP, ends the same."""
  config, workdir, final = trained
  resumed_dir = tmp_path / 'sharded'
  shutil.copytree(
    os.path.join(workdir, 'checkpoints', '3'), resumed_dir / 'checkpoints' / '3'
  )
  config = tiny_config()
  config.parallel.strategy = 'sharded'
  config.parallel.fsdp = True
  config.training.prefetch_to_device = 0
  resumed = trainer.train(config, str(resumed_dir), evaluate=True)
  assert int(resumed.step) == 6
  for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(final)):
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
  evals = [r for r in read_metrics(resumed_dir) if r['split'] == 'eval']
  want = [r for r in read_metrics(workdir) if r['split'] == 'eval'][-1]
  assert evals[-1]['step'] == 6 and evals[-1]['num_examples'] == 360
  np.testing.assert_allclose(evals[-1]['top_1_acc'], want['top_1_acc'])
  np.testing.assert_allclose(evals[-1]['loss'], want['loss'], rtol=1e-5)


class Preempted(Exception):
  pass


def test_resume_after_preemption_is_identical(trained, tmp_path):
  uninterrupted = trained[2]
  config = tiny_config()  # The fixture's config, with another task module below.

  def stop_after_three(batches, start_step):
    if start_step:  # The resumed run reads on.
      yield from batches
      return
    for _ in range(3):
      yield next(batches)
    raise Preempted()

  config.task = training_batches_task('preempted_digits', stop_after_three)
  workdir = str(tmp_path / 'b')
  with pytest.raises(Preempted):
    trainer.train(config, workdir)
  assert checkpointing.Checkpointer(workdir, keep=3).all_steps() == [3]
  resumed = trainer.train(config, workdir)
  assert int(resumed.step) == 6
  assert_trees_equal(resumed.params, uninterrupted.params)
  assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  bad_step = 3
  config = tiny_config(checkpoint_every_steps=1)
  config.task = poisoned_task({bad_step})
  # Step 2's parameters gave the bad step: the good checkpoint is step 1.
  with pytest.raises(trainer.NonFiniteError, match=f'at step {bad_step} .*is step 1 '):
    trainer.train(config, str(tmp_path))
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  assert ckpt.latest_step() == bad_step - 1
  assert not os.path.exists(tmp_path / 'export')


@pytest.fixture(scope='module')
def test_split_logits(trained):
  """The final model's logits on the whole test split in one batch, and the labels."""
  config, _, final = trained
  model = digits.build_model(config)
  arrays = digits.split_arrays('test', config)
  logits, _ = jax.jit(functools.partial(model.apply, is_training=False))(
    final.params, final.state, jax.random.PRNGKey(1), arrays
  )
  return np.asarray(logits), arrays['labels']


@pytest.mark.parametrize('num_examples, eval_batch', [(37, 8), (5, 16)])
def test_evaluation_counts_every_example_once(
  trained, test_split_logits, num_examples, eval_batch
):
  _, _, final = trained

  def split_with_ids(split, config):
    arrays = {k: v[:num_examples] for k, v in digits.split_arrays(split, config).items()}
    arrays['id'] = np.arange(num_examples, dtype=np.int32)
    return arrays

  def load(split, *, is_training, batch_dims, config, start_step=0):
    if is_training:
      return digits.load(
        split,
        is_training=True,
        batch_dims=batch_dims,
        config=config,
        start_step=start_step,
      )
    return array_data.eval_batches(split_with_ids(split, config), batch_dims=batch_dims)

  def eval_outputs(logits, batch, config):
    outputs = dict(digits.eval_outputs(logits, batch, config))
    outputs['id'] = batch['id']
    return outputs

  seen = []

  def summarize_eval(per_example, config):
    seen.append(per_example['id'])
    return digits.summarize_eval(
      {k: v for k, v in per_example.items() if k != 'id'}, config
    )

  config = tiny_config()
  config.evaluation.batch_size = eval_batch
  config.task = register_task(
    'counting_digits',
    load=load,
    eval_outputs=eval_outputs,
    summarize_eval=summarize_eval,
    num_examples=lambda split, config: num_examples,
  )
  evaluator = evaluation.SplitEvaluator(experiment.build(config), jax.random.PRNGKey(1))
  p_state = evaluator.put_state(final)
  metrics = evaluator(p_state)
  np.testing.assert_array_equal(np.sort(seen[-1]), np.arange(num_examples))
  assert metrics['num_examples'] == num_examples

  # The means run over exactly the real examples: compare with one big batch.
  logits, labels = test_split_logits
  np.testing.assert_allclose(
    metrics['top_1_acc'],
    np.mean(np.argmax(logits[:num_examples], -1) == labels[:num_examples]),
    atol=1e-6,
  )

  # A task whose batches miss examples is caught.
  config.task = register_task(
    'dropping_digits',
    load=load,
    eval_outputs=eval_outputs,
    summarize_eval=summarize_eval,
    num_examples=lambda split, config: num_examples + 1,
  )
  evaluator = evaluation.SplitEvaluator(experiment.build(config), jax.random.PRNGKey(1))
  with pytest.raises(ValueError, match=f'covered {num_examples} examples'):
    evaluator(p_state)


def test_num_train_steps_from_epochs():
  config = tiny_config()
  config.training.num_epochs = 2.0
  config.training.batch_size = 100
  # ceil(2 * 1437 / 100) steps.
  assert task_lib.num_train_steps(config, digits) == 29
  config.training.num_epochs = None
  config.training.num_steps = 0
  with pytest.raises(ValueError, match='num_steps=0'):
    task_lib.num_train_steps(config, digits)


def test_a_run_uses_its_workdir_cache_unless_one_is_set(tmp_path, monkeypatch):
  set_dirs = []
  monkeypatch.setattr(trainer, 'use_compilation_cache', set_dirs.append)
  monkeypatch.setattr(trainer, '_RUN_CACHE_DIR', None)
  previous = jax.config.jax_compilation_cache_dir
  for name in ('a', 'b'):
    os.makedirs(tmp_path / name)
  try:
    # A folder set outside the runs (JAX_COMPILATION_CACHE_DIR, a notebook) is kept.
    jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'mine'))
    trainer._maybe_use_run_cache(str(tmp_path / 'a'))  # pylint: disable=protected-access
    assert set_dirs == []
    # Otherwise each run uses its own workdir's, replacing the previous run's.
    jax.config.update('jax_compilation_cache_dir', None)
    trainer._maybe_use_run_cache(str(tmp_path / 'a'))  # pylint: disable=protected-access
    cache_a = str(tmp_path / 'a' / 'compilation_cache')
    monkeypatch.setattr(trainer, '_RUN_CACHE_DIR', cache_a)
    jax.config.update('jax_compilation_cache_dir', cache_a)
    trainer._maybe_use_run_cache(str(tmp_path / 'b'))  # pylint: disable=protected-access
  finally:
    jax.config.update('jax_compilation_cache_dir', previous)
  assert set_dirs == [cache_a, str(tmp_path / 'b' / 'compilation_cache')]


def test_compilation_cache_is_written_once_and_reused(tmp_path):
  cache = tmp_path / 'cache'
  script = (
    'import sys, jax, jax.numpy as jnp\n'
    'from experiments.training import trainer\n'
    'events = []\n'
    'jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))\n'
    'trainer.use_compilation_cache(sys.argv[1], min_compile_time_s=0.0)\n'
    'f = jax.jit(lambda x: jnp.sin(x) @ x.T)\n'
    'print(float(f(jnp.arange(15.0).reshape(3, 5)).sum()))\n'
    'print(sum("cache_hits" in e for e in events))\n'
  )
  env = helpers.subprocess_env()
  outputs, listings = [], []
  for _ in range(2):
    result = subprocess.run(
      [sys.executable, '-c', script, str(cache)],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outputs.append(result.stdout.strip())
    listings.append(sorted(os.listdir(cache)))
  assert listings[0], 'nothing was written to the cache'
  assert listings[1] == listings[0]
  (value_0, hits_0), (value_1, hits_1) = [out.splitlines()[-2:] for out in outputs]
  assert value_0 == value_1
  assert int(hits_0) == 0 and int(hits_1) >= 1  # The second run loaded the executable.


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_exits(tmp_path):
  """The command, run from another directory: a preemption notice mid-run saves the
  step just finished; a rerun resumes there, trains on, evaluates and exports."""
  workdir = tmp_path / 'run'
  env = helpers.subprocess_env(PYTHONPATH=REPO_ROOT)
  command = [
    sys.executable,
    '-m',
    'experiments.train',
    f'--config={os.path.join(REPO_ROOT, "configs", "digits.py")}:tiny',
    f'--workdir={workdir}',
    '--config.training.batch_size=16',
    '--config.training.log_every_steps=1',
  ]
  proc = subprocess.Popen(
    command
    + [
      '--mode=train',
      '--config.training.num_steps=100000',
      '--config.training.checkpoint_every_steps=1000',
    ],
    cwd=str(tmp_path),
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
      if (workdir / 'metrics.jsonl').exists() and len(read_metrics(str(workdir))) >= 3:
        break
      time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 143, stderr[-3000:]
  # No accelerator plugin here: the CPU backend, so freed host memory is retained.
  expected = 'retain_per_thread' if host_memory.is_glibc() else 'system'
  assert f'Host malloc: {expected}.' in stderr
  match = re.search(r'Preempted \(SIGTERM\): saved checkpoint (\d+)', stderr)
  assert match, stderr[-3000:]
  saved = int(match.group(1))
  assert 3 <= saved < 1000  # Not a periodic checkpoint: the step it was on.
  ckpt = checkpointing.Checkpointer(str(workdir), keep=3)
  assert ckpt.all_steps() == [saved]
  assert not (workdir / 'export').exists()
  # The rerun (training and evaluation) resumes from it and trains on.
  end = saved + 2
  result = subprocess.run(
    command + [f'--config.training.num_steps={end}'],
    cwd=str(tmp_path),
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Resumed from checkpoint {saved}' in result.stderr
  assert f'[train] step {end}/{end}' in result.stderr
  assert f'[eval test] step {end}' in result.stderr
  records = read_metrics(str(workdir))
  assert [r['step'] for r in records if r['split'] == 'train'] == list(range(1, end + 1))
  assert [r['step'] for r in records if r['split'] == 'eval'] == [end]
  assert (workdir / 'export' / 'params.npz').exists()

  # A mistyped override fails (the config is locked) and names the field.
  result = subprocess.run(
    command + ['--config.training.batch_sise=16'],
    cwd=str(tmp_path),
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode != 0 and 'batch_sise' in result.stderr
