"""Parameters of Hugging Face `transformers` Perceiver checkpoints, in this library's layout.

`transformers` ships seven Perceiver models converted from DeepMind's release. Each maps,
tensor by tensor, onto the Haiku parameter tree this library builds for the same
architecture (the release's module paths). `parameter_table(architecture,
num_self_attends)` lists that mapping: one `Entry` per Haiku array with its state-dict key
and its layout. The layouts are:

  'copy'      same array (biases, layer norms, embeddings, position encodings, latents);
  'linear'    `hk.Linear` weight `[in, out]` <-> `torch.nn.Linear` weight `[out, in]`;
  'conv'      `hk.Conv2D` kernel `[kh, kw, in, out]` <-> `torch.nn.Conv2d` `[out, in, kh, kw]`;
  'channels'  BatchNorm scale, offset and moving averages `[1, 1, 1, C]` <-> `[C]`;
  'counter'   BatchNorm update counter, int32 `[]` <-> `num_batches_tracked`, int64 `[]`;
  'ema_hidden' the BatchNorm moving average's un-debiased accumulator (Haiku state only):
              rebuilt on import as `average * (1 - 0.9**counter)` so that training
              continues from the same average; transformers keeps no such tensor.

Architectures (the `architectures` entry of a transformers `config.json`) and the Haiku
module paths of their parameters:

  PerceiverForImageClassificationLearned   image_preprocessor (1x1 conv, trainable
      positions, projection), perceiver_encoder, classification_decoder
  PerceiverForImageClassificationFourier   perceiver_encoder, classification_decoder
  PerceiverForImageClassificationConvProcessing   image_preprocessor (7x7 conv +
      BatchNorm), perceiver_encoder, classification_decoder
  PerceiverForMaskedLM                     embed, trainable_position_encoding,
      perceiver_encoder, basic_decoder, embedding_decoder (tied to embed)
  PerceiverForSequenceClassification       embed, trainable_position_encoding,
      perceiver_encoder, classification_decoder (the GLUE head)
  PerceiverForOpticalFlow                  image_preprocessor (patches_linear),
      perceiver_encoder, flow_decoder
  PerceiverForMultimodalAutoencoding       multimodal_preprocessor (paddings, mask
      tokens), encoder, multimodal_decoder, the label query, three postprocessors

One difference is folded into the weights rather than the structure:
transformers' `PerceiverForImageClassificationLearned` always adds the decoder's query
to its cross-attention output (`use_query_residual=True`), while the release's learned
model does not. The query is one trainable vector, the same for every example, so
`decoder_query_residual=False` subtracts it from that attention's output bias on export
(and adds it back on import): the same function, to float32 rounding. The conv
classifier's parameters map one to one, but transformers pads its convolution and max
pooling otherwise than the release: `ImagePreprocessor(conv2d_padding='transformers')`
computes what transformers computes.

Checkpoint directories are read without PyTorch: `config.json` plus `model.safetensors`
(or shards listed in `model.safetensors.index.json`), through `perceiver.safetensors`.
`pytorch_model.bin` is a pickle, which can run code when loaded: it is refused.
"""

import json
import os
from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from perceiver import safetensors
from perceiver._src import hf_tables
from perceiver._src.hf_tables import ARCHITECTURES
from perceiver._src.hf_tables import LAYOUTS
from perceiver._src.hf_tables import Entry
from perceiver._src.hf_tables import Params
from perceiver._src.hf_tables import check_architecture
from perceiver._src.hf_tables import count_self_attends
from perceiver._src.hf_tables import parameter_table

__all__ = (
  'ARCHITECTURES',
  'LAYOUTS',
  'CheckpointMismatchError',
  'Entry',
  'TransformersCheckpoint',
  'check_architecture',
  'count_self_attends',
  'from_transformers',
  'parameter_table',
  'read_config',
  'read_transformers_checkpoint',
  'read_weights',
  'to_transformers',
  'write_transformers_checkpoint',
)
# BatchNorm moving-average decay of both libraries (torch momentum 0.1).
BATCHNORM_DECAY = 0.9
MODEL_TYPE = 'perceiver'
CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
WEIGHTS_INDEX_FILE = 'model.safetensors.index.json'
# Weights of other formats (single files or shards: `<stem>-00001-of-00002<ext>`) and
# why they are not read.
_REFUSED_FORMATS = (
  ('pytorch_model', '.bin', 'a pickle, and loading a pickle can run code'),
  ('tf_model', '.h5', 'a TensorFlow (Keras) file'),
  ('flax_model', '.msgpack', 'a Flax file'),
)
# transformers' `PerceiverConfig` defaults, for fields a `config.json` leaves out.
CONFIG_DEFAULTS = dict(
  num_latents=256,
  d_latents=1280,
  d_model=768,
  num_blocks=1,
  num_self_attends_per_block=26,
  num_self_attention_heads=8,
  num_cross_attention_heads=8,
  qk_channels=None,
  v_channels=None,
  cross_attention_shape_for_attention='kv',
  self_attention_widening_factor=1,
  cross_attention_widening_factor=1,
  hidden_act='gelu',
  attention_probs_dropout_prob=0.1,
  initializer_range=0.02,
  layer_norm_eps=1e-12,
  use_query_residual=True,
  vocab_size=262,
  max_position_embeddings=2048,
  image_size=56,
  train_size=[368, 496],
  num_frames=16,
  audio_samples_per_frame=1920,
  samples_per_patch=16,
  output_shape=[1, 16, 224, 224],
  output_num_channels=512,
  _label_trainable_num_channels=1024,
)


