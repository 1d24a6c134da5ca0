"""Experiment configs <-> transformers' `PerceiverConfig`, for the released families.

The families (one per transformers class, with the project config of the release's
architecture as reference) are in `hf_families`.

`project_config(hf_config, base)` builds the config of a checkpoint: the reference's model
fields (transformers hard-codes the rest of each architecture: Fourier bands, channel
counts, heads of the decoders...) with the checkpoint's sizes, and `base`'s other fields.
Export goes the other way (`transformers_config`) and then checks that nothing was lost:
every model field of the config must survive the trip to a `PerceiverConfig` and back.
A field that does not (paper 1's iterative cross-attends, bfloat16 compute, a permuted
input, a GLUE head with several heads...) is refused, named with its value and the value
transformers' class has. Fields that only change how the same function is computed
(rematerialisation, attention chunking, scanned layers), initialisation scales and
dropout rates (training only; transformers applies its one rate to attention weights)
are carried over without a check.

Two differences between transformers' classes and the release are bridged:
  * GELU: the release uses the tanh approximation (`jax.nn.gelu`); exports declare
    `hidden_act='gelu_new'` (the same formula). transformers' converted checkpoints
    declare the exact 'gelu': they import with this project's GELU, a difference below
    1e-3 per activation (`notes` says so).
  * The learned-positions classifier: transformers always adds the decoder's query
    residual; the release's model has none, which `perceiver.huggingface` folds into a
    bias (`Translation.decoder_query_residual`).
"""

import copy
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import ml_collections

from experiments.inference import hf_families
from experiments.inference.hf_families import FAMILIES
from experiments.inference.hf_families import ConfigMismatchError
from experiments.inference.hf_families import Family
from experiments.inference.hf_families import family_of
from experiments.inference.hf_families import num_labels
from experiments.training.registry import load_config
from perceiver import huggingface as hf_lib

# Activations transformers computes as `jax.nn.gelu` does (the tanh approximation).
TANH_GELUS = ('gelu_new', 'gelu_pytorch_tanh', 'gelu_fast')
EXPORT_ACTIVATION = 'gelu_new'
# Leaf names, in any model section, that change how (not what) a model computes, its
# initialisation, or its training-time dropout: carried over, never compared.
_CARRIED_NAMES = (
  'remat',
  'remat_policy',
  'attention_query_chunk_size',
  'attention_key_chunk_size',
  'scan_layers',
  'unroll_shared_layers',
  'init_scale',
  'z_pos_enc_init_scale',
  'dropout_prob',
)
_ENCODER_FIELDS = (  # (PerceiverConfig field, model.encoder field)
  ('num_latents', 'z_index_dim'),
  ('d_latents', 'num_z_channels'),
  ('num_blocks', 'num_blocks'),
  ('num_self_attends_per_block', 'num_self_attends_per_block'),
  ('num_self_attention_heads', 'num_self_attend_heads'),
  ('num_cross_attention_heads', 'num_cross_attend_heads'),
  ('qk_channels', 'qk_channels'),
  ('v_channels', 'v_channels'),
  ('cross_attention_shape_for_attention', 'cross_attention_shape_for_attn'),
  ('self_attention_widening_factor', 'self_attend_widening_factor'),
  ('cross_attention_widening_factor', 'cross_attend_widening_factor'),
  ('use_query_residual', 'use_query_residual'),
)
_HINTS = {
  'compute_dtype': (
    "; transformers' config has no compute dtype: to export the float32 weights as a "
    "float32 model, set it to '' on the command line"
  ),
  'conv2d_padding': (
    "; transformers' convolution pads 3 pixels on every side and its max pooling none "
    '(55 x 55 features from 224 x 224 images, where the release has 56 x 56): check the '
    'model here with conv2d_padding=transformers, then export with that override'
  ),
}


class Translation(NamedTuple):
  """An experiment config as transformers sees it.

  Attributes:
    hf_config: the `PerceiverConfig` fields (with `architectures`), for `config.json`.
    architecture: the model class.
    decoder_query_residual: the decoder's query residual, for
      `perceiver.huggingface` (False only for the release's learned-positions model).
  """

  hf_config: Dict[str, Any]
  architecture: str
  decoder_query_residual: bool


# ------------------------------------------------------------- translation


def _check_activation(hf: Mapping) -> None:
  act = hf['hidden_act']
  if act not in TANH_GELUS and act != 'gelu':
    raise ConfigMismatchError(
      f'hidden_act={act!r}: this project computes GELU (the tanh approximation, as '
      f"{TANH_GELUS[0]!r}; 'gelu' is imported as that too)."
    )


