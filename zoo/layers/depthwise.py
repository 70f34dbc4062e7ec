"""Depthwise convolution written for XLA's CPU backend: k*k shifted multiply-adds.

XLA's CPU backend runs a depthwise convolution (`feature_group_count` equal
to the channel count) through a generic grouped-convolution loop: on a 2-core
x86 machine a 3x3 depthwise conv of [8, 56, 56, 144] took 127 ms forward and
782 ms forward+backward, against 4.6 ms and 93 ms for the same arithmetic
written as k*k shifted multiply-adds with the hand-written gradient below
(benchmarks/NOTES.md, entry 1). MobileNet, EfficientNet and ConvNeXt are made
of such convolutions.

Models do not call this directly: `zoo.layers.cpu_conv.conv_general_dilated`,
the drop-in for `lax.conv_general_dilated` that `nn.Conv` is given, routes
depthwise NHWC convolutions here when lowering for CPU; GPU and TPU keep XLA's
convolution. Parameters, shapes and results are those of XLA's convolution
(a kernel [kh, kw, 1, C]).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from zoo.layers.fusion_fence import library_fusion_fence, loop_fusion_barrier


def strided_windows(padded: jax.Array, kernel_hw: tuple[int, int], strides: Sequence[int],
                    dilation: Sequence[int], out_hw: tuple[int, int]
                    ) -> Iterator[tuple[int, int, jax.Array]]:
    """Yields (i, j, window): the strided slice of `padded` that kernel tap
    (i, j) multiplies, [batch, out_h, out_w, channels]."""
    (kh, kw), (sh, sw), (dh, dw), (out_h, out_w) = kernel_hw, strides, dilation, out_hw
    batch, channels = padded.shape[0], padded.shape[3]
    for i in range(kh):
        for j in range(kw):
            yield i, j, lax.slice(
                padded, (0, i * dh, j * dw, 0),
                (batch, i * dh + sh * (out_h - 1) + 1, j * dw + sw * (out_w - 1) + 1, channels),
                (1, sh, sw, 1))


def add_windows_back(pieces: Iterable[tuple[int, int, jax.Array]], padded_hw: tuple[int, int],
                     strides: Sequence[int], dilation: Sequence[int]) -> jax.Array:
    """The transpose of `strided_windows`: each (i, j, piece), [batch, out_h,
    out_w, channels], is put back at the padded positions tap (i, j) read
    (strided, zeros between), and all are summed into [batch, padded_h,
    padded_w, channels]. XLA fuses the k * k pads and adds into one pass."""
    (padded_h, padded_w), (sh, sw), (dh, dw) = padded_hw, strides, dilation
    total = None
    for i, j, piece in pieces:
        out_h, out_w = piece.shape[1:3]
        placed = lax.pad(piece, jnp.zeros((), piece.dtype), (
            (0, 0, 0), (i * dh, padded_h - i * dh - (out_h - 1) * sh - 1, sh - 1),
            (j * dw, padded_w - j * dw - (out_w - 1) * sw - 1, sw - 1), (0, 0, 0)))
        total = placed if total is None else total + placed
    return total


def explicit_pads(padding: str | Sequence[tuple[int, int]], in_hw: Sequence[int],
                  kernel_hw: Sequence[int], strides: Sequence[int], dilation: Sequence[int]
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) as ints: XLA's "SAME" / "VALID" worked
    out for the dilated kernel, or explicit pairs passed through."""
    if isinstance(padding, str):
        dilated = [(k - 1) * d + 1 for k, d in zip(kernel_hw, dilation)]
        padding = lax.padtype_to_pads(in_hw, dilated, strides, padding)
    (top, bottom), (left, right) = padding
    return (int(top), int(bottom)), (int(left), int(right))


def output_hw(padded_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int],
              dilation: Sequence[int]) -> tuple[int, int]:
    """(out_h, out_w) of a VALID convolution over an already padded input."""
    return tuple((p - d * (k - 1) - 1) // s + 1  # type: ignore[return-value]
                 for p, k, s, d in zip(padded_hw, kernel_hw, strides, dilation))


