"""`zoo train --init-from`: imported weights, a re-initialised head, a frozen backbone."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import zoo
from zoo.interop import save_variables
from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig, validate
from zoo.train.loop import fit

CONFIG = TrainConfig(
    name="test", model="simple_cnn", num_classes=10, dataset="digits", global_batch_size=32,
    epochs=None, steps=3, optimizer=OptimizerConfig(name="adamw", learning_rate=1e-2),
    schedule=ScheduleConfig(name="constant"), checkpoint_every=3, keep=1, eval_every=0,
    log_every=3,
)


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    # Weights of a 7-class simple_cnn: the digits run (10 classes) must keep
    # the convolutions and re-initialise the head.
    model = zoo.create_model("simple_cnn", num_classes=7)
    variables = jax.device_get(model.init(jax.random.key(42), np.zeros((1, 28, 28, 1)),
                                          train=False))
    directory = tmp_path_factory.mktemp("weights") / "simple_cnn_7"
    save_variables(directory, variables, {"model": "simple_cnn", "num_classes": 7})
    return directory, variables


def _final_params(store):
    return lambda step, state: store.update(params=jax.device_get(state.params))


def test_frozen_backbone_keeps_imported_convs_and_trains_the_new_head(pretrained_dir, tmp_path,
                                                                       capsys):
    directory, imported = pretrained_dir
    config = dataclasses.replace(CONFIG, init_from=str(directory), freeze_backbone=True)
    store: dict = {}
    fit(config, tmp_path / "run", hooks=[_final_params(store)], progress=False)
    assert "re-initialised: params/head/bias, params/head/kernel" in capsys.readouterr().out
    for layer in ("conv1", "conv2"):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(store["params"][layer][name],
                                          imported["params"][layer][name])
    assert store["params"]["head"]["kernel"].shape == (1600, 10)
    fresh = zoo.create_model("simple_cnn").init(jax.random.key(0), np.zeros((1, 28, 28, 1)))
    assert not np.allclose(store["params"]["head"]["kernel"], fresh["params"]["head"]["kernel"])


def test_unfrozen_run_starts_from_the_imported_convs(pretrained_dir, tmp_path):
    directory, imported = pretrained_dir
    config = dataclasses.replace(CONFIG, init_from=str(directory), steps=1, log_every=1,
                                 checkpoint_every=1)
    first: dict = {}
    fit(config, tmp_path / "run", hooks=[_final_params(first)], progress=False)
    change = np.abs(first["params"]["conv1"]["kernel"] - imported["params"]["conv1"]["kernel"])
    # One AdamW step of 1e-2 moves each weight by at most about the learning rate.
    assert 0 < change.max() < 0.05


def test_weights_of_another_model_are_refused_before_training(pretrained_dir, tmp_path):
    directory, _ = pretrained_dir
    config = dataclasses.replace(CONFIG, model="lenet5", image_size=32, init_from=str(directory))
    with pytest.raises(ValueError, match="holds weights of 'simple_cnn'.*trains 'lenet5'"):
        fit(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_freeze_backbone_needs_init_from():
    with pytest.raises(ValueError, match="freeze_backbone=True needs init_from"):
        validate(dataclasses.replace(CONFIG, freeze_backbone=True))
