"""Zoo: a JAX model zoo for image classification.

    import zoo
    model = zoo.create_model("resnet50", num_classes=10)
    zoo.list_models("resnet*")
    zoo.model_info("resnet50")["params"]  # 25_557_032
"""

from zoo.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"