# Rows of the cotangent summed in the first stage of the kernel gradient (at most).
KERNEL_GRADIENT_ROWS_PER_SUM = 8


def largest_divisor(n: int, cap: int) -> int:
    """The largest divisor of n that is at most cap (1 when only 1 is)."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def depthwise_kernel_gradient(padded: jax.Array, grad32: jax.Array, kernel: jax.Array,
                              strides: Sequence[int], dilation: Sequence[int]) -> jax.Array:
    """d loss / d kernel of a depthwise convolution: for each tap (i, j) and
    channel c, the sum over batch and output pixels of window(i, j) * grad.

    Args:
      padded: the padded input, [batch, padded_h, padded_w, channels].
      grad32: the output's cotangent in float32, [batch, out_h, out_w, channels].
      kernel: the convolution's kernel, [kh, kw, 1, channels] (its shape, and
        the barrier's predicate: a replicated array, see below).
      strides, dilation: (sh, sw), (dh, dw).

    Returns:
      [kh * kw, channels] in float32, taps in row-major order.

    Written for XLA's CPU backend, in two stages. A sum per tap (one
    YNNPACK reduction each) first writes every shifted window out as a buffer
    of its own: kh * kw copies of the input. Here the padded input and the
    cotangent are one buffer each (`loop_fusion_barrier`), and one kernel
    row's taps are one variadic XLA reduction, which reads the windows in
    place. It sums over an axis of `KERNEL_GRADIENT_ROWS_PER_SUM` rows of
    each image (a divisor of out_h), short enough for LLVM to unroll and to
    vectorize along the channels it keeps, [batch, out_h / 8, out_w,
    channels] per tap (a reduction over all rows at once runs scalar, 1.6x
    slower over the measured shapes); YNNPACK then sums those partials per
    tap. 2.2-4.4x faster than one sum per tap at EfficientNet's, MobileNet's
    and ConvNeXt's stride-1 shapes, 1.4-3.0x at stride 2
    (benchmarks/NOTES.md, entry 15).
    """
    batch, out_h, out_w, channels = grad32.shape
    kh, kw = kernel.shape[:2]
    kernel_hw = (kh, kw)
    # One buffer each, read in place by every reduction below, instead of the
    # pad and the cotangent's producers (a BatchNorm gradient) fused into each.
    # The predicate comes from the kernel, which data-parallel training
    # replicates (no device has to fetch an element of another's batch).
    padded, grad32 = loop_fusion_barrier(padded, grad32, predicate_from=kernel)
    windows = [window for _, _, window in
               strided_windows(padded, kernel_hw, strides, dilation, (out_h, out_w))]
    if len(windows) == 1:  # a 1x1 kernel: one product, a plain reduction
        return jnp.sum(windows[0].astype(jnp.float32) * grad32, axis=(0, 1, 2))[None]
    # Rows are split within each image, never across the batch: a reshape that
    # merged the batch axis would make XLA's SPMD partitioner gather the
    # batch-sharded activations onto every device (data-parallel training).
    per_sum = largest_divisor(out_h, KERNEL_GRADIENT_ROWS_PER_SUM)
    if per_sum == 1:  # a prime number of rows: sum them all at once
        per_sum = out_h

    def row_partials(window: jax.Array) -> jax.Array:
        # [batch, per_sum, out_h / per_sum, out_w, channels]
        return (window.astype(jnp.float32) * grad32).reshape(
            batch, per_sum, out_h // per_sum, out_w, channels)

    # One reduction per kernel row (per column for a kh x 1 kernel): up to 7
    # outputs; all 25 taps of a 5x5 in one reduction ran 3x slower.
    taps_per_reduction = kw if kw > 1 else kh
    partials: list[jax.Array] = []
    for start in range(0, len(windows), taps_per_reduction):
        products = tuple(row_partials(window)
                         for window in windows[start:start + taps_per_reduction])
        zeros = tuple(jnp.zeros((), jnp.float32) for _ in products)
        partials += lax.reduce(products, zeros, _add_tuples, (1,))
    return jnp.stack([jnp.sum(partial.reshape(-1, channels), axis=0) for partial in partials])


def _add_tuples(a: tuple[jax.Array, ...], b: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    return tuple(u + v for u, v in zip(a, b))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def shifted_depthwise_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                           padding: tuple[tuple[int, int], tuple[int, int]],
                           dilation: tuple[int, int] = (1, 1)) -> jax.Array:
    """Depthwise convolution as a sum of kh * kw shifted, strided slices.

    Args:
      x: [batch, height, width, channels].
      kernel: [kh, kw, 1, channels].
      strides, dilation: (sh, sw), (dh, dw).
      padding: ((top, bottom), (left, right)), each >= 0.

    Returns:
      [batch, out_height, out_width, channels], accumulated in float32 and
      returned in x's dtype (as XLA's convolution does).

    The gradient is written by hand (`_backward`): differentiating the slices
    would pad every tap's cotangent back to the input's size (kh * kw full
    buffers), which is slower to run and to compile.
    """
    padded = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    out_hw = output_hw(padded.shape[1:3], kernel.shape[:2], strides, dilation)
    weights = kernel[:, :, 0, :].astype(jnp.float32)
    total = jnp.zeros((x.shape[0], *out_hw, x.shape[3]), jnp.float32)
    for i, j, window in strided_windows(padded, kernel.shape[:2], strides, dilation, out_hw):
        total = total + window.astype(jnp.float32) * weights[i, j]
    # When a reduction follows (ConvNeXt's LayerNorm), XLA grew its YNNPACK
    # fusion up into these multiply-adds and wrote every shifted window out as a
    # buffer first: 176 MB of scratch for a 7x7 conv + LayerNorm at [8, 56, 56,
    # 96], against 21 MB with the fence, where the taps stay one XLA loop over
    # the padded input (benchmarks/NOTES.md, entry 11).
    return library_fusion_fence(total).astype(x.dtype)


def _forward(x, kernel, strides, padding, dilation):
    return shifted_depthwise_conv(x, kernel, strides, padding, dilation), (x, kernel)


def _backward(strides, padding, dilation, residuals, grad):
    """d/dkernel: `depthwise_kernel_gradient`. d/dx: the cotangent,
    dilated by the strides, correlated with the flipped kernel (one shifted sum
    over the padded input's extent), then cropped to x."""
    x, kernel = residuals
    (kh, kw), (sh, sw), (dh, dw) = kernel.shape[:2], strides, dilation
    (top, bottom), (left, right) = padding
    grad32 = grad.astype(jnp.float32)
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_hw = grad.shape[1:3]
    kernel_grad = depthwise_kernel_gradient(padded, grad32, kernel, strides, dilation)
    kernel_grad = kernel_grad.reshape(kh, kw, 1, -1).astype(kernel.dtype)

    padded_h, padded_w = padded.shape[1:3]
    dilated_h, dilated_w = (out_hw[0] - 1) * sh + 1, (out_hw[1] - 1) * sw + 1
    spread = lax.pad(grad32, jnp.float32(0), (
        (0, 0, 0), ((kh - 1) * dh, padded_h - dilated_h, sh - 1),
        ((kw - 1) * dw, padded_w - dilated_w, sw - 1), (0, 0, 0)))
    weights = kernel[:, :, 0, :].astype(jnp.float32)
    padded_grad = jnp.zeros(padded.shape, jnp.float32)
    for i in range(kh):
        for j in range(kw):
            r, c = (kh - 1 - i) * dh, (kw - 1 - j) * dw
            padded_grad = padded_grad + spread[:, r:r + padded_h, c:c + padded_w, :] * weights[i, j]
    x_grad = padded_grad[:, top:top + x.shape[1], left:left + x.shape[2], :].astype(x.dtype)
    return x_grad, kernel_grad


shifted_depthwise_conv.defvjp(_forward, _backward)
