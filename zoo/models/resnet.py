"""ResNet (He et al. 2015), ResNeXt (Xie et al. 2016) and Wide ResNet
(Zagoruyko & Komodakis 2016), as in torchvision.

Papers: https://arxiv.org/abs/1512.03385, https://arxiv.org/abs/1611.05431,
https://arxiv.org/abs/1605.07146.

Torchvision's "v1.5" layout: the stride of a downsampling bottleneck sits on
its 3x3 conv (not the first 1x1), and the shortcut is a strided 1x1 conv +
BatchNorm whenever the shape changes. Stem: 7x7/2 conv, BN, ReLU, 3x3/2
max-pool (pad 1). ResNeXt uses grouped 3x3 convs (`feature_group_count`);
Wide ResNet doubles the bottleneck width (`width_per_group=128`).

Blocks accept an optional squeeze-excite after the last BatchNorm, before the
residual add (timm's rule for its width), which `zoo.models.senet` uses.

Deviations from torchvision: none at the default settings; initialisation
matches (convs He normal fan_out, BatchNorm scale 1 bias 0, the head PyTorch's
default Linear init). Options torchvision lacks: `stem="cifar"` (3x3/1 conv,
no max-pool, for 32x32 images) and `drop_rate` (dropout before the head).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.activations import is_low_precision
from zoo.layers.conv_bn_act import ConvBNAct
from zoo.layers.fusion_fence import gradient_barrier, recompute_fence
from zoo.layers.make_divisible import make_divisible
from zoo.layers.pooling import global_avg_pool, max_pool
from zoo.layers.squeeze_excite import SqueezeExcite
from zoo.layers.validation import check_images
from zoo.models.alexnet import torch_default_bias_init, torch_default_kernel_init
from zoo.registry import register_model

BlockKind = Literal["basic", "bottleneck"]
StemKind = Literal["imagenet", "cifar"]


def se_reduced_channels(channels: int, ratio: float) -> int:
    """Squeeze-excite width as timm computes it for ResNets:
    make_divisible(channels * ratio, 8, round_limit=0)."""
    return make_divisible(channels * ratio, 8, round_limit=0.0)


class ResidualBlock(nn.Module):
    """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) residual block.

    Submodules: conv1, conv2 (and conv3 for bottlenecks), each a `ConvBNAct`
    (torch's convN + bnN), `downsample` (torch's downsample.0/.1) when the
    shape changes, `se` when `se_ratio` is set.

    Attributes:
      kind: "basic" (expansion 1) or "bottleneck" (expansion 4).
      planes: base width; the block outputs planes * expansion channels.
      strides: stride of the block (on the 3x3 conv of a bottleneck).
      groups: groups of the 3x3 conv (ResNeXt cardinality).
      width_per_group: channels per group at planes == 64; a bottleneck's inner
        width is int(planes * width_per_group / 64) * groups.
      zero_init_residual: initialise the last BatchNorm's scale to zero, so the
        block starts as the identity.
      se_ratio: squeeze-excite reduction ratio (e.g. 1/16), or None for none.
    """

    kind: BlockKind
    planes: int
    strides: int = 1
    groups: int = 1
    width_per_group: int = 64
    zero_init_residual: bool = False
    se_ratio: float | None = None
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, channels] ->
        [batch, height / strides, width / strides, planes * expansion]."""
        conv = functools.partial(ConvBNAct, bn_axis_name=self.bn_axis_name,
                                 dtype=self.dtype, param_dtype=self.param_dtype)
        last_scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        if self.kind == "basic":
            out_channels = self.planes
            y = conv(self.planes, 3, self.strides, name="conv1")(x, train=train)
            y = conv(self.planes, 3, act=None, bn_scale_init=last_scale_init,
                     name="conv2")(y, train=train)
        else:
            out_channels = self.planes * 4
            width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
            y = conv(width, 1, name="conv1")(x, train=train)
            y = conv(width, 3, self.strides, groups=self.groups, name="conv2")(y, train=train)
            y = conv(out_channels, 1, act=None, bn_scale_init=last_scale_init,
                     name="conv3")(y, train=train)
        if self.se_ratio is not None:
            y = SqueezeExcite(se_reduced_channels(out_channels, self.se_ratio),
                              dtype=self.dtype, param_dtype=self.param_dtype, name="se")(y)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != out_channels:
            shortcut = conv(out_channels, 1, self.strides, act=None,
                            name="downsample")(x, train=train)
        out = nn.relu(y + shortcut)
        if train:
            # Written once: XLA's CPU backend would otherwise recompute every
            # earlier block of the stage inside this block's fusions, forward
            # and backward (resnet50 training 1.027x; benchmarks/NOTES.md, entry 18).
            out = recompute_fence(out, self.variables["params"]["conv1"]["conv"]["kernel"])
        return out


