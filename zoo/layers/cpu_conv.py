"""Convolutions that are fast on XLA's CPU backend; a drop-in for `lax.conv_general_dilated`.

Pass `conv_general_dilated=conv_general_dilated` (this module's) to `nn.Conv`.
Parameters, shapes and results are those of `lax.conv_general_dilated`; when
the computation is lowered for CPU, NHWC/HWIO convolutions take a form that
XLA's CPU backend runs faster (benchmarks/NOTES.md, entries 1, 4, 5, 7, 13, 14, 17, 21 and 24):

| convolution | on CPU | why |
|---|---|---|
| depthwise (`groups == channels`) | `shifted_depthwise_conv` (zoo.layers.depthwise) | XLA's grouped-conv loop is 25x slower |
| 1x1, groups 1, no padding | a matrix product, `pointwise_conv` | XLA's 1x1 kernel gradient is ~8x slower than a dot |
| patchify (kernel = stride, no padding: ViT, ConvNeXt stem and downsampling) | a matrix product over non-overlapping patches, `patchify_conv` | |
| 3x3, stride 1, padding 1, float32, at least WINOGRAD_MIN_CHANNELS (256) channels in and out, output of at least 10x10 | Winograd's F(2x2, 3x3), `winograd_conv3x3` (zoo.layers.winograd): 16 batched dots with 2.25x fewer multiply-adds, gradients included | whole steps, speed per round (entry 21): inference vgg16 1.24-1.27x, vgg11 1.29x, wide_resnet50_2 1.09x, resnet18 1.06x, resnet50 1.01-1.03x; training 1.01-1.14x |
| bfloat16 dense (groups 1), at least BF16_IM2COL_MIN_CHANNELS (128) channels in and out, im2col patches of at most KEPT_PATCHES_LIMIT elements | `dense_conv` from the patches, forward (inference too) and backward | XLA's CPU convs compute bfloat16 in float32, the patches' product runs in bfloat16: forward + backward 14x14x256 19.6 -> 13.8 ms, 28x28x512 288 -> 179; whole bfloat16 steps: resnet50 inference 1.06x, training 1.08x, vgg16 inference 1.13x |
| dense (groups 1), stride 1, no dilation, output of at least 14x14 | XLA's conv and its own gradients | with Zoo's compile options (zoo.runtime: Eigen's convolutions, not YNNPACK's) these beat `dense_conv` in training: resnet50 step 1387 -> 1303 ms, resnet18 767 -> 646, vgg11 2453 -> 2105 (28x28 and up); from 14x14, resnet50 2%, resnet18 4%, inception_v3 3% more |
| other dense (groups 1) | `dense_conv`: XLA's conv forward and input gradient, the kernel gradient as one dot; in training, where the im2col patches are small enough to keep, all three from the patches | XLA's kernel-gradient conv is slower (7x7/2 RGB stem: 192 -> 42 ms; 3x3 at 7x7x512: 23 -> 13 ms); building the patches once saves a pass (3x3 at 56x56x64, forward + backward: 75 -> 56 ms) |
| grouped (1 < groups < channels: ResNeXt), output of at least 28x28, or 14x14 at stride 1 | `supergroup_conv`: dense convs (XLA's, gradients included) over super-groups of about SUPERGROUP_CHANNELS input channels, with block-diagonal kernels | XLA's grouped conv runs a generic loop: ResNeXt's 3x3 at 56x56x128, 32 groups, forward + backward 166 -> 32 ms despite 8x the multiply-adds |
| other grouped | `grouped_conv`: XLA's conv forward and input gradient, the kernel gradient as group-batched dots per tap | XLA's grouped kernel-gradient conv: 7.8 s for one ResNeXt layer |
| anything else (dilated input, NCHW) | XLA's conv | |

The matrix products of these forms (1x1, patchify, im2col, and their
gradients) are `zoo.layers.cpu_matmul`'s: in bfloat16 they run in YNNPACK's
bfloat16 kernels, where XLA would convert them to float32 (resnet50 bfloat16
steps 1.26-1.32x faster; benchmarks/NOTES.md, entry 23). XLA's own
convolutions still compute bfloat16 in float32 on CPU.

Other backends (GPU, TPU) always get `lax.conv_general_dilated`: the choice is
made by `lax.platform_dependent` at lowering time, so one jitted function is
right on every platform and exported artefacts carry both branches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from zoo.layers.depthwise import output_hw as _output_hw
from zoo.layers.depthwise import (add_windows_back, explicit_pads, largest_divisor,
                                  shifted_depthwise_conv, strided_windows)
from zoo.layers.cpu_matmul import matmul, matmul_nt, matmul_tn
from zoo.layers.winograd import winograd_conv3x3

Padding = str | Sequence[tuple[int, int]]
Pads = tuple[tuple[int, int], tuple[int, int]]

# Outputs of at most this many pixels (7x7) are computed by `dense_conv` as
# one dot over the windows side by side (im2col). XLA's CPU conv is slow there:
# 3x3, 512 -> 512 channels, batch 8: 20.6 -> 11.5 ms at 7x7, and 97.6 ms at
# 2x2, where it falls off its fast path (resnet18 at 64 px spent 300 of its
# 314 ms there). At 14x14 the two tie and XLA's conv wins above.
SMALL_OUTPUT_PIXELS = 49

# Under differentiation, `dense_conv` computes its forward pass from the im2col
# patches and keeps them for the backward pass (instead of x, which it would
# cut into the same patches again) when they have at most this many elements
# (128 MB in float32). Forward + backward of a 3x3 conv, batch 8: 75 -> 56 ms at
# 56x56x64, 64 -> 55 ms for the 7x7/2 RGB stem, 54 -> 47 ms at 56x56x128
# stride 2, a tie at 28x28x128; above the limit, at 56x56x256 (58M elements),
# 607 -> 641 ms, so it stays out (benchmarks/NOTES.md, entry 7).
KEPT_PATCHES_LIMIT = 1 << 25

# Stride-1 convolutions with outputs of at least this many pixels (14x14) are
# XLA's own, gradients included. With zoo.runtime's compile options XLA runs
# them, and their transposes, in Eigen's kernels on both cores; forward +
# backward at batch 8 (3x3, interleaved): 56x56x64 61.6 -> 51.1 ms, 28x28x128
# 70.3 -> 64.1 ms, 14x14x256 35.5 -> 33.5 ms, while at 7x7 or with stride 2
# `dense_conv` stays ahead (benchmarks/NOTES.md, entry 13). Whole training
# steps, 14x14 against the earlier 28x28 limit, steps alternated (speed-up
# per round, median and 95% interval; entry 17): resnet50 1.020 [1.007, 1.028],
# resnet18 1.038 [1.004, 1.052], inception_v3 1.029 [1.015, 1.079]; densenet121,
# googlenet and vgg11 within noise; inference unchanged. Measured with those
# options, which every step Zoo compiles has on CPU; without them
# (ZOO_XLA_DEFAULTS=1) YNNPACK runs these convolutions, unmeasured.
XLA_CONV_MIN_PIXELS = 14 * 14

# Float32 3x3 stride-1 convolutions (padding 1) with at least
# WINOGRAD_MIN_CHANNELS input and output channels and outputs of at least
# WINOGRAD_MIN_PIXELS are computed by Winograd's F(2x2, 3x3) (zoo.layers.winograd):
# its transforms cost pixels x channels, its dots 16/36 of the direct
# multiply-adds, so it pays with many channels. Forward + backward at batch 8
# against the forms above (interleaved, median of 10; NOTES.md, entry 21):
# 14x14x256 28.9 -> 19.6 ms, 10x10x256 16.2 -> 10.0, 28x28x512 455 -> 314,
# 14x14x512 117 -> 96; with 64 or 128 channels it lost (56x56x64 37 -> 71 ms,
# 28x28x128 35 -> 50), and at 7x7 (tiles padded to 8x8, few rows per dot) too.
# Float32 only: in bfloat16 the transforms' roundings would add to the dot's.
WINOGRAD_MIN_CHANNELS = 256
WINOGRAD_MIN_PIXELS = 10 * 10

# Grouped convolutions with outputs of at least SUPERGROUP_MIN_PIXELS, or of
# SUPERGROUP_MIN_PIXELS_STRIDE_1 at stride 1, are dense convolutions over
# super-groups: runs of consecutive groups with about SUPERGROUP_CHANNELS input
# channels together, whose kernels are block-diagonal (zeros between groups).
# That multiplies zeros (8x the multiply-adds for ResNeXt's 4 channels per
# group), yet XLA's dense convolutions run far faster than its generic grouped
# loop. Forward + backward, batch 8, 32 groups, interleaved (NOTES.md, entry 14):
# 56x56x128 166 -> 32 ms, 56x56x256/2 92 -> 38, 28x28x256 49 -> 17, 14x14x512
# 24 -> 11; at 28x28x512/2 and 14x14x1024/2 (14x14 and 7x7 outputs) the two
# trade places with the width, and at 7x7 they tie, so `grouped_conv` stays there.
SUPERGROUP_CHANNELS = 32
SUPERGROUP_MIN_PIXELS = 28 * 28
SUPERGROUP_MIN_PIXELS_STRIDE_1 = 14 * 14

# In bfloat16, dense convolutions with at least BF16_IM2COL_MIN_CHANNELS input
# and output channels whose im2col patches fit KEPT_PATCHES_LIMIT are computed
# from the patches, forward (inference too) and backward, at every size: XLA's
# CPU convolutions compute bfloat16 in float32, while the patches' product runs
# in YNNPACK's bfloat16 kernels (zoo.layers.cpu_matmul). Batch 8, bfloat16,
# XLA's conv against the patches, interleaved medians (NOTES.md, entry 24):
# forward 14x14x256 9.6 -> 7.1 ms, 28x28x512 145 -> 100, 28x28x128 a tie;
# forward + backward 28x28x128 19.7 -> 17.4, 14x14x256 19.6 -> 13.8, 28x28x512
# 288 -> 179. With fewer channels the patches cost more than the product saves:
# 56x56x64 forward + backward 24.3 -> 33.9 ms, 128 -> 32 channels at 56x56
# 22.7 -> 44.8 (DenseNet), so those stay as above.
BF16_IM2COL_MIN_CHANNELS = 128


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Pads,
              dilation: tuple[int, int], groups: int = 1) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups)


def _xla_input_grad(x: jax.Array, kernel: jax.Array, grad: jax.Array, strides: tuple[int, int],
                    padding: Pads, dilation: tuple[int, int], groups: int = 1) -> jax.Array:
    """d/dx of `_xla_conv` at x: XLA's transposed convolution of grad."""
    _, x_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, strides, padding, dilation, groups), x)
    (x_grad,) = x_vjp(grad)
    return x_grad


