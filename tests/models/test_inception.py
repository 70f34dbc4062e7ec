"""Inception v3 specifics: the 75-pixel minimum, the auxiliary head, grid sizes,
factorised kernels and count_include_pad average pooling.

Shapes and counts come from `jax.eval_shape` (no compute).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.counting import count_params
from zoo.models.inception import InceptionOutputs, _avg_pool_3x3
from tests.models.helpers import abstract_images, outputs_of
from zoo.registry import init_shapes

RNGS = {"dropout": jax.random.key(0)}




@pytest.fixture(scope="module")
def plain():
    model = zoo.create_model("inception_v3", num_classes=10)
    return model, init_shapes(model, (1, 75, 75, 3))


@pytest.fixture(scope="module")
def with_aux():
    model = zoo.create_model("inception_v3", aux_logits=True)
    return model, init_shapes(model, (1, 299, 299, 3))


def test_32x32_input_raises_naming_75(plain):
    model, variables = plain
    assert model.min_input_size == 75
    with pytest.raises(ValueError, match=r"at least 75x75"):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, abstract_images(2, 32, 32, 3))
    with pytest.raises(ValueError, match=r"75"):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, abstract_images(2, 74, 75, 3))


def test_75x75_gives_logits_and_2048_features(plain):
    model, variables = plain
    logits = jax.eval_shape(lambda v, x: model.apply(v, x), variables, abstract_images(2, 75, 75, 3))
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    features = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True),
                              variables, abstract_images(2, 75, 75, 3))
    assert features.shape == (2, 2048)


def test_aux_head_changes_count_to_torchvision_with_aux(with_aux):
    _, variables = with_aux
    params = variables["params"]
    assert count_params(params) == 27_161_264
    assert count_params(params) - count_params(params["aux"]) == 23_834_568
    assert params["aux"]["conv1"]["conv"]["kernel"].shape == (5, 5, 128, 768)


def test_aux_logits_only_returned_in_train_mode(with_aux):
    model, variables = with_aux
    x = abstract_images(2, 299, 299, 3)
    outputs, _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=RNGS),
        variables, x)
    assert isinstance(outputs, InceptionOutputs)
    assert outputs.logits.shape == outputs.aux.shape == (2, 1000)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert isinstance(logits, jax.ShapeDtypeStruct) and logits.shape == (2, 1000)


def test_aux_head_needs_299_and_says_so(with_aux):
    model, variables = with_aux
    assert model.min_input_size == 299
    with pytest.raises(ValueError, match=r"at least 299x299"):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, abstract_images(1, 298, 298, 3))


def test_grid_sizes_and_channels_at_299(plain):
    model, variables = plain
    expected = {"conv4a": (71, 192), "mixed5d": (35, 288), "mixed6a": (17, 768),
                "mixed6e": (17, 768), "mixed7a": (8, 1280), "mixed7c": (8, 2048)}
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=outputs_of(expected),
                                 mutable=["intermediates"]),
        variables, abstract_images(1, 299, 299, 3))
    for name, (side, channels) in expected.items():
        (out,) = state["intermediates"][name]["__call__"]
        assert out.shape == (1, side, side, channels), name


def test_factorised_kernels_and_paddingless_stem(plain):
    _, variables = plain
    params = variables["params"]
    mixed6b = params["mixed6b"]
    assert mixed6b["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
    assert mixed6b["branch7x7_3"]["conv"]["kernel"].shape == (7, 1, 128, 192)
    assert params["mixed7b"]["branch3x3_2a"]["conv"]["kernel"].shape == (1, 3, 384, 384)
    assert params["mixed7b"]["branch3x3_2b"]["conv"]["kernel"].shape == (3, 1, 384, 384)
    assert params["conv1a"]["conv"]["kernel"].shape == (3, 3, 3, 32)


def test_branch_avg_pool_counts_padding_like_torch():
    # F.avg_pool2d(ones, 3, 1, 1) with count_include_pad=True: corners 4/9, edges 6/9.
    out = np.asarray(_avg_pool_3x3(jnp.ones((1, 3, 3, 1))))[0, :, :, 0]
    expected = np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_macs_match_torchvision_table():
    # torchvision's table: Inception v3 5.71 GFLOPS (multiply-adds) at 299x299.
    assert zoo.model_info("inception_v3")["macs"] == pytest.approx(5.71e9, rel=0.005)
