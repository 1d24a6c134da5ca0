"""One way to put saved weights into a model, for inference and for training.

A source is any of:

  * a parameter file: this project's `.npz` (`perceiver.checkpoint.save_npz`) or the
    release's `.pystate` / `.pickle` (read by the safe loader, which never runs code
    from the file);
  * a training run's workdir: its export `<workdir>/export/params.npz`;
  * a Hugging Face `transformers` Perceiver checkpoint directory (`config.json` and
    `model.safetensors`, as `save_pretrained` writes them; `perceiver.huggingface`
    maps its tensors onto the release's parameter paths; docs/interop.md);
  * the name of a released checkpoint (`registry.releases()`): downloaded once into
    the cache and verified.

`fit` compares what was read with the parameter tree a model makes, module path by
module path and shape by shape, and is the one place that says what does not fit.
`load` reads and fits; `load_model` also builds the model of a config through its
task (`build_model`, `batch_spec`), for inference and the commands; a training run that starts from a file (fine-tuning,
`config.model.init_checkpoint`) passes the fitted values to its jitted initialisation
as arguments (`steps.init_train_state`), so they never become constants of a compiled
program, and a resumed run never reads the file again.

A `select(module_path) -> bool` predicate (`select_modules(prefixes)`, from
`config.model.init_modules`) restricts loading to part of the model (e.g. a classifier
that takes its encoder from a masked language model): only the selected modules must
be in the file; the others keep their initial values, and whatever else the file holds
is ignored.

Shapes here are Haiku's two-level trees: `{module path: {name: array}}`.
"""

import os
import pickle
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import haiku as hk
import jax
import ml_collections
import numpy as np

from experiments.training import errors
from experiments.training import registry
from experiments.training import task as task_lib
from perceiver import checkpoint as checkpoint_lib
from perceiver import huggingface as hf_lib

Tree = Dict[str, Dict[str, Any]]
Select = Callable[[str], bool]

EXPORT = os.path.join('export', 'params.npz')
_SHOWN = 3  # Entries named per kind of mismatch, by default.


def resolve(source: str, *, arg_name: str) -> str:
  """The local file a source names (see the module docstring).

  Raises:
    errors.ConfigError: `source` is empty.
    errors.DataError: it names no file, workdir export or release.
    registry.DownloadError, registry.ChecksumError: a release cannot be fetched.
  """
  if not source:
    raise errors.ConfigError(
      f'{arg_name} is empty: give a parameter file, a training workdir or a released '
      f'model ({sorted(registry.releases())}).'
    )
  if os.path.isfile(source):
    return source
  if os.path.isdir(source):
    export = os.path.join(source, EXPORT)
    if os.path.isfile(export):
      return export
    if os.path.isfile(os.path.join(source, hf_lib.CONFIG_FILE)):
      return source  # A transformers checkpoint directory.
    raise errors.DataError(
      f'{arg_name}={source!r} is a folder without {EXPORT} (a finished training run '
      f'writes it there) or {hf_lib.CONFIG_FILE} (a transformers checkpoint); give a '
      'parameter file instead.'
    )
  if source in registry.releases():
    return registry.checkpoint_path(source)
  raise errors.DataError(
    f'{arg_name}={source!r} is neither a file nor a training workdir nor a released '
    f'model; released models: {sorted(registry.releases())}.'
  )


def decoder_query_residual(config: Optional[ml_collections.ConfigDict]) -> bool:
  """The `use_query_residual` keyword of `config`'s decoder section: how a transformers
  learned-positions classifier's weights map onto this model. Without a config, False:
  the release's learned-positions classifier (`configs/imagenet.py:io_learned`) has
  none, and transformers' class always adds one."""
  if config is None:
    return False
  decoder = config.model.get('decoder')
  if decoder is None or 'use_query_residual' not in decoder:
    return True
  return bool(decoder.use_query_residual)


class _Read(NamedTuple):
  params: Tree
  state: Tree
  file_keys: Dict[str, str]  # 'module/name' -> the file's key, where they differ.


