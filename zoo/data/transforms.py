"""Image transforms: small functions on numpy arrays, composed per preset.

Images are uint8 [height, width, channels] (channels 1 or 3) until `normalize`,
which returns [height, width, channels] in the requested float dtype. Every
random transform takes an `np.random.Generator`; the loader seeds one per
example from (seed, epoch, example index), so an augmented example is a pure
function of those three numbers (exact resume, identical on every process).
Geometric work goes through Pillow (C code), the rest is numpy.
"""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from zoo.data.sources import CorruptImageError


# ----------------------------------------------------------------------------- decode


def decode_image(data: bytes, *, channels: int, name: str = "<bytes>") -> np.ndarray:
    """Decodes image bytes to uint8 [height, width, channels] (1 or 3).

    Grayscale, palette, RGBA (alpha dropped, composited on black by Pillow's
    convert), 16-bit and CMYK images all become 8-bit L or RGB. A truncated or
    non-image file raises CorruptImageError naming `name`.
    """
    try:
        with warnings.catch_warnings():
            # A file Pillow can read only partly is corrupt for us, not a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise CorruptImageError(f"cannot decode image {name}: {error}") from error
    return pil_to_array(image, channels=channels)


def pil_to_array(image: Image.Image, *, channels: int) -> np.ndarray:
    """A Pillow image of any mode as uint8 [height, width, channels]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits rather than clip (convert("L") clips).
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        image = Image.fromarray(np.clip(wide * (255.0 / top), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        if image.mode in ("P", "PA") or image.mode.endswith("A"):
            image = image.convert("RGBA").convert(target)  # palette/alpha -> colours first
        else:
            image = image.convert(target)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [h, w, c] with c in (1, 3) as [h, w, channels] (luma or repeat)."""
    if image.shape[-1] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    mode = Image.fromarray(image, "RGB").convert("L")
    return np.asarray(mode, np.uint8)[..., None]


# ----------------------------------------------------------------------------- geometry


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 [h, w, c] to [height, width, c]."""
    if image.shape[:2] == (height, width):
        return image
    resized = _to_pil(image).resize((width, height), Image.Resampling.BILINEAR)
    return _from_pil(resized, image.shape[-1])


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes so the shorter side is `size`, keeping the aspect ratio."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    return resize(image, max(size, round(height * scale)), max(size, round(width * scale)))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size window of an image at least that large."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"center_crop needs an image of at least {size}x{size}; got {height}x{width}")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator, *,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """Inception-style crop: random area fraction and aspect ratio, resized to size x size.

    Ten tries as in torchvision; then falls back to the central crop.
    """
    height, width = image.shape[:2]
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return resize(image[top:top + crop_h, left:left + crop_w], size, size)
    side = min(height, width)
    return resize(center_crop(image, side), size, size)


def random_crop_with_padding(image: np.ndarray, padding: int,
                             rng: np.random.Generator) -> np.ndarray:
    """Pads by `padding` (reflect, as in the CIFAR ResNet papers' reimplementations) and
    crops back to the original size at a random offset."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode="reflect")
    top = int(rng.integers(0, 2 * padding + 1))
    left = int(rng.integers(0, 2 * padding + 1))
    return padded[top:top + height, left:left + width]


def horizontal_flip(image: np.ndarray, rng: np.random.Generator,
                    probability: float = 0.5) -> np.ndarray:
    """Mirrors left-right with `probability`."""
    return image[:, ::-1] if rng.uniform() < probability else image


def rotate_replicate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates about the centre by `degrees` (counter-clockwise), bilinear, filling the
    corners by replicating the nearest border pixel (no black wedges)."""
    height, width = image.shape[:2]
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Inverse map: the source pixel of each output pixel, clamped to the border.
    src_x = np.clip(cos * (xs - cx) - sin * (ys - cy) + cx, 0, width - 1)
    src_y = np.clip(sin * (xs - cx) + cos * (ys - cy) + cy, 0, height - 1)
    x0, y0 = np.floor(src_x).astype(np.int32), np.floor(src_y).astype(np.int32)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (src_x - x0)[..., None], (src_y - y0)[..., None]
    pixels = image.astype(np.float32)
    top = pixels[y0, x0] * (1 - fx) + pixels[y0, x1] * fx
    bottom = pixels[y1, x0] * (1 - fx) + pixels[y1, x1] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)


def random_rotation(image: np.ndarray, max_degrees: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Rotates by a uniform angle in [-max_degrees, max_degrees], border replicated."""
    return rotate_replicate(image, float(rng.uniform(-max_degrees, max_degrees)))


# ----------------------------------------------------------------------------- output


def normalize(image: np.ndarray, mean: np.ndarray, std: np.ndarray,
              dtype: np.dtype | type = np.float32) -> np.ndarray:
    """uint8 [h, w, c] -> (pixel / 255 - mean) / std in `dtype`; mean/std float32 [c]."""
    scaled = image.astype(np.float32) * np.float32(1.0 / 255.0)
    return ((scaled - mean) / std).astype(dtype)
