"""Counting the floating-point operations of a JAX function from its jaxpr.

XLA's cost analysis counts the body of a loop once, so it under-counts a model whose
weight-shared blocks run in a `scan`. Here the count walks the jaxpr instead: a `scan`
body counts `length` times, a `cond` counts its most expensive branch, and calls, custom
derivatives, rematerialisation and `pmap` bodies are entered. Only matrix products and
convolutions are counted (2 FLOPs per multiply-add), the convention of model-FLOP
figures: elementwise work (softmax, LayerNorm, GELU, the optimizer) is left out.

A `while_loop` has no static trip count; its body is counted once and the loop is
reported in `FlopCount.while_loops`, so a caller can tell that the count is a lower bound.
"""

import math
from typing import Any, Callable, NamedTuple

import jax
from jax.extend import core as jax_core


class FlopCount(NamedTuple):
  """Result of `count_flops`.

  Attributes:
    flops: matmul + convolution FLOPs of one call (per device inside a `pmap`).
    while_loops: number of `while_loop`s whose bodies were counted only once.
  """

  flops: int
  while_loops: int


def _dot_general_flops(eqn) -> int:
  lhs, _ = (v.aval for v in eqn.invars)
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  contracted = math.prod(lhs.shape[d] for d in lhs_contract)
  return 2 * math.prod(eqn.outvars[0].aval.shape) * contracted


def _conv_flops(eqn) -> int:
  _, rhs = (v.aval for v in eqn.invars)
  dimension_numbers = eqn.params['dimension_numbers']
  rhs_spec = dimension_numbers.rhs_spec  # (out feature, in feature, *spatial)
  per_output = rhs.shape[rhs_spec[1]] * math.prod(rhs.shape[d] for d in rhs_spec[2:])
  return 2 * math.prod(eqn.outvars[0].aval.shape) * per_output


def _sub_jaxprs(value):
  """Jaxprs held by an equation parameter (a jaxpr, a closed jaxpr or a tuple of them)."""
  if isinstance(value, jax_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def _count(jaxpr) -> FlopCount:
  flops = 0
  while_loops = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      flops += _dot_general_flops(eqn)
      continue
    if name == 'conv_general_dilated':
      flops += _conv_flops(eqn)
      continue
    if name == 'cond':
      branches = [_count(b) for b in _sub_jaxprs(eqn.params['branches'])]
      flops += max(b.flops for b in branches)
      while_loops += sum(b.while_loops for b in branches)
      continue
    multiplier = 1
    if name == 'scan':
      multiplier = int(eqn.params['length'])
    elif name == 'while':
      while_loops += 1
    for value in eqn.params.values():
      for sub in _sub_jaxprs(value):
        inner = _count(sub)
        flops += multiplier * inner.flops
        while_loops += inner.while_loops
  return FlopCount(flops=flops, while_loops=while_loops)


def count_flops(fn: Callable[..., Any], *args, **kwargs) -> FlopCount:
  """Matmul and convolution FLOPs of one call `fn(*args, **kwargs)`, from its jaxpr.

  Args:
    fn: any traceable function (jitted, pmapped or plain).
    *args: arguments or `jax.ShapeDtypeStruct`s; nothing is computed.
    **kwargs: keyword arguments of `fn`.
  """
  closed = jax.make_jaxpr(fn)(*args, **kwargs)
  return _count(closed.jaxpr)
