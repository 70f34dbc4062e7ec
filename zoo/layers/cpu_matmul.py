"""Matrix products in the form XLA's CPU backend runs fastest, bfloat16 included.

XLA's CPU backend runs a bfloat16 matrix product in YNNPACK's bfloat16
kernels only when the product asks for a float32 result and neither operand
is transposed (XLA folds a transpose into the product's dimension numbers,
and YNNPACK takes row-major [m, k] x [k, n] only). Any other bfloat16 product
it computes by converting both operands to float32 and calling the float32
product: no faster than float32, plus the conversions. Batch 8, [25088, 256]
x [256, 256] on the Zen 4 development VM (AVX512-BF16; benchmarks/NOTES.md,
entry 23), ms:

| product | float32 | bfloat16 as XLA does it | here |
|---|---|---|---|
| a @ b | 17.7 | 19.8 | 9.0-10.0 |
| g @ b^T (an input gradient) | 17.9 | 19.3 | 10.4 |
| a^T @ g (a kernel gradient) | 24.8 | 27.4 | 10.8 |

Here a bfloat16 product asks for float32 and rounds the result to bfloat16
once (what XLA's converted product computed, up to the order of the sums),
and a transposed bfloat16 operand is first copied to a row-major buffer of
its own (`loop_fusion_barrier`: XLA cannot fold that copy back into the
product). For a^T @ g the narrower of a and g is the one copied (ResNet's
7x7 stem, [100352, 147] patches against a [100352, 64] gradient: 35.5 ms
copying the patches, 25.7 ms copying the gradient and transposing the small
result). Float32 products are the plain ones: Eigen reads a transposed
float32 operand in place.

XLA's CPU backend also rounds the result of every bfloat16 element-wise op,
which costs most in long chains; `matmul_nt(..., float32_result=True)` hands
back the unrounded float32 product for such work (an im2col input gradient
sums nine windows: a 3x3/2 conv at 56x56x128, forward and backward, 64.2 ->
34.7 ms).

`matmul` is differentiable (its gradients are `matmul_nt` and `matmul_tn`);
`matmul_nt` and `matmul_tn` are for backward passes written by hand. All three
are for the CPU path (`lax.platform_dependent`'s cpu branch): GPUs and TPUs
multiply bfloat16 natively whatever the form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers.fusion_fence import loop_fusion_barrier


def is_bfloat16(*operands: jax.Array) -> bool:
    """Whether every operand is bfloat16 (the products this module reshapes)."""
    return all(op.dtype == jnp.bfloat16 for op in operands)


def _wide_product(a: jax.Array, b: jax.Array, dtype: jnp.dtype | None = None) -> jax.Array:
    """[m, k] x [k, n] -> [m, n] summed in float32, rounded once to `dtype` (a's
    dtype if None)."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dtype or a.dtype)


def _row_major_transpose(x: jax.Array, predicate_from: jax.Array | None) -> jax.Array:
    """x^T written to a buffer of its own, which XLA reads as a row-major operand."""
    (x_t,) = loop_fusion_barrier(x.T, predicate_from=predicate_from)
    return x_t


def matmul_nt(g: jax.Array, b: jax.Array, *, float32_result: bool = False) -> jax.Array:
    """g @ b^T: [m, n] x [k, n] -> [m, k] (the gradient of `matmul` by its first operand).

    b is a kernel-sized operand: in bfloat16 its transpose is copied once.
    float32_result: return bfloat16 products unrounded, in float32, for
    element-wise work after them (module docstring)."""
    if not is_bfloat16(g, b):
        return jnp.matmul(g, b.T)
    return _wide_product(g, _row_major_transpose(b, None),
                         jnp.dtype(jnp.float32) if float32_result else None)


def matmul_tn(a: jax.Array, g: jax.Array, *, predicate_from: jax.Array | None = None
              ) -> jax.Array:
    """a^T @ g: [m, k] x [m, n] -> [k, n], contracting the rows (a kernel gradient).

    In bfloat16 the narrower of a and g is copied transposed (as large as
    it). Under jit over a device mesh pass a small replicated array (the
    kernel) as `predicate_from`: the copy's guard reads one element, and an
    element of a batch-sharded activation lives on one device (see
    `loop_fusion_barrier`)."""
    if not is_bfloat16(a, g):
        return jnp.matmul(a.T, g)
    if a.shape[1] > g.shape[1]:
        # Copy the narrower operand: (g^T a)^T, whose transpose is [k, n] only.
        return _wide_product(_row_major_transpose(g, predicate_from), a).T
    return _wide_product(_row_major_transpose(a, predicate_from), g)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b: [m, k] x [k, n] -> [m, n] in the operands' dtype.

    b is the kernel-sized operand (a layer's weights). In bfloat16 the
    products of the forward and backward passes all run in YNNPACK's bfloat16
    kernels (module docstring); in float32 this is `a @ b`.
    """
    if not is_bfloat16(a, b):
        return jnp.matmul(a, b)
    return _bfloat16_matmul(a, b)


@jax.custom_vjp
def _bfloat16_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return _wide_product(a, b)


def _bfloat16_matmul_forward(a, b):
    return _wide_product(a, b), (a, b)


def _bfloat16_matmul_backward(residuals, g):
    a, b = residuals
    return matmul_nt(g, b), matmul_tn(a, g, predicate_from=b)


_bfloat16_matmul.defvjp(_bfloat16_matmul_forward, _bfloat16_matmul_backward)
