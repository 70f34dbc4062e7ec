"""The CPU forms of `zoo.layers.cpu_conv.conv_general_dilated` equal XLA's
convolution, values and gradients, and are chosen only where they apply."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.xla_helpers import dot_operand_types
from zoo import runtime
from zoo.layers import cpu_conv
from zoo.layers.cpu_conv import conv_general_dilated, dense_conv, patchify_conv, pointwise_conv
from zoo.layers.winograd import winograd_conv3x3

NHWC = ("NHWC", "HWIO", "NHWC")


def _numbers(x, kernel):
    return lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC)


def _random(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _value_and_grads(conv, x, kernel, strides, padding, dilation, groups):
    def loss(x, kernel):
        y = conv(x, kernel, strides, padding, rhs_dilation=dilation,
                 dimension_numbers=_numbers(x, kernel), feature_group_count=groups)
        return jnp.sum(jnp.sin(y)), y
    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, kernel)
    return y, grads


def _grad_step_hlo(x, kernel, stride, groups=1):
    """The compiled HLO of d/d(x, kernel) of sum(sin(3x3 conv)), padding 1, via Zoo's drop-in."""
    step = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(conv_general_dilated(
        x, k, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=_numbers(x, k),
        feature_group_count=groups))), argnums=(0, 1)))
    return step, step.lower(x, kernel).compile().as_text()


@pytest.mark.parametrize("kernel_size,in_ch,out_ch,strides,padding,dilation,groups", [
    (1, 6, 10, (1, 1), ((0, 0), (0, 0)), (1, 1), 1),   # pointwise, expanding
    (1, 10, 6, (2, 2), ((0, 0), (0, 0)), (1, 1), 1),   # strided shortcut, odd input
    (3, 4, 5, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),    # dense 3x3
    (3, 6, 5, (2, 2), ((1, 1), (1, 1)), (1, 1), 1),    # 6x5 output: im2col forward and dx
    (3, 4, 40, (1, 2), ((0, 1), (2, 0)), (2, 1), 1),   # asymmetric, dilated, 8x5
    (7, 3, 8, (2, 2), ((3, 3), (3, 3)), (1, 1), 1),    # a 7x7/2 stem shape
    (3, 4, 6, (1, 1), "SAME", (1, 1), 2),              # grouped: grouped_conv
    (3, 8, 12, (2, 1), ((1, 0), (2, 1)), (1, 2), 4),   # grouped, strided, dilated, asymmetric
    (3, 4, 4, (2, 2), ((1, 1), (1, 1)), (1, 1), 4),    # depthwise
    (1, 4, 4, (1, 1), ((1, 1), (0, 0)), (1, 1), 1),    # padded 1x1: the dense form
    (2, 4, 6, (2, 2), ((0, 0), (0, 0)), (1, 1), 1),    # patchify; the 11th row is dropped
    (3, 3, 8, (3, 3), "VALID", (1, 1), 1),             # patchify, a ViT-like stem
])
@pytest.mark.parametrize("keep_patches", [True, False])
def test_equals_xla_values_and_gradients(kernel_size, in_ch, out_ch, strides, padding,
                                         dilation, groups, keep_patches, monkeypatch):
    if not keep_patches:   # dense_conv's training path for patches too big to keep
        monkeypatch.setattr(cpu_conv, "KEPT_PATCHES_LIMIT", 0)
    x = _random((2, 11, 10, in_ch), kernel_size)
    kernel = _random((kernel_size, kernel_size, in_ch // groups, out_ch), kernel_size + 1)
    want, want_grads = _value_and_grads(lax.conv_general_dilated, x, kernel, strides,
                                        padding, dilation, groups)
    got, got_grads = jax.jit(lambda x, k: _value_and_grads(
        conv_general_dilated, x, k, strides, padding, dilation, groups))(x, kernel)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,groups,features,kernel,padding,xla_ops", [
    (9, 4, 4, 3, "SAME", 0),             # depthwise: shifted multiply-adds
    (9, 1, 8, 1, "VALID", 0),            # pointwise: a dot
    (9, 1, 8, 3, "SAME", 1),             # dense 3x3: XLA's forward conv
    (7, 1, 8, 3, "SAME", 0),             # dense, 7x7 output or less: im2col dot
    (9, 2, 4, 3, "SAME", 1),             # grouped: XLA's forward conv
    (8, 1, 8, 2, "VALID", 0),            # patchify (stride 2 below): a dot
])
def test_nn_conv_drop_in_picks_the_cpu_form(size, groups, features, kernel, padding, xla_ops):
    x = _random((2, size, size, 4), 0)
    strides = 2 if kernel == 2 else 1
    fast = nn.Conv(features, (kernel, kernel), strides, padding=padding,
                   feature_group_count=groups, conv_general_dilated=conv_general_dilated)
    plain = nn.Conv(features, (kernel, kernel), strides, padding=padding,
                    feature_group_count=groups)
    variables = plain.init(jax.random.key(0), x)
    np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x),
                               rtol=1e-5, atol=1e-5)
    hlo = jax.jit(fast.apply).lower(variables, x).compile().as_text()
    convs = hlo.count(" convolution(")
    assert convs == (xla_ops if jax.default_backend() == "cpu" else 1)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU forms' HLO")