def _patches(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int],
             padding: Pads, dilation: tuple[int, int], out_hw: tuple[int, int]) -> jax.Array:
    """im2col: the kh * kw strided windows of x padded, side by side,
    [batch, out_h, out_w, kh * kw * in_channels] (tap-major, as a reshaped kernel)."""
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    return jnp.concatenate(
        [w for _, _, w in strided_windows(padded, kernel_hw, strides, dilation, out_hw)], axis=-1)


def _kernel_grad_dot(x: jax.Array, grad: jax.Array, kernel: jax.Array) -> jax.Array:
    """sum over batch and space of x[..., c] * grad[..., o] -> [c, o] (kernel: the
    replicated array `matmul_tn` reads its bfloat16 copy's guard from).

    Batch and space are flattened into one contracting dimension first (a free
    reshape of NHWC): given three, XLA's CPU dot canonicalisation copies both
    operands into a transposed order; given one, it calls the matrix product
    with a transposed operand and copies nothing (this gradient of a 64 -> 256
    1x1 conv at 56x56, batch 8: 9.5 -> 6.4 ms alone; in a resnet50 training
    step the copies were 134M elements, benchmarks/NOTES.md entry 5).
    """
    return matmul_tn(x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1]),
                     predicate_from=kernel)


def _rows_times(x: jax.Array, matrix: jax.Array) -> jax.Array:
    """[..., k] x [k, n] -> [..., n], as one [rows, k] product (`cpu_matmul.matmul`)."""
    return matmul(x.reshape(-1, x.shape[-1]), matrix).reshape(*x.shape[:-1], matrix.shape[1])


