"""Squeeze-and-excitation (Hu et al. 2018, https://arxiv.org/abs/1709.01507).

One module serves SENet (ReLU / sigmoid), MobileNetV3 (ReLU / hard-sigmoid)
and EfficientNet (SiLU / sigmoid); each family computes `reduced_channels`
with its own rounding rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class SqueezeExcite(nn.Module):
    """Channel gating: x * gate(fc2(act(fc1(mean_hw(x))))).

    Submodules `fc1` and `fc2` are 1x1 convolutions with bias, as in
    torchvision and timm, so their weights import one to one.

    Attributes:
      reduced_channels: width of the bottleneck between fc1 and fc2.
      act: activation after fc1.
      gate: gating function applied to fc2's output.
    """

    reduced_channels: int
    act: Callable[[jax.Array], jax.Array] = nn.relu
    gate: Callable[[jax.Array], jax.Array] = nn.sigmoid
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [batch, height, width, channels] -> same shape."""
        channels = x.shape[-1]
        conv = lambda features, name: nn.Conv(  # noqa: E731
            features, (1, 1), use_bias=True, dtype=self.dtype,
            param_dtype=self.param_dtype, name=name)
        scale = jnp.mean(x, axis=(1, 2), keepdims=True)
        scale = self.act(conv(self.reduced_channels, "fc1")(scale))
        scale = self.gate(conv(channels, "fc2")(scale))
        return x * scale.astype(x.dtype)
