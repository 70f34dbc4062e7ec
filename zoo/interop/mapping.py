"""PyTorch state dict -> Zoo variables, for torchvision and timm checkpoints.

One generic mechanism serves every family: both sides are cut into "groups"
in definition order, and the two sequences are aligned.

- Torch side: a group is one module's tensors (`layer1.0.conv1.weight`, or
  `bn1.{weight,bias,running_mean,running_var}`), or one free parameter
  (`class_token`, `layer_scale`), in the state dict's order (PyTorch's
  definition order). `num_batches_tracked` is ignored.
- Zoo side: a group is one leaf module of the model's variables (Conv,
  Dense, BatchNorm with its `batch_stats`, LayerNorm), or one free
  parameter, in creation order (Flax keeps it: the order of the calls).
- Each torch group is converted to Zoo's layout (conv OIHW -> HWIO, Linear
  weights transposed, BatchNorm running_mean/var -> batch_stats mean/var,
  free parameters reshaped when only singleton dimensions differ) and the
  two sequences are aligned on (kind, shapes) with `difflib`. Any group that
  does not align is reported; every problem goes into one ValueError.

Where the two definition orders differ, a small per-family table (`Rename`,
`Move`, `Ignore`) fixes the torch side first: torchvision's ViT fused
`in_proj_weight`, its class token registered before the patch conv, the
layer scale ConvNeXt registers before its block, auxiliary heads that Zoo's
default models do not build. Concatenation orders (DenseNet, Inception),
PyTorch's (C, H, W) flatten order (AlexNet, VGG) and grouped / depthwise
kernels need no table: the Zoo models are written to match them, which the
parity tests check numerically.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from zoo.interop.key_order import in_reference_order, reference_key_order
from zoo.interop.state_dict import read_state_dict
from zoo.registry import create_model, get_entry

Kind = Literal["conv", "dense", "batchnorm", "norm", "raw"]
Source = Literal["torchvision", "timm"]
Shapes = tuple[tuple[str, tuple[int, ...]], ...]
MODULE_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
ZOO_MODULE_LEAVES = frozenset({"kernel", "bias", "scale"})


# ---------------------------------------------------------------- family tables


@dataclasses.dataclass(frozen=True)
class Rename:
    """Rewrite keys fully matching `pattern` to `replacement` (re.sub syntax)."""

    pattern: str
    replacement: str


@dataclasses.dataclass(frozen=True)
class Move:
    """Move each key fully matching `pattern` to just after the key `after`
    (a re template expanded with the match, e.g. r"\\1.block.5.bias")."""

    pattern: str
    after: str


@dataclasses.dataclass(frozen=True)
class Ignore:
    """Drop keys fully matching `pattern` (with the reason, for the docs)."""

    pattern: str
    reason: str


@dataclasses.dataclass(frozen=True)
class FamilyRules:
    """Fix-ups of one family's state dict before alignment, applied in order:
    ignores, renames, moves."""

    renames: tuple[Rename, ...] = ()
    moves: tuple[Move, ...] = ()
    ignores: tuple[Ignore, ...] = ()


_COUNTER = Ignore(r".*num_batches_tracked", "BatchNorm step counter, unused at inference")

TORCHVISION_RULES: dict[str, FamilyRules] = {
    "googlenet": FamilyRules(ignores=(Ignore(r"aux[12]\..*", "auxiliary heads (off in Zoo)"),)),
    "inception": FamilyRules(ignores=(Ignore(r"AuxLogits\..*", "auxiliary head (off in Zoo)"),)),
    "vit": FamilyRules(
        renames=(Rename(r"(.*)\.in_proj_(weight|bias)", r"\1.in_proj.\2"),),
        moves=(Move(r"class_token", "conv_proj.bias"),)),
    "convnext": FamilyRules(
        moves=(Move(r"(features\.\d+\.\d+)\.layer_scale", r"\1.block.5.bias"),)),
}

TIMM_RULES: dict[str, FamilyRules] = {
    "vit": FamilyRules(moves=(Move(r"cls_token", "patch_embed.proj.bias"),
                              Move(r"pos_embed", "cls_token"))),
    "convnext": FamilyRules(
        moves=(Move(r"(stages\.\d+\.blocks\.\d+)\.gamma", r"\1.mlp.fc2.bias"),)),
}


def apply_rules(keys: list[str], rules: FamilyRules) -> tuple[list[str], dict[str, str]]:
    """The torch keys after `rules` (and the generic ignores), in their new order.

    Returns (new keys in order, {new key: original key}).
    """
    ignores = (_COUNTER, *rules.ignores)
    kept = [k for k in keys if not any(re.fullmatch(i.pattern, k) for i in ignores)]
    original = {}
    for key in kept:
        new = key
        for rename in rules.renames:
            new = re.sub(f"^(?:{rename.pattern})$", rename.replacement, new)
        original[new] = key
    order = list(original)
    for move in rules.moves:
        for key in [k for k in order if re.fullmatch(move.pattern, k)]:
            anchor = re.fullmatch(move.pattern, key).expand(move.after)
            if anchor in order and anchor != key:
                order.remove(key)
                order.insert(order.index(anchor) + 1, key)
    return order, original


# ---------------------------------------------------------------------- groups


@dataclasses.dataclass(frozen=True)
class TorchGroup:
    """One torch module's tensors (suffix -> array) or one free parameter."""

    prefix: str
    tensors: dict[str, np.ndarray]
    keys: dict[str, str]  # suffix -> original state-dict key

    @property
    def kind(self) -> Kind:
        if "running_mean" in self.tensors or "running_var" in self.tensors:
            return "batchnorm"
        weight = self.tensors.get("weight")
        if weight is None:
            return "raw" if not set(self.tensors) & set(MODULE_SUFFIXES) else "norm"
        return {4: "conv", 2: "dense"}.get(weight.ndim, "norm")  # type: ignore[return-value]

    def converted(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(params, batch_stats) leaves in Zoo's names and layouts."""
        t, kind = self.tensors, self.kind
        params: dict[str, np.ndarray] = {}
        stats: dict[str, np.ndarray] = {}
        if kind == "raw":
            (value,) = t.values()
            return {"value": value}, {}
        if "weight" in t:
            weight = t["weight"]
            if kind == "conv":  # [out, in / groups, kh, kw] -> [kh, kw, in / groups, out]
                params["kernel"] = np.transpose(weight, (2, 3, 1, 0))
            elif kind == "dense":  # [out, in] -> [in, out]
                params["kernel"] = np.transpose(weight)
            else:
                params["scale"] = weight
        if "bias" in t:
            params["bias"] = t["bias"]
        for torch_name, zoo_name in (("running_mean", "mean"), ("running_var", "var")):
            if torch_name in t:
                stats[zoo_name] = t[torch_name]
        return params, stats

    def describe(self) -> str:
        return ", ".join(f"{self.keys[s]!r} {tuple(a.shape)}" for s, a in self.tensors.items())


@dataclasses.dataclass(frozen=True)
class ZooGroup:
    """One Zoo leaf module (or free parameter): its path and leaf shapes."""

    path: tuple[str, ...]
    params: dict[str, tuple[int, ...]]
    stats: dict[str, tuple[int, ...]]

    @property
    def kind(self) -> Kind:
        if not set(self.params) <= ZOO_MODULE_LEAVES:
            return "raw"
        if "kernel" in self.params:
            return "conv" if len(self.params["kernel"]) == 4 else "dense"
        return "batchnorm" if self.stats else "norm"

    def describe(self) -> str:
        leaves = {**self.params, **self.stats}
        return "/".join(self.path) + " (" + ", ".join(f"{k} {v}" for k, v in leaves.items()) + ")"


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def signature(kind: Kind, params: Mapping[str, tuple[int, ...]],
              stats: Mapping[str, tuple[int, ...]]) -> tuple[Any, ...]:
    """What must agree for a torch group to fill a Zoo group."""
    if kind == "raw":
        (shape,) = params.values()
        return ("raw", _squeezed(shape))
    leaves = {**params, **stats}
    return (kind, tuple(sorted((k, tuple(v)) for k, v in leaves.items())))


def torch_groups(state_dict: Mapping[str, np.ndarray], rules: FamilyRules) -> list[TorchGroup]:
    """Consecutive keys of one module form a group; free parameters stand alone."""
    order, original = apply_rules(list(state_dict), rules)
    groups: list[TorchGroup] = []
    for key in order:
        prefix, _, suffix = key.rpartition(".")
        value = state_dict[original[key]]
        is_module_leaf = suffix in MODULE_SUFFIXES
        last = groups[-1] if groups else None
        if (is_module_leaf and last is not None and last.prefix == prefix
                and last.kind != "raw" and suffix not in last.tensors):
            last.tensors[suffix] = value
            last.keys[suffix] = original[key]
        else:
            groups.append(TorchGroup(prefix if is_module_leaf else key, {suffix: value},
                                     {suffix: original[key]}))
    return groups


def zoo_groups(params: Mapping[str, Any], stats: Mapping[str, Any],
               path: tuple[str, ...] = ()) -> Iterator[ZooGroup]:
    """Leaf modules and free parameters of Zoo variables, in creation order."""
    leaves = {k: v for k, v in params.items() if not isinstance(v, Mapping)}
    if leaves and len(leaves) == len(params) and set(leaves) <= ZOO_MODULE_LEAVES:
        yield ZooGroup(path, {k: tuple(v.shape) for k, v in leaves.items()},
                       {k: tuple(v.shape) for k, v in stats.items()})
        return
    for name, value in params.items():
        if isinstance(value, Mapping):
            yield from zoo_groups(value, stats.get(name, {}), (*path, name))
        else:
            yield ZooGroup((*path, name), {name: tuple(value.shape)}, {})


# ------------------------------------------------------------------- alignment


def _pair_problems(torch_group: TorchGroup, zoo_group: ZooGroup) -> list[str]:
    """Why `torch_group` cannot fill `zoo_group` (kinds or shapes differ)."""
    if torch_group.kind != zoo_group.kind:
        return [f"wrong kind: {torch_group.describe()} is a {torch_group.kind} but "
                f"{zoo_group.describe()} is a {zoo_group.kind}"]
    params, stats = torch_group.converted()
    got = {**params, **stats}
    want = {**zoo_group.params, **zoo_group.stats}
    if zoo_group.kind == "raw":
        (value,), (shape,) = got.values(), want.values()
        return [f"wrong shape: {torch_group.describe()} for {zoo_group.describe()}"] \
            if _squeezed(value.shape) != _squeezed(shape) else []
    problems = []
    inverse = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}
    for name in want.keys() - got.keys():
        problems.append(f"missing: {torch_group.prefix}.{inverse[name]} for "
                        f"{'/'.join(zoo_group.path)}/{name} {want[name]}")
    for name in got.keys() - want.keys():
        problems.append(f"unexpected: {torch_group.keys[inverse[name]]!r} "
                        f"(no {name} in {'/'.join(zoo_group.path)})")
    for name in got.keys() & want.keys():
        if tuple(got[name].shape) != tuple(want[name]):
            key = torch_group.keys[inverse[name]]
            problems.append(
                f"wrong shape: {key!r} {tuple(torch_group.tensors[inverse[name]].shape)} -> "
                f"{'/'.join(zoo_group.path)}/{name} expects {want[name]} "
                f"(got {tuple(got[name].shape)} after the layout change)")
    return problems


def align(torch_side: list[TorchGroup], zoo_side: list[ZooGroup]) -> tuple[
        list[tuple[TorchGroup, ZooGroup]], list[str]]:
    """Pairs torch groups with Zoo groups in order; returns (pairs, problems)."""
    a = [signature(g.kind, {k: v.shape for k, v in g.converted()[0].items()},
                   {k: v.shape for k, v in g.converted()[1].items()}) for g in torch_side]
    b = [signature(g.kind, g.params, g.stats) for g in zoo_side]
    pairs, problems = [], []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs.extend(zip(torch_side[i1:i2], zoo_side[j1:j2]))
            continue
        common = min(i2 - i1, j2 - j1)
        for t, z in zip(torch_side[i1:i1 + common], zoo_side[j1:j1 + common]):
            problems.extend(_pair_problems(t, z))
        for t in torch_side[i1 + common:i2]:
            problems.append(f"unexpected: {t.describe()}")
        for z in zoo_side[j1 + common:j2]:
            after = torch_side[i1 - 1].prefix if i1 > 0 else "the start"
            problems.append(f"missing: {z.kind} for {z.describe()} (expected after {after!r})")
    return pairs, problems


# --------------------------------------------------------------------- loading


def zoo_variable_shapes(model: Any) -> dict[str, Any]:
    """Variables of `model` as ShapeDtypeStructs, dicts in creation order."""
    captured: list[Any] = []
    size = model.min_input_size
    x = jax.ShapeDtypeStruct((1, size, size, model.in_channels), jnp.float32)

    def init(key: jax.Array, images: jax.Array) -> Any:
        variables = model.init(key, images, train=False)
        captured.append(_key_order(variables))
        return variables

    shapes = jax.eval_shape(init, jax.random.key(0), x)
    # eval_shape's outputs come back with sorted dict keys; rebuild creation order.
    return _reorder_like(captured[0], shapes)


def _key_order(tree: Any) -> Any:
    """The nested dict structure of `tree` with None leaves, keys in insertion order."""
    if isinstance(tree, Mapping):
        return {k: _key_order(v) for k, v in tree.items()}
    return None


def _reorder_like(ordered: Any, values: Any) -> Any:
    if isinstance(ordered, Mapping):
        return {k: _reorder_like(ordered[k], values[k]) for k in ordered}
    return values


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def load_state_dict(source: Source, name: str,
                    weights: str | os.PathLike | Mapping[str, Any], *,
                    num_classes: int | None = None, **overrides: Any) -> dict[str, Any]:
    """Converts a torchvision / timm state dict to variables of Zoo's `name`.

    Args:
      source: "torchvision" or "timm" (picks the family fix-up tables).
      name: registered Zoo model name, e.g. "resnet50".
      weights: a .pth file or an in-memory state dict (both keep PyTorch's
        definition order), or a .safetensors file (sorted by name: the order
        is recovered from the reference architecture, which needs torch).
      num_classes: classifier size of the checkpoint (default: the registry's).
      **overrides: module fields of the Zoo model the weights belong to
        (e.g. image_size=64 for a ViT built at 64x64).

    Returns:
      {"params": ..., "batch_stats": ...} (batch_stats only for models with
      BatchNorm) of float32 numpy arrays, ready for `model.apply`.

    Raises:
      ValueError: listing every missing, unexpected and mis-shaped tensor.
    """
    tables = {"torchvision": TORCHVISION_RULES, "timm": TIMM_RULES}
    if source not in tables:
        raise ValueError(f"source must be 'torchvision' or 'timm', got {source!r}")
    entry = get_entry(name)
    state_dict = read_state_dict(weights)
    if isinstance(weights, (str, os.PathLike)) and str(weights).endswith(".safetensors"):
        state_dict = in_reference_order(state_dict, reference_key_order(source, name))
    model = create_model(name, num_classes=num_classes, **overrides)
    shapes = zoo_variable_shapes(model)
    rules = tables[source].get(entry.family, FamilyRules())
    zoo_side = list(zoo_groups(shapes["params"], shapes.get("batch_stats", {})))
    pairs, problems = align(torch_groups(state_dict, rules), zoo_side)
    if problems:
        hint = ""
        if any("head" in p or "fc" in p or "classifier" in p for p in problems):
            hint = "\n(a classifier of another size? pass num_classes=... to convert it as is)"
        raise ValueError(
            f"cannot load these {source} weights into Zoo's {name!r}: {len(problems)} "
            f"problem(s):\n  " + "\n  ".join(problems) + hint)
    variables: dict[str, Any] = {"params": {}}
    if "batch_stats" in shapes:
        variables["batch_stats"] = {}
    for torch_group, zoo_group in pairs:
        params, stats = torch_group.converted()
        if zoo_group.kind == "raw":
            (shape,) = zoo_group.params.values()
            params = {zoo_group.path[-1]: params["value"].reshape(shape)}
            _set(variables["params"], zoo_group.path, params[zoo_group.path[-1]])
            continue
        for leaf, value in params.items():
            _set(variables["params"], (*zoo_group.path, leaf), value.astype(np.float32))
        for leaf, value in stats.items():
            _set(variables["batch_stats"], (*zoo_group.path, leaf), value.astype(np.float32))
    return variables


def load_torchvision(name: str, weights: str | os.PathLike | Mapping[str, Any], *,
                     num_classes: int | None = None, **overrides: Any) -> dict[str, Any]:
    """torchvision state dict (file or dict) -> Zoo variables of `name`; see
    `load_state_dict`."""
    return load_state_dict("torchvision", name, weights, num_classes=num_classes, **overrides)


def load_timm(name: str, weights: str | os.PathLike | Mapping[str, Any], *,
              num_classes: int | None = None, **overrides: Any) -> dict[str, Any]:
    """timm state dict (file or dict) -> Zoo variables of `name`; see `load_state_dict`."""
    return load_state_dict("timm", name, weights, num_classes=num_classes, **overrides)
