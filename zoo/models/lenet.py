"""LeNet-5 (LeCun et al. 1998), in its common modern form.

Paper: http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf

Layout on a 32x32x1 image: conv 6@5x5 (valid) -> 28x28, ReLU, 2x2 max-pool
-> 14x14, conv 16@5x5 -> 10x10, ReLU, max-pool -> 5x5, flatten 400, Dense 120,
ReLU, Dense 84, ReLU, Dense num_classes. 61,706 parameters at 10 classes.

Deviations from the paper: ReLU instead of scaled tanh, max-pooling instead of
trainable sub-sampling, every C3 map sees all six S2 maps (the paper's sparse
connection table is dropped), and a plain linear classifier instead of the RBF
output layer. MNIST's 28x28 digits are zero-padded to 32x32 by the data
pipeline, as in the paper. The flatten uses PyTorch's (C, H, W) order, as the
common PyTorch implementations do. `return_features=True` gives the 400-d
flattened map.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.pooling import max_pool
from zoo.layers.validation import check_images
from zoo.models.alexnet import torch_order_flatten
from zoo.registry import register_model


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling.

    Attributes:
      num_classes: classifier outputs; 0 returns the 400-d features.
      in_channels: image channels (1 for MNIST).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 10
    in_channels: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # The 400-d classifier input is fixed by the 32x32 layout.
        return 32

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array:
        """x: [batch, 32, 32, in_channels] -> logits [batch, num_classes]
        (float32), or features [batch, 400] with `return_features=True`.
        `train` is accepted for the common interface; LeNet has no dropout or
        BatchNorm."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size, model="LeNet5")
        # XLA's own conv even on CPU: zoo.layers.cpu_conv's im2col form made
        # the batch-128 training step slower here (21 -> 29 ms; 6 and 16 channels).
        conv = functools.partial(nn.Conv, kernel_size=(5, 5), padding="VALID",
                                 dtype=self.dtype, param_dtype=self.param_dtype)
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        x = max_pool(nn.relu(conv(6, name="conv1")(x)), (2, 2), strides=(2, 2))
        x = max_pool(nn.relu(conv(16, name="conv2")(x)), (2, 2), strides=(2, 2))
        x = torch_order_flatten(x)
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.relu(dense(120, name="fc1")(x))
        x = nn.relu(dense(84, name="fc2")(x))
        x = dense(self.num_classes, name="head")(x)
        return x.astype(jnp.float32)


register_model(
    "lenet5",
    LeNet5,
    family="lenet",
    input_size=32,
    num_classes=10,
    paper="http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf",
    reference_params=61_706,
    reference="paper",
)
