"""Zoo: a JAX model zoo for image classification.

    import zoo
    model = zoo.create_model("resnet50", num_classes=10)
    zoo.list_models("resnet*")
    zoo.model_info("resnet50")["params"]  # 25_557_032

The names below load `zoo.registry` (and with it JAX and Flax) on first use,
so `import zoo.runtime` / the `zoo` command can set process options before
JAX starts (zoo.runtime).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from zoo import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
