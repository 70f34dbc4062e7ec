"""Known pretrained weights for Zoo models: where they come from, what they reach.

Metadata only: nothing here downloads anything. A user fetches the file with
the source library (e.g. `torchvision.models.resnet50(weights="IMAGENET1K_V2")`
then `torch.save(model.state_dict(), "resnet50.pth")`, or timm's
`timm.create_model("resnet50.a1_in1k", pretrained=True)`, or the
`model.safetensors` of the Hugging Face repo `timm/<tag>`) and converts it
with `zoo convert`.

`top1` is the ImageNet-1k validation top-1 (%) the source publishes for the
weights at `eval_size` (torchvision's weights tables; timm's
results/results-imagenet.csv, checked against its copy at commit 0173a139).
Only values read from those tables are listed: timm's newer
mobilenetv1_100.ra4_e3600_r224_in1k weights (which `zoo convert --from timm
--model mobilenet_v1` imports) are not in that copy, so they have no entry.
Zoo's own evaluation pipeline may differ slightly in resizing and cropping.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """One published checkpoint for a Zoo model.

    Attributes:
      model: Zoo registry name.
      library: "torchvision" or "timm" (the `--from` of `zoo convert`).
      tag: torchvision weights enum member ("ResNet50_Weights.IMAGENET1K_V2")
        or timm pretrained tag ("resnet50.a1_in1k").
      top1: published ImageNet-1k top-1 in percent.
      eval_size: resolution that top-1 was measured at.
      overrides: Zoo module fields the weights need (e.g. a ViT's image_size).
    """

    model: str
    library: Literal["torchvision", "timm"]
    tag: str
    top1: float
    eval_size: int = 224
    overrides: tuple[tuple[str, Any], ...] = ()


_S = WeightSource
_TV = "torchvision"

WEIGHT_SOURCES: tuple[WeightSource, ...] = (
    _S("alexnet", _TV, "AlexNet_Weights.IMAGENET1K_V1", 56.522),
    _S("vgg11", _TV, "VGG11_Weights.IMAGENET1K_V1", 69.020),
    _S("vgg11_bn", _TV, "VGG11_BN_Weights.IMAGENET1K_V1", 70.370),
    _S("vgg13", _TV, "VGG13_Weights.IMAGENET1K_V1", 69.928),
    _S("vgg13_bn", _TV, "VGG13_BN_Weights.IMAGENET1K_V1", 71.586),
    _S("vgg16", _TV, "VGG16_Weights.IMAGENET1K_V1", 71.592),
    _S("vgg16_bn", _TV, "VGG16_BN_Weights.IMAGENET1K_V1", 73.360),
    _S("vgg19", _TV, "VGG19_Weights.IMAGENET1K_V1", 72.376),
    _S("vgg19_bn", _TV, "VGG19_BN_Weights.IMAGENET1K_V1", 74.218),
    _S("resnet18", _TV, "ResNet18_Weights.IMAGENET1K_V1", 69.758),
    _S("resnet34", _TV, "ResNet34_Weights.IMAGENET1K_V1", 73.314),
    _S("resnet50", _TV, "ResNet50_Weights.IMAGENET1K_V1", 76.130),
    _S("resnet50", _TV, "ResNet50_Weights.IMAGENET1K_V2", 80.858, eval_size=224),
    _S("resnet50", "timm", "resnet50.a1_in1k", 81.214, eval_size=288),
    _S("resnet101", _TV, "ResNet101_Weights.IMAGENET1K_V1", 77.374),
    _S("resnet101", _TV, "ResNet101_Weights.IMAGENET1K_V2", 81.886),
    _S("resnet152", _TV, "ResNet152_Weights.IMAGENET1K_V1", 78.312),
    _S("resnet152", _TV, "ResNet152_Weights.IMAGENET1K_V2", 82.284),
    _S("resnext50_32x4d", _TV, "ResNeXt50_32X4D_Weights.IMAGENET1K_V1", 77.618),
    _S("resnext50_32x4d", _TV, "ResNeXt50_32X4D_Weights.IMAGENET1K_V2", 81.198),
    _S("resnext101_32x8d", _TV, "ResNeXt101_32X8D_Weights.IMAGENET1K_V1", 79.312),
    _S("resnext101_32x8d", _TV, "ResNeXt101_32X8D_Weights.IMAGENET1K_V2", 82.834),
    _S("resnext101_64x4d", _TV, "ResNeXt101_64X4D_Weights.IMAGENET1K_V1", 83.246),
    _S("wide_resnet50_2", _TV, "Wide_ResNet50_2_Weights.IMAGENET1K_V1", 78.468),
    _S("wide_resnet50_2", _TV, "Wide_ResNet50_2_Weights.IMAGENET1K_V2", 81.602),
    _S("wide_resnet101_2", _TV, "Wide_ResNet101_2_Weights.IMAGENET1K_V1", 78.848),
    _S("wide_resnet101_2", _TV, "Wide_ResNet101_2_Weights.IMAGENET1K_V2", 82.510),
    _S("seresnet50", "timm", "seresnet50.ra2_in1k", 81.284, eval_size=288),
    _S("googlenet", _TV, "GoogLeNet_Weights.IMAGENET1K_V1", 69.778),
    _S("inception_v3", _TV, "Inception_V3_Weights.IMAGENET1K_V1", 77.294, eval_size=299),
    _S("densenet121", _TV, "DenseNet121_Weights.IMAGENET1K_V1", 74.434),
    _S("densenet161", _TV, "DenseNet161_Weights.IMAGENET1K_V1", 77.138),
    _S("densenet169", _TV, "DenseNet169_Weights.IMAGENET1K_V1", 75.600),
    _S("densenet201", _TV, "DenseNet201_Weights.IMAGENET1K_V1", 76.896),
    _S("mobilenet_v2", _TV, "MobileNet_V2_Weights.IMAGENET1K_V1", 71.878),
    _S("mobilenet_v2", _TV, "MobileNet_V2_Weights.IMAGENET1K_V2", 72.154),
    _S("mobilenet_v3_small", _TV, "MobileNet_V3_Small_Weights.IMAGENET1K_V1", 67.668),
    _S("mobilenet_v3_large", _TV, "MobileNet_V3_Large_Weights.IMAGENET1K_V1", 74.042),
    _S("mobilenet_v3_large", _TV, "MobileNet_V3_Large_Weights.IMAGENET1K_V2", 75.274),
    _S("efficientnet_b0", _TV, "EfficientNet_B0_Weights.IMAGENET1K_V1", 77.692),
    _S("efficientnet_b1", _TV, "EfficientNet_B1_Weights.IMAGENET1K_V1", 78.642, eval_size=240),
    _S("efficientnet_b1", _TV, "EfficientNet_B1_Weights.IMAGENET1K_V2", 79.838, eval_size=240),
    _S("efficientnet_b2", _TV, "EfficientNet_B2_Weights.IMAGENET1K_V1", 80.608, eval_size=288),
    _S("efficientnet_b3", _TV, "EfficientNet_B3_Weights.IMAGENET1K_V1", 82.008, eval_size=300),
    _S("efficientnet_b4", _TV, "EfficientNet_B4_Weights.IMAGENET1K_V1", 83.384, eval_size=380),
    _S("efficientnet_b5", _TV, "EfficientNet_B5_Weights.IMAGENET1K_V1", 83.444, eval_size=456),
    _S("efficientnet_b6", _TV, "EfficientNet_B6_Weights.IMAGENET1K_V1", 84.008, eval_size=528),
    _S("efficientnet_b7", _TV, "EfficientNet_B7_Weights.IMAGENET1K_V1", 84.122, eval_size=600),
    _S("vit_tiny_patch16_224", "timm", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", 75.454),
    _S("vit_small_patch16_224", "timm", "vit_small_patch16_224.augreg_in21k_ft_in1k", 81.384),
    _S("vit_b_16", _TV, "ViT_B_16_Weights.IMAGENET1K_V1", 81.072),
    _S("vit_b_16", _TV, "ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1", 81.886),
    _S("vit_b_16", _TV, "ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1", 85.304, eval_size=384,
       overrides=(("image_size", 384),)),
    _S("vit_b_32", _TV, "ViT_B_32_Weights.IMAGENET1K_V1", 75.912),
    _S("vit_l_16", _TV, "ViT_L_16_Weights.IMAGENET1K_V1", 79.662),
    _S("vit_l_16", _TV, "ViT_L_16_Weights.IMAGENET1K_SWAG_LINEAR_V1", 85.146),
    _S("vit_l_16", _TV, "ViT_L_16_Weights.IMAGENET1K_SWAG_E2E_V1", 88.064, eval_size=512,
       overrides=(("image_size", 512),)),
    _S("convnext_tiny", _TV, "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", 82.520),
    _S("convnext_tiny", "timm", "convnext_tiny.fb_in1k", 82.698, eval_size=288),
    _S("convnext_small", _TV, "ConvNeXt_Small_Weights.IMAGENET1K_V1", 83.616),
    _S("convnext_base", _TV, "ConvNeXt_Base_Weights.IMAGENET1K_V1", 84.062),
)


def weight_sources(name: str) -> list[dict[str, Any]]:
    """Known published weights for the Zoo model `name`, best top-1 first.

    Each dict has: library, tag, top1, eval_size, overrides (dict of Zoo
    module fields the weights need). An unknown model name is a ValueError;
    a known model without published weights gives [].
    """
    from zoo.registry import get_entry

    get_entry(name)  # raises a ValueError naming close matches for unknown names
    rows = [dict(library=s.library, tag=s.tag, top1=s.top1, eval_size=s.eval_size,
                 overrides=dict(s.overrides)) for s in WEIGHT_SOURCES if s.model == name]
    return sorted(rows, key=lambda row: -row["top1"])
