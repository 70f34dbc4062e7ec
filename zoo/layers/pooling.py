"""Pooling that matches PyTorch's, so torchvision / timm models port exactly.

- `adaptive_avg_pool`: `torch.nn.AdaptiveAvgPool2d`. Output cell i averages
  input rows floor(i * H / out) .. ceil((i + 1) * H / out) - 1 (and the same
  for columns), so windows may overlap and differ in size when H is not a
  multiple of `out`, and repeat pixels when H < out (VGG's 7x7 pool on a 1x1
  map copies the pixel 49 times).
- `global_avg_pool`: mean over height and width.
- `max_pool_ceil`: `torch.nn.MaxPool2d(ceil_mode=True)`, used by GoogLeNet /
  Inception-style networks; floor-mode max-pools are `flax.linen.max_pool`
  with explicit symmetric padding (padded pixels are -inf in both).

All take and return NHWC arrays: [batch, height, width, channels].
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


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
    out_h, out_w = _pair(output_size, "output_size")
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
    windows, strides = _pair(window, "window"), _pair(stride, "stride")
    paddings = _pair(padding, "padding")
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
    # flax's max_pool pads with -inf and is differentiable under jit (a
    # hand-built lax.reduce_window with an array init value is not).
    return nn.max_pool(x, windows, strides=strides, padding=tuple(pads))
