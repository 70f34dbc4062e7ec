"""Input checks shared by every model: a wrong shape fails with a clear message.

Models call `check_images` first thing in `__call__`, so a bad input raises a
`ValueError` naming the expected shape before XLA sees it (shapes are static
under tracing, so this costs nothing at run time). `int_pair` reads a size
given as one int or a (height, width) pair (kernels, strides, paddings).
"""

from __future__ import annotations

from typing import Any


def check_images(x: Any, *, channels: int, min_size: int, model: str) -> None:
    """Raises ValueError unless `x` is `[batch, height, width, channels]` with
    height and width at least `min_size`."""
    expected = f"[batch, height>={min_size}, width>={min_size}, {channels}] (NHWC)"
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        raise ValueError(
            f"{model} expects images of shape {expected}; got an array of rank "
            f"{len(shape)} with shape {shape}"
        )
    if shape[-1] != channels:
        raise ValueError(
            f"{model} expects {channels} input channel(s), shape {expected}; got "
            f"shape {shape} with {shape[-1]} channels (is the input NCHW?)"
        )
    if shape[1] < min_size or shape[2] < min_size:
        raise ValueError(
            f"{model} needs images of at least {min_size}x{min_size} pixels, shape "
            f"{expected}; got {shape[1]}x{shape[2]} (shape {shape})"
        )


def int_pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """(height, width) of `value`, one int for both axes or a pair of ints;
    ValueError naming `name` otherwise."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]
