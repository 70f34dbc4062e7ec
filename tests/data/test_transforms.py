"""Transforms: shapes, ranges, mode conversion and determinism given a seed."""

from __future__ import annotations

import io

import ml_dtypes
import numpy as np
import pytest
from PIL import Image

from zoo.data import mixing, presets, transforms
from zoo.data.randaugment import rand_augment
from zoo.data.sources import CorruptImageError


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _image(height=12, width=10, channels=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"),
                                      ("P", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG")])
@pytest.mark.parametrize("channels", [1, 3])
def test_decode_converts_every_mode(mode, fmt, channels):
    base = Image.fromarray(_image(9, 7))
    if mode == "I;16":
        image = Image.fromarray(np.full((9, 7), 65535, np.uint16))
    else:
        image = base.convert(mode)
    decoded = transforms.decode_image(_encode(image, fmt), channels=channels)
    assert decoded.shape == (9, 7, channels) and decoded.dtype == np.uint8
    if mode == "I;16":  # scaled from 16 to 8 bits, not clipped
        assert decoded.min() == 255


def test_decode_bad_bytes_names_the_file():
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        transforms.decode_image(b"not an image", channels=3, name="broken.jpg")
    truncated = _encode(Image.fromarray(_image(64, 64)), "JPEG")[:300]
    with pytest.raises(CorruptImageError, match="half.jpg"):
        transforms.decode_image(truncated, channels=3, name="half.jpg")


def test_geometry_shapes():
    image = _image(30, 40)
    assert transforms.resize(image, 7, 9).shape == (7, 9, 3)
    assert transforms.resize_shorter_side(image, 15).shape == (15, 20, 3)
    assert transforms.center_crop(image, 30).shape == (30, 30, 3)
    np.testing.assert_array_equal(transforms.center_crop(image, 30), image[:, 5:35])
    with pytest.raises(ValueError, match="at least 31x31"):
        transforms.center_crop(image, 31)
    gray = _image(30, 40, channels=1)
    assert transforms.resize(gray, 5, 6).shape == (5, 6, 1)
    assert transforms.to_channels(gray, 3).shape == (30, 40, 3)
    assert transforms.to_channels(image, 1).shape == (30, 40, 1)


def test_random_transforms_are_deterministic_given_the_generator():
    image = _image(30, 40)
    for fn in (lambda rng: transforms.random_resized_crop(image, 16, rng),
               lambda rng: transforms.random_crop_with_padding(image, 4, rng),
               lambda rng: transforms.random_rotation(image, 15, rng),
               lambda rng: rand_augment(image, rng, num_ops=2, magnitude=9)):
        first = fn(np.random.default_rng([3, 1, 7]))
        again = fn(np.random.default_rng([3, 1, 7]))
        np.testing.assert_array_equal(first, again)
        assert first.dtype == np.uint8
    crops = {transforms.random_resized_crop(image, 16, np.random.default_rng(s)).tobytes()
             for s in range(5)}
    assert len(crops) > 1  # different seeds give different crops
    assert transforms.random_resized_crop(image, 16, np.random.default_rng(0)).shape == (16, 16, 3)


def test_flip_and_rotation_exact():
    image = _image(6, 6)
    flips = [transforms.horizontal_flip(image, np.random.default_rng(s)) for s in range(10)]
    assert all(np.array_equal(f, image) or np.array_equal(f, image[:, ::-1]) for f in flips)
    np.testing.assert_array_equal(transforms.rotate_replicate(image, 0.0), image)
    np.testing.assert_array_equal(transforms.rotate_replicate(image, 90.0), np.rot90(image))
    # Border replication: a constant image stays constant (no black corners).
    flat = np.full((9, 9, 1), 200, np.uint8)
    np.testing.assert_array_equal(transforms.rotate_replicate(flat, 33.0), flat)


def test_rand_augment_range_and_validation():
    image = _image(16, 16, channels=1)
    out = rand_augment(image, np.random.default_rng(0), num_ops=3, magnitude=10)
    assert out.shape == (16, 16, 1) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="magnitude"):
        rand_augment(image, np.random.default_rng(0), magnitude=11)


def test_normalize_values_and_dtype():
    image = np.array([[[0, 255, 51]]], np.uint8)
    mean = np.array([0.0, 0.5, 0.2], np.float32)
    std = np.array([1.0, 0.5, 0.1], np.float32)
    out = transforms.normalize(image, mean, std, np.float32)
    np.testing.assert_allclose(out[0, 0], [0.0, 1.0, 0.0], atol=1e-6)
    assert transforms.normalize(image, mean, std, ml_dtypes.bfloat16).dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
@pytest.mark.parametrize("fixed_size", [True, False])
def test_every_preset_outputs_image_size(name, fixed_size):
    image = _image(20, 26)
    rng = np.random.default_rng(0)
    out = presets.train_transform(image, 16, presets.get_preset(name), rng, fixed_size=fixed_size)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert presets.eval_transform(image, 16, fixed_size=fixed_size).shape == (16, 16, 3)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown augment preset 'fancy'"):
        presets.get_preset("fancy")


def test_mixup_and_cutmix():
    images = np.stack([np.full((8, 8, 1), value, np.float32) for value in (0.0, 1.0, 2.0, 3.0)])
    labels = np.arange(4, dtype=np.int32)
    mixed, label_a, label_b, lam = mixing.mixup(images, labels, np.random.default_rng(0), 0.4)
    assert 0.0 <= lam <= 1.0
    np.testing.assert_allclose(mixed[:, 0, 0, 0], lam * labels + (1 - lam) * label_b, rtol=1e-6)
    mixed, label_a, label_b, lam = mixing.cutmix(images, labels, np.random.default_rng(1), 1.0)
    kept = (mixed[..., 0] == images[..., 0]).mean(axis=(1, 2))
    changed = label_b != label_a
    np.testing.assert_allclose(kept[changed], lam)  # lam = area fraction kept
    np.testing.assert_array_equal(label_a, labels)
    mixer = mixing.BatchMixer(mixup_alpha=0.2, cutmix_alpha=1.0, seed=0, process_index=0)
    batch = mixer({"image": images, "label": labels, "mask": np.ones(4, bool)}, 3)
    assert batch["label_mix"].dtype == np.int32 and batch["mix_weight"].shape == (4,)
    again = mixer({"image": images, "label": labels, "mask": np.ones(4, bool)}, 3)
    np.testing.assert_array_equal(batch["image"], again["image"])