@pytest.mark.parametrize("limit,xla_convs", [(cpu_conv.KEPT_PATCHES_LIMIT, 0), (0, 2)])
def test_dense_training_step_keeps_patches_below_the_limit(limit, xla_convs, monkeypatch):
    # A 3x3 conv with a 9x9 output: inference takes XLA's conv (test above);
    # under differentiation the forward pass is the im2col dot whose patches
    # the kernel gradient reuses, and the input gradient is its transpose, so
    # no XLA conv is left. Over the limit: XLA's forward and input gradient.
    monkeypatch.setattr(cpu_conv, "KEPT_PATCHES_LIMIT", limit)
    x, kernel = _random((2, 9, 9, 4), 11), _random((3, 3, 4, 8), 12)
    step = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(
        dense_conv(x, k, (1, 1), ((1, 1), (1, 1))))), argnums=(0, 1)))
    assert step.lower(x, kernel).compile().as_text().count(" convolution(") == xla_convs


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU forms' HLO")
@pytest.mark.parametrize("size,stride,xla_convs", [
    (14, 1, 3),    # stride 1, 14x14 output: XLA's conv, its input and kernel gradients
    (13, 1, 0),    # 13x13 output: dense_conv, all dots from the kept patches
    (56, 2, 0),    # stride 2, 28x28 output: dense_conv
])
def test_large_stride_1_convs_train_through_xla_and_its_gradients(size, stride, xla_convs):
    x, kernel = _random((2, size, size, 4), 13), _random((3, 3, 4, 8), 14)
    step, hlo = _grad_step_hlo(x, kernel, stride)
    assert hlo.count(" convolution(") == xla_convs
    got = step(x, kernel)
    want = jax.grad(lambda x, k: jnp.sum(jnp.sin(lax.conv_general_dilated(
        x, k, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=_numbers(x, k)))),
        argnums=(0, 1))(x, kernel)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU forms' HLO")
def test_grouped_kernel_gradient_is_dots_not_a_convolution():
    # XLA's forward and input-gradient convolutions stay; the kernel gradient
    # (XLA's would be a third convolution, over the batch) is per-tap dots.
    x, kernel = _random((2, 9, 9, 8), 15), _random((3, 3, 2, 8), 16)
    _, hlo = _grad_step_hlo(x, kernel, 1, groups=4)
    assert hlo.count(" convolution(") == 2


