"""What is special to ResNet / ResNeXt / Wide ResNet: block layout, options, MACs."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.models.resnet import ResidualBlock, ResNet, ResNetStage


def param_shapes(name, **overrides):
    model = zoo.create_model(name, **overrides)
    return registry.init_shapes(model, registry.input_shape(name, image_size=32))["params"]


def stage_output_shapes(model, size):
    """Spatial size and channels after each stage, via eval_shape (no compute)."""
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = registry.init_shapes(model, x.shape)

    def run(v, x):
        return model.apply(v, x, capture_intermediates=lambda m, _: isinstance(m, ResNetStage),
                           mutable=["intermediates"])

    _, state = jax.eval_shape(run, variables, x)
    inter = state["intermediates"]
    return [inter[f"stage{i}"]["__call__"][0].shape[1:] for i in range(1, 5)]


def test_submodule_names_are_checkpoint_keys():
    params = param_shapes("resnet50")
    assert sorted(params) == ["head", "stage1", "stage2", "stage3", "stage4", "stem"]
    assert sorted(params["stage3"]) == [f"block{i}" for i in range(1, 7)]
    first, second = params["stage2"]["block1"], params["stage2"]["block2"]
    assert sorted(first) == ["conv1", "conv2", "conv3", "downsample"]
    assert sorted(second) == ["conv1", "conv2", "conv3"]
    assert sorted(first["conv3"]) == ["bn", "conv"]
    assert params["stem"]["conv"]["kernel"].shape == (7, 7, 3, 64)
    assert params["head"]["kernel"].shape == (2048, 1000)


def test_v1_5_stride_sits_on_the_3x3_conv():
    model = zoo.create_model("resnet50")
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = registry.init_shapes(model, x.shape)

    def run(v, x):
        return model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])

    _, state = jax.eval_shape(run, variables, x)
    block = state["intermediates"]["stage2"]["block1"]
    # stage1 output is 16x16; in stage2's first block conv1 keeps it, conv2 halves it.
    assert block["conv1"]["__call__"][0].shape[1:3] == (16, 16)
    assert block["conv2"]["__call__"][0].shape[1:3] == (8, 8)


@pytest.mark.parametrize("name,kernel", [
    ("resnext50_32x4d", (3, 3, 4, 128)),     # width 128 in 32 groups of 4
    ("resnext101_32x8d", (3, 3, 8, 256)),    # width 256 in 32 groups of 8
    ("resnext101_64x4d", (3, 3, 4, 256)),    # width 256 in 64 groups of 4
    ("wide_resnet50_2", (3, 3, 128, 128)),   # twice resnet50's 64
    ("resnet50", (3, 3, 64, 64)),
])
def test_grouped_and_wide_3x3_kernels(name, kernel):
    params = param_shapes(name)
    assert params["stage1"]["block1"]["conv2"]["conv"]["kernel"].shape == kernel
    # The last stage is 8x wider with the same number of groups.
    last = params["stage4"]["block1"]["conv2"]["conv"]["kernel"].shape
    assert last == (3, 3, kernel[2] * 8, kernel[3] * 8)


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048),
                                      ("resnext50_32x4d", 2048), ("wide_resnet50_2", 2048)])
def test_feature_dims(name, dim):
    model = zoo.create_model(name)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = registry.init_shapes(model, x.shape)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True), variables, x)
    assert feats.shape == (2, dim)
    headless = zoo.create_model(name, num_classes=0)
    variables = registry.init_shapes(headless, x.shape)
    assert "head" not in variables["params"]
    assert jax.eval_shape(lambda v, x: headless.apply(v, x), variables, x).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    cifar = zoo.create_model("resnet18", stem="cifar")
    assert cifar.min_input_size == 8
    assert stage_output_shapes(cifar, 32) == [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512)]
    params = registry.init_shapes(cifar, (1, 32, 32, 3))["params"]
    assert params["stem"]["conv"]["kernel"].shape == (3, 3, 3, 64)
    imagenet = zoo.create_model("resnet18")
    assert imagenet.min_input_size == 32
    assert stage_output_shapes(imagenet, 64) == [(16, 16, 64), (8, 8, 128), (4, 4, 256), (2, 2, 512)]


def test_macs_match_published_numbers():
    # torchvision's tables: 4.09 / 1.81 GFLOPS (counted as multiply-adds).
    assert zoo.model_info("resnet50")["macs"] == pytest.approx(4.09e9, rel=0.01)
    assert zoo.model_info("resnet18")["macs"] == pytest.approx(1.81e9, rel=0.01)


@pytest.mark.parametrize("kind,last", [("basic", "conv2"), ("bottleneck", "conv3")])
def test_zero_init_residual_makes_blocks_start_as_identity(kind, last):
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 16 if kind == "basic" else 64))
    zero = ResidualBlock(kind, planes=16, zero_init_residual=True)
    default = ResidualBlock(kind, planes=16)

    @jax.jit
    def init_and_run(x):
        zero_vars = zero.init(jax.random.key(1), x, train=False)
        default_vars = default.init(jax.random.key(1), x, train=False)
        return zero_vars, default_vars, zero.apply(zero_vars, x, train=False)

    zero_vars, default_vars, y = init_and_run(x)
    assert not np.any(zero_vars["params"][last]["bn"]["scale"])
    assert np.all(zero_vars["params"]["conv1"]["bn"]["scale"] == 1)
    assert np.all(default_vars["params"][last]["bn"]["scale"] == 1)
    assert "downsample" not in zero_vars["params"]
    np.testing.assert_allclose(y, jax.nn.relu(x), atol=1e-6)


def init_jit(model, shape):
    return jax.jit(lambda k: model.init(k, jnp.ones(shape)))(jax.random.key(0))


def test_zero_init_residual_reaches_every_block_and_head_init_is_torchs():
    model = ResNet("basic", (2, 2), stem="cifar", zero_init_residual=True, num_classes=10)
    params = init_jit(model, (1, 8, 8, 3))["params"]
    scales = [params[f"stage{s}"][f"block{b}"]["conv2"]["bn"]["scale"]
              for s in (1, 2) for b in (1, 2)]
    assert [s.shape for s in scales] == [(64,), (64,), (128,), (128,)]
    assert not any(np.any(s) for s in scales)
    # Torchvision's head init: U(+-1/sqrt(fan_in)) for weight and bias.
    bound = 1 / np.sqrt(128)
    for leaf in (params["head"]["kernel"], params["head"]["bias"]):
        assert 0.8 * bound < np.abs(leaf).max() <= bound


def test_drop_rate_is_active_only_when_training():
    model = ResNet("basic", (1, 1), stem="cifar", num_classes=3, drop_rate=0.5)
    plain = ResNet("basic", (1, 1), stem="cifar", num_classes=3)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    variables = init_jit(model, x.shape)

    @jax.jit
    def run(x, key):
        train, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                               rngs={"dropout": key})
        return train, model.apply(variables, x), plain.apply(variables, x)

    train_a, eval_a, eval_plain = run(x, jax.random.key(2))
    train_b, eval_b, _ = run(x, jax.random.key(3))
    assert not np.allclose(train_a, train_b)
    np.testing.assert_array_equal(eval_a, eval_b)
    np.testing.assert_allclose(eval_a, eval_plain, atol=1e-6)


@pytest.mark.parametrize("dtype,train,barriers", [
    (jnp.bfloat16, True, 1),     # the stem pool's gradient is written once
    (jnp.float32, True, 0),      # in float32 the barrier did not pay
    (jnp.bfloat16, False, 0),    # no backward pass
])
def test_stem_pool_gradient_barrier_only_in_low_precision_training(dtype, train, barriers,
                                                                   monkeypatch):
    from zoo.models import resnet
    calls = []

    def recording_barrier(x, anchor):
        calls.append((x.shape, anchor.shape))
        return x
    monkeypatch.setattr(resnet, "gradient_barrier", recording_barrier)
    model = ResNet("basic", (1, 1), num_classes=3, dtype=dtype)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = registry.init_shapes(model, x.shape)
    jax.eval_shape(functools.partial(model.apply, train=train, mutable=["batch_stats"]),
                   variables, x)
    # [batch, 8, 8, 64]: after the 7x7/2 stem and the 3x3/2 pool; anchored on
    # the stem kernel, replicated under data parallelism.
    assert calls == [((2, 8, 8, 64), (7, 7, 3, 64))] * barriers


@pytest.mark.parametrize("overrides,match", [
    ({"block": "basic", "groups": 32}, "basic blocks support only groups=1"),
    ({"stem": "tiny"}, "stem must be 'imagenet' or 'cifar'"),
    ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\)"),
    ({"stage_sizes": (2, 0, 2, 2)}, "stage_sizes must be positive"),
])
def test_bad_options_raise(overrides, match):
    fields = {"block": "bottleneck", "stage_sizes": (1, 1, 1, 1), **overrides}
    model = ResNet(**fields)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                       jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))


def test_registered_family():
    names = zoo.list_models("*res*")
    assert {"resnet18", "resnet152", "resnext101_64x4d", "wide_resnet101_2"} <= set(names)
    assert isinstance(zoo.create_model("resnet50"), nn.Module)