class TransformersCheckpoint(NamedTuple):
  """A transformers checkpoint directory read into this library's layout.

  Attributes:
    params, state: Haiku trees `{module path: {name: array}}`.
    config: the `config.json` object, with transformers' defaults filled in.
    architecture: its model class, e.g. 'PerceiverForMaskedLM'.
    sources: `'<module path>/<name>'` -> the file's tensor key it came from.
    path: the weights file (or index) read.
  """

  params: Params
  state: Params
  config: Dict
  architecture: str
  sources: Dict[str, str]
  path: str


class CheckpointMismatchError(ValueError):
  """Tensors are missing, unexpected or misshapen (every one is named)."""


# --------------------------------------------------------------- conversions


def _to_hf(layout: str, value: np.ndarray) -> np.ndarray:
  value = np.asarray(value)
  if layout == 'linear':
    return value.T
  if layout == 'conv':
    return value.transpose(3, 2, 0, 1)
  if layout == 'channels':
    return value.reshape(-1)
  if layout == 'counter':
    return np.asarray(value, np.int64).reshape(())
  return value


def _expected_rank(layout: str) -> Optional[int]:
  return {'linear': 2, 'conv': 4, 'channels': 1, 'counter': 0, 'ema_hidden': 1}.get(
    layout
  )


