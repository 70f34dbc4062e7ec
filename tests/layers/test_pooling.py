"""Pooling helpers against straightforward numpy loops written from PyTorch's docs."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.pooling import adaptive_avg_pool, global_avg_pool, max_pool, max_pool_ceil


def reference_adaptive_avg_pool(x, out_h, out_w):
    batch, height, width, channels = x.shape
    y = np.zeros((batch, out_h, out_w, channels), np.float64)
    for i in range(out_h):
        h0, h1 = math.floor(i * height / out_h), math.ceil((i + 1) * height / out_h)
        for j in range(out_w):
            w0, w1 = math.floor(j * width / out_w), math.ceil((j + 1) * width / out_w)
            y[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return y


def reference_max_pool_ceil(x, k, s, p):
    batch, height, width, channels = x.shape

    def out_size(n):
        out = math.ceil((n + 2 * p - k) / s) + 1
        return out - 1 if (out - 1) * s >= n + p else out

    y = np.zeros((batch, out_size(height), out_size(width), channels), x.dtype)
    for i in range(y.shape[1]):
        h0, h1 = max(i * s - p, 0), min(i * s - p + k, height)
        for j in range(y.shape[2]):
            w0, w1 = max(j * s - p, 0), min(j * s - p + k, width)
            y[:, i, j] = x[:, h0:h1, w0:w1].max(axis=(1, 2))
    return y


@pytest.mark.parametrize("size,out", [
    ((8, 8), (4, 4)),    # multiple: fast path
    ((6, 6), (6, 6)),    # identity
    ((7, 5), (3, 2)),    # overlapping windows of unequal size
    ((7, 7), (6, 6)),    # AlexNet at 255x255 input: windows of 2 overlapping by 1
    ((1, 1), (7, 7)),    # VGG at its minimum size: the pixel is repeated
    ((3, 10), (7, 4)),   # upsampling on one axis, pooling on the other
])
def test_adaptive_avg_pool_matches_reference(size, out):
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    y = adaptive_avg_pool(jnp.asarray(x), out)
    assert y.shape == (2, *out, 3)
    np.testing.assert_allclose(np.asarray(y), reference_adaptive_avg_pool(x, *out),
                               rtol=1e-5, atol=1e-6)


def test_adaptive_avg_pool_is_differentiable_on_the_general_path():
    x = jnp.arange(2 * 5 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 5, 1)
    grad = jax.grad(lambda x: adaptive_avg_pool(x, 3).sum())(x)
    # Each pixel contributes 1/len(window) to every window that holds it.
    rows = np.array([1 / 2, 1 / 2 + 1 / 3, 1 / 3, 1 / 3 + 1 / 2, 1 / 2])
    np.testing.assert_allclose(np.asarray(grad)[0, :, :, 0], np.outer(rows, rows), rtol=1e-6)


def test_global_avg_pool():
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 4)).astype(np.float32)
    y = global_avg_pool(jnp.asarray(x))
    assert y.shape == (2, 4)
    np.testing.assert_allclose(np.asarray(y), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size,k,s,p", [
    (112, 3, 2, 0),  # GoogLeNet's pools: 112 -> 56 (floor mode would give 55)
    (14, 2, 2, 0),   # exact fit: same as floor mode
    (7, 3, 2, 0),
    (8, 3, 2, 1),    # the last window would start in the right padding: dropped
    (28, 3, 1, 1),
    (5, 2, 3, 0),    # window smaller than stride: trailing pixel in no window
    (1, 1, 1, 0),
])
def test_max_pool_ceil_matches_reference(size, k, s, p):
    x = np.random.default_rng(2).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    y = max_pool_ceil(jnp.asarray(x), k, s, p)
    np.testing.assert_array_equal(np.asarray(y), reference_max_pool_ceil(x, k, s, p))


def test_max_pool_ceil_is_differentiable_under_jit():
    x = jax.random.normal(jax.random.key(0), (1, 5, 5, 2))
    grad = jax.jit(jax.grad(lambda x: max_pool_ceil(x, 3, 2, 1).sum()))(x)
    # One unit of gradient per output cell (3x3 cells x 2 channels) goes to its max.
    assert float(grad.sum()) == 18.0 and np.all(np.asarray(grad) >= 0)


def test_max_pool_ceil_padding_never_wins_for_negative_inputs():
    x = -jnp.ones((1, 4, 4, 1))
    assert float(max_pool_ceil(x, 3, 2, 1).max()) == -1.0


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 3, "stride": 2, "padding": 2}, "padding <= window // 2"),
    ({"window": 0, "stride": 2}, "window >= 1"),
    ({"window": 9, "stride": 1}, "smaller than the 9-pixel window"),
])
def test_max_pool_ceil_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        max_pool_ceil(jnp.ones((1, 4, 4, 1)), **kwargs)


def _weighted_sum(pool):
    """A loss whose gradient differs per output cell, so misrouting shows."""
    def loss(x):
        y = pool(x)
        return (y * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)).sum()
    return loss


@pytest.mark.parametrize("window,strides,padding", [
    ((3, 3), (2, 2), ((1, 1), (1, 1))),    # ResNet / DenseNet stem
    ((2, 2), (2, 2), "VALID"),             # VGG, LeNet: windows side by side
    ((3, 3), (2, 2), "VALID"),             # AlexNet, Inception: trailing pixels unpooled
    ((3, 3), (1, 1), "SAME"),
    ((3, 2), (2, 1), ((1, 0), (0, 1))),    # asymmetric window, stride and padding
])
def test_max_pool_matches_flax_values_and_gradients_with_ties(window, strides, padding):
    # After a ReLU most windows hold several zeros: the gradient must go to
    # the first of the tied taps, as XLA's select-and-scatter (and PyTorch) do.
    x = jnp.maximum(jax.random.normal(jax.random.key(3), (2, 10, 9, 3)), 0.0)
    ours = functools.partial(max_pool, window_shape=window, strides=strides, padding=padding)
    flax = functools.partial(nn.max_pool, window_shape=window, strides=strides, padding=padding)
    np.testing.assert_array_equal(np.asarray(jax.jit(ours)(x)), np.asarray(jax.jit(flax)(x)))
    grad = jax.jit(jax.grad(_weighted_sum(ours)))(x)
    expected = jax.jit(jax.grad(_weighted_sum(flax)))(x)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(expected))
    assert int((grad != 0).sum()) > 0


def test_bfloat16_max_pool_keeps_the_dtype_and_matches_float32():
    # On CPU a bfloat16 pool runs in float32 and rounds back: values exactly
    # flax's; each input's gradient is its winning windows' cotangents summed
    # in float32 and rounded once.
    x = jnp.maximum(jax.random.normal(jax.random.key(4), (2, 10, 9, 3)), 0.0)
    x16 = x.astype(jnp.bfloat16)
    ours = functools.partial(max_pool, window_shape=(3, 3), strides=(2, 2),
                             padding=((1, 1), (1, 1)))
    y = jax.jit(ours)(x16)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(y.astype(jnp.float32)),
                                  np.asarray(ours(x16.astype(jnp.float32))))
    grad = jax.jit(jax.grad(_weighted_sum(ours)))(x16)
    assert grad.dtype == jnp.bfloat16
    # The cotangent of output cell i is i rounded to bfloat16.
    rounded_weights = lambda y: jnp.arange(y.size, dtype=jnp.bfloat16).reshape(y.shape)  # noqa: E731
    want = jax.grad(lambda x: (ours(x) * rounded_weights(ours(x)).astype(jnp.float32)).sum())(
        x16.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(grad.astype(jnp.float32)), np.asarray(want),
                               rtol=2.0 ** -8)
    assert int((grad != 0).sum()) > 0


def test_float64_max_pool_stays_float64():
    # Only precisions below float32 are pooled in float32: float64 values
    # (1e-12 apart here) must come back exactly, gradients too.
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 7, 7, 2)) * (1 + 1e-12),
                        jnp.float64)
        ours = functools.partial(max_pool, window_shape=(3, 3), strides=(2, 2),
                                 padding=((1, 1), (1, 1)))
        flax = functools.partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2),
                                 padding=((1, 1), (1, 1)))
        y = jax.jit(ours)(x)
        assert y.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(y), np.asarray(flax(x)))
        np.testing.assert_array_equal(np.asarray(jax.grad(_weighted_sum(ours))(x)),
                                      np.asarray(jax.grad(_weighted_sum(flax))(x)))


def test_max_pool_gradient_on_cpu_is_not_select_and_scatter():
    x = jnp.ones((1, 8, 8, 2))
    grad = jax.jit(jax.grad(lambda x: max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))).sum()))
    hlo = grad.lower(x).compile().as_text()
    assert "select-and-scatter" not in hlo and "reduce-window" not in hlo


def test_max_pool_propagates_nan_and_keeps_integer_inputs():
    x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 2, 0].set(jnp.nan)
    y = max_pool(x, (2, 2), (2, 2))
    assert bool(jnp.isnan(y[0, 0, 1, 0])) and int(jnp.isnan(y).sum()) == 1
    ints = jnp.arange(16, dtype=jnp.int32).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(max_pool(ints, (2, 2), (2, 2)))[0, :, :, 0],
                                  [[5, 7], [13, 15]])


def test_bad_shapes_and_sizes_raise():
    with pytest.raises(ValueError, match="NHWC"):
        adaptive_avg_pool(jnp.ones((4, 4, 1)), 2)
    with pytest.raises(ValueError, match="output_size must be >= 1"):
        adaptive_avg_pool(jnp.ones((1, 4, 4, 1)), (0, 2))
    with pytest.raises(ValueError, match="NHWC"):
        global_avg_pool(jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="NHWC"):
        max_pool(jnp.ones((4, 4, 1)), (2, 2))
