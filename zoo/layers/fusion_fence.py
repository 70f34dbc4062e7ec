"""An exact identity that keeps XLA's CPU backend from over-growing YNNPACK fusions.

XLA's CPU backend hands products, reductions and the element-wise work around
them to YNNPACK as one fusion. A YNNPACK fusion reads every operand from
memory, so whatever XLA could have computed on the fly inside its own loops
(a shifted window of a depthwise convolution, a scalar constant broadcast to
a full activation) is first written out as a buffer of its own. Ending a
computation in `library_fusion_fence` stops the fusion there: the op is a
rounding of each value to its own precision (exact), which XLA keeps and
YNNPACK's fusions do not take. Measured uses: benchmarks/NOTES.md, entry 11.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def library_fusion_fence(x: jax.Array) -> jax.Array:
    """x unchanged, bit for bit (any floating dtype), as an op XLA's CPU backend
    keeps and YNNPACK's fusions do not take. Use it on the CPU path only."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"library_fusion_fence takes a floating-point array, got {x.dtype}")
    info = jnp.finfo(x.dtype)
    return lax.reduce_precision(x, exponent_bits=info.nexp, mantissa_bits=info.nmant)


def cpu_library_fusion_fence(x: jax.Array) -> jax.Array:
    """`library_fusion_fence` when lowering for CPU, x itself elsewhere (GPU and
    TPU compilers fuse element-wise work into their own kernels)."""
    return lax.platform_dependent(x, cpu=library_fusion_fence, default=lambda x: x)