def _rows_times_transposed(grad: jax.Array, matrix: jax.Array, *,
                           float32_result: bool = False) -> jax.Array:
    """[..., n] x [k, n]^T -> [..., k], as one [rows, n] product (`cpu_matmul.matmul_nt`)."""
    rows = matmul_nt(grad.reshape(-1, grad.shape[-1]), matrix, float32_result=float32_result)
    return rows.reshape(*grad.shape[:-1], matrix.shape[0])


@jax.custom_vjp
def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 1x1 convolution as a matrix product.

    Args:
      x: [batch, height, width, in_channels].
      kernel: [1, 1, in_channels, out_channels].

    Returns:
      [batch, height, width, out_channels] in the dtype of x and kernel.
    """
    return _rows_times(x, kernel[0, 0])


def _pointwise_forward(x, kernel):
    return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_backward(residuals, grad):
    x, kernel = residuals
    x_grad = _rows_times_transposed(grad, kernel[0, 0])
    kernel_grad = _kernel_grad_dot(x, grad, kernel)[None, None]
    return x_grad.astype(x.dtype), kernel_grad.astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_forward, _pointwise_backward)


def patchify_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A convolution whose stride is its kernel size (no padding, no dilation).

    Args:
      x: [batch, height, width, in_channels]; rows and columns beyond the last
        whole patch are dropped, as a VALID convolution does.
      kernel: [kh, kw, in_channels, out_channels].

    Returns:
      [batch, height // kh, width // kw, out_channels].

    The patches are cut out side by side, [rows, kh * kw * in_channels], and
    multiplied by the kernel as one matrix; autodiff's kernel gradient is then
    one dot contracting a single dimension.
    """
    kh, kw, in_channels, out_channels = kernel.shape
    batch, height, width, _ = x.shape
    out_h, out_w = height // kh, width // kw
    patches = x[:, :out_h * kh, :out_w * kw, :].reshape(batch, out_h, kh, out_w, kw, in_channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(-1, kh * kw * in_channels)
    out = matmul(patches, kernel.reshape(-1, out_channels))
    return out.reshape(batch, out_h, out_w, out_channels)


def _conv_output_hw(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Pads,
                    dilation: tuple[int, int]) -> tuple[int, int]:
    padded_hw = (x.shape[1] + sum(padding[0]), x.shape[2] + sum(padding[1]))
    return _output_hw(padded_hw, kernel.shape[:2], strides, dilation)


def _patches_fit(x: jax.Array, kernel: jax.Array, out_hw: tuple[int, int]) -> bool:
    """Whether the im2col patches, [batch * out_h * out_w, kh * kw * in_channels],
    have at most KEPT_PATCHES_LIMIT elements."""
    kh, kw, in_channels, _ = kernel.shape
    return x.shape[0] * out_hw[0] * out_hw[1] * kh * kw * in_channels <= KEPT_PATCHES_LIMIT


def _bf16_im2col(x: jax.Array, kernel: jax.Array, out_hw: tuple[int, int]) -> bool:
    """Whether this bfloat16 convolution runs from its im2col patches at any
    size (BF16_IM2COL_MIN_CHANNELS)."""
    return (x.dtype == kernel.dtype == jnp.bfloat16
            and min(kernel.shape[2:]) >= BF16_IM2COL_MIN_CHANNELS
            and _patches_fit(x, kernel, out_hw))


def _patches_times_kernel(patches: jax.Array, kernel: jax.Array) -> jax.Array:
    return _rows_times(patches, kernel.reshape(-1, kernel.shape[3]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def dense_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Pads,
               dilation: tuple[int, int] = (1, 1)) -> jax.Array:
    """XLA's NHWC convolution (groups 1) with a kernel gradient made of dots.

    Args:
      x: [batch, height, width, in_channels].
      kernel: [kh, kw, in_channels, out_channels].
      strides, dilation: (sh, sw), (dh, dw).
      padding: ((top, bottom), (left, right)), each >= 0.

    Returns:
      [batch, out_height, out_width, out_channels].

    Forward and input gradient are XLA's (for outputs of at most
    SMALL_OUTPUT_PIXELS, and for wide bfloat16 convolutions whose patches fit
    (BF16_IM2COL_MIN_CHANNELS), one dot over the windows side by side and its
    transpose); the kernel gradient is one dot of all kernel taps' windows side
    by side with grad, d/dkernel[i, j] = window(i, j)^T @ grad for every tap,
    instead of XLA's convolution over the batch. Under differentiation, when
    those windows (the im2col patches) have at most KEPT_PATCHES_LIMIT
    elements, the forward pass is the patches times the kernel and keeps the
    patches for the kernel gradient, and the input gradient is the im2col
    form's transpose; inference pays for the patches only where they are its
    forward pass.
    """
    out_hw = _conv_output_hw(x, kernel, strides, padding, dilation)
    if out_hw[0] * out_hw[1] > SMALL_OUTPUT_PIXELS and not _bf16_im2col(x, kernel, out_hw):
        return _xla_conv(x, kernel, strides, padding, dilation)
    patches = _patches(x, kernel.shape[:2], strides, padding, dilation, out_hw)
    return _patches_times_kernel(patches, kernel)


def _dense_forward(x, kernel, strides, padding, dilation):
    out_hw = _conv_output_hw(x, kernel, strides, padding, dilation)
    if not _patches_fit(x, kernel, out_hw):
        return dense_conv(x, kernel, strides, padding, dilation), (x, kernel, None)
    patches = _patches(x, kernel.shape[:2], strides, padding, dilation, out_hw)
    # x[:0] carries x's shape and dtype to the backward pass without its data.
    return _patches_times_kernel(patches, kernel), (x[:0], kernel, patches)


def _im2col_input_grad(x: jax.Array, kernel: jax.Array, grad: jax.Array, strides: tuple[int, int],
                       padding: Pads, dilation: tuple[int, int]) -> jax.Array:
    """d/dx of the im2col form: grad @ kernel^T gives every window's gradient;
    each is spread back (strided) onto the padded input and summed. Only x's
    height, width, channels and dtype are read (the caller may pass x[:0])."""
    kh, kw, in_channels, _ = kernel.shape
    (top, bottom), (left, right) = padding
    padded_hw = (x.shape[1] + top + bottom, x.shape[2] + left + right)
    # In bfloat16 the windows' gradients are summed back in float32 and rounded
    # once (module docstring of zoo.layers.cpu_matmul).
    window_grads = _rows_times_transposed(grad, kernel.reshape(-1, kernel.shape[3]),
                                          float32_result=True)
    pieces = ((tap // kw, tap % kw, window_grads[..., tap * in_channels:(tap + 1) * in_channels])
              for tap in range(kh * kw))
    padded_grad = add_windows_back(pieces, padded_hw, strides, dilation)
    return padded_grad[:, top:top + x.shape[1], left:left + x.shape[2], :].astype(x.dtype)


def _dense_backward(strides, padding, dilation, residuals, grad):
    x, kernel, patches = residuals
    if patches is None and grad.shape[1] * grad.shape[2] > SMALL_OUTPUT_PIXELS:
        x_grad = _xla_input_grad(x, kernel, grad, strides, padding, dilation)
    else:
        x_grad = _im2col_input_grad(x, kernel, grad, strides, padding, dilation)
    # One dot over all taps' windows side by side, [rows, kh * kw * in_channels]:
    # for the 7x7/2 RGB stem 42 ms against 139 ms as 49 thin per-tap dots; for
    # 3x3 convs within ~10% of per-tap dots either way (benchmarks/NOTES.md, entry 5).
    if patches is None:
        patches = _patches(x, kernel.shape[:2], strides, padding, dilation, grad.shape[1:3])
    kernel_grad = _kernel_grad_dot(patches, grad, kernel)
    return x_grad, kernel_grad.reshape(kernel.shape).astype(kernel.dtype)


dense_conv.defvjp(_dense_forward, _dense_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def grouped_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Pads,
                 dilation: tuple[int, int], groups: int) -> jax.Array:
    """XLA's grouped NHWC convolution with a kernel gradient made of dots.

    Args:
      x: [batch, height, width, in_channels], in_channels = groups * in_per_group.
      kernel: [kh, kw, in_per_group, out_channels]; output channel o belongs to
        group o // (out_channels // groups), as in `lax.conv_general_dilated`.
      strides, dilation: (sh, sw), (dh, dw).
      padding: ((top, bottom), (left, right)), each >= 0.
      groups: feature_group_count, 1 < groups < in_channels.

    Returns:
      [batch, out_height, out_width, out_channels].

    Forward and input gradient are XLA's. XLA computes the kernel gradient as
    a convolution over the batch that its CPU backend runs at a few MFLOP/s
    (ResNeXt's 3x3, 32 groups, 56x56x128 at batch 8: 7.8 s); here it is one
    group-batched product per kernel tap, window(i, j) [rows, groups, in] with
    grad [rows, groups, out] (benchmarks/NOTES.md, entry 13).
    """
    return _xla_conv(x, kernel, strides, padding, dilation, groups)


def _grouped_forward(x, kernel, strides, padding, dilation, groups):
    return grouped_conv(x, kernel, strides, padding, dilation, groups), (x, kernel)


def _grouped_backward(strides, padding, dilation, groups, residuals, grad):
    x, kernel = residuals
    kh, kw, in_per_group, out_channels = kernel.shape
    out_per_group = out_channels // groups
    x_grad = _xla_input_grad(x, kernel, grad, strides, padding, dilation, groups)
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    grad_rows = grad.reshape(-1, groups, out_per_group)
    taps = [jnp.einsum("rgc,rgo->gco", window.reshape(-1, groups, in_per_group), grad_rows)
            for _, _, window in strided_windows(padded, (kh, kw), strides, dilation,
                                                grad.shape[1:3])]
    # [taps, groups, in, out] -> [kh, kw, in, groups * out]
    kernel_grad = (jnp.stack(taps).reshape(kh, kw, groups, in_per_group, out_per_group)
                   .transpose(0, 1, 3, 2, 4).reshape(kernel.shape))
    return x_grad, kernel_grad.astype(kernel.dtype)


grouped_conv.defvjp(_grouped_forward, _grouped_backward)


def groups_per_supergroup(groups: int, in_per_group: int) -> int:
    """How many consecutive groups `supergroup_conv` takes together: the most
    that divide `groups` and have at most SUPERGROUP_CHANNELS input channels
    (one group when a group alone has more)."""
    return largest_divisor(groups, max(1, SUPERGROUP_CHANNELS // in_per_group))


def supergroup_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Pads,
                    dilation: tuple[int, int], groups: int) -> jax.Array:
    """A grouped NHWC convolution as dense convolutions over super-groups.

    Arguments and result as `grouped_conv`'s: x [batch, height, width,
    groups * in_per_group], kernel [kh, kw, in_per_group, out_channels] ->
    [batch, out_height, out_width, out_channels].

    Each run of `groups_per_supergroup` consecutive groups is one dense
    convolution (XLA's, gradients by autodiff) with a block-diagonal kernel:
    the group's kernel on the diagonal, zeros elsewhere. The zeros are
    multiplied too, but XLA's dense convolutions on CPU beat its grouped loop by
    more than that (see SUPERGROUP_CHANNELS). Autodiff of the block-diagonal
    construction hands the kernel gradient's diagonal blocks back, so
    parameters and gradients are those of the grouped convolution.
    """
    kh, kw, in_per_group, out_channels = kernel.shape
    out_per_group = out_channels // groups
    per = groups_per_supergroup(groups, in_per_group)
    supers = groups // per
    blocks = kernel.reshape(kh, kw, in_per_group, supers, per, out_per_group)
    # dense[s, :, :, i * in + c, j * out + o] = blocks[:, :, c, s, j, o] if i == j else 0
    dense = jnp.einsum("hwcsjo,ij->shwicjo", blocks, jnp.eye(per, dtype=kernel.dtype))
    dense = dense.reshape(supers, kh, kw, per * in_per_group, per * out_per_group)
    width = per * in_per_group
    outputs = [_xla_conv(x[..., s * width:(s + 1) * width], dense[s], strides, padding, dilation)
               for s in range(supers)]
    return outputs[0] if supers == 1 else jnp.concatenate(outputs, axis=-1)


def _cpu_form(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, int], pads: Pads,
              dilation: tuple[int, int], groups: int
              ) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
    """The CPU computation for this convolution, or None to keep XLA's."""
    if groups > 1:
        if rhs.shape[2] == 1 and rhs.shape[3] == groups == lhs.shape[3]:
            return lambda x, k: shifted_depthwise_conv(x, k, strides, pads, dilation)
        out_h, out_w = _conv_output_hw(lhs, rhs, strides, pads, dilation)
        if out_h * out_w >= (SUPERGROUP_MIN_PIXELS_STRIDE_1 if strides == (1, 1)
                             else SUPERGROUP_MIN_PIXELS):
            return lambda x, k: supergroup_conv(x, k, strides, pads, dilation, groups)
        return lambda x, k: grouped_conv(x, k, strides, pads, dilation, groups)
    if rhs.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
        sh, sw = strides
        return lambda x, k: pointwise_conv(x[:, ::sh, ::sw, :], k)
    if rhs.shape[:2] == strides and pads == ((0, 0), (0, 0)) and dilation == (1, 1):
        return patchify_conv
    if strides == (1, 1) and dilation == (1, 1):
        out_h, out_w = _conv_output_hw(lhs, rhs, strides, pads, dilation)
        if (rhs.shape[:2] == (3, 3) and pads == ((1, 1), (1, 1))
                and lhs.dtype == rhs.dtype == jnp.float32
                and min(rhs.shape[2:]) >= WINOGRAD_MIN_CHANNELS
                and out_h * out_w >= WINOGRAD_MIN_PIXELS):
            return winograd_conv3x3
        if out_h * out_w >= XLA_CONV_MIN_PIXELS and not _bf16_im2col(lhs, rhs, (out_h, out_w)):
            return None                        # XLA's, gradients included
    return lambda x, k: dense_conv(x, k, strides, pads, dilation)


def conv_general_dilated(
        lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Padding,
        lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
        dimension_numbers: Any = None, feature_group_count: int = 1,
        batch_group_count: int = 1, precision: Any = None,
        preferred_element_type: Any = None) -> jax.Array:
    """`lax.conv_general_dilated`, computed in CPU-friendly form when lowered for CPU
    (see the module docstring); every other call and platform is XLA's conv."""
    def xla(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, batch_group_count=batch_group_count,
            precision=precision, preferred_element_type=preferred_element_type)

    # Only explicit NHWC/HWIO numbers (what flax passes): None means NCHW/OIHW.
    nhwc = (isinstance(dimension_numbers, lax.ConvDimensionNumbers)
            and lhs.ndim == rhs.ndim == 4
            and dimension_numbers == lax.conv_dimension_numbers(
                lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
    if (not nhwc or batch_group_count != 1 or preferred_element_type is not None
            or (lhs_dilation is not None and any(d != 1 for d in lhs_dilation))):
        return xla(lhs, rhs)
    strides = (int(window_strides[0]), int(window_strides[1]))
    dilation = ((int(rhs_dilation[0]), int(rhs_dilation[1])) if rhs_dilation is not None
                else (1, 1))
    pads = explicit_pads(padding, lhs.shape[1:3], rhs.shape[:2], strides, dilation)
    if any(p < 0 for pair in pads for p in pair):
        return xla(lhs, rhs)       # negative padding (cropping): XLA's conv handles it
    cpu = _cpu_form(lhs, rhs, strides, pads, dilation, feature_group_count)
    if cpu is None:
        return xla(lhs, rhs)
    return lax.platform_dependent(lhs, rhs, cpu=cpu, default=xla)
