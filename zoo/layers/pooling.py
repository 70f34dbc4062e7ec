"""Pooling that matches PyTorch's, so torchvision / timm models port exactly.

- `adaptive_avg_pool`: `torch.nn.AdaptiveAvgPool2d`. Output cell i averages
  input rows floor(i * H / out) .. ceil((i + 1) * H / out) - 1 (and the same
  for columns), so windows may overlap and differ in size when H is not a
  multiple of `out`, and repeat pixels when H < out (VGG's 7x7 pool on a 1x1
  map copies the pixel 49 times).
- `global_avg_pool`: mean over height and width.
- `max_pool`: `flax.linen.max_pool` on NHWC input (floor mode, explicit
  symmetric padding = `torch.nn.MaxPool2d`; padded pixels are -inf in both),
  whose gradient on CPU routes through a stored argmax, as PyTorch's does,
  instead of XLA's select-and-scatter (3-4x faster, benchmarks/NOTES.md entry 7).
- `max_pool_ceil`: `torch.nn.MaxPool2d(ceil_mode=True)`, used by GoogLeNet /
  Inception-style networks.

All take and return NHWC arrays: [batch, height, width, channels].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from zoo.layers.activations import in_float32
from zoo.layers.depthwise import add_windows_back, explicit_pads, output_hw, strided_windows
from zoo.layers.validation import int_pair

Pads = tuple[tuple[int, int], tuple[int, int]]


def _check_nhwc(x: jax.Array, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{what} expects [batch, height, width, channels] (NHWC), got shape {x.shape}")


def adaptive_window_bounds(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) input index of each of `out`
    adaptive-pooling windows over an axis of `size` pixels, as PyTorch."""
    i = np.arange(out)
    starts = (i * size) // out
    ends = -((-(i + 1) * size) // out)  # ceil((i + 1) * size / out) in integers
    return starts, ends


def _adaptive_mean_along(x: jax.Array, axis: int, out: int) -> jax.Array:
    """Adaptive average along one spatial `axis` of x."""
    size = x.shape[axis]
    if size == out:
        return x
    if size % out == 0:
        # Fast path: equal, non-overlapping windows are a reshape and a mean.
        shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1:]
        return jnp.mean(x.reshape(shape), axis=axis + 1)
    # General path: gather every window padded to the longest one, mask the
    # padding and sum. The indices are static (shapes are known when tracing),
    # so this is one gather and one reduction, with no loop over pixels.
    starts, ends = adaptive_window_bounds(size, out)
    longest = int((ends - starts).max())
    offsets = np.arange(longest)
    index = np.minimum(starts[:, None] + offsets, size - 1)  # [out, longest]
    valid = (starts[:, None] + offsets) < ends[:, None]
    windows = jnp.take(x, jnp.asarray(index.reshape(-1)), axis=axis)
    windows = windows.reshape(x.shape[:axis] + (out, longest) + x.shape[axis + 1:])
    mask_shape = (out, longest) + (1,) * (x.ndim - axis - 1)
    weights = (valid / (ends - starts)[:, None]).reshape(mask_shape)
    return jnp.sum(windows * jnp.asarray(weights, x.dtype), axis=axis + 1)


