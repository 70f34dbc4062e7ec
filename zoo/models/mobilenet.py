"""MobileNet v1, v2 and v3: depthwise-separable and inverted-residual networks.

Papers:
  v1: Howard et al. 2017, https://arxiv.org/abs/1704.04861
  v2: Sandler et al. 2018, https://arxiv.org/abs/1801.04381
  v3: Howard et al. 2019, https://arxiv.org/abs/1905.02244

References (layer for layer, so their weights import one to one):
  mobilenet_v1: timm's `mobilenetv1_100` (timm's MobileNetV3 class with
    `dsa` blocks: dw 3x3 + BN + ReLU6, pw 1x1 + BN + ReLU6, no residual, no head
    conv; global pool then Linear 1024 -> classes; BN eps 1e-5, momentum 0.1).
  mobilenet_v2: torchvision `mobilenet_v2` (ReLU6, last conv 1280, dropout 0.2).
  mobilenet_v3_small / _large: torchvision (hard-swish, SE with a hard-sigmoid
    gate and make_divisible(expanded // 4, 8) squeeze channels, BN eps 1e-3 and
    PyTorch momentum 0.01 (Flax 0.99), classifier Linear + hard-swish +
    dropout 0.2 + Linear).

Checkpoint keys: `stem`, `stage{s}_block{b}` (1-based; inside a block
`expand`, `depthwise`, `se`, `project` or, in v1, `depthwise`, `pointwise`),
`final_conv` (v2/v3), `pre_logits` (v3's hidden Linear), `head` (classifier).

Deviations from the references:
  - v1 uses ReLU6 as timm (and the TensorFlow reference code) do; the paper says ReLU.
  - timm initialises a depthwise conv with fan_out = k*k*out/groups; the shared
    ConvBNAct uses fan_out = k*k*out (torchvision's rule) for every conv.
  - The squeeze-excite 1x1 convs use the shared block's (Flax default)
    initialiser, not torchvision's He fan_out.
  - `return_features=True` returns the globally pooled features before the
    classifier: 1024 (v1), 1280 (v2), 576 / 960 (v3 small / large; before
    v3's hidden `pre_logits` Linear).
  - v3's dilated variant (for segmentation backbones) is not implemented.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.activations import hard_sigmoid, hard_swish
from zoo.layers.conv_bn_act import ConvBNAct
from zoo.layers.make_divisible import make_divisible
from zoo.layers.squeeze_excite import SqueezeExcite
from zoo.layers.validation import check_images
from zoo.registry import register_model

Activation = Literal["relu", "relu6", "hardswish"]
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "relu6": nn.relu6,
    "hardswish": hard_swish,
}

# torchvision initialises MobileNet v2/v3 classifiers with N(0, 0.01).
_dense_normal_init = nn.initializers.normal(stddev=0.01)


def _uniform_fan_out_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
    """U(-1/sqrt(out), 1/sqrt(out)) for a Dense kernel [in, out] (timm / torchvision)."""
    limit = 1.0 / float(shape[-1]) ** 0.5
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def _check_activation(act: str) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {act!r}")


# --------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class DepthwiseSeparable:
    """A v1 stage: `repeats` depthwise-separable blocks, the first with `stride`.

    Attributes:
      out: output channels at width 1.0.
      stride: stride of the stage's first depthwise conv (1 or 2).
      repeats: number of blocks.
    """

    out: int
    stride: Literal[1, 2]
    repeats: int = 1


@dataclasses.dataclass(frozen=True)
class InvertedResidual:
    """A v2/v3 stage: `repeats` inverted-residual blocks, the first with `stride`.

    The hidden width is given either as a ratio of the block's input channels
    (`expand_ratio`, v2's "t") or as an absolute channel count at width 1.0
    (`expanded`, v3's tables); exactly one must be set.

    Attributes:
      kernel: depthwise kernel size.
      stride: stride of the first block's depthwise conv.
      out: output channels at width 1.0.
      repeats: number of blocks.
      expand_ratio: hidden = round(in_channels * expand_ratio).
      expanded: hidden channels at width 1.0 (rounded with the width multiplier).
      se: squeeze-excite after the depthwise conv (v3 only).
      act: activation of the expand and depthwise convs.
    """

    kernel: Literal[3, 5]
    stride: Literal[1, 2]
    out: int
    repeats: int = 1
    expand_ratio: int | None = None
    expanded: int | None = None
    se: bool = False
    act: Activation = "relu6"

    def __post_init__(self) -> None:
        if (self.expand_ratio is None) == (self.expanded is None):
            raise ValueError(
                f"InvertedResidual needs exactly one of expand_ratio / expanded, got "
                f"expand_ratio={self.expand_ratio}, expanded={self.expanded}")
        if self.repeats < 1:
            raise ValueError(f"InvertedResidual repeats must be >= 1, got {self.repeats}")
        _check_activation(self.act)


# -------------------------------------------------------------------------- blocks


class DepthwiseSeparableBlock(nn.Module):
    """v1 block: depthwise 3x3 + BN + ReLU6, then pointwise 1x1 + BN + ReLU6.

    Attributes:
      out_channels: channels after the pointwise conv.
      stride: depthwise stride.
    """

    out_channels: int
    stride: int
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, in] -> [batch, height/stride, width/stride, out]."""
        conv = functools.partial(
            ConvBNAct, act=nn.relu6, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
            bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        channels = x.shape[-1]
        x = conv(channels, 3, self.stride, groups=channels, name="depthwise")(x, train=train)
        return conv(self.out_channels, 1, name="pointwise")(x, train=train)


class InvertedResidualBlock(nn.Module):
    """v2/v3 block: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1 (+ input).

    The expand conv is skipped when `hidden_channels` equals the input width;
    the residual is added when stride is 1 and input and output widths match.

    Attributes:
      out_channels: channels after the linear projection.
      hidden_channels: width of the expanded (depthwise) part.
      kernel: depthwise kernel size.
      stride: depthwise stride.
      se_channels: squeeze width of the SE gate; 0 for no SE.
      act: activation of the expand and depthwise convs.
    """

    out_channels: int
    hidden_channels: int
    kernel: int
    stride: int
    se_channels: int = 0
    act: Callable[[jax.Array], jax.Array] = nn.relu6
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, in] -> [batch, height/stride, width/stride, out]."""
        conv = functools.partial(
            ConvBNAct, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
            bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        shortcut = x
        in_channels = x.shape[-1]
        if self.hidden_channels != in_channels:
            x = conv(self.hidden_channels, 1, act=self.act, name="expand")(x, train=train)
        x = conv(self.hidden_channels, self.kernel, self.stride, groups=self.hidden_channels,
                 act=self.act, name="depthwise")(x, train=train)
        if self.se_channels:
            x = SqueezeExcite(self.se_channels, act=nn.relu, gate=hard_sigmoid,
                              dtype=self.dtype, param_dtype=self.param_dtype, name="se")(x)
        x = conv(self.out_channels, 1, act=None, name="project")(x, train=train)
        if self.stride == 1 and in_channels == self.out_channels:
            x = x + shortcut
        return x


# -------------------------------------------------------------------------- models


class MobileNetV1(nn.Module):
    """MobileNet v1: conv stem and 13 depthwise-separable blocks (timm's mobilenetv1_100).

    Attributes:
      num_classes: classifier outputs; 0 returns the pooled features.
      in_channels: image channels.
      stages: the block table (see `MOBILENET_V1_STAGES`).
      stem_channels: stem conv width at width 1.0.
      width_multiplier: scales every width, rounded with `make_divisible(., 8)`.
      drop_rate: dropout before the classifier (timm's default 0).
      bn_momentum / bn_epsilon: BatchNorm (Flax convention: PyTorch 0.1 == 0.9).
      bn_axis_name: pmap axis for BatchNorm statistics (None under jit).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 1000
    in_channels: int = 3
    stages: tuple[DepthwiseSeparable, ...] = ()
    stem_channels: int = 32
    width_multiplier: float = 1.0
    drop_rate: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # The stem and each stage's first block halve the map (32 for the tables).
        return 2 * math.prod(stage.stride for stage in self.stages)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False,
                 return_features: bool = False) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or pooled features [batch, 1024 * width] when `return_features`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size,
                     model="MobileNetV1")
        if not self.stages:
            raise ValueError("MobileNetV1 needs a non-empty `stages` table")
        x = x.astype(self.dtype)
        bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                  bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        width = lambda c: make_divisible(c * self.width_multiplier, 8)  # noqa: E731
        x = ConvBNAct(width(self.stem_channels), 3, 2, act=nn.relu6, name="stem", **bn)(
            x, train=train)
        for s, stage in enumerate(self.stages, start=1):
            for b in range(1, stage.repeats + 1):
                x = DepthwiseSeparableBlock(
                    width(stage.out), stage.stride if b == 1 else 1, name=f"stage{s}_block{b}",
                    **bn)(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, kernel_init=_uniform_fan_out_init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="head")(x)
        return x.astype(jnp.float32)


class MobileNet(nn.Module):
    """MobileNet v2 / v3: stem, inverted-residual stages, 1x1 final conv, pool, head.

    v2 and v3 differ only in their tables and options: v3 adds squeeze-excite
    and hard-swish inside blocks (set per stage) and a hidden Linear
    (`head_hidden`) before the classifier.

    Attributes:
      num_classes: classifier outputs; 0 returns the pooled features.
      in_channels: image channels.
      stages: the block table (see `MOBILENET_V2_STAGES`, `MOBILENET_V3_*_STAGES`).
      stem_channels / stem_act: stem conv (3x3, stride 2) width and activation.
      final_channels: width of the 1x1 conv after the last stage (v2: 1280,
        never shrunk below it by a width multiplier < 1, as in torchvision).
      final_expand: when > 0 (v3: 6), the final conv is instead `final_expand`
        times the last block's output width.
      final_act: activation of the final conv.
      head_hidden / head_act: hidden Linear before the classifier (0 = none).
      width_multiplier: scales every width, rounded with `make_divisible(., 8)`.
      drop_rate: dropout before the classifier.
      bn_momentum / bn_epsilon: BatchNorm (Flax convention: PyTorch 0.1 == 0.9).
      bn_axis_name: pmap axis for BatchNorm statistics (None under jit).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 1000
    in_channels: int = 3
    stages: tuple[InvertedResidual, ...] = ()
    stem_channels: int = 32
    stem_act: Activation = "relu6"
    final_channels: int = 1280
    final_expand: int = 0
    final_act: Activation = "relu6"
    head_hidden: int = 0
    head_act: Activation = "hardswish"
    width_multiplier: float = 1.0
    drop_rate: float = 0.2
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # The stem and each stage's first block halve the map (32 for the tables).
        return 2 * math.prod(stage.stride for stage in self.stages)

    def width(self, channels: int) -> int:
        """`channels` scaled by the width multiplier and rounded to a multiple of 8."""
        return make_divisible(channels * self.width_multiplier, 8)

    def _check(self) -> None:
        if not self.stages:
            raise ValueError("MobileNet needs a non-empty `stages` table")
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be > 0, got {self.width_multiplier}")
        for act in (self.stem_act, self.final_act, self.head_act):
            _check_activation(act)

    def _stages(self, x: jax.Array, *, train: bool, bn: dict[str, Any]) -> jax.Array:
        for s, stage in enumerate(self.stages, start=1):
            for b in range(1, stage.repeats + 1):
                if stage.expand_ratio is not None:
                    hidden = round(x.shape[-1] * stage.expand_ratio)
                else:
                    hidden = self.width(stage.expanded)
                # torchvision v3: squeeze = make_divisible(expanded // 4, 8).
                se_channels = make_divisible(hidden // 4, 8) if stage.se else 0
                x = InvertedResidualBlock(
                    self.width(stage.out), hidden, stage.kernel, stage.stride if b == 1 else 1,
                    se_channels=se_channels, act=ACTIVATIONS[stage.act],
                    name=f"stage{s}_block{b}", **bn)(x, train=train)
        return x

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False,
                 return_features: bool = False) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or pooled features [batch, final channels] when `return_features`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size,
                     model="MobileNet")
        self._check()
        x = x.astype(self.dtype)
        bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                  bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        x = ConvBNAct(self.width(self.stem_channels), 3, 2, act=ACTIVATIONS[self.stem_act],
                      name="stem", **bn)(x, train=train)
        x = self._stages(x, train=train, bn=bn)
        if self.final_expand:
            final = self.final_expand * x.shape[-1]
        else:
            final = make_divisible(self.final_channels * max(1.0, self.width_multiplier), 8)
        x = ConvBNAct(final, 1, act=ACTIVATIONS[self.final_act], name="final_conv", **bn)(
            x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        dense = functools.partial(nn.Dense, kernel_init=_dense_normal_init, dtype=self.dtype,
                                  param_dtype=self.param_dtype)
        if self.head_hidden:
            x = dense(self.width(self.head_hidden), name="pre_logits")(x)
            x = ACTIVATIONS[self.head_act](x)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = dense(self.num_classes, name="head")(x)
        return x.astype(jnp.float32)


# ---------------------------------------------------------------------- spec tables

D, IR = DepthwiseSeparable, InvertedResidual

# Paper table 1: the stride-2 block opens each stage.
MOBILENET_V1_STAGES = (
    D(out=64, stride=1), D(out=128, stride=2, repeats=2), D(out=256, stride=2, repeats=2),
    D(out=512, stride=2, repeats=6), D(out=1024, stride=2, repeats=2),
)

# Paper table 2 (t, c, n, s).
MOBILENET_V2_STAGES = (
    IR(3, 1, out=16, repeats=1, expand_ratio=1),
    IR(3, 2, out=24, repeats=2, expand_ratio=6),
    IR(3, 2, out=32, repeats=3, expand_ratio=6),
    IR(3, 2, out=64, repeats=4, expand_ratio=6),
    IR(3, 1, out=96, repeats=3, expand_ratio=6),
    IR(3, 2, out=160, repeats=3, expand_ratio=6),
    IR(3, 1, out=320, repeats=1, expand_ratio=6),
)

# Paper tables 1 and 2 (torchvision's bneck_conf lists), one row per block.
MOBILENET_V3_LARGE_STAGES = (
    IR(3, 1, out=16, expanded=16, act="relu"),
    IR(3, 2, out=24, expanded=64, act="relu"),
    IR(3, 1, out=24, expanded=72, act="relu"),
    IR(5, 2, out=40, expanded=72, se=True, act="relu"),
    IR(5, 1, out=40, expanded=120, se=True, act="relu", repeats=2),
    IR(3, 2, out=80, expanded=240, act="hardswish"),
    IR(3, 1, out=80, expanded=200, act="hardswish"),
    IR(3, 1, out=80, expanded=184, act="hardswish", repeats=2),
    IR(3, 1, out=112, expanded=480, se=True, act="hardswish"),
    IR(3, 1, out=112, expanded=672, se=True, act="hardswish"),
    IR(5, 2, out=160, expanded=672, se=True, act="hardswish"),
    IR(5, 1, out=160, expanded=960, se=True, act="hardswish", repeats=2),
)

MOBILENET_V3_SMALL_STAGES = (
    IR(3, 2, out=16, expanded=16, se=True, act="relu"),
    IR(3, 2, out=24, expanded=72, act="relu"),
    IR(3, 1, out=24, expanded=88, act="relu"),
    IR(5, 2, out=40, expanded=96, se=True, act="hardswish"),
    IR(5, 1, out=40, expanded=240, se=True, act="hardswish", repeats=2),
    IR(5, 1, out=48, expanded=120, se=True, act="hardswish"),
    IR(5, 1, out=48, expanded=144, se=True, act="hardswish"),
    IR(5, 2, out=96, expanded=288, se=True, act="hardswish"),
    IR(5, 1, out=96, expanded=576, se=True, act="hardswish", repeats=2),
)

# v3: BN eps 1e-3, PyTorch momentum 0.01; last conv is 6x the last stage's width.
_V3 = dict(stem_channels=16, stem_act="hardswish", final_expand=6, final_act="hardswish",
           head_act="hardswish",
           bn_momentum=0.99, bn_epsilon=1e-3)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One registered MobileNet: its builder and the reference parameter count."""

    name: str
    builder: Callable[..., nn.Module]
    paper: str
    reference_params: int
    reference: Literal["torchvision", "timm"]


VARIANTS = (
    Variant("mobilenet_v1", functools.partial(MobileNetV1, stages=MOBILENET_V1_STAGES),
            "https://arxiv.org/abs/1704.04861", 4_231_976, "timm"),
    Variant("mobilenet_v2", functools.partial(MobileNet, stages=MOBILENET_V2_STAGES),
            "https://arxiv.org/abs/1801.04381", 3_504_872, "torchvision"),
    Variant("mobilenet_v3_small",
            functools.partial(MobileNet, stages=MOBILENET_V3_SMALL_STAGES, head_hidden=1024,
                              **_V3),
            "https://arxiv.org/abs/1905.02244", 2_542_856, "torchvision"),
    Variant("mobilenet_v3_large",
            functools.partial(MobileNet, stages=MOBILENET_V3_LARGE_STAGES, head_hidden=1280,
                              **_V3),
            "https://arxiv.org/abs/1905.02244", 5_483_032, "torchvision"),
)

for _variant in VARIANTS:
    register_model(
        _variant.name, _variant.builder, family="mobilenet", input_size=224,
        paper=_variant.paper, reference_params=_variant.reference_params,
        reference=_variant.reference)
