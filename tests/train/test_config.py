"""Config loading and overrides fail early, naming the bad key or value."""

from __future__ import annotations

import pytest

from zoo.train.config import TrainConfig, apply_overrides, from_dict, load_config, to_dict
from zoo.train.loop import check_workdir_writable


def test_default_recipe_loads_and_round_trips():
    config = load_config(None)
    assert config.name == "digits_simple_cnn" and config.model == "simple_cnn"
    assert from_dict(to_dict(config)) == config


def test_overrides_set_nested_and_top_level_fields():
    config = apply_overrides(TrainConfig(), ["optimizer.learning_rate=0.5", "epochs=3",
                                             "optimizer.name='adamw'", "optimizer.grad_clip=None"])
    assert config.optimizer.learning_rate == 0.5 and config.optimizer.name == "adamw"
    assert config.epochs == 3.0 and config.steps is None and config.optimizer.grad_clip is None
    assert apply_overrides(config, ["steps=10"]).epochs is None


@pytest.mark.parametrize("override, message", [
    ("optimizer.learnin_rate=0.1", "unknown config key 'optimizer.learnin_rate'"),
    ("batch=3", "unknown config key 'batch'"),
    ("global_batch_size=0", "global_batch_size must be a positive integer, got 0"),
    ("epochs=abc", "config key 'epochs' expects"),
    ("parallel=tpu", "config key 'parallel' expects"),
    ("global_batch_size=1.5", "config key 'global_batch_size' expects"),
    ("label_smoothing=1.0", "label_smoothing must be in"),
    ("optimizer=3", "is a section"),
    ("epochs", "must look like key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        apply_overrides(TrainConfig(), [override])


def test_unknown_config_name_lists_known():
    with pytest.raises(ValueError, match="digits_simple_cnn"):
        load_config("no_such_recipe")


def test_unwritable_workdir_is_a_clear_error(tmp_path):
    # A path below a regular file cannot be created, even by root.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="workdir .*a_file/run.* is not writable"):
        check_workdir_writable(blocker / "run")
