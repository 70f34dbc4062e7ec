"""`zoo.layers.cpu_matmul`: bfloat16 products in the form XLA's CPU backend runs
in bfloat16 kernels, float32 ones untouched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.xla_helpers import GATHERING_COLLECTIVES, batch_and_replicated_shardings, dot_operand_types
from zoo import runtime
from zoo.layers.cpu_matmul import matmul, matmul_nt, matmul_tn

# One rounding of a float32 result to bfloat16: half a unit in the last of its 8 bits.
BF16_ROUNDING = 2.0 ** -8


def _random(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _close_to_rounded(got: jax.Array, want_float32: jax.Array) -> None:
    """got (bfloat16) is want rounded once, up to the order of float32 sums."""
    assert got.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(want_float32)))
    np.testing.assert_allclose(got.astype(jnp.float32), want_float32,
                               rtol=BF16_ROUNDING, atol=1e-5 * scale)


def test_float32_products_are_the_plain_ones_bit_for_bit():
    a, b, g = _random((12, 5), 0), _random((5, 7), 1), _random((12, 7), 2)
    assert np.array_equal(matmul(a, b), a @ b)
    assert np.array_equal(matmul_nt(g, b), g @ b.T)
    assert np.array_equal(matmul_tn(a, g), a.T @ g)
    got = jax.grad(lambda a, b: jnp.sum(jnp.sin(matmul(a, b))), argnums=(0, 1))(a, b)
    want = jax.grad(lambda a, b: jnp.sum(jnp.sin(a @ b)), argnums=(0, 1))(a, b)
    for x, y in zip(got, want):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("k,n", [(24, 16), (16, 24)])   # matmul_tn copies a, or g
def test_bfloat16_products_are_the_float32_sums_rounded_once(k, n):
    a, b, g = (_random(shape, seed, jnp.bfloat16)
               for shape, seed in (((40, k), 3), ((k, n), 4), ((40, n), 5)))
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    _close_to_rounded(matmul(a, b), f32(a) @ f32(b))
    _close_to_rounded(matmul_nt(g, b), f32(g) @ f32(b).T)
    _close_to_rounded(matmul_tn(a, g, predicate_from=b), f32(a).T @ f32(g))
    assert matmul_tn(a, g).shape == (k, n)
    unrounded = matmul_nt(g, b, float32_result=True)
    assert unrounded.dtype == jnp.float32
    np.testing.assert_allclose(unrounded, f32(g) @ f32(b).T, rtol=1e-6, atol=1e-5)


def test_bfloat16_gradients_are_the_transposed_products():
    a, b = _random((40, 24), 6, jnp.bfloat16), _random((24, 16), 7, jnp.bfloat16)
    weights = _random((40, 16), 8)
    a_grad, b_grad = jax.grad(
        lambda a, b: jnp.sum(matmul(a, b).astype(jnp.float32) * weights), argnums=(0, 1))(a, b)
    # The cotangent reaching the product is the weights rounded to bfloat16.
    cotangent = weights.astype(jnp.bfloat16).astype(jnp.float32)
    _close_to_rounded(a_grad, cotangent @ b.astype(jnp.float32).T)
    _close_to_rounded(b_grad, a.astype(jnp.float32).T @ cotangent)


def _dot_types_of_step(product, dtype):
    """The operand types of every dot in the compiled forward + backward of
    sum(sin(product(a, b))), with Zoo's CPU compile options."""
    a, b = _random((64, 48), 9, dtype), _random((48, 32), 10, dtype)
    step = jax.grad(lambda a, b: jnp.sum(jnp.sin(product(a, b).astype(jnp.float32))),
                    argnums=(0, 1))
    hlo = jax.jit(step, compiler_options=runtime.compiler_options("cpu")).lower(
        a, b).compile().as_text()
    return dot_operand_types(hlo)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA's CPU program")
def test_every_bfloat16_product_of_a_step_multiplies_bfloat16_on_cpu():
    # Forward, input gradient and kernel gradient: three dots, none of whose
    # operands XLA converted to float32 first.
    assert _dot_types_of_step(matmul, jnp.bfloat16) == [("bf16", "bf16")] * 3
    # The plain product, as XLA compiles it: bfloat16 operands converted to
    # float32. When this fails, XLA multiplies bfloat16 natively by itself and
    # this module may no longer be needed.
    plain = _dot_types_of_step(jnp.matmul, jnp.bfloat16)
    assert len(plain) == 3 and ("bf16", "bf16") not in plain


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="lowers for the CPU mesh")
def test_data_parallel_bfloat16_step_gathers_no_activation():
    # The transposed copies stay on each device's rows; only the kernel
    # gradient's sum over the batch is all-reduced.
    batch_sharded, replicated = batch_and_replicated_shardings()
    a = jax.ShapeDtypeStruct((8 * jax.device_count(), 24), jnp.bfloat16, sharding=batch_sharded)
    b = jax.ShapeDtypeStruct((24, 16), jnp.bfloat16, sharding=replicated)
    step = jax.grad(lambda a, b: jnp.sum(jnp.sin(matmul(a, b).astype(jnp.float32))),
                    argnums=(0, 1))
    hlo = jax.jit(step, out_shardings=(batch_sharded, replicated)).lower(a, b).compile().as_text()
    for collective in GATHERING_COLLECTIVES:
        assert collective not in hlo, collective
    assert hlo.count(" all-reduce(") >= 1
