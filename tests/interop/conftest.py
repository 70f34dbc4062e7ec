"""Import order guard for the interop tests.

With TensorFlow (the `tf` extra, SavedModel export) and PyTorch (the `torch`
extra, weight import) in one process, importing Triton (which torch loads
lazily, e.g. when torchvision imports torch._dynamo) AFTER TensorFlow
segfaults (seen with tensorflow-cpu 2.21 and torch 2.14's triton). Triton
first, then TensorFlow, works; so each test process loads it up front.
"""

import importlib.util

if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("triton"):
    import triton  # noqa: F401
