"""ConvNeXt (Liu et al. 2022, https://arxiv.org/abs/2201.03545), as in torchvision.

Stem: 4x4 convolution with stride 4 (bias) + LayerNorm. Four stages of
CNBlocks: depthwise 7x7 convolution (bias) -> LayerNorm -> Linear 4x -> GELU
-> Linear -> layer scale (1e-6) -> stochastic depth -> residual. Between
stages: LayerNorm + 2x2 convolution with stride 2 (bias). Head: global
average pool -> LayerNorm -> Linear. Every LayerNorm has epsilon 1e-6 and
normalises over channels (torchvision's LayerNorm2d on NCHW is a plain
LayerNorm over the last axis in NHWC). Stochastic depth rises linearly from 0
at the first block to `drop_path_rate` at the last, torchvision's rule and
defaults (0.1 tiny, 0.4 small, 0.5 base).

Deviations: none in structure. Initialisation as torchvision: convolutions
and linears normal(0.02) (trunc_normal_ at +-2 absolute, i.e. 100 standard
deviations) with zero biases.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.cpu_conv import conv_general_dilated
from zoo.layers.drop_path import DropPath
from zoo.layers.fusion_fence import cpu_library_fusion_fence, recompute_fence
from zoo.layers.layer_scale import LayerScale
from zoo.layers.mlp import Mlp, dense_kernel_init
from zoo.layers.validation import check_images
from zoo.registry import register_model

LAYER_NORM_EPSILON = 1e-6


class CNBlock(nn.Module):
    """x + drop_path(layer_scale(mlp(norm(dwconv(x))))).

    Attributes:
      drop_path_rate: stochastic depth of the residual branch.
      layer_scale_init: initial value of the per-channel layer scale.
    """

    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, channels] -> same shape."""
        channels = x.shape[-1]
        y = nn.Conv(channels, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=channels,
                    conv_general_dilated=conv_general_dilated,
                    kernel_init=dense_kernel_init, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="dwconv")(x)
        # Written once: XLA's CPU backend otherwise recomputes the 49-tap
        # depthwise conv inside each loop that reads it (the LayerNorm, and in
        # training its gradient): convnext_tiny's training step 1.07x, its
        # inference 1.03x (benchmarks/NOTES.md, entry 19). In inference XLA
        # turned a division by a scalar 1.0 into a multiplication and
        # duplicated that, so the divisor is per element there; it makes NaN
        # of an infinity, as the LayerNorm right after does anyway.
        y = recompute_fence(y, self.variables["params"]["dwconv"]["kernel"],
                            per_element=not train)
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="norm")(y)
        # On CPU, XLA put this LayerNorm inside the YNNPACK fusion of fc1's
        # product, which ran 3x slower for it at stage 1's 96 channels (a
        # 29-35 ms product instead of ~9): convnext_tiny's inference 1.10x,
        # training level (benchmarks/NOTES.md, entry 22).
        y = cpu_library_fusion_fence(y)
        y = Mlp(4 * channels, dtype=self.dtype, param_dtype=self.param_dtype, name="mlp")(y)
        y = LayerScale(self.layer_scale_init, param_dtype=self.param_dtype,
                       name="layer_scale")(y)
        y = DropPath(self.drop_path_rate, name="drop_path")(y, train=train)
        return x + y


class Patchify(nn.Module):
    """A patch x patch convolution with stride patch, and a LayerNorm.

    The stem normalises after the convolution, the downsampling layers
    between stages before it (`norm_first`). Submodules `conv` and `norm`.
    """

    features: int
    patch: int
    norm_first: bool
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [batch, height, width, c] -> [batch, height // patch, width // patch, features]."""
        norm = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype,
                            param_dtype=self.param_dtype, name="norm")
        conv = nn.Conv(self.features, (self.patch, self.patch), strides=self.patch,
                       padding="VALID", kernel_init=dense_kernel_init, dtype=self.dtype,
                       param_dtype=self.param_dtype, conv_general_dilated=conv_general_dilated,
                       name="conv")
        return conv(norm(x)) if self.norm_first else norm(conv(x))


