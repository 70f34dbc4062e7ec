"""Helpers shared by the model tests, the README test and the parity tests.

Compilation dominates the suite on CPU, so the passes several test files need
are built once per test process and shared: `init_shapes_of` (abstract
variables) and `eval_apply` (the jitted float32 eval forward). The tests of
one model carry `model_group(name)`, which pytest-xdist (`--dist loadgroup`)
uses to run them in the same worker, where the shared passes are reused.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import pytest

import zoo
from zoo import registry

Overrides = tuple[tuple[str, Any], ...]

# The eval forward runs at 64x64 (or the model's minimum, if larger): small,
# and what the torchvision/timm parity tests use.
EVAL_SIZE = 64


def abstract_images(*dims: int) -> jax.ShapeDtypeStruct:
    """A float32 input of shape `dims` for `jax.eval_shape` (no data)."""
    return jax.ShapeDtypeStruct(dims, jnp.float32)


def outputs_of(names):
    """capture_intermediates filter: outputs of the submodules called `names`."""
    return lambda module, method: method == "__call__" and module.name in names


def model_group(name: str) -> pytest.MarkDecorator:
    """Runs every test of model `name` in one xdist worker (shared compiles)."""
    return pytest.mark.xdist_group(f"model-{name}")


def eval_overrides(name: str) -> Overrides:
    """Model fields of the shared eval pass: ViTs get position embeddings built
    for EVAL_SIZE, so nothing interpolates them (Zoo, torchvision and timm
    interpolate differently; interpolation has its own tests)."""
    return (("image_size", EVAL_SIZE),) if name.startswith("vit") else ()


def eval_size(name: str) -> int:
    """Input height and width of the shared eval pass."""
    model = zoo.create_model(name, **dict(eval_overrides(name)))
    if registry.get_entry(name).reference not in ("torchvision", "timm"):
        return model.min_input_size      # LeNet & co: fixed-size heads
    return max(EVAL_SIZE, model.min_input_size)


@functools.cache
def init_shapes_of(name: str, shape: tuple[int, ...], overrides: Overrides = ()) -> Any:
    """`registry.init_shapes` of `create_model(name, **overrides)`, once per process."""
    return registry.init_shapes(zoo.create_model(name, **dict(overrides)), shape)


@functools.cache
def eval_apply(name: str, overrides: Overrides = ()) -> Any:
    """jit((variables, images) -> float32 logits, train=False), once per process:
    one compile serves the registry contract and the parity tests."""
    model = zoo.create_model(name, **dict(overrides))
    return jax.jit(lambda variables, images: model.apply(variables, images, train=False))
