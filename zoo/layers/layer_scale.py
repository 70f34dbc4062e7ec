"""Layer scale (Touvron et al. 2021, CaiT, https://arxiv.org/abs/2103.17239).

A learned per-channel scale on a residual branch, started small so that a
deep network begins close to the identity. Used by ConvNeXt (init 1e-6).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class LayerScale(nn.Module):
    """x * gamma, with one learned `gamma` per channel (the last axis).

    Attributes:
      init_value: initial value of every entry of `gamma`.
    """

    init_value: float = 1e-6
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [..., channels] -> same shape and dtype."""
        gamma = self.param(
            "gamma", nn.initializers.constant(self.init_value), (x.shape[-1],), self.param_dtype)
        return x * gamma.astype(x.dtype)