def _from_hf(entry: Entry, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
  value = np.asarray(tensors[entry.hf])
  if entry.layout == 'linear':
    return np.ascontiguousarray(value.T)
  if entry.layout == 'conv':
    return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
  if entry.layout == 'channels':
    return value.reshape(1, 1, 1, -1)
  if entry.layout == 'counter':
    return np.asarray(value, np.int32).reshape(())
  if entry.layout == 'ema_hidden':
    counter = int(np.asarray(tensors[entry.counter]))
    debias = np.float32(1.0) - np.float32(BATCHNORM_DECAY) ** np.float32(counter)
    return (value * debias).astype(value.dtype).reshape(1, 1, 1, -1)
  return value


def _split(path: str) -> Tuple[str, str]:
  module, _, name = path.rpartition('/')
  return module, name


def _flat(tree: Optional[Mapping]) -> Dict[str, np.ndarray]:
  return {f'{m}/{n}': v for m, d in (tree or {}).items() for n, v in d.items()}


def to_transformers(
  architecture: str,
  params: Params,
  state: Optional[Params] = None,
  *,
  decoder_query_residual: bool = True,
) -> Dict[str, np.ndarray]:
  """The transformers state dict (name -> array) of Haiku `params` and `state`.

  Args:
    architecture: one of `ARCHITECTURES`.
    params, state: the model's Haiku trees (state: BatchNorm statistics, if any).
    decoder_query_residual: the Haiku model's
      `ClassificationDecoder(use_query_residual=...)`; only
      PerceiverForImageClassificationLearned accepts False (see the module docstring).

  Raises:
    CheckpointMismatchError: `params`/`state` lack arrays the architecture needs, or
      hold arrays it has no place for (every one is named).
  """
  flat = {'params': _flat(params), 'state': _flat(state)}
  table = parameter_table(architecture, count_self_attends(params, architecture))
  _check_fold(architecture, decoder_query_residual)
  wanted = {'params': set(), 'state': set()}
  for e in table:
    wanted[e.collection].add(e.haiku)
  missing = [f'{c}:{p}' for c in flat for p in sorted(wanted[c] - set(flat[c]))]
  unexpected = [f'{c}:{p}' for c in flat for p in sorted(set(flat[c]) - wanted[c])]
  if missing or unexpected:
    raise CheckpointMismatchError(
      f"The Haiku parameters do not fit transformers' {architecture}: "
      + _problems(missing, unexpected, [])
    )
  tensors = {}
  for e in table:
    if e.layout == 'ema_hidden' or e.hf in tensors:
      continue  # Rebuilt on import / a counter already stored.
    tensors[e.hf] = np.asarray(_to_hf(e.layout, flat[e.collection][e.haiku]), order='C')
  if not decoder_query_residual:
    bias_key = _hf_key(table, hf_tables.FOLD[0])
    query = flat['params'][hf_tables.FOLD[1]]
    tensors[bias_key] = (tensors[bias_key] - query[0]).astype(tensors[bias_key].dtype)
  return tensors


def from_transformers(
  architecture: str,
  tensors: Mapping[str, np.ndarray],
  *,
  num_self_attends: int,
  decoder_query_residual: bool = True,
  source: str = 'the state dict',
) -> Tuple[Params, Params, Dict[str, str]]:
  """Haiku `(params, state, sources)` of a transformers state dict.

  Args:
    architecture: one of `ARCHITECTURES`.
    tensors: state-dict key -> array (e.g. `safetensors.read_safetensors(path)`).
    num_self_attends: the checkpoint's `num_self_attends_per_block`.
    decoder_query_residual: see `to_transformers`.
    source: named in error messages (e.g. the file).

  Returns:
    `params`, `state` and `sources` (`'<module>/<name>'` -> state-dict key).

  Raises:
    CheckpointMismatchError: tensors missing, unexpected, or of the wrong rank.
  """
  table = parameter_table(architecture, num_self_attends)
  _check_fold(architecture, decoder_query_residual)
  wanted = {e.hf for e in table}
  missing = sorted(wanted - set(tensors))
  unexpected = sorted(set(tensors) - wanted)
  misshapen = []
  seen = set()
  for e in table:
    rank = _expected_rank(e.layout)
    if e.hf in tensors and e.hf not in seen and rank is not None:
      seen.add(e.hf)
      shape = tuple(np.shape(tensors[e.hf]))
      if len(shape) != rank:
        misshapen.append(f'{e.hf}: shape {list(shape)}, expected {rank} dimensions')
  if missing or unexpected or misshapen:
    raise CheckpointMismatchError(
      f"{source} does not fit transformers' {architecture} with {num_self_attends} "
      'self-attends per block: ' + _problems(missing, unexpected, misshapen)
    )
  trees = {'params': {}, 'state': {}}
  sources = {}
  for e in table:
    module, name = _split(e.haiku)
    trees[e.collection].setdefault(module, {})[name] = _from_hf(e, tensors)
    sources[e.haiku] = e.hf
  if not decoder_query_residual:
    module, name = _split(hf_tables.FOLD[0])
    query = trees['params'][_split(hf_tables.FOLD[1])[0]]['pos_embs']
    bias = trees['params'][module][name]
    trees['params'][module][name] = (bias + query[0]).astype(bias.dtype)
  return trees['params'], trees['state'], sources


# The class whose decoder query residual can be folded into a bias (module docstring).
FOLDABLE_QUERY_RESIDUAL = 'PerceiverForImageClassificationLearned'


def _check_fold(architecture: str, decoder_query_residual: bool) -> None:
  if not decoder_query_residual and architecture != FOLDABLE_QUERY_RESIDUAL:
    raise ValueError(
      'decoder_query_residual=False is only foldable into '
      f'PerceiverForImageClassificationLearned, not {architecture}.'
    )


def _hf_key(table: Sequence[Entry], haiku: str) -> str:
  return next(e.hf for e in table if e.haiku == haiku)


def _problems(missing, unexpected, misshapen) -> str:
  parts = []
  for label, items in (
    ('missing', missing),
    ('unexpected', unexpected),
    ('misshapen', misshapen),
  ):
    if items:
      parts.append(f'{len(items)} {label}: {", ".join(items)}')
  return '; '.join(parts) + '.'


# ------------------------------------------------------------ directories


def read_config(directory: str) -> Dict:
  """`config.json` of a transformers Perceiver directory, with transformers' defaults
  for absent fields.

  Raises:
    ValueError: no such directory or file, not JSON, not a Perceiver, or an
      architecture this project does not map.
  """
  if not os.path.isdir(directory):
    raise ValueError(f'{directory!r} is not a directory (a transformers checkpoint).')
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    raise ValueError(f'{directory} has no {CONFIG_FILE} (not a transformers checkpoint).')
  try:
    with open(path, encoding='utf-8') as f:
      config = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f'{path} is not valid JSON: {e}.') from e
  if not isinstance(config, dict) or config.get('model_type', MODEL_TYPE) != MODEL_TYPE:
    got = config.get('model_type') if isinstance(config, dict) else type(config).__name__
    raise ValueError(f'{path}: model_type {got!r} is not {MODEL_TYPE!r}.')
  architectures = config.get('architectures') or []
  if len(architectures) != 1:
    raise ValueError(
      f'{path}: "architectures" is {architectures!r}; expected one of {list(ARCHITECTURES)}.'
    )
  if architectures[0] not in ARCHITECTURES:
    raise ValueError(
      f'{path}: architecture {architectures[0]!r} is not mapped; expected one of '
      f'{list(ARCHITECTURES)}.'
    )
  return {**CONFIG_DEFAULTS, **config}


