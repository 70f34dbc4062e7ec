"""Folding inference-mode BatchNorm into the convolution before it.

At inference a BatchNorm is an affine map per channel,
`y * s + (beta - mean * s)` with `s = gamma / sqrt(var + eps)`. When it
directly follows a convolution (Zoo's `ConvBNAct` and Inception's factorised
convs: sibling submodules `conv` and `bn`), `s` is multiplied into the
convolution kernel (its output-channel axis) and only the shift is left:
the exported graph is conv -> add. A BatchNorm that follows something else
(DenseNet's pre-activation `norm1`, `norm5`) becomes the affine map with its
statistics pre-combined (multiply-add, no rsqrt).

Folded params keep the model's tree; each BatchNorm's params become
{"bias": shift} (folded into a conv) or {"scale": s, "bias": shift}, and
there are no `batch_stats`. `folded_apply` runs the unchanged Flax model with
a method interceptor that replaces every BatchNorm call by that map.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Path = tuple[str, ...]


@contextlib.contextmanager
def _batch_norm_interceptor(on_call: Any) -> Iterator[None]:
    def interceptor(next_fun: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                    context: nn.module.InterceptorContext) -> Any:
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            return on_call(next_fun, args, kwargs, context.module)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield


def batch_norm_epsilons(model: nn.Module, variables: Mapping[str, Any]) -> dict[Path, float]:
    """{path of every BatchNorm in `model`: its epsilon}, found by tracing one
    abstract forward pass (no compute)."""
    found: dict[Path, float] = {}

    def record(next_fun: Any, args: tuple, kwargs: dict, module: nn.BatchNorm) -> Any:
        found[tuple(module.path)] = float(module.epsilon)
        return next_fun(*args, **kwargs)

    size = model.min_input_size
    x = jax.ShapeDtypeStruct((1, size, size, model.in_channels), jnp.float32)
    with _batch_norm_interceptor(record):
        jax.eval_shape(lambda v, images: model.apply(v, images, train=False), variables, x)
    return found


def _get(tree: Mapping[str, Any], path: Path) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def _set(tree: dict[str, Any], path: Path, value: Any) -> None:
    for name in path[:-1]:
        tree = tree[name]
    tree[path[-1]] = value


def _copy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _copy(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)


def fold_batch_norm(model: nn.Module, variables: Mapping[str, Any]) -> dict[str, Any]:
    """Folds every BatchNorm of `variables` ({"params", "batch_stats"}).

    Returns:
      {"params": folded params} (float32 numpy): kernels of convolutions
      followed by a BatchNorm are scaled per output channel; BatchNorm params
      become {"bias"} (folded) or {"scale", "bias"} (standalone affine).
      Use with `folded_apply`. Models without BatchNorm come back unchanged.
    """
    params = _copy(variables["params"])
    stats = variables.get("batch_stats", {})
    for path, epsilon in batch_norm_epsilons(model, variables).items():
        bn = _get(variables["params"], path)
        bn_stats = _get(stats, path)
        scale = np.asarray(bn["scale"], np.float64) / np.sqrt(
            np.asarray(bn_stats["var"], np.float64) + epsilon)
        shift = np.asarray(bn["bias"], np.float64) - np.asarray(bn_stats["mean"]) * scale
        parent = _get(params, path[:-1])
        conv = parent.get("conv") if path[-1] == "bn" else None
        if conv is not None and "kernel" in conv and conv["kernel"].shape[-1] == scale.shape[0]:
            # HWIO kernel: the output channel is the last axis.
            conv["kernel"] = (conv["kernel"] * scale).astype(np.float32)
            if "bias" in conv:  # VGG's convs keep a bias before the BatchNorm
                conv["bias"] = (conv["bias"] * scale).astype(np.float32)
            _set(params, path, {"bias": shift.astype(np.float32)})
        else:
            _set(params, path, {"scale": scale.astype(np.float32),
                                "bias": shift.astype(np.float32)})
    return {"params": params}


def _apply_folded(next_fun: Any, args: tuple, kwargs: dict, module: nn.BatchNorm) -> jax.Array:
    x = args[0]
    if module.has_variable("params", "scale"):
        x = x * module.get_variable("params", "scale").astype(x.dtype)
    return x + module.get_variable("params", "bias").astype(x.dtype)


def folded_apply(model: nn.Module, folded: Mapping[str, Any], images: jax.Array) -> jax.Array:
    """Inference with folded variables: images [batch, height, width, channels]
    -> logits [batch, num_classes] (float32), equal to
    `model.apply(variables, images, train=False)` up to rounding."""
    with _batch_norm_interceptor(_apply_folded):
        return model.apply(folded, images, train=False)
