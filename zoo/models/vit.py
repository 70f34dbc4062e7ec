"""Vision Transformer (Dosovitskiy et al. 2020, https://arxiv.org/abs/2010.11929).

Patch embedding (a patch x patch convolution with stride patch), a class
token, learned position embeddings, pre-norm encoder blocks (LayerNorm ->
self-attention -> residual, LayerNorm -> MLP 4x GELU -> residual), a final
LayerNorm and a linear head on the class token. The same structure as timm's
`VisionTransformer` (vit_tiny/small_patch16_224) and torchvision's
`VisionTransformer` (vit_b_16, vit_b_32, vit_l_16); parameter counts match
both exactly.

Deviations:
- Other resolutions: the patch part of the position embeddings is resized
  bicubically to the input's patch grid at apply time (`jax.image.resize`,
  half-pixel centres, Keys cubic a=-0.5, antialiased when shrinking).
  timm resizes with PyTorch's bicubic (a=-0.75, align_corners=False) and
  torchvision with align_corners=True, once when loading weights; the stored
  parameter keeps its default shape here, so checkpoints stay compatible.
  Inputs whose sides are not multiples of the patch size lose the remainder
  (as the patch convolution does), where torchvision raises.
- Initialisation follows timm for every variant: linears normal(0.02) with
  zero bias, position embeddings normal(0.02), class token normal(1e-6),
  patch convolution PyTorch's default uniform(+-1/sqrt(fan_in)) with zero
  bias, head normal(0.02) (torchvision zero-initialises its head).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.layers.attention import MultiHeadSelfAttention
from zoo.layers.cpu_conv import conv_general_dilated
from zoo.layers.drop_path import DropPath
from zoo.layers.mlp import Mlp, dense_kernel_init
from zoo.layers.validation import check_images
from zoo.registry import register_model

LAYER_NORM_EPSILON = 1e-6
# PyTorch's default Conv2d init, kaiming_uniform(a=sqrt(5)) = uniform(+-1/sqrt(fan_in)).
patch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def resize_pos_embed(pos_embed: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Resizes the patch part of position embeddings to a new patch grid.

    Args:
      pos_embed: [1, 1 + g * g, D], the class token's embedding first, then a
        square g x g grid in row-major order.
      grid: (rows, columns) of the new patch grid.

    Returns:
      [1, 1 + rows * columns, D]: the class token's embedding unchanged, the
      grid resized bicubically (in float32). The input itself when the grid
      already matches.
    """
    cls_embed, patch_embed = pos_embed[:, :1], pos_embed[:, 1:]
    old = int(round(np.sqrt(patch_embed.shape[1])))
    if old * old != patch_embed.shape[1]:
        raise ValueError(
            f"pos_embed must hold 1 + a square number of tokens, got {pos_embed.shape[1]}")
    if tuple(grid) == (old, old):
        return pos_embed
    width = patch_embed.shape[-1]
    patch_embed = patch_embed.reshape(old, old, width).astype(jnp.float32)
    patch_embed = jax.image.resize(patch_embed, (*grid, width), method="bicubic")
    patch_embed = patch_embed.reshape(1, grid[0] * grid[1], width).astype(pos_embed.dtype)
    return jnp.concatenate([cls_embed, patch_embed], axis=1)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Attributes:
      num_heads: attention heads.
      mlp_dim: hidden width of the MLP.
      drop_rate: dropout after the attention projection and in the MLP.
      attn_drop_rate: dropout on the attention probabilities.
      drop_path_rate: stochastic depth of both residual branches.
    """

    num_heads: int
    mlp_dim: int
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, tokens, D] -> [batch, tokens, D]."""
        norm = functools.partial(nn.LayerNorm, epsilon=LAYER_NORM_EPSILON, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        drop_path = DropPath(self.drop_path_rate, name="drop_path")
        y = norm(name="norm1")(x)
        y = MultiHeadSelfAttention(
            self.num_heads, attn_drop_rate=self.attn_drop_rate, proj_drop_rate=self.drop_rate,
            dtype=self.dtype, param_dtype=self.param_dtype, name="attn")(y, train=train)
        x = x + drop_path(y, train=train)
        y = norm(name="norm2")(x)
        y = Mlp(self.mlp_dim, drop_rate=self.drop_rate, dtype=self.dtype,
                param_dtype=self.param_dtype, name="mlp")(y, train=train)
        return x + drop_path(y, train=train)


class VisionTransformer(nn.Module):
    """ViT image classifier; see the module docstring.

    Attributes:
      patch_size: side of the square patches (and of the patch conv's stride).
      width: token width D.
      depth: number of encoder blocks.
      num_heads: attention heads per block.
      mlp_dim: hidden width of each block's MLP.
      num_classes: classifier outputs; 0 returns the class token's features.
      in_channels: image channels.
      image_size: default resolution; fixes the position embeddings' shape
        [1, 1 + (image_size // patch_size)**2, D].
      drop_rate: dropout after the position embeddings, after each attention
        projection and in each MLP (torchvision's `dropout`).
      attn_drop_rate: dropout on attention probabilities.
      drop_path_rate: stochastic depth, rising linearly from 0 at the first
        block to this value at the last (timm's rule).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    num_classes: int = 1000
    in_channels: int = 3
    image_size: int = 224
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        return self.patch_size

    def block_drop_path_rates(self) -> list[float]:
        """Stochastic depth of each block, first to last: linear from 0 to drop_path_rate."""
        if self.depth == 1:
            return [0.0]
        return [self.drop_path_rate * i / (self.depth - 1) for i in range(self.depth)]

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or the class token's features [batch, D] with
        `return_features=True`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size,
                     model="VisionTransformer")
        if self.image_size < self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be at least patch_size={self.patch_size}")
        x = x.astype(self.dtype)
        p = self.patch_size
        x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID",
                    kernel_init=patch_kernel_init, dtype=self.dtype, param_dtype=self.param_dtype,
                    conv_general_dilated=conv_general_dilated, name="patch_embed")(x)
        batch, rows, columns, _ = x.shape
        x = x.reshape(batch, rows * columns, self.width)
        cls_token = self.param("cls_token", nn.initializers.normal(1e-6),
                               (1, 1, self.width), self.param_dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls_token.astype(self.dtype),
                                              (batch, 1, self.width)), x], axis=1)
        default_grid = self.image_size // p
        pos_embed = self.param("pos_embed", nn.initializers.normal(0.02),
                               (1, 1 + default_grid**2, self.width), self.param_dtype)
        x = x + resize_pos_embed(pos_embed, (rows, columns)).astype(self.dtype)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        for index, rate in enumerate(self.block_drop_path_rates()):
            x = EncoderBlock(
                self.num_heads, self.mlp_dim, drop_rate=self.drop_rate,
                attn_drop_rate=self.attn_drop_rate, drop_path_rate=rate, dtype=self.dtype,
                param_dtype=self.param_dtype, name=f"block{index + 1}")(x, train=train)
        x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="norm")(x)
        x = x[:, 0]
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.Dense(self.num_classes, kernel_init=dense_kernel_init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="head")(x)
        return x.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ViTSpec:
    """One ViT variant: patch size, token width, blocks, heads, MLP width."""

    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int


@dataclasses.dataclass(frozen=True)
class ViTEntry:
    """A registered variant with its canonical parameter count."""

    name: str
    spec: ViTSpec
    reference_params: int
    reference: str


VARIANTS: tuple[ViTEntry, ...] = (
    ViTEntry("vit_tiny_patch16_224", ViTSpec(16, 192, 12, 3, 768), 5_717_416, "timm"),
    ViTEntry("vit_small_patch16_224", ViTSpec(16, 384, 12, 6, 1536), 22_050_664, "timm"),
    ViTEntry("vit_b_16", ViTSpec(16, 768, 12, 12, 3072), 86_567_656, "torchvision"),
    ViTEntry("vit_b_32", ViTSpec(32, 768, 12, 12, 3072), 88_224_232, "torchvision"),
    ViTEntry("vit_l_16", ViTSpec(16, 1024, 24, 16, 4096), 304_326_632, "torchvision"),
)

for _entry in VARIANTS:
    register_model(
        _entry.name,
        functools.partial(VisionTransformer, **dataclasses.asdict(_entry.spec)),
        family="vit",
        input_size=224,
        paper="https://arxiv.org/abs/2010.11929",
        reference_params=_entry.reference_params,
        reference=_entry.reference,
    )
