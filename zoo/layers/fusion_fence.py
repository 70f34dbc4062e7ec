"""Exact identities that steer XLA's CPU fusion decisions.

`library_fusion_fence` keeps XLA's CPU backend from over-growing YNNPACK
fusions; `loop_fusion_barrier` keeps it from recomputing a value inside every
loop that reads it, at the cost of a copy; `recompute_fence` does the same for
a loop's output at no copy (a division by a runtime 1.0); `gradient_barrier`
puts a `loop_fusion_barrier` on an activation's gradient in the backward pass.

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

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _require_floating(x: jax.Array, what: str) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{what} takes a floating-point array, got {x.dtype}")


def library_fusion_fence(x: jax.Array) -> jax.Array:
    """x unchanged, bit for bit (any floating dtype), as an op XLA's CPU backend
    keeps and YNNPACK's fusions do not take. Use it on the CPU path only."""
    _require_floating(x, "library_fusion_fence")
    info = jnp.finfo(x.dtype)
    return lax.reduce_precision(x, exponent_bits=info.nexp, mantissa_bits=info.nmant)


def cpu_library_fusion_fence(x: jax.Array) -> jax.Array:
    """`library_fusion_fence` when lowering for CPU, x itself elsewhere (GPU and
    TPU compilers fuse element-wise work into their own kernels)."""
    return lax.platform_dependent(x, cpu=library_fusion_fence, default=lambda x: x)


def loop_fusion_barrier(*arrays: jax.Array,
                        predicate_from: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """The floating-point arrays unchanged, bit for bit, each written to a
    buffer of its own that its consumers read: XLA fuses nothing across the
    barrier.

    XLA fuses an element-wise producer (a BatchNorm gradient, a pad) into
    every loop that consumes it, and when several reductions read the same
    value each recomputes it from the producer's inputs: EfficientNet's
    depthwise kernel gradients read the cotangent in five reductions and ran
    2x slower for it (benchmarks/NOTES.md, entry 15).
    `lax.optimization_barrier` does not prevent that on CPU (XLA expands it
    before fusing); a conditional does. The predicate is read from the data
    (each array's middle element equals itself), so XLA cannot pick a branch
    at compile time; the branches differ (the arrays, or their
    `library_fusion_fence`, taken when one of those elements is a NaN), so
    XLA cannot merge them. The cost is a copy per array. Use it on the CPU
    path only, where re-reading a buffer beats recomputing it several times
    (on resnet50's residual stream the copies cost more: NOTES entry 15).

    Args:
      arrays: floating-point arrays.
      predicate_from: read the predicate from this array's middle element
        instead. Under jit over a device mesh, pass a small replicated array
        (a kernel): an element of a batch-sharded activation lives on one
        device, and every device would have to fetch it first.
    """
    if not arrays:
        raise ValueError("loop_fusion_barrier needs at least one array")
    sources = arrays if predicate_from is None else (predicate_from,)
    # Middle elements: a padded array's first one is a constant XLA would fold.
    middles = [jnp.ravel(x)[x.size // 2] for x in sources]
    predicate = functools.reduce(jnp.logical_and, [m == m for m in middles])
    return lax.cond(predicate, lambda *a: a,
                    lambda *a: tuple(library_fusion_fence(x) for x in a), *arrays)


def recompute_fence(x: jax.Array, anchor: jax.Array, *, per_element: bool = False) -> jax.Array:
    """x unchanged (bit for bit but subnormals, below), as a value XLA's CPU
    backend writes once and every consumer reads, instead of recomputing it
    inside each consumer's loop.

    XLA duplicates a cheap element-wise producer into every loop fusion that
    reads it. Along a residual stream the producer of a block's input is such
    a fusion of the block before, so the fusion that writes each block's output
    recomputes the outputs of all earlier blocks of the stage from their
    convolutions (resnet50's stage-3 sixth block read 7 full-size arrays
    instead of 2, its backward up to 9). XLA does not duplicate an expensive
    producer, and a floating-point division is one: this is x / one, with one
    a runtime 1.0 that XLA cannot fold, the first element of `anchor` times 0
    plus 1. x / 1 is x exactly, and so is the gradient (the cotangent / 1),
    but for subnormals, which XLA's CPU arithmetic (a ReLU's too) flushes to
    zero anyway. Unlike `loop_fusion_barrier` it costs no copy: the division
    runs inside the loop that writes x.

    Args:
      x: a floating-point array.
      anchor: a small array replicated on every device (a kernel): under jit
        over a device mesh, an element of a batch-sharded activation would
        first be fetched from the one device that holds it. A non-finite
        first element (a diverged parameter) makes x NaN.
      per_element: divide by x * 0 + 1.0 instead of a broadcast 1.0. In some
        programs (ConvNeXt's inference) XLA rewrites a division by a
        broadcast scalar into a multiplication by its reciprocal, which it
        duplicates again; a per-element divisor it keeps. The price: an
        infinity in x becomes NaN (inf * 0 is NaN), so use it where what
        follows would make NaN of an infinity anyway (a normalisation).

    Returns:
      x; on GPU and TPU x itself, untouched (their compilers make their own
      fusion choices).
    """
    _require_floating(x, "recompute_fence")

    def divide_by_one(x: jax.Array, anchor: jax.Array) -> jax.Array:
        one = lax.stop_gradient(jnp.ravel(anchor)[0]).astype(x.dtype) * 0 + 1
        if per_element:
            one = lax.stop_gradient(x * 0) + one
        return x / one

    return lax.platform_dependent(x, anchor, cpu=divide_by_one,
                                  default=lambda x, anchor: x)


@jax.custom_vjp
def _gradient_barrier(x: jax.Array, anchor: jax.Array) -> jax.Array:
    return x


def _gradient_barrier_forward(x, anchor):
    return x, anchor


def _gradient_barrier_backward(anchor, grad):
    (grad,) = loop_fusion_barrier(grad, predicate_from=anchor)
    return grad, jnp.zeros_like(anchor)


_gradient_barrier.defvjp(_gradient_barrier_forward, _gradient_barrier_backward)


def gradient_barrier(x: jax.Array, anchor: jax.Array) -> jax.Array:
    """x itself; in the backward pass, x's incoming gradient is written once to
    a buffer of its own (`loop_fusion_barrier`) before anything reads it.

    The gradient reaching an activation is often a sum that XLA's CPU backend
    fuses into its consumer. A consumer that reads each element several times
    then recomputes the sum each time: a 3x3 max-pool's backward reads its
    gradient once per window tap, and DenseNet's stem pool, whose gradient sums
    the first block's six layers, spent 170 ms of a 1.5 s training step there
    (benchmarks/NOTES.md, entry 18). The barrier costs a copy of the gradient.

    Args:
      x: a floating-point array.
      anchor: a small array replicated on every device (a kernel); the
        barrier's predicate is read from it, so that under jit over a device
        mesh no device fetches an element of a batch-sharded gradient.

    Returns:
      x. Only the CPU program has the barrier; GPU and TPU differentiate x as is.
    """
    _require_floating(x, "gradient_barrier")
    return lax.platform_dependent(x, anchor, cpu=_gradient_barrier,
                                  default=lambda x, anchor: x)
