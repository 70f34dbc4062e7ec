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

from zoo.layers.fusion_fence import library_fusion_fence


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
    """d/dkernel: kh * kw reductions of window * grad. d/dx: the cotangent,
    dilated by the strides, correlated with the flipped kernel (one shifted sum
    over the padded input's extent), then cropped to x."""
    x, kernel = residuals
    (kh, kw), (sh, sw), (dh, dw) = kernel.shape[:2], strides, dilation
    (top, bottom), (left, right) = padding
    grad32 = grad.astype(jnp.float32)
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_hw = grad.shape[1:3]
    taps = [jnp.sum(window.astype(jnp.float32) * grad32, axis=(0, 1, 2))
            for _, _, window in strided_windows(padded, (kh, kw), strides, dilation, out_hw)]
    kernel_grad = jnp.stack(taps).reshape(kh, kw, 1, -1).astype(kernel.dtype)

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