@pytest.mark.parametrize("groups,in_per_group,want", [
    (32, 4, 8),     # ResNeXt 32x4d, first stage: 8 groups of 4 -> 32 channels
    (32, 8, 4),
    (64, 4, 8),
    (32, 32, 1),    # a group fills a super-group by itself
    (2, 40, 1),     # a group wider than a super-group stays alone
    (12, 3, 6),     # the most groups that divide 12 and fit in 32 channels
    (7, 4, 7),      # 28 channels: all 7 groups together
])
def test_groups_per_supergroup(groups, in_per_group, want):
    assert cpu_conv.groups_per_supergroup(groups, in_per_group) == want


@pytest.mark.parametrize("groups,in_per_group,out_per_group,strides,padding,dilation", [
    (16, 4, 4, (1, 1), ((1, 1), (1, 1)), (1, 1)),    # 2 super-groups of 8 groups
    (12, 3, 2, (2, 1), ((1, 0), (2, 1)), (1, 2)),    # 2 of 6; strided, dilated, asymmetric
    (2, 40, 3, (1, 1), ((1, 1), (1, 1)), (1, 1)),    # a group per super-group
    (4, 2, 5, (2, 2), ((0, 0), (0, 0)), (1, 1)),     # all groups in one; out != in per group
])
def test_supergroup_conv_equals_xla_grouped_conv(groups, in_per_group, out_per_group, strides,
                                                 padding, dilation):
    x = _random((2, 9, 8, groups * in_per_group), 21)
    kernel = _random((3, 3, in_per_group, groups * out_per_group), 22)

    def supergroup(x, kernel, strides, padding, rhs_dilation, dimension_numbers,
                   feature_group_count):
        return cpu_conv.supergroup_conv(x, kernel, strides, padding, rhs_dilation,
                                        feature_group_count)

    want, want_grads = _value_and_grads(lax.conv_general_dilated, x, kernel, strides,
                                        padding, dilation, groups)
    got, got_grads = jax.jit(lambda x, k: _value_and_grads(
        supergroup, x, k, strides, padding, dilation, groups))(x, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU forms' HLO")
@pytest.mark.parametrize("size,stride,supergroups", [
    (14, 1, True),     # stride 1, 14x14 output: dense convs over super-groups
    (13, 1, False),    # 13x13: grouped_conv, XLA's grouped forward
    (56, 2, True),     # stride 2, 28x28 output
    (54, 2, False),    # stride 2, 27x27 output
])
def test_grouped_convs_route_to_supergroups_by_output_size(size, stride, supergroups):
    # 16 groups of 4 channels: two super-groups of 32 channels.
    x, kernel = _random((1, size, size, 64), 23), _random((3, 3, 4, 64), 24)
    _, hlo = _grad_step_hlo(x, kernel, stride, groups=16)
    convs = [line for line in hlo.splitlines() if " convolution(" in line]
    grouped = [line for line in convs if "feature_group_count" in line]
    if supergroups:   # forward and both gradients of each of the two, all dense
        assert len(convs) == 6 and not grouped
    else:             # grouped_conv: XLA's grouped forward and input gradient
        assert len(convs) == 2 and len(grouped) == 2


def _transposes(hlo: str) -> list[str]:
    return [line.strip() for line in hlo.splitlines() if " transpose(" in line]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU forms' HLO")
@pytest.mark.parametrize("conv,kernel_shape", [
    (pointwise_conv, (1, 1, 6, 10)),
    (lambda x, k: dense_conv(x, k, (1, 1), ((1, 1), (1, 1))), (3, 3, 6, 10)),
    (patchify_conv, (3, 3, 6, 10)),
])
def test_kernel_gradient_copies_no_activation_into_transposed_order(conv, kernel_shape):
    # Contracting batch and space as three dimensions made XLA copy both
    # activations into a transposed order before the dot (0.46 s of a
    # resnet50 training step); one flattened dimension needs no copy.
    x = _random((2, 9, 9, 6), 9)
    kernel_grad = jax.grad(lambda k: jnp.sum(jnp.sin(conv(x, k))))
    hlo = jax.jit(kernel_grad).lower(_random(kernel_shape, 10)).compile().as_text()
    activation_transposes = [t for t in _transposes(hlo) if "f32[2,9,9" in t or "[6,2,9" in t
                             or "[10,2," in t]
    assert activation_transposes == []
    assert "dot(" in hlo


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU forms' HLO")
@pytest.mark.parametrize("conv,kernel_shape,dots", [
    (pointwise_conv, (1, 1, 6, 10), 3),
    (lambda x, k: dense_conv(x, k, (1, 1), ((1, 1), (1, 1))), (3, 3, 6, 10), 3),
    (patchify_conv, (3, 3, 6, 10), 3),
])
def test_bfloat16_products_of_a_training_step_multiply_bfloat16(conv, kernel_shape, dots):
    # Forward, input-gradient and kernel-gradient products all in YNNPACK's
    # bfloat16 kernels (zoo.layers.cpu_matmul): none converted to float32 first.
    x = _random((2, 9, 9, 6), 11, jnp.bfloat16)
    grads = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k).astype(jnp.float32))),
                     argnums=(0, 1))
    hlo = jax.jit(grads, compiler_options=runtime.compiler_options("cpu")).lower(
        x, _random(kernel_shape, 12, jnp.bfloat16)).compile().as_text()
    assert dot_operand_types(hlo) == [("bf16", "bf16")] * dots


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU forms' HLO")
@pytest.mark.parametrize("channels,limit,xla_convs", [
    (cpu_conv.BF16_IM2COL_MIN_CHANNELS, cpu_conv.KEPT_PATCHES_LIMIT, (0, 0)),      # the patches
    (cpu_conv.BF16_IM2COL_MIN_CHANNELS - 1, cpu_conv.KEPT_PATCHES_LIMIT, (1, 3)),  # narrower
    (cpu_conv.BF16_IM2COL_MIN_CHANNELS, 0, (1, 3)),           # patches too big to keep
])
def test_wide_bfloat16_convs_run_from_their_patches_at_any_size(channels, limit, xla_convs,
                                                                 monkeypatch):
    # A stride-1 3x3 conv with a 14x14 output would be XLA's (which computes
    # bfloat16 in float32 on CPU); wide enough, inference and training are the
    # im2col products in bfloat16 instead, and equal XLA's float32 conv of the
    # same numbers to bfloat16's precision.
    monkeypatch.setattr(cpu_conv, "KEPT_PATCHES_LIMIT", limit)
    x = _random((1, 14, 14, channels), 21, jnp.bfloat16)
    kernel = _random((3, 3, channels, channels), 22, jnp.bfloat16) * 0.05

    def conv(conv_fn, x, k):
        return conv_fn(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_numbers(x, k))

    def value_and_grads(conv_fn, x, k):
        loss = lambda x, k: jnp.sum(jnp.sin(conv(conv_fn, x, k).astype(jnp.float32)))
        return conv(conv_fn, x, k), jax.grad(loss, argnums=(0, 1))(x, k)

    options = runtime.compiler_options("cpu")
    infer = jax.jit(lambda x, k: conv(conv_general_dilated, x, k), compiler_options=options)
    train = jax.jit(lambda x, k: value_and_grads(conv_general_dilated, x, k)[1],
                    compiler_options=options)
    hlos = [f.lower(x, kernel).compile().as_text() for f in (infer, train)]
    assert tuple(hlo.count(" convolution(") for hlo in hlos) == xla_convs
    if xla_convs == (0, 0):
        assert [dot_operand_types(hlo) for hlo in hlos] == [[("bf16", "bf16")] * n for n in (1, 3)]
    got, got_grads = jax.jit(lambda x, k: value_and_grads(conv_general_dilated, x, k))(x, kernel)
    want, want_grads = value_and_grads(lax.conv_general_dilated, x.astype(jnp.float32),
                                       kernel.astype(jnp.float32))
    assert got.dtype == jnp.bfloat16
    for g, w in zip((got, *got_grads), (want, *want_grads)):
        error = jnp.max(jnp.abs(g.astype(jnp.float32) - w))
        assert float(error) <= 0.01 * float(jnp.max(jnp.abs(w)))


