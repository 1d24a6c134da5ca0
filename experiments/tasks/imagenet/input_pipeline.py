"""ImageNet input pipeline: TFDS `imagenet2012` to augmented NumPy batches.

`load(split, *, is_training, batch_dims, config)` is the only entry point a trainer needs;
TensorFlow stays inside this module. Batches are dicts of NumPy arrays shaped
`[*batch_dims, ...]`:

  'images': float32 `[*batch_dims, S, S, 3]`, normalised with the ImageNet mean/std.
  'labels': int32 `[*batch_dims]`, or float32 `[*batch_dims, K]` label distributions
            when training with MixUp or CutMix.
  'mask':   float32 `[*batch_dims]` (evaluation only): 1 for real examples, 0 for the
            padding that completes the last batch.

Training (infinite): JPEG decode of a random Inception-style crop only (the rest of the
image is never decoded), random left-right flip, RandAugment on the uint8 crop, bicubic
resize, normalisation, then MixUp / CutMix of pairs of examples (each mixed example
consumes two, as in the release; with both enabled, alternate pairs use each).
Evaluation (one pass): decode of the center crop, resize, normalisation; every example
of the host's shard appears exactly once and every host yields the same number of
batches, so multi-host evaluation steps stay in lockstep.

Each host reads one contiguous range of the split (`host_range`: disjoint, covering,
sizes differing by at most one), straight from the TFDS files.
`config.data.fake=True` swaps TFDS for `tfds.testing.mock_data` examples: real JPEG
bytes of random images, run through exactly the same decode and augmentation code.

All randomness is stateless and seeded from `config.seed`, the host index and the
example's position in the stream, so `config.data.deterministic=True` (which also makes
tf.data keep element order under parallelism) gives bit-identical batches run to run,
and `load(..., start_step=k)` resumes the stream at step k without decoding the
skipped examples.

Shape glossary:
  S: image side (`config.data.image_size`); K: number of classes.
"""

import functools
import math
from typing import Any, Dict, Iterator, Sequence, Tuple

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from experiments.tasks.imagenet import augment
from experiments.tasks.imagenet import randaugment
from experiments.training import errors
from experiments.training import host_tensorflow

AUTOTUNE = tf.data.AUTOTUNE
Batch = Dict[str, np.ndarray]

host_tensorflow.keep_on_host(tf)


def _tfds_split(split: str, config) -> str:
  """The TFDS split string for a trainer-level split name."""
  if split == 'train':
    return config.data.train_split
  return split


def _builder(config):
  data_dir = config.data.data_dir or None
  builder = tfds.builder(config.data.tfds_name, data_dir=data_dir)
  if not builder.info.splits:
    data_dir_flag = f' --data_dir={data_dir}' if data_dir else ''
    raise errors.DataError(
      f'TFDS dataset {config.data.tfds_name!r} is not prepared in '
      f'{builder.data_dir!r}. Build it once from the manually downloaded archives '
      f'(`python -m experiments.tasks.imagenet.prepare --manual_dir=DIR{data_dir_flag}`, '
      'see docs/imagenet.md), or smoke-test with --config.data.fake=True.'
    )
  return builder


def split_range(split: str, split_infos) -> Tuple[str, int, int]:
  """`(split_name, start, end)`: the absolute example range a TFDS split string selects.

  Args:
    split: e.g. 'train', 'validation', 'train[10000:]', 'validation[:10%]'.
    split_infos: `{split_name: object with .num_examples}` (e.g. `builder.info.splits`).
  """
  instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(split_infos)
  if len(instructions) != 1:
    raise errors.ConfigError(
      f'split={split!r} must select one contiguous range of one split; '
      'unions such as "train+validation" are not supported.'
    )
  (instruction,) = instructions
  total = split_infos[instruction.splitname].num_examples
  start = instruction.from_ or 0
  end = total if instruction.to is None else instruction.to
  return instruction.splitname, start, end


