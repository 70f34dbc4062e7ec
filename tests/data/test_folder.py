"""Class-folder trees: layout errors, bad files, every image mode."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest

from zoo.data import dataset_info, make_pipeline
from zoo.data.folder import FolderSource
from tests.data.conftest import make_folder_tree


def _pipeline(root, split="train", **kwargs):
    options = dict(batch_size=4, train=split == "train", image_size=16, process_index=0,
                   process_count=1)
    return make_pipeline(f"folder:{root}", split, **{**options, **kwargs})


def test_info_classes_and_counts(folder_tree):
    root, _ = folder_tree
    info = dataset_info(f"folder:{root}")
    assert info.class_names == ["cat", "dog"] and info.num_classes == 2
    # train: 7 cat files with an image extension, 1 not an image -> 6; 6 dog (1 truncated).
    assert info.splits == {"train": 12, "test": 5}
    assert info.image_shape == (224, 224, 3)


def test_unreadable_file_is_skipped_warned_and_counted(folder_tree):
    root, bad = folder_tree
    with pytest.warns(UserWarning) as record:
        pipeline = _pipeline(root)
    messages = [str(w.message) for w in record]
    assert any(bad["corrupt"][0] in m for m in messages)
    assert any("skipped 1 unreadable file(s), kept 12" in m for m in messages)
    assert pipeline.num_skipped == 1 and pipeline.skipped[0][0] == bad["corrupt"][0]


def test_strict_names_the_corrupt_file(folder_tree):
    root, bad = folder_tree
    with pytest.raises(ValueError, match="g_text.jpg"):
        _pipeline(root, strict=True)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_becomes_the_requested_channels(folder_tree, channels):
    root, _ = folder_tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = FolderSource(root, "train", channels=channels)
    for index in range(len(source)):
        if "truncated" in str(source.paths[index]):
            continue
        image, label = source.load(index)
        assert image.shape[-1] == channels and image.dtype == np.uint8
        assert label == (0 if str(source.paths[index]).startswith("cat") else 1)


def test_truncated_jpeg_substituted_in_train_masked_in_eval(folder_tree):
    root, bad = folder_tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = _pipeline(root, augment="imagenet")
    truncated = [int(np.flatnonzero(pipeline.source.paths == "dog/dog9_truncated.jpg")[0])]
    # Find a train batch that contains the truncated file, then read it.
    batch_number = next(b for b in range(30) if truncated[0] in pipeline.batch_indices(b))
    pipeline.set_state(pipeline.state_after(batch_number))
    with pytest.warns(UserWarning, match="dog9_truncated.jpg"):
        batch = next(iter(pipeline))
    assert batch["image"].shape == (4, 16, 16, 3) and batch["mask"].all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strict = _pipeline(root, augment="imagenet")
        strict.spec = type(strict.spec)(**{**strict.spec.__dict__, "strict": True})
    strict.set_state(strict.state_after(batch_number))
    with pytest.raises(ValueError, match="dog9_truncated.jpg"):
        next(iter(strict))


def test_eval_masks_undecodable_rows(tmp_path):
    root = str(tmp_path / "tree")
    bad = make_folder_tree(root)
    # Put the truncated JPEG into the test split: eval must mask it, not drop it.
    shutil.copy(bad["truncated"][0], os.path.join(root, "test", "dog", "t9.jpg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(_pipeline(root, "test", batch_size=4))
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.tolist() == [True] * 5 + [False] * 3  # t9.jpg is row 5; 2 rows padding


def _tree(tmp_path, layout: dict[str, list[str]]) -> str:
    from PIL import Image

    for folder, files in layout.items():
        os.makedirs(tmp_path / folder, exist_ok=True)
        for name in files:
            Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / folder / name)
    return str(tmp_path)


def test_empty_class_folder(tmp_path):
    root = _tree(tmp_path, {"train/a": ["1.png"], "train/b": [], "test/a": ["1.png"],
                            "test/b": ["1.png"]})
    with pytest.raises(ValueError, match=r"class folder .*train/b' has no images"):
        dataset_info(f"folder:{root}")


def test_mismatched_class_sets(tmp_path):
    root = _tree(tmp_path, {"train/a": ["1.png"], "train/b": ["1.png"], "test/a": ["1.png"],
                            "test/c": ["1.png"]})
    with pytest.raises(ValueError, match=r"missing in 'test': \['b'\], only in 'test': \['c'\]"):
        dataset_info(f"folder:{root}")


def test_split_without_images_and_missing_split(tmp_path):
    root = _tree(tmp_path, {"train/a": ["1.png"], "test": []})
    with pytest.raises(ValueError, match="has no class folders"):
        dataset_info(f"folder:{root}")
    with pytest.raises(ValueError, match="is not a directory"):
        dataset_info(f"folder:{tmp_path / 'nowhere'}")
    other = _tree(tmp_path / "x", {"train/a": ["1.png"]})
    with pytest.raises(ValueError, match=r"has splits \['train'\]; got split 'test'"):
        make_pipeline(f"folder:{other}", "test", batch_size=1, train=False,
                      process_index=0, process_count=1)
