"""What is special to EfficientNet: compound scaling, resolutions, stochastic depth.

Exact parameter counts and the forward/backward contract are checked for every
registered name in test_every_model.py. Stochastic depth is exercised on a
tiny two-stage EfficientNet (same classes, smaller table) so it compiles fast.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.models.efficientnet import EFFICIENTNET_STAGES, EfficientNet, MBConv, scaled_blocks

PAPER_RESOLUTIONS = {
    "efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 260,
    "efficientnet_b3": 300, "efficientnet_b4": 380, "efficientnet_b5": 456,
    "efficientnet_b6": 528, "efficientnet_b7": 600,
}


def test_every_variant_registers_the_paper_resolution():
    assert zoo.list_models("efficientnet_b*") == sorted(PAPER_RESOLUTIONS)
    for name, size in PAPER_RESOLUTIONS.items():
        assert registry.get_entry(name).input_size == size, name
    # model_info reports it too (counted at that resolution); b0 only, as
    # tracing B7 at 600x600 costs seconds.
    assert zoo.model_info("efficientnet_b0")["input_size"] == 224


def test_b0_macs_match_the_paper():
    # Paper / torchvision: 0.39 GFLOPs (multiply-adds) at 224x224.
    macs = zoo.model_info("efficientnet_b0")["macs"]
    assert macs == pytest.approx(0.39e9, rel=0.03)


@pytest.mark.parametrize("width, depth, repeats, widths", [
    (1.0, 1.0, [1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320]),
    (1.1, 1.2, [2, 3, 3, 4, 4, 5, 2], [16, 24, 48, 88, 120, 208, 352]),
    (2.0, 3.1, [4, 7, 7, 10, 10, 13, 4], [32, 48, 80, 160, 224, 384, 640]),
])
def test_compound_scaling_rounds_like_torchvision(width, depth, repeats, widths):
    blocks = scaled_blocks(EFFICIENTNET_STAGES, stem_channels=32, width=width, depth=depth,
                           drop_path_rate=0.2)
    stages = [int(b.name[5:].split("_")[0]) for b in blocks]
    assert [stages.count(s) for s in range(1, 8)] == repeats
    assert [b.out_channels for b in blocks if b.name.endswith("_block1")] == widths


def test_drop_path_rates_increase_linearly_over_blocks():
    blocks = scaled_blocks(EFFICIENTNET_STAGES, stem_channels=32, width=1.0, depth=1.0,
                           drop_path_rate=0.2)
    assert len(blocks) == 16
    rates = np.array([b.drop_path_rate for b in blocks])
    np.testing.assert_allclose(rates, 0.2 * np.arange(16) / 16)
    b7 = zoo.create_model("efficientnet_b7").blocks()
    assert len(b7) == 55 and b7[0].drop_path_rate == 0.0
    assert b7[-1].drop_path_rate == pytest.approx(0.2 * 54 / 55)


def test_squeeze_excite_width_is_a_quarter_of_the_block_input():
    model = zoo.create_model("efficientnet_b0")
    params = registry.init_shapes(model, (1, 32, 32, 3))["params"]
    fc1 = lambda block: params[block]["se"]["fc1"]["kernel"].shape  # noqa: E731
    assert fc1("stage1_block1") == (1, 1, 32, 8)     # no expansion: 32 -> 8
    assert fc1("stage2_block1") == (1, 1, 96, 4)     # input 16, hidden 96
    assert fc1("stage7_block1") == (1, 1, 1152, 48)  # input 192
    assert params["final_conv"]["conv"]["kernel"].shape == (1, 1, 320, 1280)


def test_b5_to_b7_use_tensorflow_batchnorm_settings():
    for name in ["efficientnet_b0", "efficientnet_b4"]:
        model = zoo.create_model(name)
        assert (model.bn_epsilon, model.bn_momentum) == (1e-5, 0.9), name
    for name in ["efficientnet_b5", "efficientnet_b6", "efficientnet_b7"]:
        model = zoo.create_model(name)
        assert (model.bn_epsilon, model.bn_momentum) == (1e-3, 0.99), name


# A tiny EfficientNet: 4 blocks, 3 of them residual (drop-path rates 0, 0.125, 0.375).
_TINY_STAGES = (MBConv(expand=1, kernel=3, stride=1, out=16, repeats=2),
                MBConv(expand=2, kernel=3, stride=2, out=16, repeats=2))


@functools.cache
def _tiny_apply(drop_path_rate: float):
    model = EfficientNet(num_classes=5, stages=_TINY_STAGES, stem_channels=16,
                         drop_rate=0.0, drop_path_rate=drop_path_rate)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 8, 3), dtype=np.float32)
    # Weights from NumPy: a jitted `model.init` spends seconds compiling one
    # threefry kernel per parameter on CPU, far more than the model itself.
    shapes = jax.eval_shape(model.init, jax.random.key(1), x)
    variables = {
        "params": jax.tree.map(
            lambda s: 0.3 * rng.standard_normal(s.shape, dtype=np.float32), shapes["params"]),
        "batch_stats": jax.tree_util.tree_map_with_path(
            lambda path, s: np.full(s.shape, path[-1].key == "var", np.float32),
            shapes["batch_stats"]),
    }

    @functools.partial(jax.jit, static_argnames="train")
    def apply(key, train):
        out = model.apply(variables, x, train=train, rngs={"dropout": key},
                          mutable=["batch_stats"] if train else False)
        return out[0] if train else out

    return apply


def test_drop_path_is_inactive_in_eval_and_active_in_train():
    apply = _tiny_apply(0.5)
    key1, key2 = jax.random.key(10), jax.random.key(11)
    np.testing.assert_array_equal(apply(key1, False), apply(key2, False))
    assert not np.allclose(apply(key1, True), apply(key2, True))
    # Same key, same draw: the difference comes from the rng only.
    np.testing.assert_array_equal(apply(key1, True), apply(key1, True))


def test_without_drop_path_training_is_deterministic():
    # Dropout is 0 here, so drop path was the only source of randomness above.
    apply = _tiny_apply(0.0)
    np.testing.assert_array_equal(apply(jax.random.key(10), True),
                                  apply(jax.random.key(11), True))


def test_bad_multipliers_raise():
    with pytest.raises(ValueError, match="must be > 0, got 0.0, 1.0"):
        scaled_blocks(EFFICIENTNET_STAGES, stem_channels=32, width=0.0, depth=1.0,
                      drop_path_rate=0.2)
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\), got 1.0"):
        scaled_blocks(EFFICIENTNET_STAGES, stem_channels=32, width=1.0, depth=1.0,
                      drop_path_rate=1.0)
