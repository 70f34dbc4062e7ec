"""TFDS datasets prepared offline, read from ArrayRecord without TensorFlow.

`tfds.data_source` gives random access to ArrayRecord files; images are kept
as their encoded bytes (`tfds.decode.SkipDecoding`) and decoded here with
Pillow, so the bad-data policy is the same as for folders. Nothing downloads:
every call passes download=False / try_gcs=False, and a dataset that is not
prepared under data_dir is a ValueError saying how to prepare it:

    pip install zoo[tf]      # TensorFlow is needed to PREPARE, not to train
    tfds build mnist --data_dir=DIR --file_format=array_record
    tfds build imagenet2012 --data_dir=DIR --manual_dir=DIR_WITH_ILSVRC2012_TARS \
        --file_format=array_record

A dataset already prepared as TFRecord (TFDS's default) cannot be read by
random access; convert it once with TensorFlow installed:
    tfds convert_format --root_data_dir=DIR --out_file_format=array_record
"""

from __future__ import annotations

import functools
import os

import numpy as np

from zoo.data.sources import IMAGENET_MEAN, IMAGENET_STD, CorruptImageError, DatasetInfo
from zoo.data.transforms import decode_image

DEFAULT_IMAGE_SIZE = 224  # for datasets whose images have no fixed size
# Per-channel mean/std on the [0, 1] scale, measured on the train split (as published).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": (IMAGENET_MEAN, IMAGENET_STD),
}


def _prepare_hint(name: str, data_dir: str | None) -> str:
    base = name.split(":")[0]
    target = data_dir or "~/tensorflow_datasets"
    manual = (" --manual_dir=DIR_WITH_DOWNLOADED_FILES" if base == "imagenet2012" else "")
    return (f"prepare it offline once (TensorFlow is needed for that step only): "
            f"`pip install zoo[tf]` then `tfds build {base} --data_dir={target}"
            f"{manual} --file_format=array_record`")


@functools.lru_cache(maxsize=16)
def open_builder(name: str, data_dir: str | None):
    """The prepared, ArrayRecord TFDS builder for "NAME[:VERSION]" or a ValueError."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"TFDS dataset {name!r} is neither a registered TFDS dataset nor "
                         f"prepared under data_dir={data_dir!r}: {str(error)[:200]}") from error
    if not builder.is_prepared():
        raise ValueError(f"TFDS dataset {name!r} is not prepared under {builder.data_dir} "
                         f"(data_dir={data_dir!r}); Zoo never downloads. "
                         + _prepare_hint(name, data_dir))
    file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    if file_format != "array_record":
        raise ValueError(
            f"TFDS dataset {name!r} at {builder.data_dir} is prepared as {file_format}, which "
            "has no random access (and reading it needs TensorFlow). Convert it once with "
            f"TensorFlow installed: `pip install zoo[tf]` then `tfds convert_format "
            f"--root_data_dir={builder.data_dir} --out_file_format=array_record`, or rebuild "
            "it: " + _prepare_hint(name, data_dir))
    return builder


def _feature_keys(builder) -> tuple[str, str]:
    keys = builder.info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys
    return "image", "label"


@functools.lru_cache(maxsize=16)
def tfds_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """DatasetInfo from the prepared dataset's dataset_info.json (no decoding)."""
    builder = open_builder(name, data_dir)
    image_key, label_key = _feature_keys(builder)
    features = builder.info.features
    height, width, channels = features[image_key].shape
    if height is None or width is None:
        height = width = DEFAULT_IMAGE_SIZE
    base = builder.info.name
    default_stats = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
    mean, std = DATASET_STATS.get(base, default_stats)
    return DatasetInfo(
        name=f"tfds:{name}",
        num_classes=int(features[label_key].num_classes),
        image_shape=(int(height), int(width), int(channels)),
        splits={split: int(info.num_examples) for split, info in builder.info.splits.items()},
        class_names=list(features[label_key].names),
        mean=tuple(mean), std=tuple(std),
    )


class TfdsSource:
    """One split of a prepared TFDS dataset: encoded images decoded by Pillow."""

    def __init__(self, name: str, split: str, *, data_dir: str | None, channels: int,
                 strict: bool = False):
        builder = open_builder(name, data_dir)
        if split not in builder.info.splits:
            raise ValueError(f"TFDS dataset {name!r} has splits {sorted(builder.info.splits)}; "
                             f"got split {split!r}")
        self.name, self.split, self.data_dir = name, split, data_dir
        self.channels, self.strict = channels, strict
        self.image_key, self.label_key = _feature_keys(builder)
        shape = builder.info.features[self.image_key].shape
        self.fixed_size = shape[0] is not None and shape[1] is not None
        self.num_examples = int(builder.info.splits[split].num_examples)
        self._source = None  # opened lazily, in the process (worker) that reads

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_source": None}

    def _data_source(self):
        if self._source is None:
            import tensorflow_datasets as tfds

            self._source = tfds.data_source(
                self.name, split=self.split, data_dir=self.data_dir, download=False,
                try_gcs=False, decoders={self.image_key: tfds.decode.SkipDecoding()})
        return self._source

    def __len__(self) -> int:
        return self.num_examples

    def load(self, index: int) -> tuple[np.ndarray, int]:
        record = self._data_source()[index]
        data = record[self.image_key]
        name = self.describe(index)
        if isinstance(data, np.ndarray):  # a dataset that stores raw pixels
            if data.ndim == 2:
                data = data[..., None]
            from zoo.data.transforms import to_channels

            return to_channels(data.astype(np.uint8), self.channels), int(record[self.label_key])
        if not isinstance(data, (bytes, np.bytes_)):
            raise CorruptImageError(f"{name}: expected encoded image bytes, got {type(data)}")
        return decode_image(bytes(data), channels=self.channels, name=name), int(record[self.label_key])

    def describe(self, index: int) -> str:
        return f"tfds:{self.name}/{self.split}[{index}] ({self.data_dir or os.path.expanduser('~/tensorflow_datasets')})"
