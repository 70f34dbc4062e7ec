"""`zoo.layers.activations`: flax's activations for float32, computed in
float32 and rounded once for low-precision input."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.activations import hard_sigmoid, hard_swish, in_float32, sigmoid, silu

PAIRS = [(silu, nn.silu), (sigmoid, nn.sigmoid), (hard_swish, nn.hard_swish),
         (hard_sigmoid, nn.hard_sigmoid)]
POINTS = jnp.linspace(-8, 8, 641, dtype=jnp.float32)


@pytest.mark.parametrize("ours,flax_fn", PAIRS)
def test_float32_is_flax_bit_for_bit(ours, flax_fn):
    np.testing.assert_array_equal(jax.jit(ours)(POINTS), jax.jit(flax_fn)(POINTS))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("ours,flax_fn", PAIRS)
def test_low_precision_is_the_float32_result_rounded_once(ours, flax_fn, dtype):
    # Op by op (flax's function on bfloat16 under XLA) the SiLU rounds after
    # each of its four ops and differs from this at many of these points.
    x = POINTS.astype(dtype)
    got = jax.jit(ours)(x)
    assert got.dtype == dtype
    want = flax_fn(x.astype(jnp.float32)).astype(dtype)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("ours,flax_fn", PAIRS)
def test_bfloat16_gradient_is_the_float32_gradient_rounded_once(ours, flax_fn):
    x = POINTS.astype(jnp.bfloat16)
    got = jax.jit(jax.grad(lambda x: jnp.sum(ours(x).astype(jnp.float32))))(x)
    assert got.dtype == jnp.bfloat16
    want = jax.grad(lambda x: jnp.sum(flax_fn(x)))(x.astype(jnp.float32)).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_in_float32_passes_other_dtypes_through():
    seen = []

    def record(x):
        seen.append(x.dtype)
        return x
    wrapped = in_float32(record)
    assert wrapped(jnp.ones(2, jnp.float32)).dtype == jnp.float32
    assert wrapped(jnp.ones(2, jnp.int32)).dtype == jnp.int32
    assert wrapped(jnp.ones(2, jnp.bfloat16)).dtype == jnp.bfloat16
    assert seen == [jnp.float32, jnp.int32, jnp.float32]
    assert wrapped.__name__ == "record"
