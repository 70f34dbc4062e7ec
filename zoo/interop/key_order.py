"""PyTorch's definition order for state dicts that lost it.

`zoo.interop.mapping` aligns tensors in definition order. A `.pth` file and
an in-memory `state_dict()` keep that order; a `.safetensors` file does not
(safetensors stores tensors sorted by name). For those, the order is taken
from the reference architecture itself, built on PyTorch's "meta" device (no
memory, no weights, no download), which needs the `torch` extra; reading the
safetensors file itself does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Zoo names whose timm architecture has another name.
TIMM_NAMES = {"mobilenet_v1": "mobilenetv1_100"}
# Constructor arguments that make the reference build every tensor a
# published checkpoint may hold (auxiliary heads are ignored later).
TORCHVISION_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": True, "init_weights": False},
    "inception_v3": {"aux_logits": True, "init_weights": False},
}


def reference_key_order(source: str, name: str) -> list[str]:
    """State-dict keys of the torchvision / timm model for Zoo's `name`, in
    definition order.

    Raises:
      ValueError: when torch (or torchvision / timm) is not installed.
    """
    try:
        import torch

        if source == "timm":
            import timm

            build = lambda: timm.create_model(TIMM_NAMES.get(name, name), pretrained=False)  # noqa: E731
        else:
            import torchvision

            constructor = getattr(torchvision.models, name)
            build = lambda: constructor(weights=None, **TORCHVISION_KWARGS.get(name, {}))  # noqa: E731
    except ImportError as error:
        raise ValueError(
            "a .safetensors file stores tensors sorted by name, not in PyTorch's definition "
            f"order; recovering that order for {name!r} needs the torch extra "
            "(pip install 'zoo[torch]'), or convert from a .pth file or a state_dict() "
            "instead") from error
    with torch.device("meta"):
        return list(build().state_dict())


def in_reference_order(state_dict: Mapping[str, Any], order: list[str]) -> dict[str, Any]:
    """`state_dict` re-ordered like `order`; keys `order` lacks go last, sorted
    (they are reported as unexpected unless a family rule ignores them)."""
    rank = {key: index for index, key in enumerate(order)}
    known = sorted((k for k in state_dict if k in rank), key=rank.__getitem__)
    unknown = sorted(k for k in state_dict if k not in rank)
    return {key: state_dict[key] for key in known + unknown}
