"""AlexNet and LeNet-5: layer shapes, torch-order flatten, PyTorch default init."""

import jax
import jax.numpy as jnp
import numpy as np

import zoo
from zoo import registry
from zoo.models.alexnet import torch_default_bias_init, torch_default_kernel_init, \
    torch_order_flatten


def test_torch_order_flatten_is_channels_height_width():
    x = jnp.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # [batch, H=3, W=4, C=5]
    flat = np.asarray(torch_order_flatten(x))
    assert flat.shape == (2, 60)
    b, h, w, c = 1, 2, 3, 4
    assert flat[b, c * 12 + h * 4 + w] == x[b, h, w, c]


def test_torch_default_init_bounds():
    kernel = torch_default_kernel_init(jax.random.key(0), (400, 300))
    bias = torch_default_bias_init(400)(jax.random.key(1), (300,))
    for leaf in (kernel, bias):
        assert 0.95 * 0.05 < np.abs(leaf).max() <= 0.05  # 1 / sqrt(400)


def test_alexnet_layers():
    params = registry.init_shapes(zoo.create_model("alexnet"), (1, 224, 224, 3))["params"]
    shapes = {name: layer["kernel"].shape for name, layer in params.items()}
    assert shapes == {
        "conv1": (11, 11, 3, 64), "conv2": (5, 5, 64, 192), "conv3": (3, 3, 192, 384),
        "conv4": (3, 3, 384, 256), "conv5": (3, 3, 256, 256),
        "fc1": (9216, 4096), "fc2": (4096, 4096), "head": (4096, 1000),
    }


def test_alexnet_features_at_min_and_default_size():
    model = zoo.create_model("alexnet", num_classes=0)
    assert model.min_input_size == 63
    for size in (63, 224, 255):  # last map 1x1, 6x6, 7x7
        x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
        variables = registry.init_shapes(model, x.shape)
        assert jax.eval_shape(lambda v, x: model.apply(v, x), variables, x).shape == (2, 9216)


def test_lenet5_layers_and_forward():
    model = zoo.create_model("lenet5")
    assert model.min_input_size == 32 and model.in_channels == 1 and model.num_classes == 10
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 1))

    @jax.jit
    def run(x):
        variables = model.init(jax.random.key(1), x)
        return (variables, model.apply(variables, x),
                model.apply(variables, x, return_features=True))

    variables, logits, features = run(x)
    shapes = {name: layer["kernel"].shape for name, layer in variables["params"].items()}
    assert shapes == {"conv1": (5, 5, 1, 6), "conv2": (5, 5, 6, 16), "fc1": (400, 120),
                      "fc2": (120, 84), "head": (84, 10)}
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    assert features.shape == (3, 400) and np.all(np.asarray(features) >= 0)  # after ReLU + pool
    assert np.all(np.isfinite(np.asarray(logits)))
