"""The two-layer MLP of transformer blocks (ViT) and ConvNeXt blocks.

Linear -> activation -> dropout -> Linear -> dropout, as timm's `Mlp` and
torchvision's `MLPBlock`; the submodules are named `fc1` and `fc2`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from zoo.layers.activations import in_float32
from zoo.layers.dense import flat_dot_general
from zoo.layers.fusion_fence import cpu_library_fusion_fence

# timm and torchvision initialise transformer / ConvNeXt linears with
# trunc_normal_(std=0.02) truncated at +-2 in absolute value, i.e. at 100
# standard deviations: a plain normal in practice.
dense_kernel_init = nn.initializers.normal(0.02)


def _erf_gelu(x: jax.Array) -> jax.Array:
    return x * (0.5 + 0.5 * lax.erf(x * np.sqrt(0.5).astype(x.dtype)))


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, PyTorch's `nn.GELU()` default: x * (1 + erf(x / sqrt(2))) / 2.

    `flax.linen.gelu` defaults to the tanh approximation, which differs from
    PyTorch by up to ~1e-3 and would make imported weights drift.
    `jax.nn.gelu(approximate=False)` writes the same function with erfc, which
    XLA's CPU backend expands into exponentials and selects: 7.4 ms forward at
    [8, 56, 56, 384] against 3.0 ms with erf, the formula PyTorch's CPU kernel
    uses (benchmarks/NOTES.md, entry 7). The two differ by at most 1e-6.
    """
    # bfloat16 is computed in float32 and rounded once (zoo.layers.activations),
    # as PyTorch's GELU kernels do. XLA's CPU backend would round after each of
    # its six ops: convnext_tiny bfloat16 inference 1.10x [1.08, 1.11] per round
    # with it (benchmarks/NOTES.md, entry 23).
    y = in_float32(_erf_gelu)(x)
    # On CPU, XLA put the GELU inside the YNNPACK fusion of the two Dense
    # products around it, and fed it the constants 0.5 and sqrt(0.5) as
    # buffers broadcast to the full activation (38 MB each at ConvNeXt-T's
    # stage 1, batch 8). Fenced, the GELU is one XLA loop: convnext_tiny
    # inference -4% to -6%, scratch 202 -> 83 MiB (benchmarks/NOTES.md, entry 11).
    return cpu_library_fusion_fence(y)


class Mlp(nn.Module):
    """fc1 -> act -> dropout -> fc2 -> dropout over the last axis.

    Attributes:
      hidden_features: width of fc1's output.
      out_features: width of fc2's output; None keeps the input width.
      act: activation after fc1 (exact GELU by default).
      drop_rate: dropout after the activation and after fc2, only when training
        (rng stream "dropout").
      kernel_init: initialiser of both kernels (biases start at zero).
    """

    hidden_features: int
    out_features: int | None = None
    act: Callable[[jax.Array], jax.Array] = gelu
    drop_rate: float = 0.0
    kernel_init: Callable[..., Any] = dense_kernel_init
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: [..., in_features] -> [..., out_features or in_features]."""
        if self.hidden_features <= 0:
            raise ValueError(f"Mlp hidden_features must be positive, got {self.hidden_features}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"Mlp drop_rate must be in [0, 1), got {self.drop_rate}")
        out_features = x.shape[-1] if self.out_features is None else self.out_features
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, kernel_init=self.kernel_init, dtype=self.dtype,
            param_dtype=self.param_dtype, dot_general=flat_dot_general, name=name)
        x = self.act(dense(self.hidden_features, "fc1")(x))
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = dense(out_features, "fc2")(x)
        return nn.Dropout(self.drop_rate, deterministic=not train)(x)