def _read(source, arg_name, config) -> _Read:
  path = resolve(source, arg_name=arg_name)
  shown = source if path == source else f'{source} ({path})'
  try:
    if os.path.isdir(path):
      architecture = hf_lib.read_config(path)['architectures'][0]
      residual = architecture != hf_lib.FOLDABLE_QUERY_RESIDUAL or (
        decoder_query_residual(config)
      )
      read = hf_lib.read_transformers_checkpoint(path, decoder_query_residual=residual)
      return _Read(read.params, read.state, read.sources)
    params, state = checkpoint_lib.load_params(path)
    return _Read(params, state or {}, {})
  except (ValueError, OSError, pickle.UnpicklingError) as e:
    raise errors.DataError(f'{arg_name}={shown}: {e}') from e


def read(
  source: str,
  *,
  arg_name: str = '--checkpoint',
  config: Optional[ml_collections.ConfigDict] = None,
) -> Tuple[Tree, Tree]:
  """`(params, state)` of a source, as host NumPy trees.

  Args:
    source: see the module docstring.
    arg_name: the flag or field that named it, for messages.
    config: the config of the model it is for, if known (a transformers
      learned-positions classifier maps onto it by `decoder_query_residual`).

  Raises:
    errors.DataError: the file cannot be read as parameters (names `arg_name` and the
      file; a file holding code is refused, never run).
  """
  read_ = _read(source, arg_name, config)
  return read_.params, read_.state


def model_shapes(model: hk.TransformedWithState, batch: Any) -> Tuple[Tree, Tree]:
  """`(params, state)` of `jax.ShapeDtypeStruct`s that `model` makes for `batch`.

  Initialised as in training (`is_training=True`), where batch norm creates its
  statistics; nothing is computed.
  """
  return jax.eval_shape(
    lambda b: model.init(jax.random.PRNGKey(0), b, is_training=True), batch
  )


def _entries(tree: Optional[Tree]) -> Dict[Tuple[str, str], Any]:
  return {(m, n): v for m, d in (tree or {}).items() for n, v in d.items()}


def _mismatches(
  label: str,
  want: Dict,
  have: Dict,
  *,
  unexpected_counts: bool,
  file_keys: Dict,
  shown: Optional[int],
) -> Tuple[list, list]:
  """(problems, entries that fit) for one collection."""

  def name(key):
    path = '/'.join(key)
    return f'{path} ({file_keys[path]})' if path in file_keys else path

  missing = sorted(k for k in want if k not in have)
  extra = sorted(k for k in have if k not in want) if unexpected_counts else []
  shapes = sorted(
    k for k in want if k in have and tuple(np.shape(have[k])) != tuple(want[k].shape)
  )
  problems = []
  if missing:
    names = ['/'.join(k) for k in missing[:shown]]
    problems.append(f'{len(missing)} missing {label}(s) {names}')
  if extra:
    names = [name(k) for k in extra[:shown]]
    problems.append(f'{len(extra)} unexpected {label}(s) {names}')
  if shapes:
    names = [
      f'{name(k)}: file {tuple(np.shape(have[k]))} vs model {tuple(want[k].shape)}'
      for k in shapes[:shown]
    ]
    problems.append(f'{len(shapes)} {label}(s) with other shapes {names}')
  fitting = [k for k in want if k in have and k not in shapes]
  return problems, fitting