def notes(hf_config: Mapping) -> List[str]:
  """What an imported checkpoint computes differently here (empty when nothing does)."""
  out = []
  if hf_config.get('hidden_act', hf_lib.CONFIG_DEFAULTS['hidden_act']) == 'gelu':
    out.append(
      "hidden_act='gelu' (exact) runs here as the tanh approximation the release was "
      'trained with (outputs differ by the approximation, below 1e-3 per activation).'
    )
  return out


def project_config(
  hf_config: Mapping, base: Optional[ml_collections.ConfigDict] = None
) -> ml_collections.ConfigDict:
  """The experiment config of a transformers checkpoint.

  Args:
    hf_config: `config.json` fields (transformers' defaults fill the others).
    base: a config whose non-model fields (data, training...) and carried model fields
      are kept; default: the family's reference config.

  Returns:
    A locked config whose model is the checkpoint's.

  Raises:
    ConfigMismatchError: a field this project cannot express (named), or an
      architecture it does not map.
  """
  hf = {**hf_lib.CONFIG_DEFAULTS, **hf_config}
  architectures = hf.get('architectures') or []
  if len(architectures) != 1 or architectures[0] not in FAMILIES:
    raise ConfigMismatchError(
      f'architectures={architectures!r}: expected one of {sorted(FAMILIES)}.'
    )
  _check_activation(hf)
  family = FAMILIES[architectures[0]]
  reference = load_config(family.reference)
  derived = copy.deepcopy(base if base is not None else reference)
  derived.unlock()
  model = copy.deepcopy(reference.model)
  model.unlock()
  if base is not None:
    for path, value in _leaves(base.model):
      if path.split('.')[-1] in _CARRIED_NAMES or path in family.carried:
        _set(model, path, value)
  derived.model = model
  encoder = derived.model.encoder
  for hf_name, name in _ENCODER_FIELDS:
    encoder[name] = hf[hf_name]
  if base is None:
    encoder.dropout_prob = float(hf['attention_probs_dropout_prob'])
  if hf['cross_attention_shape_for_attention'] != 'kv' and (
    family.architecture != 'PerceiverForMaskedLM'
  ):
    raise ConfigMismatchError(
      "cross_attention_shape_for_attention='q': transformers then also sizes the "
      "decoder's attention by its queries, which this project's decoders never do."
    )
  family.from_hf(hf, derived, base is not None)
  derived.lock()
  return derived


def transformers_config(config: ml_collections.ConfigDict) -> Translation:
  """The `PerceiverConfig` fields of an experiment config.

  Raises:
    ConfigMismatchError: naming every model field transformers' class cannot express
      (with its value and the class's), or a config with no transformers counterpart.
  """
  family = family_of(config)
  encoder = config.model.encoder
  hf = {
    'architectures': [family.architecture],
    'model_type': hf_lib.MODEL_TYPE,
    'hidden_act': EXPORT_ACTIVATION,
    'attention_probs_dropout_prob': float(encoder.dropout_prob),
  }
  for hf_name, name in _ENCODER_FIELDS:
    hf[hf_name] = encoder[name]
  hf.update(family.to_hf(config))
  try:
    derived = project_config(hf, base=config)
  except ConfigMismatchError as e:
    raise ConfigMismatchError(f'transformers cannot express this config: {e}') from e
  problems = [
    f"{path}={mine!r}: transformers' {family.architecture} has {theirs!r}"
    + _HINTS.get(path.split('.')[-1], '')
    for path, mine, theirs in differences(config, derived, family)
  ]
  if problems:
    raise ConfigMismatchError(
      f'transformers cannot express {len(problems)} field(s) of this config: '
      + '; '.join(problems)
      + '.'
    )
  return Translation(hf, family.architecture, family.decoder_query_residual(config))


# The fields a byte model's encoder and inputs hold: what a GLUE classifier takes from a
# masked language model checkpoint.
TEXT_ENCODER_FIELDS = ('model.encoder.', 'model.d_model', 'model.max_seq_len')