class ResNetStage(nn.Module):
    """`num_blocks` residual blocks named block1.., the first one strided.

    Attributes:
      block: a `ResidualBlock` with everything but planes and strides bound.
      planes: base width of the blocks.
      num_blocks: number of blocks.
      strides: stride of the first block.
    """

    block: Callable[..., ResidualBlock]
    planes: int
    num_blocks: int
    strides: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, channels] -> [batch, height / strides,
        width / strides, planes * expansion]."""
        for index in range(self.num_blocks):
            x = self.block(planes=self.planes, strides=self.strides if index == 0 else 1,
                           name=f"block{index + 1}")(x, train=train)
        return x


class ResNet(nn.Module):
    """ResNet / ResNeXt / Wide ResNet / SE-ResNet.

    Submodules: stem (`ConvBNAct`: torch's conv1 + bn1), stage1..stage4 (torch's
    layer1..layer4), each holding block1.. (torch's 0..), head (torch's fc).

    Attributes:
      block: "basic" or "bottleneck".
      stage_sizes: number of blocks in each of the four stages.
      groups: groups of every 3x3 bottleneck conv (ResNeXt cardinality).
      width_per_group: bottleneck width per group at the first stage (64 for
        ResNet, 4 or 8 for ResNeXt, 128 for Wide ResNet).
      se_ratio: squeeze-excite ratio in every block (SENet), or None.
      zero_init_residual: zero-initialise the last BatchNorm scale of every block.
      stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3/1 conv,
        no max-pool, for 32x32 images).
      drop_rate: dropout before the head (train only).
      num_classes: head outputs; 0 returns the pooled features.
      in_channels: image channels.
      bn_axis_name: pmap axis for BatchNorm statistics (None under jit).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    block: BlockKind
    stage_sizes: tuple[int, ...]
    groups: int = 1
    width_per_group: int = 64
    se_ratio: float | None = None
    zero_init_residual: bool = False
    stem: StemKind = "imagenet"
    drop_rate: float = 0.0
    num_classes: int = 1000
    in_channels: int = 3
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # Stages 2..n halve the size; the ImageNet stem divides by 4 more.
        reduction = 2 ** (len(self.stage_sizes) - 1)
        return reduction * (4 if self.stem == "imagenet" else 1)

    def _check_options(self) -> None:
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError(
                "basic blocks support only groups=1 and width_per_group=64 (as torchvision), "
                f"got groups={self.groups}, width_per_group={self.width_per_group}")
        if not self.stage_sizes or min(self.stage_sizes) < 1:
            raise ValueError(f"stage_sizes must be positive block counts, got {self.stage_sizes}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or pooled features [batch, 512 * expansion] with
        `return_features=True`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size, model="ResNet")
        self._check_options()
        x = x.astype(self.dtype)
        conv = functools.partial(ConvBNAct, bn_axis_name=self.bn_axis_name,
                                 dtype=self.dtype, param_dtype=self.param_dtype)
        if self.stem == "imagenet":
            x = conv(64, 7, 2, name="stem")(x, train=train)
            x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            if train and is_low_precision(x.dtype):
                # In bfloat16 the pool's gradient (two products' sum, each rounded)
                # was recomputed at each of its 9 taps on CPU: written once, the
                # pool's backward takes 41 -> 22 ms of a resnet50 step (in float32
                # the barrier did not pay; benchmarks/NOTES.md, entries 18 and 24).
                x = gradient_barrier(x, self.variables["params"]["stem"]["conv"]["kernel"])
        else:
            x = conv(64, 3, 1, name="stem")(x, train=train)
        block = functools.partial(
            ResidualBlock, self.block, groups=self.groups, width_per_group=self.width_per_group,
            zero_init_residual=self.zero_init_residual, se_ratio=self.se_ratio,
            bn_axis_name=self.bn_axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
        for index, num_blocks in enumerate(self.stage_sizes):
            x = ResNetStage(block, planes=64 * 2**index, num_blocks=num_blocks,
                            strides=1 if index == 0 else 2, name=f"stage{index + 1}")(x, train=train)
        x = global_avg_pool(x)
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init,
                     bias_init=torch_default_bias_init(x.shape[-1]),
                     dtype=self.dtype, param_dtype=self.param_dtype, name="head")(x)
        return x.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """One variant: block kind, blocks per stage, grouping and canonical count."""

    block: BlockKind
    stage_sizes: tuple[int, ...]
    params: int
    groups: int = 1
    width_per_group: int = 64
    paper: str = "https://arxiv.org/abs/1512.03385"

    def fields(self) -> dict[str, Any]:
        """The `ResNet` module fields of this variant."""
        return {"block": self.block, "stage_sizes": self.stage_sizes,
                "groups": self.groups, "width_per_group": self.width_per_group}


RESNEXT_PAPER = "https://arxiv.org/abs/1611.05431"
WIDE_RESNET_PAPER = "https://arxiv.org/abs/1605.07146"

RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2), params=11_689_512),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3), params=21_797_672),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3), params=25_557_032),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3), params=44_549_160),
    "resnet152": ResNetSpec("bottleneck", (3, 8, 36, 3), params=60_192_808),
    "resnext50_32x4d": ResNetSpec("bottleneck", (3, 4, 6, 3), params=25_028_904,
                                  groups=32, width_per_group=4, paper=RESNEXT_PAPER),
    "resnext101_32x8d": ResNetSpec("bottleneck", (3, 4, 23, 3), params=88_791_336,
                                   groups=32, width_per_group=8, paper=RESNEXT_PAPER),
    "resnext101_64x4d": ResNetSpec("bottleneck", (3, 4, 23, 3), params=83_455_272,
                                   groups=64, width_per_group=4, paper=RESNEXT_PAPER),
    "wide_resnet50_2": ResNetSpec("bottleneck", (3, 4, 6, 3), params=68_883_240,
                                  width_per_group=128, paper=WIDE_RESNET_PAPER),
    "wide_resnet101_2": ResNetSpec("bottleneck", (3, 4, 23, 3), params=126_886_696,
                                   width_per_group=128, paper=WIDE_RESNET_PAPER),
}

for _name, _spec in RESNET_SPECS.items():
    register_model(
        _name,
        functools.partial(ResNet, **_spec.fields()),
        family="resnet",
        input_size=224,
        paper=_spec.paper,
        reference_params=_spec.params,
        reference="torchvision",
    )
