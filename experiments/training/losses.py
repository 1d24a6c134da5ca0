"""Classification losses and metrics shared by the task modules.

Labels come as integer classes `[B]` or as soft / mixed label distributions `[B, K]`
(MixUp and CutMix produce convex combinations of one-hot vectors). All functions are
jittable and return per-example values unless stated otherwise.

Shape glossary:
  B: batch (any leading shape works; the class axis is the last one).
  K: number of classes.
"""

from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from experiments.training import errors


def smoothed_targets(
  labels: jax.Array, num_classes: int, label_smoothing: float = 0.0
) -> jax.Array:
  """Target distributions `[B, K]`: `(1 - s) * p + s / K`.

  Args:
    labels: integer classes `[B]` or label distributions `[B, K]` (float).
    num_classes: K.
    label_smoothing: s in [0, 1).

  Returns:
    `[B, K]` float32 targets, each row summing to the row sum of `p`.
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise errors.ConfigError(f'label_smoothing={label_smoothing} must be in [0, 1).')
  if jnp.issubdtype(labels.dtype, jnp.integer):
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  else:
    if labels.shape[-1] != num_classes:
      raise ValueError(
        f'soft labels have {labels.shape[-1]} classes in shape {labels.shape}; '
        f'expected num_classes={num_classes}.'
      )
    targets = labels.astype(jnp.float32)
  if label_smoothing:
    total = jnp.sum(targets, axis=-1, keepdims=True)
    targets = (1.0 - label_smoothing) * targets + label_smoothing * total / num_classes
  return targets


def softmax_cross_entropy(
  logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
  """Per-example cross-entropy `-sum_k t_k log softmax(logits)_k`, shape `[B]`.

  Args:
    logits: `[B, K]`.
    labels: integer classes `[B]` or (mixed) label distributions `[B, K]`.
    label_smoothing: mixes the targets with the uniform distribution.
  """
  num_classes = logits.shape[-1]
  targets = smoothed_targets(labels, num_classes, label_smoothing)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(targets * log_probs, axis=-1)


def hard_labels(labels: jax.Array) -> jax.Array:
  """Integer classes `[B]`: the labels themselves, or the argmax of distributions."""
  if jnp.issubdtype(labels.dtype, jnp.integer):
    return labels
  return jnp.argmax(labels, axis=-1)


def topk_correct(
  logits: jax.Array, labels: jax.Array, ks: Sequence[int] = (1, 5)
) -> Dict[str, jax.Array]:
  """Per-example `top_{k}_acc` in {0., 1.}: is the label among the k highest logits.

  Mixed labels count their dominant class. Ties are broken towards lower class ids.
  """
  num_classes = logits.shape[-1]
  labels = hard_labels(labels)
  metrics = {}
  for k in ks:
    if not 1 <= k <= num_classes:
      raise ValueError(
        f'top-k accuracy with k={k} needs 1 <= k <= {num_classes} classes.'
      )
    _, top = jax.lax.top_k(logits, k)  # [B, k]
    metrics[f'top_{k}_acc'] = jnp.any(top == labels[..., None], axis=-1).astype(
      jnp.float32
    )
  return metrics


def masked_mean(values: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
  """Mean of `values` over the entries where `mask` is 1 (all entries without mask)."""
  values = values.astype(jnp.float32)
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def classification_loss(
  logits: jax.Array,
  labels: jax.Array,
  *,
  label_smoothing: float = 0.0,
  ks: Sequence[int] = (1, 5),
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Mean smoothed cross-entropy and batch metrics, the `train_loss` of classifiers.

  Returns:
    `(loss, metrics)`: scalar loss and scalar `loss` (the smoothed loss), `top_{k}_acc`.
  """
  loss = jnp.mean(softmax_cross_entropy(logits, labels, label_smoothing=label_smoothing))
  metrics = {'loss': loss}
  ks = [k for k in ks if k <= logits.shape[-1]]
  for name, value in topk_correct(logits, labels, ks).items():
    metrics[name] = jnp.mean(value)
  return loss, metrics


def classification_eval_outputs(
  logits: jax.Array, labels: jax.Array, ks: Sequence[int] = (1, 5)
) -> Dict[str, jax.Array]:
  """Per-example `loss` (unsmoothed cross-entropy) and `top_{k}_acc`, each `[B]`."""
  outputs = {'loss': softmax_cross_entropy(logits, labels)}
  ks = [k for k in ks if k <= logits.shape[-1]]
  outputs.update(topk_correct(logits, labels, ks))
  return outputs
