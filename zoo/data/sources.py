"""What every data source provides, and the dispatch from a dataset name to one.

A source is a random-access list of labelled examples. The loader asks it for
`load(index)` from any process or worker, so a source must be picklable and
must not hold open file handles it cannot re-open.

    "digits"                 scikit-learn's 8x8 digits, upscaled (zoo/data/digits.py)
    "tfds:NAME[:VERSION]"    a TFDS dataset prepared offline in ArrayRecord (zoo/data/tfds.py)
    "folder:PATH"            PATH/<split>/<class>/<image> trees (zoo/data/folder.py)
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma weights: how Pillow's "L" mode converts RGB to grayscale.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Facts about a dataset, cheap to compute (no decoding of all images).

    image_shape is (height, width, channels) as delivered by the default eval
    transform; mean/std are per channel on the [0, 1] pixel scale.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    splits: dict[str, int]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


class CorruptImageError(ValueError):
    """An example that cannot be decoded; the message names the file/record."""


class Source(Protocol):
    """A random-access split: `len(source)` examples, each `load(i)`-able.

    `load` returns (image uint8 [height, width, channels], label) with
    `channels` as requested at construction, or raises CorruptImageError.
    `fixed_size` says whether all images share one native size (then eval
    resizes directly instead of resize-shorter-side + center-crop).
    """

    fixed_size: bool

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[np.ndarray, int]: ...

    def describe(self, index: int) -> str: ...


def parse_name(name: str) -> tuple[str, str]:
    """Splits "kind:argument" into (kind, argument); "digits" -> ("digits", "")."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string; got {name!r}")
    if name == "digits":
        return "digits", ""
    kind, sep, argument = name.partition(":")
    if sep and kind in ("tfds", "folder") and argument:
        return kind, argument
    raise ValueError(
        f"unknown dataset {name!r}; expected 'digits', 'tfds:NAME[:VERSION]' "
        "(e.g. 'tfds:cifar10') or 'folder:PATH' (PATH/train/<class>/*.jpg)"
    )


def open_source(name: str, split: str, *, data_dir: str | None, channels: int,
                strict: bool) -> Source:
    """The source for `split` of dataset `name` (see module docstring)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels!r}")
    kind, argument = parse_name(name)
    if kind == "digits":
        from zoo.data.digits import DigitsSource

        return DigitsSource(split, channels=channels)
    if kind == "tfds":
        from zoo.data.tfds import TfdsSource

        return TfdsSource(argument, split, data_dir=data_dir, channels=channels, strict=strict)
    from zoo.data.folder import FolderSource

    return FolderSource(argument, split, channels=channels, strict=strict)


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Classes, split sizes, image shape and normalisation of dataset `name`."""
    kind, argument = parse_name(name)
    if kind == "digits":
        from zoo.data.digits import digits_info

        return digits_info()
    if kind == "tfds":
        from zoo.data.tfds import tfds_info

        return tfds_info(argument, data_dir=data_dir)
    from zoo.data.folder import folder_info

    return folder_info(argument)


def stats_for_channels(mean: tuple[float, ...], std: tuple[float, ...],
                       channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std float32 [channels] for output with `channels`.

    RGB statistics become grayscale ones by the luma weights (exact for the
    mean, an approximation for the std); grayscale ones are repeated for RGB.
    """
    mean_array = np.asarray(mean, np.float32)
    std_array = np.asarray(std, np.float32)
    if mean_array.shape[0] == channels:
        return mean_array, std_array
    if channels == 1:
        weights = np.asarray(LUMA_WEIGHTS, np.float32)
        return (np.array([mean_array @ weights], np.float32),
                np.array([std_array @ weights], np.float32))
    return np.repeat(mean_array, channels), np.repeat(std_array, channels)