def adaptive_avg_pool(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
    """`torch.nn.AdaptiveAvgPool2d(output_size)` on NHWC input.

    Args:
      x: [batch, height, width, channels].
      output_size: `out` or `(out_height, out_width)`, each >= 1.

    Returns:
      [batch, out_height, out_width, channels].
    """
    _check_nhwc(x, "adaptive_avg_pool")
    out_h, out_w = int_pair(output_size, "output_size")
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output_size must be >= 1, got {output_size!r}")
    x = _adaptive_mean_along(x, 1, out_h)
    return _adaptive_mean_along(x, 2, out_w)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over height and width: [batch, height, width, channels] -> [batch, channels]."""
    _check_nhwc(x, "global_avg_pool")
    return jnp.mean(x, axis=(1, 2))


def ceil_mode_output_size(size: int, window: int, stride: int, padding: int) -> int:
    """Output length of `torch.nn.MaxPool2d(..., ceil_mode=True)` along one axis.

    PyTorch rounds up, then drops the last window if it would start in the
    right padding (it must start inside the input or the left padding).
    """
    out = math.ceil((size + 2 * padding - window) / stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_pool_ceil(
    x: jax.Array,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int] = 0,
) -> jax.Array:
    """`torch.nn.MaxPool2d(window, stride, padding, ceil_mode=True)` on NHWC input.

    Args:
      x: [batch, height, width, channels].
      window: pooling window, int or (height, width).
      stride: stride, int or (height, width).
      padding: symmetric padding (at most half the window, as PyTorch
        requires); padded pixels never win the max.

    Returns:
      [batch, out_height, out_width, channels], where each out size is
      `ceil_mode_output_size(size, window, stride, padding)`.
    """
    _check_nhwc(x, "max_pool_ceil")
    windows, strides = int_pair(window, "window"), int_pair(stride, "stride")
    paddings = int_pair(padding, "padding")
    pads = []
    for axis, (k, s, p) in enumerate(zip(windows, strides, paddings)):
        size = x.shape[axis + 1]
        if k < 1 or s < 1 or p < 0 or p > k // 2:
            raise ValueError(
                f"max_pool_ceil needs window >= 1, stride >= 1 and 0 <= padding <= "
                f"window // 2; got window={window!r}, stride={stride!r}, padding={padding!r}")
        if size + 2 * p < k:
            raise ValueError(
                f"max_pool_ceil: input of {size} pixels (padding {p}) is smaller than "
                f"the {k}-pixel window; shape {x.shape}")
        out = ceil_mode_output_size(size, k, s, p)
        # Extra right padding lets the last (partial) window exist; when it is
        # negative the trailing pixels are in no window and VALID drops them.
        pads.append((p, max(0, (out - 1) * s + k - size - p)))
    return max_pool(x, windows, strides=strides, padding=tuple(pads))


def _max_and_argmax(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
                    pads: Pads) -> tuple[jax.Array, jax.Array]:
    """The max over each window and the tap that holds it: the first in
    row-major order, a NaN counting as the max (PyTorch's rule)."""
    padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf)
    out_hw = output_hw(padded.shape[1:3], window, strides, (1, 1))
    index_dtype = jnp.int8 if window[0] * window[1] <= 127 else jnp.int32
    best = argmax = None
    for i, j, values in strided_windows(padded, window, strides, (1, 1), out_hw):
        tap = i * window[1] + j
        if best is None:
            best, argmax = values, jnp.zeros(values.shape, index_dtype)
            continue
        wins = (values > best) | jnp.isnan(values)
        best = jnp.where(wins, values, best)
        argmax = jnp.where(wins, jnp.asarray(tap, index_dtype), argmax)
    return best, argmax


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def argmax_max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
                    pads: Pads) -> jax.Array:
    """Max-pool whose gradient goes through a stored argmax.

    Args:
      x: [batch, height, width, channels], floating point.
      window, strides: (height, width) each.
      pads: ((top, bottom), (left, right)), each >= 0; padded pixels are -inf.

    Returns:
      [batch, out_h, out_w, channels], out = (size + pads - window) // stride + 1.

    The forward pass keeps the winning tap of every window (int8, a quarter of
    the output's bytes); the backward pass adds each output's gradient to its
    winner, one strided scatter per tap, which XLA fuses into a single pass.
    Ties go to the first tap, as in XLA's select-and-scatter and PyTorch.
    """
    return _max_and_argmax(x, window, strides, pads)[0]


def _argmax_pool_forward(x, window, strides, pads):
    best, argmax = _max_and_argmax(x, window, strides, pads)
    return best, (argmax, x.shape)


def _argmax_pool_backward(window, strides, pads, residuals, grad):
    argmax, (_, height, width, _) = residuals
    (top, bottom), (left, right) = pads
    zero = jnp.zeros((), grad.dtype)
    # Each output's gradient, kept only at its winning tap, goes back to the
    # padded pixel that tap read.
    winners = ((tap // window[1], tap % window[1], jnp.where(argmax == tap, grad, zero))
               for tap in range(window[0] * window[1]))
    x_grad = add_windows_back(winners, (height + top + bottom, width + left + right),
                              strides, (1, 1))
    return (x_grad[:, top:top + height, left:left + width, :],)


argmax_max_pool.defvjp(_argmax_pool_forward, _argmax_pool_backward)


def max_pool(x: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID") -> jax.Array:
    """`flax.linen.max_pool` for NHWC input, with a faster gradient on CPU.

    Args:
      x: [batch, height, width, channels].
      window_shape: (height, width).
      strides: (height, width); None means 1.
      padding: "VALID", "SAME" or ((top, bottom), (left, right)); padded
        pixels are -inf and never win.

    Returns:
      [batch, out_height, out_width, channels], the values of flax's max_pool.

    Lowered for CPU, floating-point input takes `argmax_max_pool`: XLA's CPU
    select-and-scatter (the gradient of flax's version) takes 64 ms for a
    3x3/2 pool at [8, 112, 112, 64] forward and backward, the argmax form
    16-20 ms; bfloat16 and float16 input is pooled in float32 there and the result
    rounded back (exact: the max of bfloat16 values is one of them). Other
    platforms and non-floating dtypes keep flax's.
    """
    _check_nhwc(x, "max_pool")
    window = int_pair(tuple(window_shape), "window_shape")
    stride = int_pair(tuple(strides) if strides is not None else (1, 1), "strides")

    def flax_pool(x: jax.Array) -> jax.Array:
        return nn.max_pool(x, window, strides=stride, padding=padding)

    if not jnp.issubdtype(x.dtype, jnp.floating):
        return flax_pool(x)
    (top, bottom), (left, right) = explicit_pads(padding, x.shape[1:3], window, stride, (1, 1))
    if min(top, bottom, left, right) < 0:
        return flax_pool(x)

    # Lower precisions pool in float32 (the max is exact either way): XLA's
    # CPU backend rounds every bfloat16 op of the backward pass's long
    # compare-and-select chain, 572 -> 184 ms for a 3x3/2 pool at
    # [8, 112, 112, 64] forward and backward (benchmarks/NOTES.md, entry 23).
    @in_float32
    def cpu_pool(x: jax.Array) -> jax.Array:
        return argmax_max_pool(x, window, stride, ((top, bottom), (left, right)))

    return lax.platform_dependent(x, cpu=cpu_pool, default=flax_pool)
