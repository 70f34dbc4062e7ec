"""MAC counting walks the jaxpr: check it on hand-computable functions."""

import jax
import jax.numpy as jnp

from zoo.counting import count_macs, count_params


def test_dense_macs():
    w = jax.ShapeDtypeStruct((64, 10), jnp.float32)
    x = jax.ShapeDtypeStruct((3, 64), jnp.float32)
    assert count_macs(lambda w, x: x @ w, w, x) == 3 * 64 * 10


def test_grouped_conv_macs():
    x = jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32)
    k = jax.ShapeDtypeStruct((3, 3, 4, 32), jnp.float32)  # 4 groups of 4 channels

    def conv(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=4)

    assert count_macs(conv, x, k) == 8 * 8 * 32 * 3 * 3 * 4


def test_macs_inside_jit_and_scan_are_counted():
    w = jax.ShapeDtypeStruct((5, 5), jnp.float32)

    def body(carry, _):
        return carry @ w_val, None

    def fn(w):
        nonlocal w_val
        w_val = w
        out, _ = jax.lax.scan(body, jnp.ones((2, 5)), None, length=4)
        return jax.jit(lambda a: a @ w)(out)

    w_val = None
    assert count_macs(fn, w) == 4 * (2 * 5 * 5) + 2 * 5 * 5


def test_count_params():
    tree = {"a": jnp.zeros((2, 3)), "b": [jnp.zeros(4), jax.ShapeDtypeStruct((5,), jnp.float32)]}
    assert count_params(tree) == 6 + 4 + 5


def test_training_a_strided_conv_counts_three_forward_passes():
    # The input gradient of a stride-2 conv is a conv over the cotangent
    # dilated with zeros; counting the zero taps made it look 4x the forward
    # pass (and a cond over platforms picked that branch as the dearer one).
    x = jnp.ones((2, 16, 16, 8))
    kernel = jnp.ones((3, 3, 8, 4))

    def conv(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    forward = count_macs(conv, x, kernel)
    assert forward == 2 * 8 * 8 * 4 * 3 * 3 * 8
    grads = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k))), argnums=(0, 1))
    assert count_macs(grads, x, kernel) == 3 * forward


def test_platform_choice_counts_the_default_branch():
    # A platform's branch may multiply zeros on purpose (cpu_conv's super-group
    # form of a grouped conv) or use no products (shifted depthwise taps); the
    # default branch is the model's own arithmetic, whichever is dearer.
    x = jnp.ones((2, 4))
    w = jnp.ones((4, 3))

    def fn(x, w):
        return jax.lax.platform_dependent(
            x, w, cpu=lambda x, w: jnp.concatenate([x, x], 1) @ jnp.concatenate([w, 0 * w]),
            default=lambda x, w: x @ w)

    assert count_macs(fn, x, w) == 2 * 4 * 3
    assert count_macs(lambda x, w: jax.lax.cond(x[0, 0] > 0, lambda: x @ w,
                                                lambda: jnp.zeros((2, 3))), x, w) == 2 * 4 * 3
