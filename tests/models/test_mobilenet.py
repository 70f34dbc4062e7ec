"""What is special to MobileNet v1/v2/v3: SE widths, activations, width rounding.

Exact parameter counts and the forward/backward contract are checked for every
registered name in test_every_model.py; shapes and activations here come from
`jax.eval_shape` / `jax.make_jaxpr` (tracing, no compute).
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import pytest

import zoo
from zoo import registry
from zoo.models.mobilenet import InvertedResidual


@functools.cache
def _param_shapes(name: str, **overrides) -> dict:
    model = zoo.create_model(name, **overrides)
    variables = registry.init_shapes(model, (1, 32, 32, 3))
    return jax.tree.map(lambda leaf: leaf.shape, variables["params"])


def _se_fc1_shapes(params: dict) -> dict[str, tuple[int, ...]]:
    return {name: block["se"]["fc1"]["kernel"] for name, block in params.items()
            if isinstance(block, dict) and "se" in block}


def test_v3_small_squeeze_excite_widths():
    # torchvision: squeeze = make_divisible(expanded // 4, 8), on 9 of 11 blocks.
    se = _se_fc1_shapes(_param_shapes("mobilenet_v3_small"))
    assert se == {
        "stage1_block1": (1, 1, 16, 8),     # 16 // 4 = 4 -> 8
        "stage4_block1": (1, 1, 96, 24),
        "stage5_block1": (1, 1, 240, 64),
        "stage5_block2": (1, 1, 240, 64),
        "stage6_block1": (1, 1, 120, 32),
        "stage7_block1": (1, 1, 144, 40),   # 36 -> 40
        "stage8_block1": (1, 1, 288, 72),
        "stage9_block1": (1, 1, 576, 144),
        "stage9_block2": (1, 1, 576, 144),
    }
    params = _param_shapes("mobilenet_v3_small")
    assert params["stage1_block1"]["se"]["fc2"]["kernel"] == (1, 1, 8, 16)
    # The first small block has expanded == input: no expand conv.
    assert "expand" not in params["stage1_block1"]


def test_v3_large_squeeze_excite_widths():
    se = _se_fc1_shapes(_param_shapes("mobilenet_v3_large"))
    assert len(se) == 8
    assert se["stage4_block1"] == (1, 1, 72, 24)   # 18 rounds up to 24 (10% rule)
    assert se["stage5_block2"] == (1, 1, 120, 32)
    assert se["stage10_block1"] == (1, 1, 672, 168)
    assert se["stage12_block2"] == (1, 1, 960, 240)
    params = _param_shapes("mobilenet_v3_large")
    assert params["final_conv"]["conv"]["kernel"] == (1, 1, 160, 960)
    assert params["pre_logits"]["kernel"] == (960, 1280)
    assert params["head"]["kernel"] == (1280, 1000)


def _named_calls(jaxpr) -> collections.Counter:
    """How often each named jitted function (jax.nn.hard_swish is `hard_silu`)
    is called in `jaxpr`; calls made inside a named function are not counted
    (hard_silu calls hard_sigmoid itself)."""
    counts = collections.Counter()
    for eqn in jaxpr.eqns:
        if "name" in eqn.params:
            counts[eqn.params["name"]] += 1
            continue
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                counts += _named_calls(inner)
    return counts


@pytest.mark.parametrize("name, hard_swish, hard_sigmoid", [
    # stem + 8 hard-swish blocks x (expand, depthwise) + final conv + hidden Linear.
    ("mobilenet_v3_small", 1 + 8 * 2 + 1 + 1, 9),
    ("mobilenet_v2", 0, 0),
])
def test_hard_swish_and_hard_sigmoid_where_the_table_says(name, hard_swish, hard_sigmoid):
    model = zoo.create_model(name)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = registry.init_shapes(model, x.shape)
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x).jaxpr
    calls = _named_calls(jaxpr)
    assert calls["hard_silu"] == hard_swish
    assert calls["hard_sigmoid"] == hard_sigmoid


def test_v2_width_rounding_matches_torchvision():
    params = _param_shapes("mobilenet_v2", width_multiplier=0.5)
    assert params["stem"]["conv"]["kernel"] == (3, 3, 3, 16)
    outs = [params[f"stage{s}_block1"]["project"]["conv"]["kernel"][-1] for s in range(1, 8)]
    # make_divisible(c * 0.5, 8): 16->8, 24->16 (12 rounds up), ..., 320->160.
    assert outs == [8, 16, 16, 32, 48, 80, 160]
    # Hidden width is in * 6 of the rounded input; the last conv never shrinks.
    assert params["stage2_block1"]["expand"]["conv"]["kernel"] == (1, 1, 8, 48)
    assert params["final_conv"]["conv"]["kernel"] == (1, 1, 160, 1280)


def test_v3_and_v1_width_rounding():
    v3 = _param_shapes("mobilenet_v3_small", width_multiplier=0.75)
    assert v3["stem"]["conv"]["kernel"] == (3, 3, 3, 16)           # 12 -> 16
    assert v3["stage9_block2"]["depthwise"]["conv"]["kernel"] == (5, 5, 1, 432)
    # The last conv is 6x the last block's rounded width (72), the hidden Linear
    # make_divisible(1024 * 0.75) = 768.
    assert v3["final_conv"]["conv"]["kernel"] == (1, 1, 72, 432)
    assert v3["pre_logits"]["kernel"] == (432, 768)
    v1 = _param_shapes("mobilenet_v1", width_multiplier=0.25)
    assert v1["stem"]["conv"]["kernel"] == (3, 3, 3, 8)
    assert v1["stage1_block1"]["depthwise"]["conv"]["kernel"] == (3, 3, 1, 8)
    assert v1["head"]["kernel"] == (256, 1000)


def test_v1_has_thirteen_depthwise_separable_blocks_and_1024_features():
    params = _param_shapes("mobilenet_v1")
    blocks = [name for name in params if name.startswith("stage")]
    assert len(blocks) == 13
    widths = [params[name]["pointwise"]["conv"]["kernel"][-1] for name in sorted(
        blocks, key=lambda n: tuple(int(p) for p in n[5:].split("_block")))]
    assert widths == [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
    model = zoo.create_model("mobilenet_v1")
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = registry.init_shapes(model, x.shape)
    features = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True), variables, x)
    assert features.shape == (1, 1024)


def test_inverted_residual_spec_validation():
    with pytest.raises(ValueError, match="exactly one of expand_ratio / expanded"):
        InvertedResidual(3, 1, out=16, expand_ratio=6, expanded=96)
    with pytest.raises(ValueError, match="exactly one of expand_ratio / expanded"):
        InvertedResidual(3, 1, out=16)
    with pytest.raises(ValueError, match="'swish'"):
        InvertedResidual(3, 1, out=16, expand_ratio=6, act="swish")
    with pytest.raises(ValueError, match="width_multiplier must be > 0, got 0"):
        _param_shapes("mobilenet_v2", width_multiplier=0.0)
