"""`zoo.layers.winograd.winograd_conv3x3` equals XLA's 3x3 convolution, values
and gradients, stays local under data parallelism, and `zoo.layers.cpu_conv`
routes to it only where it was measured faster."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.xla_helpers import GATHERING_COLLECTIVES, batch_and_replicated_shardings
from zoo.layers import cpu_conv
from zoo.layers.winograd import winograd_conv3x3

NHWC = ("NHWC", "HWIO", "NHWC")


def _random(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _xla_conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)


@pytest.mark.parametrize("shape,out_channels", [
    ((2, 6, 6, 4), 5),     # whole 2x2 tiles
    ((1, 7, 5, 3), 2),     # odd height and width: padded to whole tiles, cropped
    ((3, 1, 1, 2), 3),     # one pixel: a single tile, all but its centre padding
])
def test_equals_xla_conv_values_and_gradients(shape, out_channels):
    x = _random(shape, 0)
    kernel = _random((3, 3, shape[-1], out_channels), 1)
    weights = _random((*shape[:3], out_channels), 2)   # a loss that weighs every output

    def value_and_grads(conv):
        def loss(x, kernel):
            y = conv(x, kernel)
            return jnp.sum(jnp.sin(y) * weights), y
        (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, kernel)
        return y, grads

    want, want_grads = value_and_grads(_xla_conv)
    got, got_grads = jax.jit(lambda: value_and_grads(winograd_conv3x3))()
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape,kernel_shape", [
    ((1, 6, 6, 4), (5, 5, 4, 2)),   # not 3x3
    ((1, 6, 6, 4), (3, 3, 2, 2)),   # input channels disagree (a grouped kernel)
    ((6, 6, 4), (3, 3, 4, 2)),      # no batch dimension
])
def test_rejects_what_it_does_not_compute(x_shape, kernel_shape):
    with pytest.raises(ValueError, match=r"\[3, 3, in_channels, out\]"):
        winograd_conv3x3(jnp.zeros(x_shape), jnp.zeros(kernel_shape))


def test_data_parallel_training_stays_local():
    # The batch is sharded over a mesh: the transforms work within each image
    # and the batched dot keeps the batch as its own dimension, so nothing is
    # gathered; only the kernel gradient's sum over the batch is all-reduced.
    batch_sharded, replicated = batch_and_replicated_shardings()
    x = jax.ShapeDtypeStruct((jax.device_count(), 6, 6, 4), jnp.float32, sharding=batch_sharded)
    kernel = jax.ShapeDtypeStruct((3, 3, 4, 4), jnp.float32, sharding=replicated)
    grads = jax.grad(lambda x, k: jnp.sum(jnp.sin(winograd_conv3x3(x, k))), argnums=(0, 1))
    hlo = jax.jit(grads, out_shardings=(batch_sharded, replicated)).lower(
        x, kernel).compile().as_text()
    for collective in GATHERING_COLLECTIVES:
        assert collective not in hlo, collective
    assert hlo.count(" all-reduce(") >= 1


def _form(x_shape, kernel_shape, dtype=jnp.float32, strides=(1, 1), pads=((1, 1), (1, 1))):
    return cpu_conv._cpu_form(jax.ShapeDtypeStruct(x_shape, dtype),
                              jax.ShapeDtypeStruct(kernel_shape, dtype),
                              strides, pads, (1, 1), 1)


def test_cpu_conv_routes_wide_float32_3x3_convs_to_winograd():
    channels, side = cpu_conv.WINOGRAD_MIN_CHANNELS, 10
    assert side * side >= cpu_conv.WINOGRAD_MIN_PIXELS
    wide = (3, 3, channels, channels)
    assert _form((2, side, side, channels), wide) is winograd_conv3x3
    assert _form((2, 14, 14, channels), (3, 3, channels, 2 * channels)) is winograd_conv3x3
    # Narrower, smaller, lower precision, strided or not padded by one: not Winograd.
    assert _form((2, side, side, channels - 1), (3, 3, channels - 1, channels)) \
        is not winograd_conv3x3
    assert _form((2, side, side, channels), (3, 3, channels, channels - 1)) \
        is not winograd_conv3x3
    assert _form((2, 9, 9, channels), wide) is not winograd_conv3x3
    assert _form((2, side, side, channels), wide, jnp.bfloat16) is not winograd_conv3x3
    assert _form((2, side, side, channels), wide, strides=(2, 2)) is not winograd_conv3x3
    assert _form((2, side, side, channels), wide, pads=((0, 0), (0, 0))) \
        is not winograd_conv3x3


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU form's HLO")
def test_drop_in_computes_wide_convs_without_xla_convolution():
    # Through Zoo's drop-in for lax.conv_general_dilated (what every model's
    # nn.Conv calls), forward and both gradients are dots: no convolution left.
    channels = cpu_conv.WINOGRAD_MIN_CHANNELS
    x, kernel = _random((1, 10, 10, channels), 5), _random((3, 3, channels, channels), 6) * 0.05

    def loss(x, k):
        return jnp.sum(jnp.sin(cpu_conv.conv_general_dilated(
            x, k, (1, 1), ((1, 1), (1, 1)),
            dimension_numbers=lax.conv_dimension_numbers(x.shape, k.shape, NHWC))))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))
    assert " convolution(" not in grads.lower(x, kernel).compile().as_text()
    want = jax.grad(lambda x, k: jnp.sum(jnp.sin(_xla_conv(x, k))), argnums=(0, 1))(x, kernel)
    for g, w in zip(grads(x, kernel), want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-4)
