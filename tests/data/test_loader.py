"""The loader on the built-in digits: batches, exact resume, disjoint shards, padding."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from zoo.data import dataset_info, make_pipeline, write_class_names
from zoo.data.digits import load_digits_splits


def _pipeline(split="train", batch_size=64, train=True, process_index=0, process_count=1,
              **kwargs):
    return make_pipeline("digits", split, batch_size=batch_size, train=train,
                         process_index=process_index, process_count=process_count, **kwargs)


def _take(pipeline, count):
    iterator = iter(pipeline)
    return [next(iterator) for _ in range(count)]


def test_digits_info():
    info = dataset_info("digits")
    assert info.splits == {"train": 1437, "test": 360}
    assert info.num_classes == 10 and info.image_shape == (28, 28, 1)
    labels = load_digits_splits()["test"][1]
    assert np.bincount(labels).min() >= 35  # stratified: every digit in the test split


def test_train_batches_shapes_and_steps():
    pipeline = _pipeline(augment="digits")
    assert pipeline.num_examples == 1437 and pipeline.steps_per_epoch == 1437 // 64
    batch = _take(pipeline, 1)[0]
    assert batch["image"].shape == (64, 28, 28, 1) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["mask"].all()
    # Normalised with the train mean/std: roughly zero-mean, unit-variance.
    assert abs(float(batch["image"].mean())) < 0.3 and 0.7 < float(batch["image"].std()) < 1.3


def test_dtype_channels_and_size():
    batch = _take(_pipeline(batch_size=8, image_size=32, channels=3,
                            dtype=ml_dtypes.bfloat16), 1)[0]
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("batches_before", [2, 6])  # 6 crosses the epoch boundary
def test_exact_resume(batches_before):
    # batch 256 -> 5 batches per epoch, so 6 batches reach into the second epoch.
    first = _pipeline(batch_size=256, augment="digits", seed=7)
    iterator = iter(first)
    for _ in range(batches_before):
        next(iterator)
    state = json.loads(json.dumps(first.get_state()))
    expected = [next(iterator) for _ in range(2)]
    resumed = _pipeline(batch_size=256, augment="digits", seed=7)
    resumed.set_state(state)
    got = _take(resumed, 2)
    for want, have in zip(expected, got):
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(want[key], have[key])
    assert state["epoch"] == batches_before // 5
    assert resumed.state_after(batches_before) == state


def test_epochs_reshuffle_and_seeds_differ():
    pipeline = _pipeline(batch_size=600)
    assert not np.array_equal(pipeline.batch_indices(0), pipeline.batch_indices(2))
    other = _pipeline(batch_size=600, seed=1)
    assert not np.array_equal(pipeline.batch_indices(0), other.batch_indices(0))


def test_set_state_rejects_a_different_setup():
    state = _pipeline(batch_size=64).get_state()
    with pytest.raises(ValueError, match="global_batch_size=64"):
        _pipeline(batch_size=32).set_state(state)


def test_two_processes_read_disjoint_shards_covering_the_epoch():
    shards = [_pipeline(batch_size=32, process_index=p, process_count=2) for p in range(2)]
    steps = shards[0].steps_per_epoch
    assert steps == 1437 // 64
    seen = [np.concatenate([s.batch_indices(b) for b in range(steps)]) for s in shards]
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == steps * 64
    # The rows really are those examples (augment "none": eval transform of the source).
    images, labels = load_digits_splits()["train"]
    batch = _take(shards[1], 1)[0]
    np.testing.assert_array_equal(batch["label"], labels[shards[1].batch_indices(0)])
    info = dataset_info("digits")
    expected = (images[shards[1].batch_indices(0)] / 255.0 - info.mean[0]) / info.std[0]
    np.testing.assert_allclose(batch["image"], expected, atol=1e-5)


def test_eval_padding_mask_is_exact_and_order_is_kept():
    labels = load_digits_splits()["test"][1]
    per_process = []
    for process in range(2):
        pipeline = _pipeline("test", batch_size=64, train=False, process_index=process,
                             process_count=2)
        assert pipeline.steps_per_epoch == 3  # ceil(360 / 128)
        batches = list(pipeline)
        assert len(batches) == 3 and all(b["image"].shape[0] == 64 for b in batches)
        per_process.append(batches)
        assert len(list(pipeline)) == 3  # a second pass starts afresh
    # Global batch k = process 0 rows then process 1 rows: positions k*128 .. k*128+127.
    masks = np.concatenate([np.concatenate([per_process[p][k]["mask"] for p in range(2)])
                            for k in range(3)])
    got_labels = np.concatenate([np.concatenate([per_process[p][k]["label"] for p in range(2)])
                                 for k in range(3)])
    assert masks.sum() == 360 and masks[:360].all() and not masks[360:].any()
    np.testing.assert_array_equal(got_labels[:360], labels)
    assert (per_process[1][2]["image"][~per_process[1][2]["mask"]] == 0).all()


def test_worker_processes_give_identical_batches():
    expected = _take(_pipeline(batch_size=16, augment="digits"), 3)
    got = _take(_pipeline(batch_size=16, augment="digits", num_workers=1), 3)
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(want["image"], have["image"])
        np.testing.assert_array_equal(want["label"], have["label"])


def test_mixup_is_opt_in_and_train_only():
    plain = _take(_pipeline(batch_size=16), 1)[0]
    assert set(plain) == {"image", "label", "mask"}
    mixed = _take(_pipeline(batch_size=16, mixup_alpha=0.2), 1)[0]
    assert mixed["label_mix"].shape == (16,) and mixed["mix_weight"].dtype == np.float32
    np.testing.assert_array_equal(mixed["label"], plain["label"])
    with pytest.raises(ValueError, match="train-only"):
        _pipeline("test", batch_size=16, train=False, cutmix_alpha=1.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(batch_size=2000), "fewer than one global batch"),
    (dict(batch_size=8, augment="nope"), "unknown augment preset"),
    (dict(batch_size=8, process_index=2, process_count=2), "process_index < process_count"),
    (dict(batch_size=8, channels=2), "channels must be 1 or 3"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _pipeline(**{"process_index": 0, "process_count": 1, **kwargs})


def test_bad_names_and_splits():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        make_pipeline("mnist", "train", batch_size=8, train=True)
    with pytest.raises(ValueError, match="got split 'validation'"):
        make_pipeline("digits", "validation", batch_size=8, train=False)


def test_write_class_names(tmp_path):
    path = write_class_names(tmp_path / "run", "digits")
    with open(path) as handle:
        assert json.load(handle)["class_names"] == [str(d) for d in range(10)]


def test_prefetch_to_device_sharded_and_pmap_layouts():
    import jax

    from zoo.data.prefetch import prefetch_to_device

    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    pipeline = _pipeline(batch_size=16)
    expected = _take(pipeline, 3)
    placed = list(prefetch_to_device(iter(expected), sharding, buffer_size=2))
    assert len(placed) == 3
    for want, have in zip(expected, placed):
        assert have["image"].shape == (16, 28, 28, 1) and have["image"].sharding == sharding
        np.testing.assert_array_equal(np.asarray(have["label"]), want["label"])
    stacked = next(prefetch_to_device(iter(expected), devices[:8]))
    assert stacked["image"].shape == (8, 2, 28, 28, 1)
    np.testing.assert_array_equal(np.asarray(stacked["image"]).reshape(16, 28, 28, 1),
                                  expected[0]["image"])
