"""library_fusion_fence: an exact identity, kept on CPU, absent elsewhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.fusion_fence import (cpu_library_fusion_fence, library_fusion_fence,
                                     loop_fusion_barrier)
from zoo.layers.mlp import gelu

EDGE_VALUES = [0.0, -0.0, 1e-45, 1.2e-38, 3.4e38, 1.0 + 2.0 ** -23, -7.25, np.inf, -np.inf]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_fence_returns_every_bit_unchanged(dtype):
    values = jnp.asarray(EDGE_VALUES, jnp.float32).astype(dtype)
    for fence in (library_fusion_fence, cpu_library_fusion_fence):
        fenced = jax.jit(fence)(values)
        assert fenced.dtype == values.dtype
        np.testing.assert_array_equal(np.asarray(fenced).view(np.uint8),
                                      np.asarray(values).view(np.uint8))
    assert bool(jnp.isnan(jax.jit(library_fusion_fence)(jnp.float32(np.nan))))


def test_fence_rejects_integers():
    with pytest.raises(TypeError, match="floating-point"):
        library_fusion_fence(jnp.arange(3))


def test_fence_is_in_the_cpu_program_only():
    x = jnp.ones((4, 8), jnp.float32)
    cpu = jax.jit(gelu).lower(x).compile().as_text()
    assert "reduce-precision" in cpu, "the fence must survive XLA's CPU optimisations"
    gpu = jax.export.export(jax.jit(gelu), platforms=["cuda"])(x).mlir_module()
    assert "reduce_precision" not in gpu
    assert "erf" in gpu


def test_loop_fusion_barrier_returns_every_bit_unchanged():
    values = jnp.asarray(EDGE_VALUES, jnp.float32)
    with_nan = values.at[len(EDGE_VALUES) // 2].set(np.nan)  # takes the other branch
    for a in (values, with_nan):
        b = jnp.asarray(EDGE_VALUES[::-1], jnp.bfloat16)
        got = jax.jit(loop_fusion_barrier)(a, b)
        for g, want in zip(got, (a, b)):
            assert g.dtype == want.dtype
            np.testing.assert_array_equal(np.asarray(g).view(np.uint8),
                                          np.asarray(want).view(np.uint8))
    nan_key = jnp.asarray([1.0, np.nan, 2.0])  # predicate from another array: false
    (got,) = jax.jit(lambda a, k: loop_fusion_barrier(a, predicate_from=k))(values, nan_key)
    np.testing.assert_array_equal(np.asarray(got).view(np.uint8), np.asarray(values).view(np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        loop_fusion_barrier()


def test_loop_fusion_barrier_survives_cpu_compilation():
    # A compile-time predicate or identical branches would let XLA drop the
    # conditional, and with it the barrier (its effect on fusion:
    # tests/layers/test_depthwise.py).
    x = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    padded = lambda x: loop_fusion_barrier(jnp.pad(x, 1) * 2.0)[0]  # noqa: E731
    assert "conditional(" in jax.jit(padded).lower(x).compile().as_text()
