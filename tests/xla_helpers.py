"""Reading XLA's compiled HLO text in tests."""

from __future__ import annotations

import re


def ynn_fusion_bodies(hlo_text: str) -> list[str]:
    """The computations that YNNPACK fusions call, as text, from a compiled
    module's `as_text()`.

    A YNNPACK fusion is a `fusion(...)` with backend kind "__ynn_fusion" whose
    `calls=` names the computation holding its ops; computations start at
    column 0 ("%name (" or "ENTRY").
    """
    called = set(re.findall(r'calls=(%[\w.\-]+)[^\n]*"kind":"__ynn_fusion"', hlo_text))
    return [block for block in re.split(r"\n(?=%|ENTRY)", hlo_text)
            if block.split(" ", 1)[0] in called]


def ynn_fused_convolutions(hlo_text: str) -> int:
    """Convolutions inside YNNPACK fusions of a compiled module's `as_text()`."""
    return sum(body.count(" convolution(") for body in ynn_fusion_bodies(hlo_text))


def multi_output_loop_fusion_operands(hlo_text: str) -> list[str]:
    """The operand lists ("%a, %b, ...") of a compiled module's XLA loop
    fusions with a tuple result (variadic reductions among them), in order."""
    return re.findall(r"= \(f32\[[^=]*\) fusion\(([^)]*)\), kind=kLoop", hlo_text)


# Collectives that move activations between devices: a data-parallel step whose
# batch is sharded should need none of them (an all-reduce of gradients is fine).
GATHERING_COLLECTIVES = ("all-gather", "collective-permute", "all-to-all")


def batch_and_replicated_shardings():
    """Over a one-axis mesh "batch" of every device: (batch-sharded, replicated)
    `NamedSharding`s, for lowering a data-parallel step without running it."""
    import jax
    import numpy as np

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")),
            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def dot_operand_types(hlo_text: str) -> list[tuple[str, ...]]:
    """The element types of every `dot`'s operands in a compiled module's
    `as_text()`, fused or not, e.g. [("bf16", "bf16"), ("f32", "f32")].

    Instruction names are unique in a module, so each operand's type is read
    from the line that defines it (a fusion body's parameter, for a fused dot).
    """
    types = dict(re.findall(r"^\s*(?:ROOT )?(%[\w.\-]+) = (\w+)\[", hlo_text, flags=re.MULTILINE))
    return [tuple(types.get(name, "?") for name in re.findall(r"%[\w.\-]+", operands))
            for operands in re.findall(r" dot\(([^)]*)\)", hlo_text)]


# A `stablehlo.convolution` / `stablehlo.dot_general` line of lowered (not
# compiled) StableHLO text ends with its signature
# "(tensor<2x7x7x64xbf16>, tensor<3x3x64x64xbf16>) -> ...".
_STABLEHLO_OPERAND_TYPES = re.compile(r":\s*\(tensor<[\dx]*(\w+)>, tensor<[\dx]*(\w+)>\)")


def stablehlo_operand_types(mlir: str, op: str) -> list[tuple[str, str]]:
    """The element types of the two operands of every `stablehlo.<op>` in
    lowered StableHLO text (`lowered.as_text()`, `exported.mlir_module()`),
    e.g. [("bf16", "bf16")]."""
    types, op_name = [], re.compile(rf"stablehlo\.{op}\b")
    for line in mlir.splitlines():
        if op_name.search(line):
            match = _STABLEHLO_OPERAND_TYPES.search(line)
            assert match, f"unparsed {op}: {line.strip()[:200]}"
            types.append(match.groups())
    return types
