"""TFDS through ArrayRecord + Grain with no TensorFlow, on a dataset built in the test."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

from zoo.data import dataset_info, make_pipeline
from zoo.data.sources import IMAGENET_MEAN, IMAGENET_STD
from tests.data.conftest import TFDS_CLASSES, TFDS_NAME, TFDS_SPLITS, tfds_pixels


def test_info_from_prepared_dataset(tfds_dir):
    info = dataset_info(f"tfds:{TFDS_NAME}", data_dir=tfds_dir)
    assert info.splits == TFDS_SPLITS and info.num_classes == 3
    assert info.class_names == TFDS_CLASSES and info.image_shape == (8, 8, 3)
    assert info.mean == IMAGENET_MEAN  # unknown RGB dataset: ImageNet statistics


def test_eval_reads_exact_pixels_without_tensorflow(tfds_dir):
    pipeline = make_pipeline(f"tfds:{TFDS_NAME}:1.0.0", "test", batch_size=4, train=False,
                             data_dir=tfds_dir, process_index=0, process_count=1)
    batches = list(pipeline)
    assert len(batches) == 2 and pipeline.steps_per_epoch == 2
    images = np.concatenate([b["image"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert mask.tolist() == [True] * 5 + [False] * 3
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    written = [round(float(image[0, 0, 0] * std[0] + mean[0]) * 255) for image in images[:5]]
    assert sorted(written) == list(range(5))  # every record once
    for row, index in enumerate(written):
        expected = (tfds_pixels("test", index) / 255.0 - mean) / std
        np.testing.assert_allclose(images[row], expected, atol=1e-5)
        assert labels[row] == index % 3
    assert "tensorflow" not in sys.modules


def test_train_shards_and_resume(tfds_dir):
    def pipeline(process):
        return make_pipeline(f"tfds:{TFDS_NAME}", "train", batch_size=2, train=True,
                             augment="cifar", data_dir=tfds_dir, process_index=process,
                             process_count=2, channels=1, image_size=8)

    shards = [pipeline(0), pipeline(1)]
    assert shards[0].steps_per_epoch == 3  # 12 // (2 * 2)
    seen = [np.concatenate([s.batch_indices(b) for b in range(3)]) for s in shards]
    assert sorted(np.concatenate(seen).tolist()) == list(range(12))
    iterator = iter(shards[0])
    next(iterator)
    state = shards[0].get_state()
    expected = next(iterator)
    resumed = pipeline(0)
    resumed.set_state(state)
    got = next(iter(resumed))
    assert got["image"].shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(got["image"], expected["image"])


def test_unprepared_dataset_says_how_to_prepare_and_downloads_nothing(tmp_path):
    with pytest.raises(ValueError) as error:
        dataset_info("tfds:mnist", data_dir=str(tmp_path))
    message = str(error.value)
    assert "not prepared" in message and "pip install zoo[tf]" in message
    assert "tfds build mnist" in message and "--file_format=array_record" in message
    assert not any(files for _, _, files in os.walk(tmp_path))  # nothing written


def test_imagenet_hint_mentions_manual_dir(tmp_path):
    with pytest.raises(ValueError, match="--manual_dir"):
        make_pipeline("tfds:imagenet2012", "train", batch_size=8, train=True,
                      data_dir=str(tmp_path), process_index=0, process_count=1)


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="'no_such_dataset_zoo' is neither a registered"):
        dataset_info("tfds:no_such_dataset_zoo", data_dir=str(tmp_path))


def test_tfrecord_dataset_explains_the_conversion(tfds_dir, tmp_path):
    copy = tmp_path / "tfrecord_copy"
    shutil.copytree(tfds_dir, copy)
    info_path = copy / TFDS_NAME / "1.0.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="prepared as tfrecord.*tfds convert_format"):
        dataset_info(f"tfds:{TFDS_NAME}", data_dir=str(copy))
