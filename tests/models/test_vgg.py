"""VGG: conv layout per configuration, biased convs in _bn variants, torch-order flatten."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.models.vgg import VGG


def param_shapes(name, size=32):
    return registry.init_shapes(zoo.create_model(name), (1, size, size, 3))["params"]


@pytest.mark.parametrize("name,convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_conv_layout_and_bn_variants(name, convs):
    plain, with_bn = param_shapes(name), param_shapes(name + "_bn")
    assert sorted(plain) == ["fc1", "fc2", "head"] + [f"stage{i}" for i in range(1, 6)]
    conv_layers = [(stage, conv) for stage in plain if stage.startswith("stage")
                   for conv in plain[stage]]
    assert len(conv_layers) == convs
    for stage, conv in conv_layers:
        assert sorted(plain[stage][conv]) == ["conv"]
        # torchvision keeps the conv bias even when BatchNorm follows.
        assert sorted(with_bn[stage][conv]) == ["bn", "conv"]
        assert sorted(with_bn[stage][conv]["conv"]) == ["bias", "kernel"]
        assert with_bn[stage][conv]["conv"]["kernel"].shape[:2] == (3, 3)
    assert plain["stage5"]["conv1"]["conv"]["kernel"].shape[-1] == 512
    assert plain["fc1"]["kernel"].shape == (25088, 4096)
    assert plain["head"]["kernel"].shape == (4096, 1000)


def test_features_at_any_size_are_the_7x7_pooled_map_in_torch_order():
    model = zoo.create_model("vgg11", num_classes=0)
    for size in (32, 224):
        x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
        variables = registry.init_shapes(model, x.shape)
        assert jax.eval_shape(lambda v, x: model.apply(v, x), variables, x).shape == (2, 25088)
    # At 32x32 the last map is 1x1: the adaptive pool copies it to all 49
    # cells, so in (C, H, W) order each channel is a run of 49 equal values.
    # (A narrow VGG keeps the compile cheap; the layout code is the same.)
    narrow = VGG(stage_widths=((8,),) * 4 + ((16,),), num_classes=0)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    features = jax.jit(lambda x: narrow.apply(narrow.init(jax.random.key(1), x), x))(x)
    per_channel = np.asarray(features).reshape(2, 16, 49)
    np.testing.assert_array_equal(per_channel, per_channel[:, :, :1].repeat(49, axis=2))
    assert np.any(per_channel[:, :, 0])


def test_min_input_size_is_one_pixel_after_five_pools():
    model = zoo.create_model("vgg16")
    assert model.min_input_size == 32
    with pytest.raises(ValueError, match="at least 32x32"):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                       jax.ShapeDtypeStruct((1, 31, 31, 3), jnp.float32))
