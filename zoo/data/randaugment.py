"""RandAugment (Cubuk et al. 2019, arXiv:1909.13719): `num_ops` ops drawn uniformly
from a list, each at one global `magnitude` on the paper's 0..10 scale (10 is the
strongest; 9 is the usual ImageNet setting).

The subset: identity, autocontrast, equalize, rotate, solarize, color, posterize,
contrast, brightness, sharpness, shear x/y, translate x/y -- the paper's list
without the two ops (cutout, sample pairing) it dropped itself. Geometric ops
fill with grey (128), as the reference implementations do; signs are random.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_MAGNITUDE = 10.0
FILL = 128


def _level(magnitude: float, top: float, rng: np.random.Generator, signed: bool) -> float:
    value = magnitude / MAX_MAGNITUDE * top
    return -value if signed and rng.uniform() < 0.5 else value


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    fill = FILL if image.mode == "L" else (FILL,) * 3
    return image.transform(image.size, Image.Transform.AFFINE, matrix,
                           resample=Image.Resampling.BILINEAR, fillcolor=fill)


def _enhance(enhancer: type) -> Callable:
    def op(image: Image.Image, magnitude: float, rng: np.random.Generator) -> Image.Image:
        return enhancer(image).enhance(1.0 + _level(magnitude, 0.9, rng, signed=True))
    return op


def _identity(image, magnitude, rng):
    return image


def _autocontrast(image, magnitude, rng):
    return ImageOps.autocontrast(image)


def _equalize(image, magnitude, rng):
    return ImageOps.equalize(image)


def _rotate(image, magnitude, rng):
    fill = FILL if image.mode == "L" else (FILL,) * 3
    return image.rotate(_level(magnitude, 30.0, rng, signed=True),
                        resample=Image.Resampling.BILINEAR, fillcolor=fill)


def _solarize(image, magnitude, rng):
    return ImageOps.solarize(image, threshold=int(256 - _level(magnitude, 256.0, rng, False)))


def _posterize(image, magnitude, rng):
    return ImageOps.posterize(image, max(1, int(8 - _level(magnitude, 4.0, rng, False))))


def _shear_x(image, magnitude, rng):
    return _affine(image, (1, _level(magnitude, 0.3, rng, True), 0, 0, 1, 0))


def _shear_y(image, magnitude, rng):
    return _affine(image, (1, 0, 0, _level(magnitude, 0.3, rng, True), 1, 0))


def _translate_x(image, magnitude, rng):
    return _affine(image, (1, 0, _level(magnitude, 0.45, rng, True) * image.size[0], 0, 1, 0))


def _translate_y(image, magnitude, rng):
    return _affine(image, (1, 0, 0, 0, 1, _level(magnitude, 0.45, rng, True) * image.size[1]))


OPS: tuple[tuple[str, Callable], ...] = (
    ("identity", _identity), ("autocontrast", _autocontrast), ("equalize", _equalize),
    ("rotate", _rotate), ("solarize", _solarize), ("color", _enhance(ImageEnhance.Color)),
    ("posterize", _posterize), ("contrast", _enhance(ImageEnhance.Contrast)),
    ("brightness", _enhance(ImageEnhance.Brightness)),
    ("sharpness", _enhance(ImageEnhance.Sharpness)), ("shear_x", _shear_x),
    ("shear_y", _shear_y), ("translate_x", _translate_x), ("translate_y", _translate_y),
)


def rand_augment(image: np.ndarray, rng: np.random.Generator, *, num_ops: int = 2,
                 magnitude: float = 9.0) -> np.ndarray:
    """Applies `num_ops` random ops at `magnitude` (0..10) to uint8 [h, w, c]."""
    if not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ValueError(f"RandAugment magnitude must be in [0, {MAX_MAGNITUDE}]; got {magnitude}")
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    for op_index in rng.integers(0, len(OPS), size=num_ops):
        pil = OPS[int(op_index)][1](pil, magnitude, rng)
    array = np.asarray(pil, dtype=np.uint8)
    return array[..., None] if channels == 1 else array
