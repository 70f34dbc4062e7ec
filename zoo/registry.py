"""The model registry: one name -> one architecture, with its metadata.

Families register their variants at import time (see `zoo/models/*.py`):

    register_model("resnet50", functools.partial(ResNet, ...), family="resnet",
                   input_size=224, paper="https://arxiv.org/abs/1512.03385",
                   reference_params=25_557_032, reference="torchvision")

and users build them with `create_model("resnet50", num_classes=10)`.

`model_info` counts parameters (via `jax.eval_shape`, no compute) and
multiply-accumulates (by walking the traced forward pass), so the numbers it
prints are measured from the code, never copied from a table.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.counting import count_macs, count_params

ModelBuilder = Callable[..., nn.Module]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one registered name.

    Attributes:
      name: registry name, e.g. "resnet50".
      builder: callable returning the Flax module; takes `num_classes`,
        `dtype`, `param_dtype` and family-specific overrides as keywords.
      family: family name, e.g. "resnet" (the file in `zoo/models/`).
      input_size: default (square) training/eval resolution in pixels.
      paper: link to the paper that defines the architecture.
      num_classes: default number of classes (1000 for ImageNet models).
      reference_params: trainable parameter count of the canonical
        implementation (torchvision, else timm) at `num_classes`; tests check
        that the counted number equals it. None where no canonical model exists.
      reference: where `reference_params` comes from ("torchvision", "timm",
        "keras", "paper").
      test_only: tiny variants registered for tests; hidden from `list_models`
        unless asked for.
    """

    name: str
    builder: ModelBuilder
    family: str
    input_size: int
    paper: str
    num_classes: int = 1000
    reference_params: int | None = None
    reference: str | None = None
    test_only: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: ModelBuilder,
    *,
    family: str,
    input_size: int,
    paper: str,
    num_classes: int = 1000,
    reference_params: int | None = None,
    reference: str | None = None,
    test_only: bool = False,
) -> None:
    """Adds `name` to the registry. Registering a name twice is an error."""
    if name in _REGISTRY:
        raise ValueError(
            f"model {name!r} is already registered (family "
            f"{_REGISTRY[name].family!r}); pick another name"
        )
    if input_size <= 0:
        raise ValueError(f"input_size of {name!r} must be positive, got {input_size}")
    _REGISTRY[name] = ModelEntry(
        name=name,
        builder=builder,
        family=family,
        input_size=input_size,
        paper=paper,
        num_classes=num_classes,
        reference_params=reference_params,
        reference=reference,
        test_only=test_only,
    )


def _ensure_families_imported() -> None:
    # Importing zoo.models imports every family file, which registers it.
    import zoo.models  # noqa: F401


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; unknown names list the closest ones."""
    _ensure_families_imported()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} `zoo models` lists all "
            f"{len(_REGISTRY)} registered names."
        )
    return _REGISTRY[name]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    **overrides: Any,
) -> nn.Module:
    """Builds the registered model `name`.

    Args:
      name: a registered name (see `list_models`).
      num_classes: size of the classifier head; defaults to the entry's
        (1000 for ImageNet models, 10 for the MNIST-sized ones).
      dtype: computation dtype (e.g. `jnp.bfloat16` for mixed precision).
      param_dtype: dtype of the parameters (keep float32 for training).
      **overrides: family-specific module fields, e.g. `drop_rate=0.2`.

    Returns:
      An unbound `flax.linen.Module`; call it as
      `model.apply(variables, images, train=False)` with NHWC `images`.
    """
    entry = get_entry(name)
    num_classes = entry.num_classes if num_classes is None else num_classes
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    return entry.builder(
        num_classes=num_classes, dtype=dtype, param_dtype=param_dtype, **overrides
    )


def list_models(pattern: str = "*", *, include_test_only: bool = False) -> list[str]:
    """Sorted registered names matching the glob `pattern` (e.g. "resnet*")."""
    _ensure_families_imported()
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if fnmatch.fnmatchcase(name, pattern) and (include_test_only or not entry.test_only)
    )


def input_shape(name: str, batch_size: int = 1, image_size: int | None = None) -> tuple[int, ...]:
    """NHWC input shape of `name` at its default (or the given) resolution."""
    entry = get_entry(name)
    model = create_model(name)
    size = entry.input_size if image_size is None else image_size
    return (batch_size, size, size, model.in_channels)


def init_shapes(model: nn.Module, shape: tuple[int, ...]) -> Any:
    """Variables of `model` as `jax.ShapeDtypeStruct`s, computed without FLOPs."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)


def synthetic_variables(shapes: Any, seed: int = 0) -> Any:
    """Host arrays with the shapes and dtypes of `shapes` (from `jax.eval_shape`).

    Inference timing and contract checks do not depend on the exact values,
    and compiling `model.init` (its forward pass plus random-number kernels)
    costs seconds per model on a CPU, so the benchmark harness and the tests
    fill the variables on the host: normalisation scales and variances 1,
    biases and means 0, kernels normal with std 1/sqrt(fan-in) (activations
    stay O(1): no inf/NaN in bfloat16, no denormals), other tensors normal(0.02).
    """
    rng = np.random.default_rng(seed)

    def fill(path: Any, leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            value = np.ones(leaf.shape)
        elif name in ("bias", "mean"):
            value = np.zeros(leaf.shape)
        elif len(leaf.shape) >= 2:
            fan_in = max(1, int(np.prod(leaf.shape[:-1])))
            value = rng.standard_normal(leaf.shape, dtype=np.float32) / np.sqrt(fan_in)
        else:
            value = 0.02 * rng.standard_normal(leaf.shape, dtype=np.float32)
        return value.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def model_info(name: str) -> dict[str, Any]:
    """Metadata of `name`, with parameters and MACs counted from the code.

    Returns a dict with: name, family, params (trainable parameters at the
    default number of classes), macs (multiply-accumulates of one forward pass
    of one image at `input_size`), input_size, min_input_size, in_channels,
    num_classes, paper, reference_params, reference, and `weights`: published
    checkpoints (torchvision enum / timm tag, top-1, eval size) that
    `zoo convert` imports; metadata only, nothing is downloaded.
    """
    from zoo.interop.sources import weight_sources

    entry = get_entry(name)
    model = create_model(name)
    shape = input_shape(name)
    variables = init_shapes(model, shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    macs = count_macs(lambda v, images: model.apply(v, images, train=False), variables, x)
    return {
        "name": name,
        "family": entry.family,
        "params": count_params(variables["params"]),
        "macs": macs,
        "input_size": entry.input_size,
        "min_input_size": model.min_input_size,
        "in_channels": model.in_channels,
        "num_classes": entry.num_classes,
        "paper": entry.paper,
        "reference_params": entry.reference_params,
        "reference": entry.reference,
        "weights": weight_sources(name),
    }
