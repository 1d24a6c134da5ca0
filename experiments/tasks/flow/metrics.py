"""Optical-flow loss and metrics: end-point error (EPE), n-pixel accuracy, KITTI Fl-all.

EPE at a pixel is the Euclidean distance between the predicted and the true flow
vectors. Every figure pools pixels over the whole split (sums per example, ratios of the
totals in `summarize`), so images of equal size weigh equally:

  epe: mean EPE over valid pixels (the figure Sintel and KITTI report);
  epe_all: mean EPE over all pixels of the images (ground truth is used even where
    `valid` is 0; for sparse ground truth such as KITTI only `epe` is meaningful);
  px1, px3, px5: fraction of valid pixels with EPE < 1, 3, 5;
  fl_all: fraction of valid pixels that are outliers, EPE > 3 px and > 5% of the true
    flow magnitude (KITTI 2015's Fl-all);
  zero_epe, zero_epe_all, zero_fl_all: the same for the all-zero prediction, the
    baseline a model must beat.

Shape glossary:
  B: batch.
  H, W: image size.
"""

from typing import Dict

import jax.numpy as jnp
import numpy as np

ACCURACY_THRESHOLDS = (1, 3, 5)
FL_PIXELS = 3.0
FL_FRACTION = 0.05


def end_point_error(prediction, flow):
  """`[..., H, W]` Euclidean distance between `[..., H, W, 2]` flows.

  Differentiable everywhere: where the prediction equals the flow exactly (e.g. a
  zero-initialised model on still pixels) the gradient is 0, not sqrt's infinite slope
  (which would turn the whole gradient into NaN).
  """
  squared = jnp.sum(jnp.square(prediction - flow), axis=-1)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def epe_loss(prediction, flow, valid):
  """Mean EPE over the valid pixels of a batch (0 when no pixel is valid).

  Args:
    prediction, flow: `[B, H, W, 2]`.
    valid: `[B, H, W]` in {0, 1}.

  Returns:
    A scalar.
  """
  epe = end_point_error(prediction, flow)
  return jnp.sum(epe * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def per_example_sums(prediction, flow, valid, region=None) -> Dict[str, jnp.ndarray]:
  """Per-example pixel counts and EPE sums that `summarize` turns into metrics.

  Args:
    prediction, flow: `[B, H, W, 2]`.
    valid: `[B, H, W]`: 1 where the ground truth is valid.
    region: `[B, H, W]`: 1 on the image's pixels, 0 on padding (default all 1).

  Returns:
    `{name: [B]}`.
  """
  if region is None:
    region = jnp.ones_like(valid)
  valid = valid * region
  magnitude = jnp.sqrt(jnp.sum(jnp.square(flow), axis=-1))
  sums = {'num_valid': jnp.sum(valid, axis=(1, 2)), 'num_pixels': jnp.sum(region, (1, 2))}
  for prefix, predicted in (('', prediction), ('zero_', jnp.zeros_like(prediction))):
    epe = end_point_error(predicted, flow)
    sums[prefix + 'epe_sum'] = jnp.sum(epe * valid, axis=(1, 2))
    sums[prefix + 'epe_all_sum'] = jnp.sum(epe * region, axis=(1, 2))
    outlier = (epe > FL_PIXELS) & (epe > FL_FRACTION * magnitude)
    sums[prefix + 'fl_count'] = jnp.sum(outlier * valid, axis=(1, 2))
    if not prefix:
      for n in ACCURACY_THRESHOLDS:
        sums[f'px{n}_count'] = jnp.sum((epe < n) * valid, axis=(1, 2))
  return sums


def summarize(sums: Dict[str, np.ndarray]) -> Dict[str, float]:
  """Split-level metrics (see the module docstring) from `per_example_sums` outputs."""
  total = {k: float(np.sum(np.asarray(v, np.float64))) for k, v in sums.items()}
  valid = max(total['num_valid'], 1.0)
  pixels = max(total['num_pixels'], 1.0)
  out = {}
  for prefix in ('', 'zero_'):
    out[prefix + 'epe'] = total[prefix + 'epe_sum'] / valid
    out[prefix + 'epe_all'] = total[prefix + 'epe_all_sum'] / pixels
    out[prefix + 'fl_all'] = total[prefix + 'fl_count'] / valid
  for n in ACCURACY_THRESHOLDS:
    out[f'px{n}'] = total[f'px{n}_count'] / valid
  out['valid_fraction'] = total['num_valid'] / pixels
  return out


def flow_metrics(prediction, flow, valid=None) -> Dict[str, float]:
  """Metrics of one prediction `[H, W, 2]` against a ground truth (NumPy in and out)."""
  prediction = np.asarray(prediction, np.float32)[None]
  flow = np.asarray(flow, np.float32)[None]
  if prediction.shape != flow.shape:
    raise ValueError(
      f'prediction {prediction.shape[1:]} and ground truth {flow.shape[1:]} differ in '
      'shape.'
    )
  valid = np.ones(flow.shape[:3], np.float32) if valid is None else valid[None]
  sums = per_example_sums(prediction, flow, np.asarray(valid, np.float32))
  return summarize({k: np.asarray(v) for k, v in sums.items()})
