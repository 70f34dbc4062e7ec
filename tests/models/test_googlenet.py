"""GoogLeNet specifics: ceil-mode pooling, the branch3 3x3 quirk, auxiliary heads.

Shapes and counts come from `jax.eval_shape` (no compute); the parameter
count at the default configuration is checked by test_every_model.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.counting import count_params
from zoo.models.googlenet import GOOGLENET_STAGES, AuxHead, GoogLeNet, GoogLeNetOutputs
from tests.models.helpers import abstract_images, outputs_of
from zoo.registry import init_shapes

RNGS = {"dropout": jax.random.key(0)}




@pytest.fixture(scope="module")
def aux_model_and_variables():
    model = zoo.create_model("googlenet", num_classes=10, aux_logits=True)
    return model, init_shapes(model, (1, 32, 32, 3))


def test_aux_heads_add_torchvision_aux_parameters():
    with_aux = zoo.create_model("googlenet", aux_logits=True)
    params = init_shapes(with_aux, (1, 32, 32, 3))["params"]
    # torchvision googlenet(aux_logits=True, init_weights=True): 13,004,888.
    assert count_params(params) == 13_004_888
    assert count_params(params["aux1"]) + count_params(params["aux2"]) == 13_004_888 - 6_624_904
    assert params["aux1"]["fc1"]["kernel"].shape == (128 * 4 * 4, 1024)
    assert params["aux1"]["conv"]["conv"]["kernel"].shape == (1, 1, 512, 128)  # after 4a
    assert params["aux2"]["conv"]["conv"]["kernel"].shape == (1, 1, 528, 128)  # after 4d


def test_aux_outputs_only_in_train_mode(aux_model_and_variables):
    model, variables = aux_model_and_variables
    x = abstract_images(2, 32, 32, 3)
    outputs, _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=RNGS),
        variables, x)
    assert isinstance(outputs, GoogLeNetOutputs)
    assert [o.shape for o in outputs] == [(2, 10)] * 3
    assert all(o.dtype == jnp.float32 for o in outputs)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert logits.shape == (2, 10)
    features = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, return_features=True,
                                 mutable=["batch_stats"], rngs=RNGS), variables, x)[0]
    assert features.shape == (2, 1024)


def test_without_aux_train_returns_plain_logits():
    model = zoo.create_model("googlenet", num_classes=10)
    variables = init_shapes(model, (1, 32, 32, 3))
    assert "aux1" not in variables["params"] and "aux2" not in variables["params"]
    logits, _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=RNGS),
        variables, abstract_images(2, 32, 32, 3))
    assert logits.shape == (2, 10)


def test_branch3_uses_torchvision_3x3_kernel_not_5x5():
    params = init_shapes(zoo.create_model("googlenet"), (1, 32, 32, 3))["params"]
    # inception3a: ch5x5red 16 -> ch5x5 32 with a 3x3 kernel (torchvision quirk).
    assert params["inception3a"]["branch3"]["conv"]["kernel"].shape == (3, 3, 16, 32)
    assert params["inception5b"]["branch3"]["conv"]["kernel"].shape == (3, 3, 48, 128)
    assert "bias" not in params["inception3a"]["branch3"]["conv"]


@pytest.mark.parametrize("size, expected", [
    # 224: 112 -> 56 -> 28 (3a) -> 14 (4a) -> 7 (5a); every pool divides evenly.
    (224, {"inception3a": 28, "inception4a": 14, "inception5b": 7}),
    # 100: conv 50; ceil pools 50 -> 25 -> 12 -> 6 -> 3 (floor mode: 24, 11, 5, 2).
    (100, {"inception3a": 12, "inception4a": 6, "inception5b": 3}),
    (32, {"inception3a": 4, "inception4a": 2, "inception5b": 1}),
])
def test_ceil_mode_pooling_sizes_match_torchvision(size, expected):
    model = GoogLeNet(num_classes=0, stages=GOOGLENET_STAGES)
    variables = init_shapes(model, (1, 32, 32, 3))
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=outputs_of(expected),
                                 mutable=["intermediates"]),
        variables, abstract_images(1, size, size, 3))
    channels = {"inception3a": 256, "inception4a": 512, "inception5b": 1024}
    for name, side in expected.items():
        (out,) = state["intermediates"][name]["__call__"]
        assert out.shape == (1, side, side, channels[name]), name


def test_aux_head_pools_any_map_to_4x4():
    head = AuxHead(num_classes=7)
    for side in (1, 2, 14):
        variables = jax.eval_shape(
            lambda x: head.init(jax.random.key(0), x, train=False), abstract_images(2, side, side, 512))
        out = jax.eval_shape(lambda v, x: head.apply(v, x, train=False), variables,
                             abstract_images(2, side, side, 512))
        assert out.shape == (2, 7)
        assert variables["params"]["fc1"]["kernel"].shape == (2048, 1024)


def test_min_input_size_is_enforced_with_message():
    model = zoo.create_model("googlenet")
    assert model.min_input_size == 32
    variables = init_shapes(model, (1, 32, 32, 3))
    with pytest.raises(ValueError, match="at least 32x32"):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, abstract_images(1, 31, 31, 3))


def test_macs_match_torchvision_table():
    # torchvision's table: GoogLeNet 1.50 GFLOPS (multiply-adds) at 224x224.
    assert zoo.model_info("googlenet")["macs"] == pytest.approx(1.50e9, rel=0.005)
