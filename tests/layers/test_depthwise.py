"""The CPU depthwise convolution equals XLA's, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.xla_helpers import (GATHERING_COLLECTIVES, batch_and_replicated_shardings,
                                multi_output_loop_fusion_operands)
from zoo.layers.depthwise import (depthwise_kernel_gradient, largest_divisor,
                                  shifted_depthwise_conv)


def _xla(x, kernel, strides, padding, dilation=(1, 1)):
    return lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=x.shape[-1])


@pytest.mark.parametrize("kernel_size,strides,padding,dilation", [
    (3, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (3, (2, 2), ((1, 1), (1, 1)), (1, 1)),      # MobileNet / EfficientNet downsampling
    (5, (2, 2), ((2, 2), (2, 2)), (1, 1)),
    (7, (1, 1), ((3, 3), (3, 3)), (1, 1)),      # ConvNeXt
    (3, (1, 2), ((0, 1), (2, 0)), (2, 1)),      # asymmetric everything
])
def test_shifted_equals_xla_values_and_gradients(kernel_size, strides, padding, dilation):
    rng = np.random.default_rng(kernel_size)
    x = jnp.asarray(rng.standard_normal((2, 11, 10, 6)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((kernel_size, kernel_size, 1, 6)), jnp.float32)
    want = _xla(x, kernel, strides, padding, dilation)
    got = shifted_depthwise_conv(x, kernel, strides, padding, dilation)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    def loss(f):
        return lambda x, k: jnp.sum(jnp.sin(f(x, k)))
    grads_want = jax.grad(loss(lambda x, k: _xla(x, k, strides, padding, dilation)),
                          argnums=(0, 1))(x, kernel)
    grads_got = jax.grad(loss(lambda x, k: shifted_depthwise_conv(x, k, strides, padding,
                                                                  dilation)),
                         argnums=(0, 1))(x, kernel)
    for g, w in zip(grads_got, grads_want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_bfloat16_accumulates_in_float32():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 8, 8, 3)), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((3, 3, 1, 3)), jnp.bfloat16)
    out = shifted_depthwise_conv(x, kernel, (1, 1), ((1, 1), (1, 1)))
    assert out.dtype == jnp.bfloat16
    want = _xla(x.astype(jnp.float32), kernel.astype(jnp.float32), (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_allclose(out.astype(jnp.float32), want, rtol=2e-2, atol=2e-2)

    # Gradients: float32 sums of bfloat16 products, returned in bfloat16.
    def loss(f, dtype):
        return lambda x, k: jnp.sum(f(x.astype(dtype), k.astype(dtype)).astype(jnp.float32) ** 2)
    got = jax.grad(loss(lambda x, k: shifted_depthwise_conv(x, k, (1, 1), ((1, 1), (1, 1))),
                        jnp.bfloat16), argnums=(0, 1))(x, kernel)
    want = jax.grad(loss(lambda x, k: _xla(x, k, (1, 1), ((1, 1), (1, 1))), jnp.float32),
                    argnums=(0, 1))(x.astype(jnp.float32), kernel.astype(jnp.float32))
    for g, w in zip(got, want):
        assert g.dtype == jnp.bfloat16
        scale = float(jnp.abs(w).max())
        np.testing.assert_allclose(g.astype(jnp.float32), w, rtol=5e-2, atol=5e-2 * scale)


def test_windows_are_not_written_out_when_a_reduction_follows():
    # ConvNeXt's 7x7 depthwise conv feeds a LayerNorm. Without
    # library_fusion_fence, XLA's CPU backend pulls the multiply-adds into the
    # LayerNorm's YNNPACK fusion and writes every shifted window out first
    # (44 MB of scratch here, against 5 MB with the fence).
    x = jax.ShapeDtypeStruct((2, 56, 56, 96), jnp.float32)
    kernel = jax.ShapeDtypeStruct((7, 7, 1, 96), jnp.float32)

    def conv_then_layer_norm(x, kernel):
        y = shifted_depthwise_conv(x, kernel, (1, 1), ((3, 3), (3, 3)))
        mean = y.mean(-1, keepdims=True)
        return (y - mean) * lax.rsqrt(((y - mean) ** 2).mean(-1, keepdims=True) + 1e-6)

    compiled = jax.jit(conv_then_layer_norm).lower(x, kernel).compile()
    input_bytes = 2 * 56 * 56 * 96 * 4
    # The padded input and one output's worth of buffers, not 28 windows.
    assert compiled.memory_analysis().temp_size_in_bytes < 4 * input_bytes


def test_largest_divisor():
    divisors = [largest_divisor(n, 8) for n in (1, 7, 8, 22, 24, 96, 11, 13)]
    assert divisors == [1, 7, 8, 2, 8, 8, 1, 1]
    assert largest_divisor(12, 5) == 4


@pytest.mark.parametrize("batch,height,kernel_hw,strides", [
    (2, 16, (3, 3), (1, 1)),   # 16 output rows per image: sums of 8, then of the partials
    (1, 11, (3, 3), (1, 1)),   # 11 rows (prime): all rows in one sum
    (2, 9, (5, 5), (2, 2)),    # 5 rows: sums of 5
    (3, 12, (3, 1), (1, 1)),   # a kh x 1 kernel (one reduction over the column); sums of 6
    (2, 6, (1, 1), (1, 1)),    # a single tap
])
def test_kernel_gradient_matches_xla_for_every_row_split(batch, height, kernel_hw, strides):
    rng = np.random.default_rng(height)
    channels = 5
    x = jnp.asarray(rng.standard_normal((batch, height, height + 1, channels)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((*kernel_hw, 1, channels)), jnp.float32)
    padding = tuple((k // 2, k // 2) for k in kernel_hw)
    out, pullback = jax.vjp(lambda k: _xla(x, k, strides, padding), kernel)
    grad = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)
    (want,) = pullback(grad)
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    got = depthwise_kernel_gradient(padded, grad, kernel, strides, (1, 1))
    assert got.shape == (kernel_hw[0] * kernel_hw[1], channels)
    np.testing.assert_allclose(got.reshape(kernel.shape), want, rtol=1e-4, atol=1e-4)


def test_kernel_gradient_does_not_write_the_windows_out():
    # One sum per tap made XLA's CPU backend copy every shifted window into a
    # buffer of its own before YNNPACK's reduction: 47x the input in scratch
    # for this 7x7 gradient. The variadic reductions read them in place.
    x = jax.ShapeDtypeStruct((8, 28, 28, 32), jnp.float32)
    kernel = jax.ShapeDtypeStruct((7, 7, 1, 32), jnp.float32)

    def kernel_grad(x, kernel, r):
        return jax.grad(lambda k: jnp.sum(
            shifted_depthwise_conv(x, k, (1, 1), ((3, 3), (3, 3))) * r))(kernel)

    compiled = jax.jit(kernel_grad).lower(x, kernel, x).compile()
    input_bytes = 8 * 28 * 28 * 32 * 4
    # The padded input, the 49 taps' partial sums (49 / 8 inputs) and change.
    assert compiled.memory_analysis().temp_size_in_bytes < 12 * input_bytes


def test_kernel_gradient_reads_one_cotangent_buffer():
    # The cotangent here is an element-wise function of three arrays, as a
    # BatchNorm gradient is. Each of the three reductions (one per kernel row)
    # must read it and the padded input from a buffer, not recompute it from
    # the three arrays (2x slower in EfficientNet's blocks).
    shape = (4, 12, 12, 16)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    kernel = jax.ShapeDtypeStruct((3, 3, 1, 16), jnp.float32)

    def kernel_grad(x, kernel, a, b, c):
        grad = a * b - c * jnp.mean(a, axis=(0, 1, 2))
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return depthwise_kernel_gradient(padded, grad, kernel, (1, 1), (1, 1))

    hlo = jax.jit(kernel_grad).lower(x, kernel, x, x, x).compile().as_text()
    reductions = multi_output_loop_fusion_operands(hlo)
    assert len(reductions) == 3, hlo
    for operands in reductions:
        assert operands.count("%") == 2, operands


def test_kernel_gradient_keeps_data_parallel_training_local():
    # Under jit over a mesh, the batch is sharded. Splitting rows across the
    # batch axis made XLA gather the activations onto every device (228
    # all-gathers in mobilenet_v3_small's step), and a predicate read from an
    # activation made each conditional fetch an element from one device.
    # Only the kernel gradient's all-reduce over the batch may remain.
    batch_sharded, replicated = batch_and_replicated_shardings()
    x = jax.ShapeDtypeStruct((jax.device_count(), 16, 16, 8), jnp.float32, sharding=batch_sharded)
    kernel = jax.ShapeDtypeStruct((3, 3, 1, 8), jnp.float32, sharding=replicated)

    def kernel_grad(x, kernel, r):
        return jax.grad(lambda k: jnp.sum(
            shifted_depthwise_conv(x, k, (1, 1), ((1, 1), (1, 1))) * r))(kernel)

    hlo = jax.jit(kernel_grad, out_shardings=replicated).lower(x, kernel, x).compile().as_text()
    assert "conditional(" in hlo
    for collective in GATHERING_COLLECTIVES:
        assert collective not in hlo, collective
    assert "all-reduce" in hlo