def read_weights(directory: str) -> Tuple[Dict[str, np.ndarray], str]:
  """The tensors of `model.safetensors` (or of the shards its index lists) in
  `directory`, and the path read.

  Raises:
    ValueError: no safetensors weights (a pickle `pytorch_model.bin` is refused).
    safetensors.SafetensorsError: an invalid file.
  """
  single = os.path.join(directory, WEIGHTS_FILE)
  index = os.path.join(directory, WEIGHTS_INDEX_FILE)
  if os.path.isfile(single):
    return safetensors.read_safetensors(single), single
  if os.path.isfile(index):
    try:
      with open(index, encoding='utf-8') as f:
        weight_map = json.load(f)['weight_map']
      shards = sorted(set(weight_map.values()))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
      raise ValueError(f'{index}: no valid "weight_map" ({e}).') from e
    tensors = {}
    for shard in shards:
      if os.path.basename(shard) != shard:
        raise ValueError(f'{index}: shard {shard!r} is not a file name in {directory}.')
      tensors.update(safetensors.read_safetensors(os.path.join(directory, shard)))
    return tensors, index
  names = sorted(os.listdir(directory))
  for stem, ext, why in _REFUSED_FORMATS:
    found = [f for f in names if f.startswith(stem) and f.endswith(ext)]
    if found:
      raise ValueError(
        f'{directory} holds {found[0]} and no {WEIGHTS_FILE}: {stem}{ext} is {why}, so '
        'it is not read here. Save the model as safetensors with transformers '
        f'(`model.save_pretrained(dir)` writes {WEIGHTS_FILE} by default).'
      )
  raise ValueError(f'{directory} has no {WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE}).')


def read_transformers_checkpoint(
  directory: str, *, decoder_query_residual: bool = True
) -> TransformersCheckpoint:
  """Reads a transformers Perceiver checkpoint directory into Haiku `params`/`state`.

  Args:
    directory: holds `config.json` and `model.safetensors` (as `save_pretrained`
      writes them).
    decoder_query_residual: False to load PerceiverForImageClassificationLearned into a
      model whose decoder has no query residual (the release's; see the module
      docstring).

  Raises:
    ValueError: see `read_config`, `read_weights`; `CheckpointMismatchError` names
      every missing, unexpected or misshapen tensor.
  """
  config = read_config(directory)
  architecture = config['architectures'][0]
  tensors, path = read_weights(directory)
  params, state, sources = from_transformers(
    architecture,
    tensors,
    num_self_attends=int(config['num_self_attends_per_block']),
    decoder_query_residual=decoder_query_residual,
    source=path,
  )
  return TransformersCheckpoint(params, state, config, architecture, sources, path)


def write_transformers_checkpoint(
  directory: str,
  config: Mapping,
  params: Params,
  state: Optional[Params] = None,
  *,
  decoder_query_residual: bool = True,
) -> Tuple[str, str]:
  """Writes `config.json` and `model.safetensors` for transformers' `from_pretrained`.

  Args:
    directory: created if absent.
    config: `PerceiverConfig` fields; `architectures` names the model class and
      `model_type` is set to 'perceiver'.
    params, state: the Haiku model's trees.
    decoder_query_residual: see `to_transformers`.

  Returns:
    The paths of the config and weights files.
  """
  architectures = list(config.get('architectures') or [])
  if len(architectures) != 1:
    raise ValueError(
      f'config["architectures"] must name one class, got {architectures!r}.'
    )
  tensors = to_transformers(
    architectures[0], params, state, decoder_query_residual=decoder_query_residual
  )
  os.makedirs(directory, exist_ok=True)
  weights = os.path.join(directory, WEIGHTS_FILE)
  safetensors.write_safetensors(weights, tensors, metadata={'format': 'pt'})
  config_path = os.path.join(directory, CONFIG_FILE)
  body = {'architectures': architectures, 'model_type': MODEL_TYPE}
  body.update({k: v for k, v in config.items() if k not in body})
  with open(config_path, 'w', encoding='utf-8') as f:
    json.dump(body, f, indent=2, sort_keys=True)
    f.write('\n')
  return config_path, weights
