"""Multi-head self-attention (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).

One fused `qkv` projection (D -> 3D) and an output projection `proj` (D -> D).
The qkv output is laid out [3, heads, head_dim] (q, k, v blocks, each split by
head), the layout of timm's `Attention.qkv` and of torchvision's
`nn.MultiheadAttention.in_proj_weight`, so their weights import one to one
(transposed). Logits and softmax are computed in float32 whatever the
computation dtype, so bfloat16 training stays stable; in bfloat16 the
gradient of the logits is rounded to bfloat16 before its two products, as
FlashAttention's backward does, so every product of a bfloat16 step runs on
bfloat16 operands (tensor cores on GPUs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.activations import is_low_precision
from zoo.layers.dense import flat_dot_general
from zoo.layers.mlp import dense_kernel_init


def _logits(query: jax.Array, key: jax.Array) -> jax.Array:
    """query key^T per batch and head, accumulated and returned in float32:
    [batch, heads, tokens, head_dim] x [batch, heads, keys, head_dim] ->
    [batch, heads, tokens, keys]."""
    return jnp.einsum("bnth,bnsh->bnts", query, key, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _low_precision_logits(query: jax.Array, key: jax.Array) -> jax.Array:
    """`_logits` of bfloat16 (or float16) query and key, whose gradient
    multiplies in that dtype too.

    Autodiff of `_logits` would multiply the float32 cotangent by the
    low-precision key and query, which promotes both to float32: the two
    backward products of every attention layer would leave the tensor cores
    for float32 (TF32 at best on a GPU) at twice the bytes. Here the cotangent
    is rounded once to the operands' dtype, and the products accumulate in
    float32 as the forward's does.
    """
    return _logits(query, key)


def _low_precision_logits_fwd(query: jax.Array, key: jax.Array) -> tuple[jax.Array, Any]:
    return _logits(query, key), (query, key)


def _low_precision_logits_bwd(residuals: Any, cotangent: jax.Array) -> tuple[jax.Array, jax.Array]:
    query, key = residuals
    cotangent = cotangent.astype(query.dtype)
    d_query = jnp.einsum("bnts,bnsh->bnth", cotangent, key, preferred_element_type=jnp.float32)
    d_key = jnp.einsum("bnts,bnth->bnsh", cotangent, query, preferred_element_type=jnp.float32)
    return d_query.astype(query.dtype), d_key.astype(key.dtype)


_low_precision_logits.defvjp(_low_precision_logits_fwd, _low_precision_logits_bwd)


def scaled_dot_product_attention(
    query: jax.Array, key: jax.Array, value: jax.Array,
    dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """softmax(query key^T / sqrt(head_dim)) value, for every batch and head.

    Args:
      query, key, value: [batch, heads, tokens, head_dim], heads-major: both
        products are then batched matrix products with the batch dimensions
        leading, the layout XLA's CPU backend multiplies without copies. In
        the [batch, tokens, heads, head_dim] layout of
        `jax.nn.dot_product_attention` it transposes operands and results
        around each product: ViT-B/16's attention at batch 8, 224 px, took
        34 ms per block forward there against 22 ms here
        (benchmarks/NOTES.md, entry 10).
      dropout: applied to the probabilities (training), or None.

    Returns:
      [batch, heads, tokens, head_dim] in value's dtype. Logits and softmax
      are float32 whatever the inputs' dtype, as in `jax.nn.dot_product_attention`;
      with bfloat16 (or float16) query and key the logits' gradient is
      rounded to that dtype before its products (`_low_precision_logits`).
    """
    scale = query.shape[-1] ** -0.5
    low_precision = query.dtype == key.dtype and is_low_precision(query.dtype)
    logits = (_low_precision_logits if low_precision else _logits)(query, key)
    probs = jax.nn.softmax(logits.astype(jnp.float32) * scale, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    return jnp.einsum("bnts,bnsh->bnth", probs.astype(value.dtype), value)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention over the tokens of each example.

    Attributes:
      num_heads: number of heads; must divide the model width D.
      qkv_bias: bias on the qkv projection (timm's `qkv_bias`).
      attn_drop_rate: dropout on the attention probabilities, only when training.
      proj_drop_rate: dropout after the output projection, only when training.
      kernel_init: initialiser of both projection kernels (biases start at zero).
    """

    num_heads: int
    qkv_bias: bool = True
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    kernel_init: Callable[..., Any] = dense_kernel_init
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: [batch, tokens, D] -> [batch, tokens, D]."""
        if x.ndim != 3:
            raise ValueError(
                f"MultiHeadSelfAttention expects [batch, tokens, features], got shape {x.shape}")
        batch, tokens, width = x.shape
        if self.num_heads <= 0 or width % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be positive and divide the width {width}")
        for what, rate in (("attn_drop_rate", self.attn_drop_rate),
                           ("proj_drop_rate", self.proj_drop_rate)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{what} must be in [0, 1), got {rate}")
        head_dim = width // self.num_heads
        dense = lambda features, use_bias, name: nn.Dense(  # noqa: E731
            features, use_bias=use_bias, kernel_init=self.kernel_init, dtype=self.dtype,
            param_dtype=self.param_dtype, dot_general=flat_dot_general, name=name)
        qkv = dense(3 * width, self.qkv_bias, "qkv")(x)
        # [3, batch, heads, tokens, head_dim]: q, k and v heads-major.
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
        dropout = None
        if train and self.attn_drop_rate > 0.0:
            dropout = nn.Dropout(self.attn_drop_rate, deterministic=False)
        out = scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout)
        out = out.transpose(0, 2, 1, 3).reshape(batch, tokens, width)
        out = dense(width, True, "proj")(out)
        return nn.Dropout(self.proj_drop_rate, deterministic=not train)(out)