def test_default_dimension_numbers_are_nchw_and_go_to_xla():
    # lax's default layout is NCHW/OIHW; this shape would also pass the NHWC
    # depthwise checks (last dims equal the group count), so it must not be
    # mistaken for one.
    x = _random((1, 4, 5, 4), 2)
    kernel = _random((4, 1, 1, 4), 3)
    args = ((1, 1), ((0, 0), (0, 0)))
    want = lax.conv_general_dilated(x, kernel, *args, feature_group_count=4)
    got = conv_general_dilated(x, kernel, *args, feature_group_count=4)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_negative_padding_goes_to_xla():
    x, kernel = _random((1, 6, 6, 2), 4), _random((3, 3, 2, 3), 5)
    pads = ((-1, 1), (0, 0))
    want = lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_numbers(x, kernel))
    got = conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_numbers(x, kernel))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_forms_keep_the_dtype_and_match_float32():
    x, kernel = _random((2, 8, 8, 6), 6, jnp.bfloat16), _random((1, 1, 6, 5), 7, jnp.bfloat16)
    out = pointwise_conv(x, kernel)
    assert out.dtype == jnp.bfloat16
    want = pointwise_conv(x.astype(jnp.float32), kernel.astype(jnp.float32))
    np.testing.assert_allclose(out.astype(jnp.float32), want, rtol=3e-2, atol=3e-2)
    kernel3 = _random((3, 3, 6, 5), 8, jnp.bfloat16)
    # Winograd keeps bfloat16 too when called directly; its transforms round in
    # bfloat16 (a few units in the last place of the largest outputs), which is
    # why cpu_conv routes only float32 convolutions to it.
    out = winograd_conv3x3(x, kernel3)
    assert out.dtype == jnp.bfloat16
    want = lax.conv_general_dilated(x.astype(jnp.float32), kernel3.astype(jnp.float32), (1, 1),
                                    ((1, 1), (1, 1)), dimension_numbers=NHWC)
    error = jnp.max(jnp.abs(out.astype(jnp.float32) - want))
    assert float(error) <= 0.03 * float(jnp.max(jnp.abs(want)))
    grads = jax.grad(lambda x, k: jnp.sum(dense_conv(x, k, (1, 1), ((1, 1), (1, 1))).astype(
        jnp.float32)), argnums=(0, 1))(x, kernel3)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


