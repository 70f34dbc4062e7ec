"""Stochastic depth ("drop path", Huang et al. 2016, https://arxiv.org/abs/1603.09382)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class DropPath(nn.Module):
    """Zeroes a residual branch for a random subset of examples while training.

    Kept examples are scaled by 1 / (1 - rate) so the expectation is unchanged.
    Inactive (the identity) when `train` is False or `rate` is 0; when active
    it draws from the `dropout` rng stream, so `apply` needs
    `rngs={"dropout": key}`.

    Attributes:
      rate: probability of dropping the branch of one example, in [0, 1).
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, ...] -> same shape."""
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {self.rate}")
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, mask_shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
