"""A `dot_general` for `nn.Dense` on tokens or pixels: one matrix product.

`nn.Dense(features, dot_general=flat_dot_general)` has the parameters and
results of a plain `nn.Dense`; only the computation's form changes. The input
[..., in_features] is flattened to [rows, in_features] (a free reshape) before
the product, so the kernel gradient, [in_features, out_features], contracts a
single dimension. Given the leading dimensions as several contracting
dimensions instead, XLA's CPU backend copies both operands into a transposed
order before it calls the matrix product (benchmarks/NOTES.md, entry 5).
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax

from zoo.layers.cpu_matmul import is_bfloat16, matmul

DimensionNumbers = tuple[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...], tuple[int, ...]]]


def flat_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: DimensionNumbers,
                     precision: Any = None, preferred_element_type: Any = None) -> jax.Array:
    """`lax.dot_general`; [..., k] x [k, n] -> [..., n] is computed as [rows, k] x [k, n].

    Args:
      lhs: [..., k], e.g. [batch, tokens, k] or [batch, height, width, k].
      rhs: [k, n].
      dimension_numbers, precision, preferred_element_type: as `lax.dot_general`.

    Returns:
      [..., n]. Any other contraction is passed to `lax.dot_general` unchanged.
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    dense_like = (lhs.ndim > 2 and rhs.ndim == 2 and not lhs_batch and not rhs_batch
                  and tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,))
    if not dense_like:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
    def rows_times(rows: jax.Array, rhs: jax.Array) -> jax.Array:
        return lax.dot_general(rows, rhs, (((1,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=preferred_element_type)

    rows = lhs.reshape(-1, lhs.shape[-1])
    if preferred_element_type is None and is_bfloat16(rows, rhs):
        # On CPU, the form XLA runs in bfloat16 kernels (zoo.layers.cpu_matmul).
        out = lax.platform_dependent(rows, rhs, cpu=matmul, default=rows_times)
    else:
        out = rows_times(rows, rhs)
    return out.reshape(*lhs.shape[:-1], rhs.shape[1])
