"""Fill-mask inference with a byte-level Perceiver IO: marked text in, completed text out.

The logic behind `python -m experiments.fill_mask` (see that module for the command).

Span markers:
  {{original}}  masks the UTF-8 bytes of `original` (as many MASK ids as it
                has bytes), so the prediction can be compared with it;
  [MASK:n]      inserts n MASK ids.
A text may hold several spans. The ids are padded with PAD to the model's
`max_seq_len` (input_mask 0 there), the model runs once, and every masked
position takes its most likely byte (greedy; reserved ids are never chosen).

Top-k (`fill_mask_top_k`): the same single forward pass gives, at every masked
position, a distribution over the 256 byte values (the softmax of the logits with
the reserved ids left out). Each masked byte lists its k most likely values. A
span's probability is the product of its bytes' probabilities: the model predicts
all masked positions at once from the same input, so one pass defines exactly this
factorised distribution (it is not re-run with earlier guesses filled in). The k
most likely spans under it are found by beam search over the span's positions
with a beam of max(k, beam) prefixes, which is exact for a factorised
distribution: every prefix of a top-k span is among the top-k prefixes of its
length.
"""

import functools
import json
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tasks.language import mlm
from experiments.training import errors
from experiments.training import task as task_lib
from experiments.training import weights
from perceiver import bytes_tokenizer

_TOKENIZER = bytes_tokenizer.BytesTokenizer()
_MARKER = re.compile(r'\{\{(.*?)\}\}|\[MASK:([^\]]*)\]', re.DOTALL)


def parse_masked_text(
  text: str, *, max_length: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, int]]]:
  """Turns a marked text into ids with MASK ids at the spans.

  Args:
    text: text with `{{original}}` and / or `[MASK:n]` markers.
    max_length: if given, the most ids the text may make (checked before anything
      of that size is allocated).

  Returns:
    `(ids, original, spans)`: int32 ids `[n]` with MASK at the spans; the ids of
    the original bytes (MASK where a `[MASK:n]` span has no original); and the
    `[start, end)` id ranges of the spans.

  Raises:
    errors.ConfigError: no span is marked, a marker is malformed, a span is empty or
      the text is longer than `max_length` (checked as it is parsed, before the ids of
      a long span are made).
  """

  def check_length(length):
    if max_length is not None and length > max_length:
      raise errors.ConfigError(
        f'The text is at least {length} bytes long with its masks; the model reads '
        f'at most {max_length} bytes (model.max_seq_len).'
      )

  ids, original, spans = [], [], []
  position = 0
  for match in _MARKER.finditer(text):
    before = text[position : match.start()]
    if '{{' in before or '}}' in before:
      raise errors.ConfigError(f'Unbalanced "{{{{" / "}}}}" before {match.group(0)!r}.')
    ids.append(_TOKENIZER.to_int(before))
    original.append(_TOKENIZER.to_int(before))
    start = sum(len(x) for x in ids)
    check_length(start)
    if match.group(1) is not None:
      span = _TOKENIZER.to_int(match.group(1))
      if not span.size:
        raise errors.ConfigError(
          'Empty span "{{}}": put the text to mask between the braces.'
        )
      original.append(span)
      length = span.size
      check_length(start + length)
    else:
      count = match.group(2).strip()
      if not count.isdigit() or int(count) < 1:
        raise errors.ConfigError(
          f'Bad marker {match.group(0)!r}: write [MASK:n] with a positive integer n.'
        )
      length = int(count)
      check_length(start + length)
      original.append(np.full([length], _TOKENIZER.mask_token, np.int32))
    ids.append(np.full([length], _TOKENIZER.mask_token, np.int32))
    spans.append((start, start + length))
    position = match.end()
  rest = text[position:]
  if '{{' in rest or '}}' in rest:
    raise errors.ConfigError('Unbalanced "{{" / "}}" in the text.')
  if not spans:
    raise errors.ConfigError(
      'No span is marked in --text: mark the bytes to predict as '
      '{{original text}} or insert [MASK:n].'
    )
  ids.append(_TOKENIZER.to_int(rest))
  original.append(_TOKENIZER.to_int(rest))
  check_length(sum(len(x) for x in ids))
  return (
    np.concatenate(ids).astype(np.int32),
    np.concatenate(original).astype(np.int32),
    spans,
  )


