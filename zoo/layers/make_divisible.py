"""Channel rounding used by MobileNet / EfficientNet width multipliers."""

from __future__ import annotations


def make_divisible(
    value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9
) -> int:
    """Rounds `value` to the nearest multiple of `divisor`, never going below
    `min_value` (default `divisor`) nor more than 10% below `value`.

    The same rule as TensorFlow's reference MobileNet code, torchvision's
    `_make_divisible` and timm's `make_divisible`, so widths match theirs.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded
