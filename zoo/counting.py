"""Counting parameters and multiply-accumulates (MACs) from the code itself.

MACs are counted the way fvcore / ptflops / timm's tables do: one MAC per
multiply-add of a convolution or matrix product (`conv_general_dilated`,
`dot_general`); element-wise ops, pooling and normalisation are not counted.
The count walks the jaxpr of the traced function, so no FLOP is executed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jex_core


def count_params(tree: Any) -> int:
    """Total number of scalars in a pytree of arrays or `ShapeDtypeStruct`s."""
    return sum(int(math.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _conv_macs(eqn: Any) -> int:
    out = eqn.outvars[0].aval.shape
    kernel = eqn.invars[1].aval.shape
    out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    # Each output element needs (kernel size / output features) MACs: the
    # receptive field over the input channels of its group. With the input
    # dilated (the input gradient of a strided conv), only one window tap in
    # prod(lhs_dilation) lands on an input pixel; the rest multiply inserted
    # zeros, which are not counted (so the gradient costs what the conv does).
    dilation = math.prod(eqn.params.get("lhs_dilation") or (1,))
    return int(math.prod(out) * math.prod(kernel) // kernel[out_feature_dim] // dilation)


def _dot_macs(eqn: Any) -> int:
    lhs = eqn.invars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return int(math.prod(lhs) * math.prod(rhs_free))


def _sub_jaxprs(value: Any) -> list[Any]:
    if isinstance(value, jex_core.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jex_core.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def _cond_macs(eqn: Any) -> int:
    branches = eqn.params["branches"]
    platforms = eqn.params.get("branches_platforms")
    if platforms is not None and None in platforms:
        # `lax.platform_dependent`: every branch computes the same function, and
        # the default one is the model's own arithmetic; a platform's branch
        # may multiply zeros on purpose (zoo.layers.cpu_conv.supergroup_conv)
        # or not use products at all (shifted depthwise multiply-adds).
        return _jaxpr_macs(branches[platforms.index(None)].jaxpr)
    # Only one branch runs: count the most expensive one.
    return max(_jaxpr_macs(b.jaxpr) for b in branches)


def _jaxpr_macs(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "dot_general":
            total += _dot_macs(eqn)
        elif name == "cond":
            total += _cond_macs(eqn)
        else:
            inner = sum(_jaxpr_macs(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total


def count_macs(fn: Callable[..., Any], *args: Any) -> int:
    """MACs of one call `fn(*args)`; args may be arrays or `ShapeDtypeStruct`s."""
    # A jitted function is traced through its own `trace`: one jitted with
    # compiler options (the engine's steps) may not be nested in make_jaxpr.
    trace = getattr(fn, "trace", None)
    closed = trace(*args).jaxpr if trace is not None else jax.make_jaxpr(fn)(*args)
    return _jaxpr_macs(closed.jaxpr)

