"""The CPU depthwise convolution equals XLA's, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from zoo.layers.depthwise import shifted_depthwise_conv


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
