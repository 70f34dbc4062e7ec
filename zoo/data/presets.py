"""Augmentation presets: a typed table of which transforms a train pipeline applies.

    "none"         resize to image_size only (eval transform for fixed-size data)
    "digits"       random rotation +-10 deg (border replicated), pad-2 random crop
    "cifar"        pad-4 (reflect) random crop + horizontal flip
    "imagenet"     random-resized crop (area 8-100%, aspect 3/4-4/3) + horizontal flip
    "randaugment"  "imagenet" then RandAugment (2 ops, magnitude 9)

Eval never augments: fixed-size sources (digits, MNIST, CIFAR) are resized to
image_size; variable-size ones (ImageNet, folders) are resized so the shorter
side is image_size / 0.875 and center-cropped (the standard 224 <- 256 protocol).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from zoo.data import transforms
from zoo.data.randaugment import rand_augment

EVAL_CROP_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class AugmentPreset:
    """What a train transform does, in order: crop, rotation, flip, RandAugment."""

    crop: Literal["resize", "pad_crop", "random_resized"]
    pad: int = 0  # for crop="pad_crop", in pixels of the image_size-sized image
    rotation_degrees: float = 0.0
    flip: bool = False
    randaugment_ops: int = 0
    randaugment_magnitude: int = 0
    min_area: float = 0.08  # for crop="random_resized"


PRESETS: dict[str, AugmentPreset] = {
    "none": AugmentPreset(crop="resize"),
    "digits": AugmentPreset(crop="pad_crop", pad=2, rotation_degrees=10.0),
    "cifar": AugmentPreset(crop="pad_crop", pad=4, flip=True),
    "imagenet": AugmentPreset(crop="random_resized", flip=True),
    "randaugment": AugmentPreset(crop="random_resized", flip=True,
                                 randaugment_ops=2, randaugment_magnitude=9),
}


def get_preset(name: str) -> AugmentPreset:
    """The preset called `name`, or a ValueError listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown augment preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def eval_transform(image: np.ndarray, image_size: int, *, fixed_size: bool) -> np.ndarray:
    """uint8 [h, w, c] -> uint8 [image_size, image_size, c], deterministic."""
    if fixed_size:
        return transforms.resize(image, image_size, image_size)
    resized = transforms.resize_shorter_side(image, round(image_size / EVAL_CROP_FRACTION))
    return transforms.center_crop(resized, image_size)


def train_transform(image: np.ndarray, image_size: int, preset: AugmentPreset,
                    rng: np.random.Generator, *, fixed_size: bool) -> np.ndarray:
    """uint8 [h, w, c] -> uint8 [image_size, image_size, c], augmented with `rng`."""
    if preset.crop == "random_resized":
        image = transforms.random_resized_crop(image, image_size, rng,
                                               scale=(preset.min_area, 1.0))
    elif fixed_size:
        image = transforms.resize(image, image_size, image_size)
    else:
        image = eval_transform(image, image_size, fixed_size=False)
    if preset.crop == "pad_crop" and preset.pad > 0:
        image = transforms.random_crop_with_padding(image, preset.pad, rng)
    if preset.rotation_degrees > 0:
        image = transforms.random_rotation(image, preset.rotation_degrees, rng)
    if preset.flip:
        image = transforms.horizontal_flip(image, rng)
    if preset.randaugment_ops > 0:
        image = rand_augment(image, rng, num_ops=preset.randaugment_ops,
                             magnitude=preset.randaugment_magnitude)
    return image
