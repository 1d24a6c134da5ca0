"""The product-forms benchmark: its products, their values on both libraries, the table."""

import numpy as np
import pytest

from experiments.benchmarks import product_forms


def _cases():
  return product_forms.product_cases(batch=3, length=5, head=7, rows=11, width=9)


def test_cases_count_flops_of_their_shapes():
  cases = _cases()
  assert sorted(cases) == sorted(
    f'{kind} {form}' for kind in ('batched', 'dense') for form in ('NN', 'NT', 'TN')
  )
  for equation, shapes, flops in cases.values():
    operands = [np.ones(s) for s in shapes]
    # Every output element of an all-ones product is the contracted length.
    out = np.einsum(equation, *operands)
    contracted = int(out.flat[0])
    assert flops == 2 * out.size * contracted, equation
  # Hand-counted: 2 x G x T x S x D and 2 x P x C x K.
  assert cases['batched TN'][2] == 2 * 3 * 5 * 5 * 7
  assert cases['dense TN'][2] == 2 * 11 * 9 * 9


def test_measure_gives_numpy_values_on_both_libraries():
  records = product_forms.measure(_cases(), runs=2, warmup=1)
  assert len(records) == 6 * len(product_forms.LIBRARIES)
  for record in records:
    assert record['max_rel_error'] < 1e-5, record
    assert 0 < record['min_s'] <= record['median_s']
    assert record['gflop_per_s'] == pytest.approx(
      record['flops'] / record['median_s'] / 1e9
    )
  table = product_forms.format_table(records)
  lines = table.splitlines()
  assert len(lines) == 2 + 6
  assert lines[0].count('GFLOP/s') == len(product_forms.LIBRARIES)
  assert '| batched NT | (3, 5, 7) x (3, 5, 7) |' in table


def test_eigen_option_moves_products_off_ynnpack():
  """The option string parses, and with it no product is a YNNPACK fusion."""
  shapes = ((3, 5, 5), (3, 5, 7))
  default = product_forms._compile('gts,gsd->gtd', shapes, None).as_text()
  eigen = product_forms._compile(
    'gts,gsd->gtd', shapes, product_forms.LIBRARIES['eigen_dots']
  ).as_text()
  assert '__ynn_fusion' not in eigen
  # Where this XLA build hands batched products to YNNPACK, the default differs.
  if '__ynn_fusion' in default:
    assert default != eigen