def host_range(
  start: int, end: int, process_index: int, process_count: int
) -> Tuple[int, int]:
  """This host's contiguous share of `[start, end)`; shares differ by at most one."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in [0, {process_count}).')
  size, extra = divmod(end - start, process_count)
  host_start = start + process_index * size + min(process_index, extra)
  host_end = host_start + size + (1 if process_index < extra else 0)
  return host_start, host_end


def num_examples(split: str, config) -> int:
  """Number of examples of `split` over all hosts."""
  if config.data.fake:
    return int(config.data.fake_num_examples)
  _, start, end = split_range(_tfds_split(split, config), _builder(config).info.splits)
  return end - start


def mock_examples(num: int, tfds_name: str = 'imagenet2012') -> Dict[str, np.ndarray]:
  """`num` examples from `tfds.testing.mock_data`: JPEG bytes of random images + labels."""
  if num < 1:
    raise errors.ConfigError(f'data.fake_num_examples must be >= 1, got {num!r}.')
  with tfds.testing.mock_data(num_examples=num, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = tfds.load(
      tfds_name, split='train', decoders={'image': tfds.decode.SkipDecoding()}
    )
    examples = list(ds.as_numpy_iterator())
  return {
    'image': np.array([ex['image'] for ex in examples], dtype=object),
    'label': np.array([ex['label'] for ex in examples], dtype=np.int32),
  }


def host_source(
  split: str, *, config, process_index: int, process_count: int
) -> Tuple[tf.data.Dataset, int]:
  """This host's examples `{'image': JPEG bytes, 'label': int32}` (one pass, fixed
  order) and their number."""
  if config.data.fake:
    total = int(config.data.fake_num_examples)
    start, end = host_range(0, total, process_index, process_count)
    ds = tf.data.Dataset.from_tensor_slices(mock_examples(total, config.data.tfds_name))
    return ds.skip(start).take(end - start), end - start
  builder = _builder(config)
  name, start, end = split_range(_tfds_split(split, config), builder.info.splits)
  start, end = host_range(start, end, process_index, process_count)
  instruction = tfds.core.ReadInstruction(name, from_=start, to=end, unit='abs')
  ds = builder.as_dataset(
    split=instruction,
    shuffle_files=False,
    decoders={'image': tfds.decode.SkipDecoding()},
    read_config=tfds.ReadConfig(try_autocache=False, skip_prefetch=True),
  )
  ds = ds.map(lambda ex: {'image': ex['image'], 'label': tf.cast(ex['label'], tf.int32)})
  return ds, end - start


def preprocess_train(
  example: Dict[str, tf.Tensor],
  seed: tf.Tensor,
  *,
  image_size: int,
  randaugment_layers: int = 0,
  randaugment_magnitude: float = 0.0,
) -> Dict[str, tf.Tensor]:
  """Random crop (decoding only the crop), flip, RandAugment, resize, normalise."""
  crop_seed, flip_seed, augment_seed = tf.unstack(
    tf.random.experimental.stateless_split(augment.as_seed(seed), num=3)
  )
  image = example['image']
  window = augment.random_crop_window(augment.image_shape(image), crop_seed)
  image = augment.decode_and_crop(image, window)
  image = augment.random_flip(image, flip_seed)
  if randaugment_layers:
    image = randaugment.rand_augment(
      image, augment_seed, num_layers=randaugment_layers, magnitude=randaugment_magnitude
    )
  image = augment.normalize(augment.resize(image, image_size))
  return {'images': image, 'labels': tf.cast(example['label'], tf.int32)}


def preprocess_eval(
  example: Dict[str, tf.Tensor], *, image_size: int
) -> Dict[str, tf.Tensor]:
  """Center crop (decoding only the crop), resize, normalise."""
  image = example['image']
  window = augment.center_crop_window(augment.image_shape(image))
  image = augment.decode_and_crop(image, window)
  image = augment.normalize(augment.resize(image, image_size))
  return {'images': image, 'labels': tf.cast(example['label'], tf.int32)}


def _mix_pair(
  pair: Dict[str, tf.Tensor],
  *,
  num_classes: int,
  mixup_alpha: float,
  cutmix: bool,
  cutmix_alpha: float,
) -> Dict[str, tf.Tensor]:
  """Mixes a batch of two examples into one, with soft labels."""
  args = (
    pair['images'][0],
    pair['images'][1],
    pair['labels'][0],
    pair['labels'][1],
    pair['seed'][0],
  )
  do_mixup = functools.partial(augment.mixup, alpha=mixup_alpha, num_classes=num_classes)
  do_cutmix = functools.partial(
    augment.cutmix, alpha=cutmix_alpha, num_classes=num_classes
  )
  if mixup_alpha > 0 and cutmix:
    # The release mixes half of each batch with MixUp and half with CutMix.
    use_cutmix = tf.equal((pair['index'][0] // 2) % 2, 1)
    mixed = tf.cond(use_cutmix, lambda: do_cutmix(*args), lambda: do_mixup(*args))
  elif cutmix:
    mixed = do_cutmix(*args)
  else:
    mixed = do_mixup(*args)
  return {'images': mixed['images'], 'labels': mixed['labels']}


def _options(
  *, deterministic: bool, threadpool_size: int, max_intra_op_parallelism: int
) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = deterministic
  if threadpool_size > 0:
    options.threading.private_threadpool_size = threadpool_size
  if max_intra_op_parallelism > 0:
    options.threading.max_intra_op_parallelism = max_intra_op_parallelism
  options.experimental_optimization.map_parallelization = True
  options.autotune.enabled = True
  return options


def _reshape_batch(batch: Dict[str, tf.Tensor], batch_dims: Sequence[int]):
  return {
    k: tf.reshape(v, list(batch_dims) + v.shape[1:].as_list()) for k, v in batch.items()
  }


def build_train_dataset(
  source: tf.data.Dataset,
  *,
  num_source_examples: int,
  batch_dims: Sequence[int],
  data,
  seed: int,
  process_index: int = 0,
  start_step: int = 0,
) -> tf.data.Dataset:
  """The infinite training stream over `source` (`{'image', 'label'}` examples).

  Epoch `e` visits the examples of `source` through a shuffle buffer seeded by
  `(seed, process_index, e)`; example number `i` of the whole stream is augmented with
  a seed folded from `(seed, process_index, i)`. The stream is therefore a pure
  function of the seeds (under `data.deterministic`), and `start_step` can resume it
  by skipping less than one epoch of undecoded records.

  Args:
    source: one pass over this host's examples in a fixed order; images are JPEG bytes
      (or decoded uint8 arrays).
    num_source_examples: number of examples in `source`.
    batch_dims: leading batch dims of every output, e.g. `[devices, per_device]`.
    data: the `config.data` fields (image_size, randaugment_*, mixup_alpha, cutmix, ...).
    seed: base seed of shuffling and augmentation.
    process_index: this host, folded into every seed.
    start_step: the first batch is the one a fresh stream yields at this step.
  """
  local_batch = int(np.prod(batch_dims))
  mixup_alpha = float(data.mixup_alpha)
  if mixup_alpha < 0:
    raise errors.ConfigError(
      f'data.mixup_alpha must be >= 0 (0 disables MixUp), got {mixup_alpha}.'
    )
  if num_source_examples < 1:
    raise errors.DataError(f'the training split of host {process_index} has no examples.')
  mixing = mixup_alpha > 0 or data.cutmix
  shuffle_buffer = data.shuffle_buffer or 10 * local_batch
  base_seed = tf.constant([seed, process_index], tf.int64)
  num_source_examples = tf.constant(num_source_examples, tf.int64)

  def one_epoch(epoch):
    epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
    shuffled = source.shuffle(
      shuffle_buffer, seed=epoch_seed[0], reshuffle_each_iteration=False
    )
    return shuffled.enumerate().map(
      lambda position, ex: (epoch * num_source_examples + position, ex)
    )

  consumed = start_step * local_batch * (2 if mixing else 1)
  start_epoch, offset = divmod(consumed, int(num_source_examples))
  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(one_epoch).skip(offset)

  def preprocess(index, example):
    example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    example_seed = tf.random.experimental.stateless_fold_in(example_seed, 1)
    out = preprocess_train(
      example,
      example_seed,
      image_size=data.image_size,
      randaugment_layers=data.randaugment_layers,
      randaugment_magnitude=data.randaugment_magnitude,
    )
    if mixing:
      out['seed'] = example_seed
      out['index'] = index
    return out

  ds = ds.map(preprocess, num_parallel_calls=AUTOTUNE)
  if mixing:
    ds = ds.batch(2, drop_remainder=True)
    ds = ds.map(
      functools.partial(
        _mix_pair,
        num_classes=data.num_classes,
        mixup_alpha=mixup_alpha,
        cutmix=data.cutmix,
        cutmix_alpha=data.cutmix_alpha,
      ),
      num_parallel_calls=AUTOTUNE,
    )
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.map(functools.partial(_reshape_batch, batch_dims=batch_dims))
  ds = ds.with_options(
    _options(
      deterministic=data.deterministic,
      threadpool_size=data.threadpool_size,
      max_intra_op_parallelism=data.max_intra_op_parallelism,
    )
  )
  return ds.prefetch(AUTOTUNE)


def build_eval_dataset(
  source: tf.data.Dataset, *, batch_dims: Sequence[int], data, num_batches: int
) -> tf.data.Dataset:
  """One pass over `source` in `num_batches` batches, padded and masked.

  `num_batches` must be at least `ceil(len(source) / prod(batch_dims))`; batches past
  the data are all padding (mask 0), so that every host runs the same number of steps.
  """
  local_batch = int(np.prod(batch_dims))
  ds = source.map(
    functools.partial(preprocess_eval, image_size=data.image_size),
    num_parallel_calls=AUTOTUNE,
  )
  ds = ds.map(lambda ex: dict(ex, mask=tf.constant(1.0, tf.float32)))
  ds = ds.batch(local_batch)

  def pad(batch):
    missing = local_batch - tf.shape(batch['mask'])[0]
    return {
      k: tf.ensure_shape(
        tf.pad(v, [[0, missing]] + [[0, 0]] * (v.shape.rank - 1)),
        [local_batch] + v.shape[1:].as_list(),
      )
      for k, v in batch.items()
    }

  ds = ds.map(pad)
  padding = tf.data.Dataset.from_tensors(
    {
      k: tf.zeros([local_batch] + spec.shape[1:].as_list(), spec.dtype)
      for k, spec in ds.element_spec.items()
    }
  ).repeat()
  ds = ds.concatenate(padding).take(num_batches)
  ds = ds.map(functools.partial(_reshape_batch, batch_dims=batch_dims))
  ds = ds.with_options(
    _options(
      deterministic=True,
      threadpool_size=data.threadpool_size,
      max_intra_op_parallelism=data.max_intra_op_parallelism,
    )
  )
  return ds.prefetch(AUTOTUNE)


def make_dataset(
  split: str,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  config,
  process_index: int = 0,
  process_count: int = 1,
  start_step: int = 0,
) -> tf.data.Dataset:
  """The tf.data pipeline of `load` for host `process_index` of `process_count`."""
  if not batch_dims or any(int(d) < 1 for d in batch_dims):
    raise ValueError(f'batch_dims must be positive sizes, got {tuple(batch_dims)}.')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  source, count = host_source(
    split, config=config, process_index=process_index, process_count=process_count
  )
  if is_training:
    return build_train_dataset(
      source,
      num_source_examples=count,
      batch_dims=batch_dims,
      data=config.data,
      seed=config.seed,
      process_index=process_index,
      start_step=start_step,
    )
  global_batch = int(np.prod(batch_dims)) * process_count
  num_batches = max(1, math.ceil(num_examples(split, config) / global_batch))
  return build_eval_dataset(
    source, batch_dims=batch_dims, data=config.data, num_batches=num_batches
  )


def load(
  split: str,
  *,
  is_training: bool,
  batch_dims: Sequence[int],
  config: Any,
  start_step: int = 0,
) -> Iterator[Batch]:
  """NumPy batches of `split` for this host (see the module docstring).

  Args:
    split: 'train' (reads `config.data.train_split`) or any TFDS split string selecting
      one range, e.g. 'validation' or 'train[:10000]'.
    is_training: infinite augmented stream (True) or one padded pass (False).
    batch_dims: leading dims of every array, e.g. `[local_devices, per_device_batch]`.
    config: the experiment config (`config.data`, `config.seed`).
    start_step: training only: begin at the batch a fresh stream yields at this step.
  """
  ds = make_dataset(
    split,
    is_training=is_training,
    batch_dims=batch_dims,
    config=config,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    start_step=start_step,
  )
  return ds.as_numpy_iterator()
