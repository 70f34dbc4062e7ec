"""Where a step's time goes: a `jax.profiler` trace of a few steps, and its ops.

`zoo bench --profile-steps N` runs N more steps of each configuration after
the timed ones, inside `jax.profiler.trace`, and writes beside the reports

    profiles/<configuration>/plugins/profile/<run>/...   the trace (XProf /
        TensorBoard's profile plugin; perfetto_trace.json.gz opens in
        https://ui.perfetto.dev)
    profiles/<configuration>/ops.md                      the events that took
        the most time, per step, with the model layer XLA's op came from

The steps run after timing, so the trace never slows the measured ones. The
table sums every complete event of the trace by name: on CPU those are XLA's
thunks (one per fused op, "ynn_fusion.72", "add_divide_fusion") and the
executor's own events around them; on GPU, kernels and the host's launches.
Events nest (an executor event holds the ops it ran) and XLA's CPU runtime
runs independent ops side by side on its threads, so the times are not
additive and an op's time includes waiting for a core: read the table for
which ops to look at, and measure a change by whole steps
(benchmarks/NOTES.md, entries 17 and 22).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax

# Events of JAX's Python tracer ("$api.py:2479 block_until_ready") are not ops.
PYTHON_EVENT_PREFIX = "$"


class OpTime(NamedTuple):
    """One event name of a trace, summed over the profiled steps.

    name: the event's name (on CPU, the HLO instruction of the thunk).
    ms_per_step: its total duration divided by the number of steps.
    calls_per_step: how many times it ran, divided by the number of steps.
    source: the `op_name` metadata XLA kept for the instruction (the model
      layer and JAX op it came from), "" where the name is no instruction.
    """

    name: str
    ms_per_step: float
    calls_per_step: float
    source: str


def trace_steps(step: Callable[[Any], Any], inputs: Sequence[Any], steps: int,
                out_dir: Path) -> Path:
    """Runs `steps` steps (inputs in turn, each blocked on) inside a
    `jax.profiler` trace written to `out_dir`; returns its Perfetto trace file."""
    if steps < 1:
        raise ValueError(f"trace_steps needs at least 1 step, got {steps}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(out_dir), create_perfetto_trace=True):
        for i in range(steps):
            jax.block_until_ready(step(inputs[i % len(inputs)]))
    traces = sorted(out_dir.glob("plugins/profile/*/perfetto_trace.json.gz"),
                    key=lambda path: path.stat().st_mtime)
    if not traces:
        raise RuntimeError(f"jax.profiler wrote no perfetto_trace.json.gz under {out_dir}")
    return traces[-1]


def op_sources(hlo_text: str) -> dict[str, str]:
    """Instruction name -> its `op_name` metadata, from a compiled module's text."""
    return dict(re.findall(r'^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?op_name="([^"]*)"',
                           hlo_text, flags=re.MULTILINE))


def op_times(trace_path: Path, steps: int, sources: dict[str, str] | None = None
             ) -> list[OpTime]:
    """Every complete event's name in a Perfetto trace (JSON, gzipped or not),
    its time and calls per step, longest first; JAX's Python events left out."""
    opener = gzip.open if trace_path.suffix == ".gz" else open
    with opener(trace_path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total_us: dict[str, float] = {}
    calls: dict[str, int] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or "dur" not in event or name.startswith(PYTHON_EVENT_PREFIX):
            continue
        total_us[name] = total_us.get(name, 0.0) + float(event["dur"])
        calls[name] = calls.get(name, 0) + 1
    sources = sources or {}
    return sorted((OpTime(name, us / 1e3 / steps, calls[name] / steps, sources.get(name, ""))
                   for name, us in total_us.items()),
                  key=lambda op: op.ms_per_step, reverse=True)


def ops_markdown(ops: Sequence[OpTime], *, title: str, step_ms: float | None,
                 top: int = 40) -> str:
    """A Markdown table of the `top` longest events."""
    lines = [f"# {title}", ""]
    if step_ms is not None:
        lines += [f"Median timed step: {step_ms:.2f} ms. Events nest and run side by side "
                  "on several threads: their times do not add up to the step (see "
                  "zoo/bench/profile.py).", ""]
    lines += ["| ms / step | calls / step | event | from |", "|---|---|---|---|"]
    for op in ops[:top]:
        lines.append(f"| {op.ms_per_step:.3f} | {op.calls_per_step:g} | `{op.name}` | "
                     f"{op.source.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def profile_directory_name(label: str) -> str:
    """A folder name for a configuration's label ("resnet50 infer float32 b8 ...")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")
