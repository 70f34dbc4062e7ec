"""Element-wise activations that compute low-precision input in float32 and round once.

`silu`, `sigmoid`, `hard_swish` and `hard_sigmoid` are flax's (`nn.silu`, ...)
for float32 input. For bfloat16 or float16 input they compute in float32 and
round the result once, as PyTorch's CPU and GPU kernels do. XLA instead
rounds after every op of the formula (SiLU is four: negate, exp, add,
divide), and on CPU each rounding is a convert there and back inside the
loop. bfloat16 training steps with them, on CPU: efficientnet_b0 1.06x,
mobilenet_v3_large 1.07x; inference level (benchmarks/NOTES.md, entry 24).
Gradients follow: autodiff of the float32 formula, rounded once to the
input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


def is_low_precision(dtype: jnp.dtype) -> bool:
    """Whether `dtype` is a floating-point type narrower than float32
    (bfloat16, float16): the computations Zoo widens or treats apart."""
    return bool(jnp.issubdtype(dtype, jnp.floating)) and jnp.finfo(dtype).bits < 32


def in_float32(fn: Activation) -> Activation:
    """fn, computed in float32 for input narrower than float32 and rounded
    back to the input's dtype once; wider input is passed to fn unchanged."""
    def wrapped(x: jax.Array) -> jax.Array:
        if not is_low_precision(x.dtype):
            return fn(x)
        return fn(x.astype(jnp.float32)).astype(x.dtype)

    wrapped.__name__ = getattr(fn, "__name__", "activation")
    wrapped.__doc__ = f"`{wrapped.__name__}` computed in float32 for low-precision input."
    return wrapped


silu = in_float32(nn.silu)
sigmoid = in_float32(nn.sigmoid)
hard_swish = in_float32(nn.hard_swish)
hard_sigmoid = in_float32(nn.hard_sigmoid)
