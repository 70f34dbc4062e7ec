"""SE-ResNet: a squeeze-excite in every bottleneck, sized and placed as in timm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.counting import count_params
from zoo.models.resnet import ResidualBlock


def param_shapes(name):
    model = zoo.create_model(name)
    return registry.init_shapes(model, (1, 32, 32, 3))["params"]


@pytest.mark.parametrize("name,stage_sizes", [
    ("seresnet50", (3, 4, 6, 3)),
    ("seresnet101", (3, 4, 23, 3)),
    ("seresnext50_32x4d", (3, 4, 6, 3)),
])
def test_se_in_every_block_with_timm_widths(name, stage_sizes):
    params = param_shapes(name)
    for stage, num_blocks in enumerate(stage_sizes, start=1):
        channels = 256 * 2 ** (stage - 1)
        reduced = channels // 16  # make_divisible(C / 16, 8) is exact for these C
        blocks = params[f"stage{stage}"]
        assert set(blocks) == {f"block{i}" for i in range(1, num_blocks + 1)}
        for block in blocks.values():
            se = block["se"]
            assert se["fc1"]["kernel"].shape == (1, 1, channels, reduced)
            assert se["fc1"]["bias"].shape == (reduced,)
            assert se["fc2"]["kernel"].shape == (1, 1, reduced, channels)
            assert se["fc2"]["bias"].shape == (channels,)


def test_se_adds_exactly_its_layers_to_the_base_resnet():
    se_params = 0
    for num_blocks, channels in zip((3, 4, 6, 3), (256, 512, 1024, 2048)):
        reduced = channels // 16
        se_params += num_blocks * (2 * channels * reduced + reduced + channels)
    assert se_params == 2_530_992
    for name, base in (("seresnet50", "resnet50"), ("seresnext50_32x4d", "resnext50_32x4d")):
        assert count_params(param_shapes(name)) == count_params(param_shapes(base)) + se_params
    grouped = param_shapes("seresnext50_32x4d")["stage1"]["block1"]["conv2"]["conv"]["kernel"]
    assert grouped.shape == (3, 3, 4, 128)


def test_se_gates_the_residual_branch_before_the_add():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 64))
    block = ResidualBlock("bottleneck", planes=16, se_ratio=1 / 16)

    @jax.jit
    def run(x):
        variables = block.init(jax.random.key(1), x, train=False)
        # A closed gate (sigmoid(-1e4) == 0) must leave only the shortcut: the
        # SE sits on the branch, not after the sum.
        closed = jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.full_like(leaf, -1e4) if "fc2" in jax.tree_util.keystr(path)
            and "bias" in jax.tree_util.keystr(path) else leaf, variables)
        return variables, block.apply(variables, x, train=False), block.apply(closed, x, train=False)

    variables, y_open, y_closed = run(x)
    assert variables["params"]["se"]["fc1"]["kernel"].shape == (1, 1, 64, 8)
    np.testing.assert_allclose(y_closed, jax.nn.relu(x), atol=1e-6)
    assert not np.allclose(y_open, jax.nn.relu(x))


def test_registered_as_timm_models():
    for name in ("seresnet50", "seresnet101", "seresnext50_32x4d"):
        entry = registry.get_entry(name)
        assert entry.family == "senet" and entry.reference == "timm"
