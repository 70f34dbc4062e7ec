"""Converted weights on disk, and starting a training run from them.

A converted-weights directory (written by `zoo convert`) holds:

    <dir>/variables/     Orbax checkpoint of {"params", "batch_stats"}
    <dir>/zoo_weights.json   model, num_classes, overrides, source, file, sha256

`merge_pretrained` puts those variables into a freshly initialised model
whose classifier may have another size: every tensor of the same shape is
taken from the checkpoint, the ones whose shape differs (the head) keep their
fresh initialisation and are reported. `trainable_mask` marks what stays
trainable when the backbone is frozen.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

VARIABLES_DIR = "variables"
METADATA_FILE = "zoo_weights.json"


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any],
                   metadata: Mapping[str, Any]) -> Path:
    """Writes `variables` ({"params", "batch_stats"}) and `metadata` to `directory`.

    Refuses a directory that already holds converted weights (nothing is
    overwritten).
    """
    out = Path(directory).absolute()
    if (out / VARIABLES_DIR).exists() or (out / METADATA_FILE).exists():
        raise ValueError(f"{str(out)!r} already holds converted weights; pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    tree = {key: jax.tree.map(np.asarray, dict(value)) for key, value in variables.items()}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / VARIABLES_DIR, tree)
    (out / METADATA_FILE).write_text(json.dumps(dict(metadata), indent=2) + "\n")
    return out


def load_variables(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(variables, metadata) of a directory written by `save_variables`."""
    path = Path(directory).absolute()
    if not (path / VARIABLES_DIR).is_dir() or not (path / METADATA_FILE).is_file():
        raise ValueError(f"{str(path)!r} is not a converted-weights directory (expected "
                         f"{VARIABLES_DIR}/ and {METADATA_FILE}; write one with `zoo convert`)")
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(path / VARIABLES_DIR)
    metadata = json.loads((path / METADATA_FILE).read_text())
    return dict(variables), metadata


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def _unflatten_like(template: Mapping[str, Any], flat: dict[tuple[str, ...], Any],
                    prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    return {key: _unflatten_like(value, flat, (*prefix, key)) if isinstance(value, Mapping)
            else flat[(*prefix, key)] for key, value in template.items()}


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def merge_pretrained(init_variables: Mapping[str, Any], pretrained: Mapping[str, Any]
                     ) -> tuple[dict[str, Any], list[str]]:
    """Fresh variables with every same-shaped tensor replaced by the pretrained one.

    Also works on `jax.ShapeDtypeStruct` trees (e.g. from `jax.eval_shape`), to
    learn which tensors will be re-initialised before building an optimizer
    that freezes the others.

    Args:
      init_variables: a freshly initialised model's {"params", "batch_stats"}.
      pretrained: converted variables of the same architecture (any head size).

    Returns:
      (merged variables with init_variables' structure, sorted "collection/path"
      of the tensors kept from the fresh init because their shape differs).

    Raises:
      ValueError: when the trees differ in anything but shapes (another model),
        listing the paths present on one side only.
    """
    fresh = _flatten(init_variables)
    loaded = _flatten(pretrained)
    only_fresh = sorted("/".join(p) for p in fresh.keys() - loaded.keys())
    only_loaded = sorted("/".join(p) for p in loaded.keys() - fresh.keys())
    if only_fresh or only_loaded:
        raise ValueError(
            "the pretrained variables belong to another architecture: "
            f"{len(only_fresh)} tensor(s) missing from them {only_fresh[:20]}, "
            f"{len(only_loaded)} unexpected {only_loaded[:20]}")
    merged, reinitialised = {}, []
    for path, value in fresh.items():
        source = loaded[path]
        if _shape(source) == _shape(value):
            merged[path] = source if isinstance(source, jax.ShapeDtypeStruct) else \
                np.asarray(source, dtype=value.dtype)
        else:
            merged[path] = value
            reinitialised.append("/".join(path))
    return _unflatten_like(init_variables, merged), sorted(reinitialised)


def trainable_mask(params: Mapping[str, Any], trainable: list[str]) -> dict[str, Any]:
    """A params-shaped tree of bools: True for the leaves named in `trainable`
    ("params/head/kernel" or "head/kernel"), False for the frozen backbone.
    Use with `optax.multi_transform` / `optax.masked`."""
    names = {path.removeprefix("params/") for path in trainable}
    flat = {path: "/".join(path) in names for path in _flatten(params)}
    return _unflatten_like(params, flat)
