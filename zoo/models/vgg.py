"""VGG (Simonyan & Zisserman 2014), as in torchvision.

Paper: https://arxiv.org/abs/1409.1556

Five stages of 3x3 convolutions (pad 1, with bias, then BatchNorm in the `_bn`
variants, then ReLU), each followed by a 2x2 max-pool; adaptive average pool
to 7x7; classifier 25088 -> 4096 -> 4096 -> classes with ReLU and dropout 0.5
after each of the first two. Configurations A (vgg11), B (vgg13), D (vgg16)
and E (vgg19) of the paper.

Deviations from torchvision: none in structure or initialisation (convs He
normal fan_out with zero bias, Dense N(0, 0.01) with zero bias, BatchNorm 1/0,
eps 1e-5, PyTorch momentum 0.1). The convolutions keep their bias in the `_bn`
variants, as torchvision's do. `return_features=True` gives the flattened
25088-d pooled map (the classifier's input). Flatten order is PyTorch's
(C, H, W): see `zoo.models.alexnet.torch_order_flatten`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.conv_bn_act import ConvBNAct
from zoo.layers.pooling import adaptive_avg_pool, max_pool
from zoo.layers.validation import check_images
from zoo.models.alexnet import torch_order_flatten
from zoo.registry import register_model

# torchvision initialises VGG's Linear layers with N(0, 0.01) and zero bias.
classifier_kernel_init = nn.initializers.normal(stddev=0.01)


class VGG(nn.Module):
    """VGG: stages of 3x3 convs and max-pools, then a three-layer classifier.

    Submodules: stage1..stage5 (each with conv1.. of `ConvBNAct`, whose `conv`
    and `bn` are torch's Conv2d and BatchNorm2d), fc1, fc2, head.

    Attributes:
      stage_widths: output channels of every conv, one tuple per stage.
      batch_norm: BatchNorm after every conv (the `_bn` variants).
      num_classes: classifier outputs; 0 returns the 25088-d features.
      in_channels: image channels.
      drop_rate: dropout after fc1 and fc2 (train only).
      bn_axis_name: pmap axis for BatchNorm statistics (None under jit).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    stage_widths: tuple[tuple[int, ...], ...]
    batch_norm: bool = False
    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.5
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # One 2x2 max-pool per stage; every stage must keep >= 1 pixel.
        return 2 ** len(self.stage_widths)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or features [batch, 25088] with `return_features=True`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size, model="VGG")
        x = x.astype(self.dtype)
        for stage_index, widths in enumerate(self.stage_widths, start=1):
            x = VGGStage(widths, batch_norm=self.batch_norm, bn_axis_name=self.bn_axis_name,
                         dtype=self.dtype, param_dtype=self.param_dtype,
                         name=f"stage{stage_index}")(x, train=train)
        x = torch_order_flatten(adaptive_avg_pool(x, 7))
        if return_features or self.num_classes == 0:
            return x.astype(jnp.float32)
        dense = functools.partial(nn.Dense, kernel_init=classifier_kernel_init,
                                  dtype=self.dtype, param_dtype=self.param_dtype)
        for name in ("fc1", "fc2"):
            x = nn.relu(dense(4096, name=name)(x))
            x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = dense(self.num_classes, name="head")(x)
        return x.astype(jnp.float32)


class VGGStage(nn.Module):
    """3x3 convs (with bias; BatchNorm optional) and ReLU, then a 2x2 max-pool.

    Attributes:
      widths: output channels of each conv.
      batch_norm: BatchNorm after each conv.
    """

    widths: tuple[int, ...]
    batch_norm: bool = False
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, channels] -> [batch, height/2, width/2, widths[-1]]."""
        for index, width in enumerate(self.widths, start=1):
            x = ConvBNAct(width, 3, use_bias=True, norm=self.batch_norm,
                          bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f"conv{index}")(x, train=train)
        return max_pool(x, (2, 2), strides=(2, 2))


@dataclasses.dataclass(frozen=True)
class VGGSpec:
    """One VGG variant: conv widths per stage and the canonical parameter counts."""

    stage_widths: tuple[tuple[int, ...], ...]
    params: int
    params_bn: int


VGG_SPECS: dict[str, VGGSpec] = {
    "vgg11": VGGSpec(((64,), (128,), (256, 256), (512, 512), (512, 512)),
                     params=132_863_336, params_bn=132_868_840),
    "vgg13": VGGSpec(((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
                     params=133_047_848, params_bn=133_053_736),
    "vgg16": VGGSpec(((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
                     params=138_357_544, params_bn=138_365_992),
    "vgg19": VGGSpec(((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
                     params=143_667_240, params_bn=143_678_248),
}

for _name, _spec in VGG_SPECS.items():
    for _batch_norm, _suffix, _params in ((False, "", _spec.params), (True, "_bn", _spec.params_bn)):
        register_model(
            _name + _suffix,
            functools.partial(VGG, stage_widths=_spec.stage_widths, batch_norm=_batch_norm),
            family="vgg",
            input_size=224,
            paper="https://arxiv.org/abs/1409.1556",
            reference_params=_params,
            reference="torchvision",
        )
