"""SE-ResNet and SE-ResNeXt (Hu et al. 2017), as in timm.

Paper: https://arxiv.org/abs/1709.01507

timm's `seresnet50`, `seresnet101` and `seresnext50_32x4d` are its ResNet
(the torchvision v1.5 layout, `zoo.models.resnet.ResNet`) with a
squeeze-excite module in every bottleneck: after the third BatchNorm, before
the residual add. The SE's fc1 / fc2 are 1x1 convs with bias, of width
make_divisible(channels / 16, 8, round_limit=0) (16, 32, 64, 128 in the four
stages). timm's counts: 28,088,024; 49,326,872; 27,559,896 — resnet50's
25,557,032 plus the SE layers' 2,530,992 (2 * C * C / 16 + C / 16 + C
per block, summed over 3 x 256, 4 x 512, 6 x 1024 and 3 x 2048 channels).

Deviations from timm: timm zero-initialises the last BatchNorm of each block
(`zero_init_last=True`); here it is off by default, as for the other ResNets,
and `zero_init_residual=True` turns it on. The SE convs use Flax's default
initialisation, not timm's He normal. timm's original `legacy_seresnet*` (from
the Caffe release: stride on the first 1x1 conv, SE sized without rounding) is
not this model.
"""

from __future__ import annotations

import dataclasses
import functools

from zoo.models.resnet import RESNET_SPECS, ResNet
from zoo.registry import register_model

# timm's SE reduction in its ResNets: rd_ratio = 1/16.
SE_RATIO = 1.0 / 16.0


@dataclasses.dataclass(frozen=True)
class SENetSpec:
    """One variant: the ResNet it extends and timm's parameter count."""

    base: str
    params: int


SENET_SPECS: dict[str, SENetSpec] = {
    "seresnet50": SENetSpec("resnet50", params=28_088_024),
    "seresnet101": SENetSpec("resnet101", params=49_326_872),
    "seresnext50_32x4d": SENetSpec("resnext50_32x4d", params=27_559_896),
}

for _name, _spec in SENET_SPECS.items():
    register_model(
        _name,
        functools.partial(ResNet, **RESNET_SPECS[_spec.base].fields(), se_ratio=SE_RATIO),
        family="senet",
        input_size=224,
        paper="https://arxiv.org/abs/1709.01507",
        reference_params=_spec.params,
        reference="timm",
    )