def load_params(config: ml_collections.ConfigDict, source: str):
  """`(params, state)` of `source` (a file, workdir or `language_bytes`; see
  `experiments.training.weights`), checked against the MLM architecture of `config`."""
  return weights.load(
    mlm.build_model(config), task_lib.example_batch(mlm, config), source
  )


@functools.lru_cache(maxsize=4)
def _byte_logits_fn(model_json: str):
  """`(params, state, inputs, input_mask) -> logits [1, L, 256]` over the byte values
  (reserved ids excluded), for the MLM model of config section `model_json`."""
  model_config = ml_collections.ConfigDict(json.loads(model_json))
  model = hk.transform_with_state(
    lambda batch: mlm.mlm_logits(
      batch['inputs'], batch['input_mask'], model_config, is_training=False
    )
  )

  def byte_logits(params, state, inputs, input_mask):
    logits, _ = model.apply(
      params, state, jax.random.PRNGKey(0), dict(inputs=inputs, input_mask=input_mask)
    )
    return logits[..., bytes_tokenizer.NUM_RESERVED_TOKENS :]

  return byte_logits


@functools.lru_cache(maxsize=4)
def _best_bytes_fn(model_json: str):
  """A jitted `(params, state, inputs, input_mask) -> most likely byte ids [1, L]`."""
  byte_logits = _byte_logits_fn(model_json)
  reserved = bytes_tokenizer.NUM_RESERVED_TOKENS
  return jax.jit(lambda *args: jnp.argmax(byte_logits(*args), axis=-1) + reserved)


def _padded_inputs(ids: np.ndarray, length: int):
  """`ids` `[n]` padded with PAD to `[1, length]`, and the input mask `[1, length]`."""
  n = ids.shape[0]
  if n > length:
    raise errors.ConfigError(
      f'The text is {n} bytes long with its masks; the model reads '
      f'at most {length} bytes (model.max_seq_len).'
    )
  inputs = np.full([1, length], _TOKENIZER.pad_token, np.int32)
  inputs[0, :n] = ids
  input_mask = np.zeros([1, length], np.int32)
  input_mask[0, :n] = 1
  return inputs, input_mask


def predict_masked(params, state, config, ids: np.ndarray) -> np.ndarray:
  """Greedy byte predictions: `ids` with every MASK id replaced, int32 `[n]`."""
  n = ids.shape[0]
  inputs, input_mask = _padded_inputs(ids, config.model.max_seq_len)
  best_bytes = _best_bytes_fn(config.model.to_json())
  best = np.asarray(best_bytes(params, state, inputs, input_mask))[0, :n]
  return np.where(ids == _TOKENIZER.mask_token, best, ids).astype(np.int32)


def fill_mask(checkpoint: str, text: str, config) -> Tuple[str, List[str]]:
  """Loads a checkpoint and fills the spans of `text`.

  Returns:
    `(completed_text, span_predictions)`.
  """
  ids, _, spans = parse_masked_text(text, max_length=config.model.max_seq_len)
  params, state = load_params(config, checkpoint)
  completed = predict_masked(params, state, config, ids)
  return (
    _TOKENIZER.to_string(completed),
    [_TOKENIZER.to_string(completed[a:b]) for a, b in spans],
  )


@functools.lru_cache(maxsize=4)
def _byte_log_probs_fn(model_json: str):
  """A jitted `(params, state, inputs, input_mask) -> log-probabilities [1, L, 256]`
  over the byte values (reserved ids excluded)."""
  byte_logits = _byte_logits_fn(model_json)
  return jax.jit(
    lambda *args: jax.nn.log_softmax(byte_logits(*args).astype(jnp.float32), axis=-1)
  )


def byte_log_probs(params, state, config, ids: np.ndarray) -> np.ndarray:
  """Log-probabilities of the 256 byte values at every position of `ids`: `[n, 256]`."""
  n = ids.shape[0]
  inputs, input_mask = _padded_inputs(ids, config.model.max_seq_len)
  fn = _byte_log_probs_fn(config.model.to_json())
  return np.asarray(fn(params, state, inputs, input_mask), np.float64)[0, :n]