class ConvNeXt(nn.Module):
    """ConvNeXt image classifier; see the module docstring.

    Attributes:
      depths: CNBlocks per stage.
      widths: channels per stage.
      num_classes: classifier outputs; 0 returns the pooled features.
      in_channels: image channels.
      drop_path_rate: stochastic depth of the last block (linear from 0).
      layer_scale_init: initial layer scale of every block.
      dtype: computation dtype; param_dtype: parameter dtype.

    Submodules: `stem`, `stage{i}` (with `downsample` for i > 1 and
    `block{j}`), `head_norm`, `head`.
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    num_classes: int = 1000
    in_channels: int = 3
    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # Stem /4, then /2 before every later stage: the last stage is 1x1 at this size.
        return 4 * 2 ** (len(self.depths) - 1)

    def block_drop_path_rates(self) -> list[float]:
        """Stochastic depth of each block, first to last: linear from 0 to drop_path_rate."""
        total = sum(self.depths)
        if total == 1:
            return [0.0]
        return [self.drop_path_rate * i / (total - 1) for i in range(total)]

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or pooled features [batch, widths[-1]] with `return_features=True`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size, model="ConvNeXt")
        if len(self.depths) != len(self.widths) or not self.depths:
            raise ValueError(f"depths {self.depths} and widths {self.widths} must be non-empty "
                             "and of the same length")
        layers = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = x.astype(self.dtype)
        x = Patchify(self.widths[0], 4, norm_first=False, **layers, name="stem")(x)
        rates = self.block_drop_path_rates()
        first = 0
        for stage, (depth, width) in enumerate(zip(self.depths, self.widths), start=1):
            x = ConvNeXtStage(depth, width, downsample=stage > 1,
                              drop_path_rates=tuple(rates[first:first + depth]),
                              layer_scale_init=self.layer_scale_init, **layers,
                              name=f"stage{stage}")(x, train=train)
            first += depth
        x = jnp.mean(x, axis=(1, 2))
        x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, **layers, name="head_norm")(x)
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.Dense(self.num_classes, kernel_init=dense_kernel_init, **layers, name="head")(x)
        return x.astype(jnp.float32)


class ConvNeXtStage(nn.Module):
    """Optional downsampling (LayerNorm + 2x2/2 conv) then `depth` CNBlocks.

    Attributes:
      depth: number of blocks.
      width: channels of the stage.
      downsample: whether the stage starts by halving the resolution.
      drop_path_rates: stochastic depth of each block.
      layer_scale_init: initial layer scale.
    """

    depth: int
    width: int
    downsample: bool
    drop_path_rates: tuple[float, ...]
    layer_scale_init: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, c] -> [batch, height', width', width]."""
        if self.downsample:
            x = Patchify(self.width, 2, norm_first=True, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="downsample")(x)
        for index, rate in enumerate(self.drop_path_rates):
            x = CNBlock(rate, self.layer_scale_init, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"block{index + 1}")(x, train=train)
        return x


@dataclasses.dataclass(frozen=True)
class ConvNeXtSpec:
    """One ConvNeXt variant: blocks and channels per stage, default stochastic depth."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    drop_path_rate: float


@dataclasses.dataclass(frozen=True)
class ConvNeXtEntry:
    """A registered variant with torchvision's parameter count."""

    name: str
    spec: ConvNeXtSpec
    reference_params: int


VARIANTS: tuple[ConvNeXtEntry, ...] = (
    ConvNeXtEntry("convnext_tiny", ConvNeXtSpec((3, 3, 9, 3), (96, 192, 384, 768), 0.1),
                  28_589_128),
    ConvNeXtEntry("convnext_small", ConvNeXtSpec((3, 3, 27, 3), (96, 192, 384, 768), 0.4),
                  50_223_688),
    ConvNeXtEntry("convnext_base", ConvNeXtSpec((3, 3, 27, 3), (128, 256, 512, 1024), 0.5),
                  88_591_464),
)

for _entry in VARIANTS:
    register_model(
        _entry.name,
        functools.partial(ConvNeXt, **dataclasses.asdict(_entry.spec)),
        family="convnext",
        input_size=224,
        paper="https://arxiv.org/abs/2201.03545",
        reference_params=_entry.reference_params,
        reference="torchvision",
    )
