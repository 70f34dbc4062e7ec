"""The built-in dataset: scikit-learn's handwritten digits (no download).

1,797 real 8x8 grayscale digits (values 0..16) ship inside scikit-learn. Zoo
upscales them to 28x28 with bilinear interpolation (so MNIST-sized models run
on them unchanged), stores them as uint8 0..255 and splits them ONCE with a
fixed seed, stratified by class: 1,437 train / 360 test examples.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from zoo.data.sources import DatasetInfo

DIGITS_SIZE = 28
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def load_digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train"|"test": (images uint8 [n, 28, 28, 1], labels int32 [n])}."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    scaled = digits.images.astype(np.float32) * (255.0 / 16.0)
    upscaled = np.stack([
        np.asarray(Image.fromarray(image, mode="F").resize(
            (DIGITS_SIZE, DIGITS_SIZE), Image.Resampling.BILINEAR))
        for image in scaled
    ])
    images = np.clip(np.rint(upscaled), 0, 255).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    indices = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        indices, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    # Sorted so the order of a split depends only on the split, not on sklearn's shuffle.
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return {"train": (images[train_idx], labels[train_idx]),
            "test": (images[test_idx], labels[test_idx])}


@functools.lru_cache(maxsize=1)
def digits_info() -> DatasetInfo:
    """DatasetInfo for "digits"; mean/std measured on the train split."""
    splits = load_digits_splits()
    train_pixels = splits["train"][0].astype(np.float64) / 255.0
    return DatasetInfo(
        name="digits",
        num_classes=10,
        image_shape=(DIGITS_SIZE, DIGITS_SIZE, 1),
        splits={split: len(labels) for split, (_, labels) in splits.items()},
        class_names=[str(digit) for digit in range(10)],
        mean=(float(train_pixels.mean()),),
        std=(float(train_pixels.std()),),
    )


class DigitsSource:
    """One split of the digits as a random-access source of uint8 images."""

    fixed_size = True

    def __init__(self, split: str, *, channels: int = 1):
        splits = load_digits_splits()
        if split not in splits:
            raise ValueError(f"digits has splits {sorted(splits)}; got split {split!r}")
        self.split = split
        self.channels = channels
        self.labels = splits[split][1]

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        # Workers re-create the arrays from scikit-learn instead of receiving them.
        return {"split": self.split, "channels": self.channels}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["split"], channels=state["channels"])

    def load(self, index: int) -> tuple[np.ndarray, int]:
        image = load_digits_splits()[self.split][0][index]
        if self.channels == 3:
            image = np.repeat(image, 3, axis=-1)
        return image, int(self.labels[index])

    def describe(self, index: int) -> str:
        return f"digits/{self.split}[{index}]"
