"""Weights in and out: torchvision / timm checkpoints -> Zoo variables, and
exports for serving (StableHLO, TF SavedModel).

    variables = zoo.interop.load_torchvision("resnet50", "resnet50.pth")
    variables = zoo.interop.load_timm("seresnet50", "model.safetensors")
    logits = zoo.create_model("resnet50").apply(variables, images, train=False)
"""

from zoo.interop.export import (ExportSpec, export_saved_model, export_stablehlo, load_stablehlo,
                               save_stablehlo)
from zoo.interop.fold import fold_batch_norm, folded_apply
from zoo.interop.mapping import load_state_dict, load_timm, load_torchvision
from zoo.interop.pretrained import load_variables, merge_pretrained, save_variables, trainable_mask
from zoo.interop.sources import weight_sources
from zoo.interop.state_dict import read_state_dict

__all__ = [
    "ExportSpec", "export_saved_model", "export_stablehlo", "load_stablehlo", "save_stablehlo", "fold_batch_norm",
    "folded_apply", "load_state_dict", "load_timm", "load_torchvision", "load_variables",
    "merge_pretrained", "save_variables", "trainable_mask", "weight_sources", "read_state_dict",
]