def top_k_sequences(
  log_probs: np.ndarray, k: int, beam: int = 0
) -> List[Tuple[Tuple[int, ...], float]]:
  """The `k` most likely sequences of a factorised distribution, by beam search.

  Args:
    log_probs: `[n, V]` per-position log-probabilities (independent positions).
    k: sequences to return.
    beam: prefixes kept per step (at least k; exact for a factorised distribution).

  Returns:
    `[(values, log_probability)]`, most likely first; ties keep the smaller values
    first.
  """
  if k < 1:
    raise errors.ConfigError(f'top_k must be >= 1, got {k}.')
  width = max(k, beam)
  beams: List[Tuple[Tuple[int, ...], float]] = [((), 0.0)]
  for row in np.asarray(log_probs, np.float64):
    best = np.argsort(-row, kind='stable')[:width]
    candidates = [
      (prefix + (int(v),), score + float(row[v])) for prefix, score in beams for v in best
    ]
    candidates.sort(key=lambda c: (-c[1], c[0]))
    beams = candidates[:width]
  return beams[:k]


def _byte_text(value: int) -> str:
  """A byte as text: the character if printable ASCII, else `\\xNN`."""
  return chr(value) if 32 <= value < 127 else f'\\x{value:02x}'


class TopK(NamedTuple):
  """Fill-mask alternatives.

  Attributes:
    completed: the greedy completion (as `fill_mask`).
    spans: per span, the greedy prediction.
    span_alternatives: per span, `[(text, probability)]`, k most likely first.
    byte_alternatives: per span, per masked byte, `[(byte text, probability)]`.
  """

  completed: str
  spans: List[str]
  span_alternatives: List[List[Tuple[str, float]]]
  byte_alternatives: List[List[List[Tuple[str, float]]]]


def top_k_from_log_probs(
  ids: np.ndarray,
  spans: Sequence[Tuple[int, int]],
  log_probs: np.ndarray,
  k: int,
  beam: int = 0,
) -> TopK:
  """`TopK` of a text's ids and its per-position byte log-probabilities `[n, 256]`."""
  if k < 1:
    raise errors.ConfigError(f'--top_k must be >= 1, got {k}.')
  reserved = bytes_tokenizer.NUM_RESERVED_TOKENS
  greedy = np.argmax(log_probs, axis=-1) + reserved
  completed = np.where(ids == _TOKENIZER.mask_token, greedy, ids).astype(np.int32)
  span_alternatives, byte_alternatives = [], []
  for start, end in spans:
    rows = log_probs[start:end]
    span_alternatives.append(
      [
        (
          _TOKENIZER.to_string(np.asarray(values, np.int32) + reserved),
          float(np.exp(score)),
        )
        for values, score in top_k_sequences(rows, k, beam)
      ]
    )
    per_byte = []
    for row in rows:
      order = np.argsort(-row, kind='stable')[:k]
      per_byte.append([(_byte_text(int(v)), float(np.exp(row[v]))) for v in order])
    byte_alternatives.append(per_byte)
  return TopK(
    completed=_TOKENIZER.to_string(completed),
    spans=[_TOKENIZER.to_string(completed[a:b]) for a, b in spans],
    span_alternatives=span_alternatives,
    byte_alternatives=byte_alternatives,
  )


def fill_mask_top_k(checkpoint: str, text: str, config, k: int, beam: int = 0) -> TopK:
  """Loads a checkpoint and lists the `k` best bytes and spans of each masked span."""
  if k < 1:
    raise errors.ConfigError(f'--top_k must be >= 1, got {k}.')
  ids, _, spans = parse_masked_text(text, max_length=config.model.max_seq_len)
  params, state = load_params(config, checkpoint)
  return top_k_from_log_probs(
    ids, spans, byte_log_probs(params, state, config, ids), k, beam
  )


def format_top_k(result: TopK) -> str:
  """Text lines: per span, its k best spans, then each masked byte's k best values."""
  lines = []
  for i, (alternatives, per_byte) in enumerate(
    zip(result.span_alternatives, result.byte_alternatives), start=1
  ):
    lines.append(f'span {i} top-{len(alternatives)}:')
    for text, prob in alternatives:
      lines.append(f'  {prob:.4f} {text!r}')
    for j, choices in enumerate(per_byte):
      listed = ', '.join(f'{t!r} {p:.4f}' for t, p in choices)
      lines.append(f'  byte {j}: {listed}')
  return '\n'.join(lines)


def top_k_as_dict(result: TopK) -> Dict:
  """A JSON-serialisable form of `TopK`."""
  return dict(
    completed=result.completed,
    spans=[
      dict(
        greedy=greedy,
        top_k=[dict(text=t, probability=p) for t, p in alternatives],
        bytes=[[dict(byte=t, probability=p) for t, p in choices] for choices in per_byte],
      )
      for greedy, alternatives, per_byte in zip(
        result.spans, result.span_alternatives, result.byte_alternatives
      )
    ],
  )
