"""DenseNet specifics: channel growth per block, torchvision's concatenation
order, transitions halving channels, dropout and rematerialisation.

Whole-model checks use `jax.eval_shape`; numerical checks run tiny blocks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.models.densenet import DenseBlock, DenseLayer, Transition
from tests.models.helpers import abstract_images, outputs_of
from zoo.registry import init_shapes




def test_densenet121_channels_after_each_block_and_transition():
    model = zoo.create_model("densenet121")
    variables = init_shapes(model, (1, 32, 32, 3))
    # stem 64 -> block1 +6*32 = 256 -> /2 = 128 -> +12*32 = 512 -> 256
    # -> +24*32 = 1024 -> 512 -> +16*32 = 1024.
    expected = {"block1": (56, 256), "transition1": (28, 128), "block2": (28, 512),
                "transition2": (14, 256), "block3": (14, 1024), "transition3": (7, 512),
                "block4": (7, 1024)}
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=outputs_of(expected),
                                 mutable=["intermediates"]),
        variables, abstract_images(1, 224, 224, 3))
    for name, (side, channels) in expected.items():
        (out,) = state["intermediates"][name]["__call__"]
        assert out.shape == (1, side, side, channels), name
    features = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True),
                              variables, abstract_images(2, 32, 32, 3))
    assert features.shape == (2, 1024)


@pytest.mark.parametrize("name, features", [
    ("densenet121", 1024), ("densenet161", 2208), ("densenet169", 1664), ("densenet201", 1920)])
def test_num_features_of_each_variant(name, features):
    assert zoo.create_model(name).num_features == features


def test_transition_halves_channels_and_floors_odd_sizes():
    transition = Transition(features=6)
    x = abstract_images(2, 7, 7, 12)
    variables = jax.eval_shape(lambda x: transition.init(jax.random.key(0), x, train=False), x)
    out = jax.eval_shape(lambda v, x: transition.apply(v, x, train=False), variables, x)
    assert out.shape == (2, 3, 3, 6)
    assert variables["params"]["conv"]["kernel"].shape == (1, 1, 12, 6)
    assert set(variables["params"]) == {"norm", "conv"}


@pytest.fixture(scope="module")
def tiny_block():
    block = DenseBlock(num_layers=3, growth_rate=4, bn_size=2)
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 8))
    variables = jax.jit(lambda x: block.init(jax.random.key(0), x, train=False))(x)
    return block, variables, x


def test_block_output_is_input_then_each_new_layer_in_order(tiny_block):
    block, variables, x = tiny_block
    out = jax.jit(lambda v, x: block.apply(v, x, train=False))(variables, x)
    assert out.shape == (2, 5, 5, 8 + 3 * 4)
    # torch.cat([input, new1, new2, new3], 1): the input passes through unchanged...
    np.testing.assert_array_equal(np.asarray(out[..., :8]), np.asarray(x))
    # ... and layer k sees exactly the channels before its own slice.
    layer = DenseLayer(growth_rate=4, bn_size=2)
    for k in range(3):
        start = 8 + 4 * k
        layer_vars = {col: tree[f"layer{k + 1}"] for col, tree in variables.items()}
        new = layer.apply(layer_vars, out[..., :start], False)
        np.testing.assert_allclose(np.asarray(out[..., start:start + 4]), np.asarray(new),
                                   rtol=1e-5, atol=1e-5)


def test_layer_is_preactivation_bottleneck(tiny_block):
    _, variables, _ = tiny_block
    layer2 = variables["params"]["layer2"]
    assert set(layer2) == {"norm1", "conv1", "norm2", "conv2"}
    assert layer2["norm1"]["scale"].shape == (12,)  # BN on the 8 + 4 input channels
    assert layer2["conv1"]["kernel"].shape == (1, 1, 12, 8)  # bn_size * growth
    assert layer2["conv2"]["kernel"].shape == (3, 3, 8, 4)


def _train_loss(block, variables, x, seed):
    def loss(params):
        out, _ = block.apply({**variables, "params": params}, x, train=True,
                             mutable=["batch_stats"], rngs={"dropout": jax.random.key(seed)})
        return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size)
    return jax.jit(jax.value_and_grad(loss))(variables["params"])


def test_memory_efficient_block_matches_plain_block(tiny_block):
    block, variables, x = tiny_block
    remat_block = DenseBlock(num_layers=3, growth_rate=4, bn_size=2, memory_efficient=True)
    remat_variables = jax.eval_shape(
        lambda x: remat_block.init(jax.random.key(0), x, train=False), x)
    assert jax.tree.structure(remat_variables) == jax.tree.structure(variables)
    loss, grads = _train_loss(block, variables, x, 0)
    remat_loss, remat_grads = _train_loss(remat_block, variables, x, 0)
    np.testing.assert_allclose(float(remat_loss), float(loss), rtol=1e-6)
    for g, rg in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads)):
        np.testing.assert_allclose(np.asarray(rg), np.asarray(g), rtol=1e-4, atol=1e-6)


def test_drop_rate_only_active_in_training(tiny_block):
    _, variables, x = tiny_block
    block = DenseBlock(num_layers=3, growth_rate=4, bn_size=2, drop_rate=0.5)
    apply = jax.jit(lambda v, x, key: block.apply(v, x, train=True, mutable=["batch_stats"],
                                                  rngs={"dropout": key})[0])
    a, b = apply(variables, x, jax.random.key(0)), apply(variables, x, jax.random.key(1))
    assert not np.allclose(np.asarray(a[..., 8:]), np.asarray(b[..., 8:]))
    assert np.any(np.asarray(a[..., 8:]) == 0)
    np.testing.assert_array_equal(np.asarray(a[..., :8]), np.asarray(x))
    # In eval mode the dropout block computes exactly what the plain block does.
    plain = DenseBlock(num_layers=3, growth_rate=4, bn_size=2)
    evaluate = jax.jit(lambda v, x: (block.apply(v, x, train=False),
                                     plain.apply(v, x, train=False)))
    with_dropout, without = evaluate(variables, x)
    np.testing.assert_array_equal(np.asarray(with_dropout), np.asarray(without))


def test_bad_drop_rate_raises():
    model = zoo.create_model("densenet121", drop_rate=1.0)
    with pytest.raises(ValueError, match=r"drop_rate must be in \[0, 1\), got 1.0"):
        init_shapes(model, (1, 32, 32, 3))


def test_macs_match_torchvision_table():
    # torchvision's table: DenseNet-121 2.83 GFLOPS (multiply-adds) at 224x224.
    assert zoo.model_info("densenet121")["macs"] == pytest.approx(2.83e9, rel=0.005)
