"""AlexNet (Krizhevsky et al. 2012), torchvision's single-tower variant.

Paper: https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks
(torchvision follows "One weird trick...", https://arxiv.org/abs/1404.5997).

Layout (torchvision `alexnet`, 61,100,840 parameters at 1000 classes):
conv 64@11x11/4 pad 2, ReLU, max-pool 3/2, conv 192@5x5 pad 2, ReLU, max-pool,
conv 384@3x3, ReLU, conv 256@3x3, ReLU, conv 256@3x3, ReLU, max-pool,
adaptive average pool to 6x6, dropout, 9216 -> 4096, ReLU, dropout,
4096 -> 4096, ReLU, 4096 -> classes.

Deviations from torchvision: none in structure or initialisation (PyTorch's
default Conv2d/Linear init: weights U(+-1/sqrt(fan_in)), biases likewise).
`return_features=True` gives the flattened 9216-d pooled map (the classifier's
input), not the 4096-d activations.

Flatten order: torch flattens [batch, channels, 6, 6]; we transpose NHWC to
NCHW before flattening so `fc1`'s kernel is exactly torch's weight transposed
(no permutation of its 9216 rows), which keeps weight import one to one.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.cpu_conv import conv_general_dilated
from zoo.layers.pooling import adaptive_avg_pool, max_pool
from zoo.layers.validation import check_images
from zoo.registry import register_model

# PyTorch's default initialisation of Conv2d and Linear weights:
# kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default bias init of Conv2d / Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_order_flatten(x: jax.Array) -> jax.Array:
    """[batch, height, width, channels] -> [batch, channels * height * width]
    in PyTorch's (C, H, W) order, so a following Dense imports torch's Linear
    weight as a plain transpose."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


class AlexNet(nn.Module):
    """AlexNet as in torchvision.

    Attributes:
      num_classes: classifier outputs; 0 returns the 9216-d features.
      in_channels: image channels.
      drop_rate: dropout before each of the first two Dense layers (train only).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # 63 -> conv1 15 -> pool 7 -> pool 3 -> pool 1: the last max-pool
        # needs 3 pixels.
        return 63

    def _conv(self, x: jax.Array, features: int, kernel: int, stride: int, pad: int,
              name: str) -> jax.Array:
        fan_in = kernel * kernel * x.shape[-1]
        x = nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                    kernel_init=torch_default_kernel_init,
                    bias_init=torch_default_bias_init(fan_in),
                    dtype=self.dtype, param_dtype=self.param_dtype,
                    conv_general_dilated=conv_general_dilated,  # CPU forms, as in ConvBNAct
                    name=name)(x)
        return nn.relu(x)

    def _dense(self, x: jax.Array, features: int, name: str) -> jax.Array:
        return nn.Dense(features, kernel_init=torch_default_kernel_init,
                        bias_init=torch_default_bias_init(x.shape[-1]),
                        dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or features [batch, 9216] with `return_features=True`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size, model="AlexNet")
        pool = functools.partial(max_pool, window_shape=(3, 3), strides=(2, 2))
        x = x.astype(self.dtype)
        x = pool(self._conv(x, 64, 11, 4, 2, "conv1"))
        x = pool(self._conv(x, 192, 5, 1, 2, "conv2"))
        x = self._conv(x, 384, 3, 1, 1, "conv3")
        x = self._conv(x, 256, 3, 1, 1, "conv4")
        x = pool(self._conv(x, 256, 3, 1, 1, "conv5"))
        x = torch_order_flatten(adaptive_avg_pool(x, 6))
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.relu(self._dense(x, 4096, "fc1"))
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.relu(self._dense(x, 4096, "fc2"))
        x = self._dense(x, self.num_classes, "head")
        return x.astype(jnp.float32)


register_model(
    "alexnet",
    AlexNet,
    family="alexnet",
    input_size=224,
    paper="https://arxiv.org/abs/1404.5997",
    reference_params=61_100_840,
    reference="torchvision",
)