def check_checkpoint_config(
  hf_config: Mapping,
  config: ml_collections.ConfigDict,
  *,
  prefixes: Optional[Tuple[str, ...]] = None,
) -> None:
  """Raises ConfigMismatchError naming every field where a transformers checkpoint's
  architecture differs from `config`'s.

  Args:
    hf_config: the checkpoint's `config.json` fields.
    config: the experiment config it is loaded into.
    prefixes: compare only fields whose dotted path starts with one of these (e.g.
      `TEXT_ENCODER_FIELDS` to start a GLUE classifier from a masked language model);
      the architectures may then differ. Default: the whole model, same architecture.
  """
  architecture = (hf_config.get('architectures') or [None])[0]
  if prefixes is None:
    family = family_of(config)
    if architecture != family.architecture:
      raise ConfigMismatchError(
        f'the checkpoint is a {architecture}, the config a {family.architecture}.'
      )
  elif architecture not in FAMILIES:
    raise ConfigMismatchError(f'architectures={[architecture]!r} is not mapped.')
  else:
    family = FAMILIES[architecture]
  derived = project_config(hf_config, base=config)
  problems = [
    f'{path}: checkpoint {theirs!r}, config {mine!r}'
    for path, mine, theirs in differences(config, derived, family)
    if prefixes is None or path.startswith(prefixes)
  ]
  if prefixes is None and family.architecture == 'PerceiverForSequenceClassification':
    classes, labels = (
      hf_families.glue_task_classes(config.data.task),
      num_labels(hf_config),
    )
    if classes != labels:
      problems.append(
        f'data.task={config.data.task!r} has {classes} classes, checkpoint {labels}'
      )
  if problems:
    raise ConfigMismatchError(
      f'the checkpoint does not fit this config in {len(problems)} field(s): '
      + '; '.join(problems)
      + '.'
    )


# ---------------------------------------------------------------- comparison


def _leaves(section, prefix=''):
  for key in sorted(section.keys()):
    value = section[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield prefix + key, value


def _set(section, path, value) -> None:
  """Sets a dotted field of `section`, if it has it."""
  *parents, leaf = path.split('.')
  for name in parents:
    if name not in section:
      return
    section = section[name]
  if leaf in section:
    section[leaf] = value


def _normalized(config: ml_collections.ConfigDict, family: Family) -> Dict[str, Any]:
  """`{model/data path: value}` with equivalent spellings made equal."""
  values = {f'model.{p}': v for p, v in _leaves(config.model)}
  values.update({f'data.{p}': v for p, v in _leaves(config.data)})
  for path, value in values.items():
    if isinstance(value, list):
      values[path] = tuple(value)
    if path.endswith('.compute_dtype') and value in ('', 'float32'):
      values[path] = None
  enc = 'model.encoder.'
  if values.get(enc + 'num_cross_attends') == 1:
    values[enc + 'cross_attend_placement'] = 'start'
    values[enc + 'share_cross_attend_weights'] = True
  if values.get(enc + 'num_blocks') == 1:
    values[enc + 'share_self_attend_weights'] = True
  if family.architecture not in (
    'PerceiverForMaskedLM',
    'PerceiverForMultimodalAutoencoding',
  ):
    # Decoders attend to the latents: channels default to theirs (shape 'kv').
    dec = 'model.decoder.'
    if values.get(dec + 'qk_channels') is None:
      values[dec + 'qk_channels'] = values[enc + 'num_z_channels']
    if values.get(dec + 'v_channels') is None:
      values[dec + 'v_channels'] = values[dec + 'qk_channels']
  return values


def differences(
  config: ml_collections.ConfigDict, derived: ml_collections.ConfigDict, family: Family
) -> List[Tuple[str, Any, Any]]:
  """`(path, config's value, derived value)` of every compared field that differs."""
  mine, theirs = _normalized(config, family), _normalized(derived, family)
  out = []
  for path in sorted(set(mine) | set(theirs)):
    if path.split('.')[-1] in _CARRIED_NAMES or path[len('model.') :] in family.carried:
      continue
    if mine.get(path) != theirs.get(path):
      out.append((path, mine.get(path), theirs.get(path)))
  return out


def config_overrides(config: ml_collections.ConfigDict) -> Tuple[str, List[str]]:
  """`(config spec, command-line overrides)` that rebuild `config`'s model and data
  fields from its family's reference config, e.g. for `--config` of the commands."""
  family = family_of(config)
  reference = load_config(family.reference)

  def values(c):
    out = {f'model.{p}': v for p, v in _leaves(c.model)}
    out.update({f'data.{p}': v for p, v in _leaves(c.data)})
    return {p: tuple(v) if isinstance(v, list) else v for p, v in out.items()}

  mine, theirs = values(config), values(reference)
  flags = [
    f'--config.{path}={_flag_value(mine[path])}'
    for path in sorted(mine)
    if path in theirs and mine[path] != theirs[path]
  ]
  return family.reference, flags


def _flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)
