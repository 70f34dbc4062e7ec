"""Reading XLA's compiled HLO text in tests."""

from __future__ import annotations

import re


def ynn_fused_convolutions(hlo_text: str) -> int:
    """Convolutions inside YNNPACK fusions of a compiled module's `as_text()`.

    A YNNPACK fusion is a `fusion(...)` with backend kind "__ynn_fusion" whose
    `calls=` names the computation holding its ops; computations start at
    column 0 ("%name (" or "ENTRY").
    """
    called = set(re.findall(r'calls=(%[\w.\-]+)[^\n]*"kind":"__ynn_fusion"', hlo_text))
    return sum(block.count(" convolution(")
               for block in re.split(r"\n(?=%|ENTRY)", hlo_text)
               if block.split(" ", 1)[0] in called)


def multi_output_loop_fusion_operands(hlo_text: str) -> list[str]:
    """The operand lists ("%a, %b, ...") of a compiled module's XLA loop
    fusions with a tuple result (variadic reductions among them), in order."""
    return re.findall(r"= \(f32\[[^=]*\) fusion\(([^)]*)\), kind=kLoop", hlo_text)