def _convs_outside_platform_choice(jaxpr) -> int:
    """Convolutions in `jaxpr` that are not inside a `cond` (the form
    `lax.platform_dependent` traces), looking into every other sub-jaxpr."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            count += 1
        elif eqn.primitive.name != "cond":
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                count += _convs_outside_platform_choice(sub)
    return count


# One model per family whose every convolution has a CPU form (the
# squeeze-excite 1x1 convs on 1x1 maps do not; LeNet's
# 5x5 convs stay XLA's on purpose, see zoo/models/lenet.py).
@pytest.mark.parametrize("name", ["simple_cnn", "alexnet", "vgg11_bn", "resnet18", "googlenet",
                                  "inception_v3", "densenet121", "mobilenet_v2", "convnext_tiny",
                                  "vit_b_32"])
def test_model_families_route_every_conv_through_the_cpu_choice(name, monkeypatch):
    import zoo
    # Large stride-1 convs are left to XLA by choice (the test above); with
    # that rule off, every conv must reach the platform choice.
    monkeypatch.setattr(cpu_conv, "XLA_CONV_MIN_PIXELS", 10**9)
    model = zoo.create_model(name)
    size = model.min_input_size
    x = jax.ShapeDtypeStruct((1, size, size, model.in_channels), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert _convs_outside_platform_choice(closed.jaxpr) == 0
