"""Simple CNN: the classic Keras MNIST example.

Reference: https://keras.io/examples/vision/mnist_convnet/ — Conv 32 3x3 ReLU,
2x2 max-pool, Conv 64 3x3 ReLU, 2x2 max-pool, flatten, dropout 0.5, Dense to
classes. 34,826 parameters for 28x28x1 input and 10 classes.

Deviations: none (logits are returned; softmax belongs to the loss).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.cpu_conv import conv_general_dilated
from zoo.layers.pooling import max_pool
from zoo.layers.validation import check_images
from zoo.registry import register_model


class SimpleCNN(nn.Module):
    """Two conv/pool stages and a linear classifier.

    Attributes:
      num_classes: classifier outputs; 0 returns the flattened features.
      in_channels: image channels (1 for MNIST-style data).
      drop_rate: dropout before the classifier, active only when training.
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 10
    in_channels: int = 1
    drop_rate: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # The classifier's input size is fixed by the 28x28 layout it was built for.
        return 28

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array:
        """x: [batch, 28, 28, in_channels] -> logits [batch, num_classes] (float32),
        or features [batch, 1600] with `return_features=True`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size, model="SimpleCNN")
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding="VALID",
                                 dtype=self.dtype, param_dtype=self.param_dtype,
                                 conv_general_dilated=conv_general_dilated)
        x = x.astype(self.dtype)
        x = nn.relu(conv(32, name="conv1")(x))
        x = max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(conv(64, name="conv2")(x))
        x = max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="head")(x)
        return x.astype(jnp.float32)


register_model(
    "simple_cnn",
    SimpleCNN,
    family="simple_cnn",
    input_size=28,
    num_classes=10,
    paper="https://keras.io/examples/vision/mnist_convnet/",
    reference_params=34_826,
    reference="keras",
)
