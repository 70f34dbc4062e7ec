"""Class-folder image trees (torchvision ImageFolder layout), read with Pillow.

    ROOT/train/<class>/<image>.jpg|.png|...
    ROOT/test/<class>/...          (any split names: "val", "validation", ...)

Class names are the sub-folder names, sorted, mapped to 0..K-1; every split
must have the same class set. Files are listed in sorted order; files whose
extension is not an image extension are ignored (README.txt, .DS_Store).

Bad-data policy: indexing opens every image and runs Pillow's `verify()` (a
header / structure check, no full decode; done once per process, cached). A
file that fails is dropped from the index before any order is drawn, with a
warning naming it and a total -- so num_examples, shuffling and sharding are
identical on every process and every run. strict=True makes it a ValueError
naming the file instead. Damage that verify() cannot see (e.g. a JPEG truncated
mid-scan) is caught at decode time: the loader then substitutes the next
example of the epoch's order in train (deterministic, keeps batch shapes) and
masks the row out in eval; see zoo/data/loader.py.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import warnings

import numpy as np
from PIL import Image

from zoo.data.sources import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo
from zoo.data.transforms import decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff",
                    ".webp", ".gif")
DEFAULT_IMAGE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class FolderIndex:
    """The validated file list of one split: paths relative to the split folder."""

    paths: np.ndarray  # str [n]
    labels: np.ndarray  # int32 [n]
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of files that failed verify()


def _class_names(split_dir: str) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir)
                  if entry.is_dir() and not entry.name.startswith("."))


def _split_dirs(root: str) -> list[str]:
    if not os.path.isdir(root):
        raise ValueError(f"folder dataset root {root!r} is not a directory; expected "
                         "ROOT/<split>/<class>/<image> (e.g. ROOT/train/cat/1.jpg)")
    splits = _class_names(root)
    if not splits:
        raise ValueError(f"folder dataset root {root!r} has no split folders; expected "
                         "ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg")
    return splits


def _verify(path: str) -> str | None:
    """None if Pillow can parse the file's structure, else the reason."""
    try:
        with Image.open(path) as image:
            image.verify()
        return None
    except Exception as error:  # Pillow raises many types for bad files
        return f"{type(error).__name__}: {error}"


@functools.lru_cache(maxsize=8)
def index_split(root: str, split: str) -> FolderIndex:
    """Lists and verifies ROOT/split; ValueError for a missing/empty split or class."""
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise ValueError(f"folder dataset {root!r} has no split {split!r}; found splits "
                         f"{_split_dirs(root)}")
    classes = _class_names(split_dir)
    if not classes:
        raise ValueError(f"split folder {split_dir!r} has no class folders; expected "
                         f"{split_dir}/<class>/<image>")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(entry.name for entry in os.scandir(os.path.join(split_dir, name))
                       if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"class folder {os.path.join(split_dir, name)!r} has no images "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        paths += [os.path.join(name, file) for file in files]
        labels += [label] * len(files)
    # verify() is I/O bound and releases the GIL in Pillow's C parts: threads help.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(_verify, [os.path.join(split_dir, p) for p in paths]))
    keep = [reason is None for reason in reasons]
    skipped = tuple((os.path.join(split_dir, p), r) for p, r in zip(paths, reasons) if r)
    kept_paths = np.asarray([p for p, k in zip(paths, keep) if k], dtype=str)
    if kept_paths.size == 0:
        raise ValueError(f"split folder {split_dir!r} has no readable images "
                         f"({len(skipped)} files failed to open)")
    kept_labels = np.asarray([l for l, k in zip(labels, keep) if k], dtype=np.int32)
    return FolderIndex(paths=kept_paths, labels=kept_labels, skipped=skipped)


@functools.lru_cache(maxsize=8)
def folder_classes(root: str) -> tuple[list[str], list[str]]:
    """(class names, split names) of ROOT; ValueError if splits' class sets differ."""
    splits = _split_dirs(root)
    per_split = {split: _class_names(os.path.join(root, split)) for split in splits}
    for split, classes in per_split.items():
        if not classes:
            split_dir = os.path.join(root, split)
            raise ValueError(f"split folder {split_dir!r} has no class folders (no images); "
                             f"expected {split_dir}/<class>/<image>")
    reference_split = "train" if "train" in per_split else splits[0]
    reference = per_split[reference_split]
    for split, classes in per_split.items():
        if classes != reference:
            missing = sorted(set(reference) - set(classes))
            extra = sorted(set(classes) - set(reference))
            raise ValueError(
                f"folder dataset {root!r}: split {split!r} has a different class set than "
                f"{reference_split!r}; missing in {split!r}: {missing}, only in {split!r}: {extra}")
    return reference, splits


def folder_info(root: str) -> DatasetInfo:
    """DatasetInfo of a class-folder tree (lists and verifies every split once)."""
    root = os.path.abspath(os.path.expanduser(root))
    classes, splits = folder_classes(root)
    return DatasetInfo(
        name=f"folder:{root}",
        num_classes=len(classes),
        image_shape=(DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE, 3),
        splits={split: len(index_split(root, split).paths) for split in splits},
        class_names=classes,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )


class FolderSource:
    """One split of a class-folder tree; see the module docstring for bad files."""

    fixed_size = False

    def __init__(self, root: str, split: str, *, channels: int, strict: bool = False):
        self.root = os.path.abspath(os.path.expanduser(root))
        folder_classes(self.root)  # class sets must agree across splits
        index = index_split(self.root, split)
        if index.skipped:
            if strict:
                path, reason = index.skipped[0]
                raise ValueError(f"corrupt image {path!r} ({reason}); strict=True "
                                 f"({len(index.skipped)} bad file(s) in split {split!r})")
            for path, reason in index.skipped:
                warnings.warn(f"skipping unreadable image {path!r}: {reason}", stacklevel=2)
            warnings.warn(f"folder {self.root!r} split {split!r}: skipped "
                          f"{len(index.skipped)} unreadable file(s), kept {len(index.paths)}",
                          stacklevel=2)
        self.split, self.channels = split, channels
        self.paths, self.labels = index.paths, index.labels
        self.skipped = index.skipped

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return os.path.join(self.root, self.split, str(self.paths[index]))

    def load(self, index: int) -> tuple[np.ndarray, int]:
        path = self.describe(index)
        with open(path, "rb") as handle:
            data = handle.read()
        return decode_image(data, channels=self.channels, name=path), int(self.labels[index])