def fit(
  loaded: Tuple[Tree, Tree],
  expected: Tuple[Tree, Tree],
  *,
  source: str,
  arg_name: str,
  select: Optional[Select] = None,
  file_keys: Optional[Dict[str, str]] = None,
  shown: Optional[int] = _SHOWN,
) -> Tuple[Tree, Tree]:
  """The loaded values of every expected entry of the selected modules.

  Args:
    loaded: `(params, state)` read from `source`.
    expected: `(params, state)` of the model (arrays or `jax.ShapeDtypeStruct`s).
    source: what was read, for the message.
    arg_name: the flag or field that named it, for the message.
    select: which module paths come from the file (default: all).
    file_keys: `'module/name'` -> the file's own key for it (a transformers
      checkpoint's tensor names), quoted beside the path in messages.
    shown: how many entries of each kind of mismatch the message names (None: all).

  Returns:
    `(params, state)` holding exactly the expected entries of the selected modules,
    as NumPy arrays of the expected dtypes.

  Raises:
    errors.DataError: a selected entry is missing or has another shape, or (loading
      the whole model) the file holds parameters the model does not have; the message
      counts each kind and names the first few.
  """
  chosen = select or (lambda module: True)
  problems, out = [], []
  for label, want, have in (
    ('parameter', expected[0], loaded[0]),
    ('state entry', expected[1], loaded[1]),
  ):
    want = {k: v for k, v in _entries(want).items() if chosen(k[0])}
    have = _entries(have)
    if select is not None:
      have = {k: v for k, v in have.items() if chosen(k[0])}
    # A file may hold state the model does not keep; never extra parameters.
    found, fitting = _mismatches(
      label,
      want,
      have,
      unexpected_counts=label == 'parameter',
      file_keys=file_keys or {},
      shown=shown,
    )
    problems += found
    tree: Tree = {}
    for module, name in fitting:
      value = np.asarray(have[(module, name)], want[(module, name)].dtype)
      tree.setdefault(module, {})[name] = value
    out.append(tree)
  if problems:
    raise errors.DataError(
      f"{arg_name}={source!r} does not fit the config's architecture: "
      + '; '.join(problems)
      + '. Pass the config the checkpoint was made with.'
    )
  return out[0], out[1]


def load(
  model: hk.TransformedWithState,
  batch: Any,
  source: str,
  *,
  arg_name: str = '--checkpoint',
  select: Optional[Select] = None,
  config: Optional[ml_collections.ConfigDict] = None,
) -> Tuple[Tree, Tree]:
  """`(params, state)` of `source`, checked against what `model` makes for `batch`.

  Args:
    model: the transformed model.
    batch: an example batch (arrays or `jax.ShapeDtypeStruct`s), for the shapes.
    source: see the module docstring.
    arg_name: the flag or field that named `source`, for messages.
    select: see `fit`.
    config: the config that built `model`, if known (see `read`).
  """
  read_ = _read(source, arg_name, config)
  return fit(
    (read_.params, read_.state),
    model_shapes(model, batch),
    source=source,
    arg_name=arg_name,
    select=select,
    file_keys=read_.file_keys,
  )


def select_modules(prefixes) -> Optional[Select]:
  """The module paths equal to, or inside, one of `prefixes` (None: all of them).

  `('perceiver_encoder',)` selects `perceiver_encoder` and
  `perceiver_encoder/~/cross_attention/...`, not `perceiver_encoder_2`.
  """
  prefixes = tuple(prefixes or ())
  if not prefixes:
    return None
  return lambda module: any(module == p or module.startswith(p + '/') for p in prefixes)


class Model(NamedTuple):
  """A model with its weights: `model.apply(params, state, rng, batch, is_training=False)`.

  Attributes:
    name: what it was loaded from (a path, a workdir, a release name), for messages.
    config: the experiment config that builds the architecture.
    model: the task's transformed model.
    params: the parameters (host NumPy).
    state: the model state (host NumPy; `{}` for stateless models).
    path: the file the weights came from ('' for weights made here).
  """

  name: str
  config: ml_collections.ConfigDict
  model: hk.TransformedWithState
  params: Tree
  state: Tree
  path: str


def load_model(
  config: ml_collections.ConfigDict, source: str, *, arg_name: str = '--checkpoint'
) -> Model:
  """The model `config` builds, with the weights of `source` (checked to fit).

  Raises:
    errors.DataError: `source` cannot be read or does not fit the architecture.
  """
  task = task_lib.load_task(config.task)
  model = task.build_model(config)
  path = resolve(source, arg_name=arg_name)
  params, state = load(
    model, task_lib.example_batch(task, config), path, arg_name=arg_name, config=config
  )
  return Model(
    name=source, config=config, model=model, params=params, state=state, path=path
  )
