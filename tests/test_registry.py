"""The registry: names, errors, metadata."""

import flax.linen as nn
import pytest

import zoo
from zoo import registry


def test_create_model_returns_module_with_requested_classes():
    model = zoo.create_model("simple_cnn", num_classes=7)
    assert isinstance(model, nn.Module)
    assert model.num_classes == 7


def test_unknown_name_lists_closest_names():
    with pytest.raises(ValueError, match=r"unknown model 'simple_cnm'.*Closest: simple_cnn"):
        zoo.create_model("simple_cnm")


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("simple_cnn", lambda **kw: None, family="x", input_size=1, paper="-")


def test_list_models_globs_and_sorts():
    names = zoo.list_models()
    assert names == sorted(names)
    assert "simple_cnn" in names
    assert zoo.list_models("simple_*") == ["simple_cnn"]
    assert zoo.list_models("no_such_*") == []


def test_test_only_models_are_hidden_by_default():
    hidden = set(zoo.list_models(include_test_only=True)) - set(zoo.list_models())
    for name in hidden:
        assert registry.get_entry(name).test_only


def test_model_info_counts_params_and_macs_of_simple_cnn():
    info = zoo.model_info("simple_cnn")
    assert info["params"] == 34_826
    # conv1 26*26*32*9 + conv2 11*11*64*288 + dense 1600*10
    assert info["macs"] == 194_688 + 2_230_272 + 16_000
    assert info["input_size"] == 28
    assert info["min_input_size"] == 28
    assert info["family"] == "simple_cnn"
    for key in ("paper", "in_channels", "num_classes"):
        assert key in info
    assert info["weights"] == []  # no published checkpoint for the Keras example


def test_model_info_lists_published_weights():
    sources = zoo.model_info("resnet18")["weights"]
    assert any(s["library"] == "torchvision" and "ResNet18_Weights" in s["tag"] for s in sources)
    assert all(0 < s["top1"] < 100 for s in sources)


def test_negative_num_classes_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        zoo.create_model("simple_cnn", num_classes=-1)
