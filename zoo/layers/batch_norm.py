"""`nn.BatchNorm` whose training-mode gradient is written by hand.

`BatchNorm` is a subclass of flax's, with the same attributes, variables
(`params`: scale, bias; `batch_stats`: mean, var), running-average update and
results. In training mode on float32 or bfloat16 inputs (no `axis_name`, the
last axis, scale and bias on, float32 parameters) it normalises through
`batch_norm_train`, whose VJP keeps only x, the batch mean and 1/std and
recomputes x - mean where it is needed; autodiff of flax's version also
stores x - mean (in float32, for bfloat16 x too), a second full-size
residual per layer. Float32: the resnet50 b8 224 training step on CPU needs
24% less scratch memory (1497 -> 1144 MB), at the same speed within this VM's
noise (benchmarks/NOTES.md, entry 6). bfloat16: computed in float32 and
rounded once, as flax does; the resnet50 step is 1.05x faster on CPU
(entry 24). Every other case is flax's own code.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Batch normalisation over every axis but the last, with batch statistics.

    Args:
      x: [..., channels], float32 or bfloat16 (normalised in float32).
      scale, bias: [channels].
      epsilon: added to the variance.

    Returns:
      (y, mean, var): y, float32, shaped like x; the batch mean and biased variance, [channels]
      (flax's "fast variance", E[x^2] - E[x]^2 clamped at 0). Gradients flow
      through y only.
    """
    return _normalize(x, scale, bias, epsilon)[0]


def _normalize(x, scale, bias, epsilon):
    """((y, mean, var), 1/std): the outputs, and 1/std for the backward pass."""
    x = x.astype(jnp.float32)         # bfloat16 is normalised in float32, as flax does
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.maximum(jnp.mean(x * x, axes) - mean * mean, 0.0)
    inv = lax.rsqrt(var + epsilon)
    return ((x - mean) * (inv * scale) + bias, mean, var), inv


def _forward(x, scale, bias, epsilon):
    outputs, inv = _normalize(x, scale, bias, epsilon)
    return outputs, (x, outputs[1], inv, scale)


def _backward(epsilon, residuals, cotangents):
    """With xhat = (x - mean) * inv and k = scale * inv over m rows:
    dbias = sum(dy), dscale = sum(dy * xhat),
    dx = k * (dy - dbias / m - xhat * dscale / m)."""
    del epsilon
    x_in, mean, inv, scale = residuals
    x = x_in.astype(jnp.float32)
    dy = cotangents[0]            # mean and var feed only the running averages
    axes = tuple(range(x.ndim - 1))
    rows = x.size // x.shape[-1]
    dbias = jnp.sum(dy, axes)
    dy_centered = jnp.sum(dy * x, axes) - mean * dbias       # sum(dy * (x - mean))
    k = scale * inv
    dx = k * dy - (k / rows) * dbias - (k * inv * inv / rows * dy_centered) * (x - mean)
    return dx.astype(x_in.dtype), dy_centered * inv, dbias


batch_norm_train.defvjp(_forward, _backward)


class BatchNorm(nn.BatchNorm):
    """flax's `nn.BatchNorm`, with `batch_norm_train` in the cases named above."""

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None, *,
                 mask: jax.Array | None = None) -> jax.Array:
        """x: [..., channels] -> normalised x, same shape."""
        running = nn.merge_param("use_running_average", self.use_running_average,
                                 use_running_average)
        fast = (not running and mask is None and self.axis in (-1, x.ndim - 1)
                and self.axis_name is None and self.axis_index_groups is None
                and self.use_bias and self.use_scale and self.use_fast_variance
                and x.dtype in (jnp.float32, jnp.bfloat16)
                and self.dtype in (None, jnp.float32, jnp.bfloat16)
                and self.param_dtype == jnp.float32)
        if not fast:
            return super().__call__(x, use_running_average, mask=mask)
        channels = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                                (channels,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32),
                               (channels,))
        scale = self.param("scale", self.scale_init, (channels,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (channels,), self.param_dtype)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
        # flax's result dtype: the module's, else x's promoted with the float32 parameters.
        y = y.astype(self.dtype or jnp.float32)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y
