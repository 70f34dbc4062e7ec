"""Data the data tests make themselves: a class-folder tree with every kind of
awkward image, and a real TFDS dataset in ArrayRecord format built WITHOUT
TensorFlow (TFDS's own builder, fed PNG bytes so no TF encoder is needed)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

TFDS_NAME = "zoo_test_images"
TFDS_CLASSES = ["circle", "square", "triangle"]
TFDS_SPLITS = {"train": 12, "test": 5}
TFDS_SIZE = 8


def tfds_pixels(split: str, index: int) -> np.ndarray:
    """The uint8 [8, 8, 3] image number `index` of `split` in the test TFDS dataset."""
    seed = (0 if split == "train" else 1000) + index
    pixels = np.random.default_rng(seed).integers(0, 256, (TFDS_SIZE, TFDS_SIZE, 3), dtype=np.uint8)
    pixels[0, 0, 0] = index  # TFDS shuffles records when preparing: the image names itself
    return pixels


def _png_bytes(pixels: np.ndarray) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    import tensorflow_datasets as tfds

    class ZooTestImages(tfds.core.GeneratorBasedBuilder):
        # A one-part module name: TFDS then skips looking for checksums beside the
        # builder's source (that lookup needs the uninstalled importlib_resources).
        __module__ = "zoo_test_tfds"
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, supervised_keys=("image", "label"),
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(TFDS_SIZE, TFDS_SIZE, 3)),
                    "label": tfds.features.ClassLabel(names=TFDS_CLASSES)}))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in TFDS_SPLITS}

        def _generate_examples(self, split):
            for index in range(TFDS_SPLITS[split]):
                # Encoded bytes: the Image feature passes them through without TensorFlow.
                yield index, {"image": _png_bytes(tfds_pixels(split, index)),
                              "label": index % len(TFDS_CLASSES)}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = ZooTestImages(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return data_dir


def _save(path: str, image: Image.Image, **kwargs) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)


def _rgb(seed: int, size: tuple[int, int] = (20, 16)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def make_folder_tree(root: str) -> dict[str, list[str]]:
    """ROOT/{train,test}/{cat,dog}/...; returns {"corrupt": [...], "truncated": [...]}."""
    cat, dog = os.path.join(root, "train", "cat"), os.path.join(root, "train", "dog")
    _save(os.path.join(cat, "a_rgb.jpg"), _rgb(1), quality=95)
    _save(os.path.join(cat, "b_gray.png"), _rgb(2).convert("L"))
    _save(os.path.join(cat, "c_rgba.png"), _rgb(3).convert("RGBA"))
    _save(os.path.join(cat, "d_palette.png"), _rgb(4).convert("P"))
    wide = (np.arange(20 * 16, dtype=np.uint16).reshape(16, 20) * 200).astype(np.uint16)
    _save(os.path.join(cat, "e_16bit.png"), Image.fromarray(wide))
    _save(os.path.join(cat, "f_cmyk.jpg"), _rgb(5).convert("CMYK"), quality=95)
    with open(os.path.join(cat, "g_text.jpg"), "w") as handle:
        handle.write("this is not an image\n")
    with open(os.path.join(cat, "notes.txt"), "w") as handle:
        handle.write("ignored: not an image extension\n")
    for index in range(5):
        _save(os.path.join(dog, f"dog{index}.jpg"), _rgb(10 + index, (24, 30)), quality=90)
    # A JPEG cut in half: Pillow's verify() passes it, decoding fails.
    buffer = io.BytesIO()
    _rgb(99, (64, 64)).save(buffer, format="JPEG", quality=95)
    with open(os.path.join(dog, "dog9_truncated.jpg"), "wb") as handle:
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for index in range(2):
        _save(os.path.join(root, "test", "cat", f"t{index}.png"), _rgb(50 + index))
    for index in range(3):
        _save(os.path.join(root, "test", "dog", f"t{index}.jpg"), _rgb(60 + index))
    return {"corrupt": [os.path.join(cat, "g_text.jpg")],
            "truncated": [os.path.join(dog, "dog9_truncated.jpg")]}


@pytest.fixture(scope="session")
def folder_tree(tmp_path_factory) -> tuple[str, dict[str, list[str]]]:
    root = str(tmp_path_factory.mktemp("folder"))
    return root, make_folder_tree(root)
