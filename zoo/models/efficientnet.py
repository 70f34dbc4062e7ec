"""EfficientNet B0-B7: compound-scaled MBConv networks.

Paper: Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", https://arxiv.org/abs/1905.11946

Reference: torchvision `efficientnet_b0` ... `efficientnet_b7`, layer for layer:
  - stem conv 3x3/2 (32 * width) + BN + SiLU;
  - MBConv blocks: [expand 1x1 + BN + SiLU] -> depthwise kxk + BN + SiLU ->
    squeeze-excite (squeeze channels max(1, block input channels // 4), SiLU,
    sigmoid gate) -> project 1x1 + BN; residual with stochastic depth when the
    stride is 1 and the widths match;
  - widths `make_divisible(channels * width, 8)`, repeats
    `ceil(repeats * depth)`, stochastic depth 0.2 * block_index / total_blocks;
  - head conv 1x1 to 4x the last width + BN + SiLU, global average pool,
    dropout, Linear (initialised U(-1/sqrt(classes), 1/sqrt(classes))).
  - BatchNorm: PyTorch defaults (eps 1e-5, momentum 0.1 == Flax 0.9) for
    B0-B4; eps 1e-3 and momentum 0.01 (Flax 0.99) for B5-B7, whose torchvision
    weights are ported from the TensorFlow originals.

Default resolutions are the paper's (B0 224 ... B7 600); torchvision's eval
presets differ slightly for some variants (e.g. B2 at 288).

Checkpoint keys: `stem`, `stage{s}_block{b}` (1-based; inside a block
`expand`, `depthwise`, `se`, `project`), `final_conv`, `head`.

Deviations from torchvision:
  - The squeeze-excite 1x1 convs use the shared block's (Flax default)
    initialiser, not He fan_out.
  - `return_features=True` returns the pooled [batch, 4 * last width] features
    (1280 for B0) before dropout and the classifier.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.activations import sigmoid, silu
from zoo.layers.conv_bn_act import ConvBNAct
from zoo.layers.drop_path import DropPath
from zoo.layers.make_divisible import make_divisible
from zoo.layers.squeeze_excite import SqueezeExcite
from zoo.layers.validation import check_images
from zoo.registry import register_model


def _uniform_fan_out_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
    """U(-1/sqrt(out), 1/sqrt(out)) for a Dense kernel [in, out], as torchvision."""
    limit = 1.0 / float(shape[-1]) ** 0.5
    return jax.random.uniform(key, shape, dtype, -limit, limit)


# --------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class MBConv:
    """One stage of B0: `repeats` MBConv blocks, the first with `stride`.

    Attributes:
      expand: expansion ratio of the hidden (depthwise) width over the input.
      kernel: depthwise kernel size.
      stride: stride of the stage's first block.
      out: output channels at width 1.0.
      repeats: number of blocks at depth 1.0.
    """

    expand: int
    kernel: Literal[3, 5]
    stride: Literal[1, 2]
    out: int
    repeats: int


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """One MBConv block after width / depth scaling (what the model builds).

    Attributes:
      name: checkpoint key, `stage{s}_block{b}`.
      in_channels / hidden_channels / out_channels: widths.
      kernel / stride: depthwise conv.
      se_channels: squeeze width of the SE gate.
      drop_path_rate: stochastic depth probability of the residual branch.
    """

    name: str
    in_channels: int
    hidden_channels: int
    out_channels: int
    kernel: int
    stride: int
    se_channels: int
    drop_path_rate: float


def scaled_blocks(stages: tuple[MBConv, ...], *, stem_channels: int, width: float,
                  depth: float, drop_path_rate: float) -> tuple[BlockConfig, ...]:
    """Every block of the network after compound scaling, with torchvision's rounding.

    Widths are `make_divisible(channels * width, 8)`, repeats
    `ceil(repeats * depth)`, and block i of n gets stochastic depth
    `drop_path_rate * i / n` (0 for the first block).
    """
    if width <= 0 or depth <= 0:
        raise ValueError(f"width and depth multipliers must be > 0, got {width}, {depth}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    repeats = [int(math.ceil(stage.repeats * depth)) for stage in stages]
    total = sum(repeats)
    in_channels = make_divisible(stem_channels * width, 8)
    blocks = []
    for s, (stage, count) in enumerate(zip(stages, repeats), start=1):
        out_channels = make_divisible(stage.out * width, 8)
        for b in range(1, count + 1):
            blocks.append(BlockConfig(
                name=f"stage{s}_block{b}",
                in_channels=in_channels,
                hidden_channels=make_divisible(in_channels * stage.expand, 8),
                out_channels=out_channels,
                kernel=stage.kernel,
                stride=stage.stride if b == 1 else 1,
                se_channels=max(1, in_channels // 4),
                drop_path_rate=drop_path_rate * len(blocks) / total,
            ))
            in_channels = out_channels
    return tuple(blocks)


# -------------------------------------------------------------------------- blocks


class MBConvBlock(nn.Module):
    """[expand 1x1] -> depthwise kxk -> SE -> project 1x1 (+ drop-path residual).

    Attributes:
      config: widths, kernel, stride, SE width and stochastic depth of the block.
    """

    config: BlockConfig
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, in] -> [batch, height/stride, width/stride, out]."""
        cfg = self.config
        if x.shape[-1] != cfg.in_channels:
            raise ValueError(f"{cfg.name} expects {cfg.in_channels} input channels, "
                             f"got shape {x.shape}")
        conv = functools.partial(
            ConvBNAct, act=silu, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
            bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        shortcut = x
        if cfg.hidden_channels != cfg.in_channels:
            x = conv(cfg.hidden_channels, 1, name="expand")(x, train=train)
        x = conv(cfg.hidden_channels, cfg.kernel, cfg.stride, groups=cfg.hidden_channels,
                 name="depthwise")(x, train=train)
        x = SqueezeExcite(cfg.se_channels, act=silu, gate=sigmoid, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="se")(x)
        x = conv(cfg.out_channels, 1, act=None, name="project")(x, train=train)
        if cfg.stride == 1 and cfg.in_channels == cfg.out_channels:
            x = DropPath(cfg.drop_path_rate, name="drop_path")(x, train=train) + shortcut
        return x


# --------------------------------------------------------------------------- model


class EfficientNet(nn.Module):
    """EfficientNet: stem, scaled MBConv stages, 1x1 head conv, pool, classifier.

    Attributes:
      num_classes: classifier outputs; 0 returns the pooled features.
      in_channels: image channels.
      stages: the B0 table (see `EFFICIENTNET_STAGES`).
      stem_channels: stem width at width 1.0.
      width_multiplier / depth_multiplier: compound scaling of widths and repeats.
      head_expand: the head conv is `head_expand` times the last stage's width.
      drop_rate: dropout before the classifier.
      drop_path_rate: stochastic depth of the last block (linear from 0).
      bn_momentum / bn_epsilon: BatchNorm (Flax convention: PyTorch 0.1 == 0.9).
      bn_axis_name: pmap axis for BatchNorm statistics (None under jit).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 1000
    in_channels: int = 3
    stages: tuple[MBConv, ...] = ()
    stem_channels: int = 32
    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    head_expand: int = 4
    drop_rate: float = 0.2
    drop_path_rate: float = 0.2
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # The stem and each stage's first block halve the map (or keep it).
        return 2 * math.prod(stage.stride for stage in self.stages)

    def blocks(self) -> tuple[BlockConfig, ...]:
        """The scaled blocks this model builds (see `scaled_blocks`)."""
        return scaled_blocks(self.stages, stem_channels=self.stem_channels,
                             width=self.width_multiplier, depth=self.depth_multiplier,
                             drop_path_rate=self.drop_path_rate)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False,
                 return_features: bool = False) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or pooled features [batch, head width] when `return_features`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size,
                     model="EfficientNet")
        if not self.stages:
            raise ValueError("EfficientNet needs a non-empty `stages` table")
        blocks = self.blocks()
        x = x.astype(self.dtype)
        bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                  bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        x = ConvBNAct(blocks[0].in_channels, 3, 2, act=silu, name="stem", **bn)(
            x, train=train)
        for block in blocks:
            x = MBConvBlock(block, name=block.name, **bn)(x, train=train)
        x = ConvBNAct(self.head_expand * blocks[-1].out_channels, 1, act=silu,
                      name="final_conv", **bn)(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, kernel_init=_uniform_fan_out_init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="head")(x)
        return x.astype(jnp.float32)


# ---------------------------------------------------------------------- spec tables

# Paper table 1 (B0): expand, kernel, stride, out, repeats.
EFFICIENTNET_STAGES = (
    MBConv(expand=1, kernel=3, stride=1, out=16, repeats=1),
    MBConv(expand=6, kernel=3, stride=2, out=24, repeats=2),
    MBConv(expand=6, kernel=5, stride=2, out=40, repeats=2),
    MBConv(expand=6, kernel=3, stride=2, out=80, repeats=3),
    MBConv(expand=6, kernel=5, stride=1, out=112, repeats=3),
    MBConv(expand=6, kernel=5, stride=2, out=192, repeats=4),
    MBConv(expand=6, kernel=3, stride=1, out=320, repeats=1),
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compound-scaled EfficientNet and its torchvision settings.

    Attributes:
      name: registry name.
      width / depth: compound-scaling multipliers.
      input_size: the paper's resolution.
      drop_rate: classifier dropout.
      reference_params: torchvision's parameter count at 1000 classes.
      bn_momentum / bn_epsilon: BatchNorm (Flax convention).
    """

    name: str
    width: float
    depth: float
    input_size: int
    drop_rate: float
    reference_params: int
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5


# B5-B7 carry the TensorFlow BatchNorm settings in torchvision (ported weights).
_TF_BN = dict(bn_momentum=0.99, bn_epsilon=1e-3)

VARIANTS = (
    Variant("efficientnet_b0", 1.0, 1.0, 224, 0.2, 5_288_548),
    Variant("efficientnet_b1", 1.0, 1.1, 240, 0.2, 7_794_184),
    Variant("efficientnet_b2", 1.1, 1.2, 260, 0.3, 9_109_994),
    Variant("efficientnet_b3", 1.2, 1.4, 300, 0.3, 12_233_232),
    Variant("efficientnet_b4", 1.4, 1.8, 380, 0.4, 19_341_616),
    Variant("efficientnet_b5", 1.6, 2.2, 456, 0.4, 30_389_784, **_TF_BN),
    Variant("efficientnet_b6", 1.8, 2.6, 528, 0.5, 43_040_704, **_TF_BN),
    Variant("efficientnet_b7", 2.0, 3.1, 600, 0.5, 66_347_960, **_TF_BN),
)

for _variant in VARIANTS:
    register_model(
        _variant.name,
        functools.partial(
            EfficientNet, stages=EFFICIENTNET_STAGES, width_multiplier=_variant.width,
            depth_multiplier=_variant.depth, drop_rate=_variant.drop_rate,
            bn_momentum=_variant.bn_momentum, bn_epsilon=_variant.bn_epsilon),
        family="efficientnet",
        input_size=_variant.input_size,
        paper="https://arxiv.org/abs/1905.11946",
        reference_params=_variant.reference_params,
        reference="torchvision",
    )
