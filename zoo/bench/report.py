"""Result rows and the reports written from them: JSON lines, CSV, Markdown.

Every row, measured or failed, has exactly the keys of `ROW_SCHEMA`; a value
that was not measured (a failed run, MFU without a known peak, device memory
on CPU) is None, never a guess.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.bench.runner import BenchConfig

# (key, allowed types, meaning). The order is the CSV column order.
ROW_SCHEMA: tuple[tuple[str, tuple[type, ...], str], ...] = (
    ("model", (str,), "registered model name"),
    ("mode", (str,), "infer (forward, train=False) | train (engine step: fwd+bwd+update)"),
    ("dtype", (str,), "computation dtype; parameters are float32"),
    ("parallel", (str,), "single | jit (batch sharded over all devices) | pmap"),
    ("batch_size", (int,), "global batch that was measured"),
    ("requested_batch_size", (int,), "batch asked for (differs after --auto-batch)"),
    ("image_size", (int,), "square input resolution, pixels"),
    ("status", (str,), "ok | oom | error"),
    ("error", (str, type(None)), "first line of the error, for oom/error rows"),
    ("warmup_steps", (int,), "untimed steps after compilation (more than asked while the heap grew)"),
    ("timed_steps", (int,), "timed steps"),
    ("num_devices_used", (int,), "devices the step ran on"),
    ("params", (int, type(None)), "trainable parameters (batch statistics not counted)"),
    ("macs_per_image", (int, type(None)), "multiply-accumulates of one forward, counted from the jaxpr"),
    ("flops_per_image", (float, type(None)), "model FLOPs of one step per image: 2 x MACs of the step's jaxpr (train: fwd+bwd+update)"),
    ("xla_flops_per_image", (float, type(None)), "XLA cost-analysis FLOPs of one step per image (incl. element-wise ops)"),
    ("lower_s", (float, type(None)), "seconds to trace and lower to StableHLO"),
    ("compile_s", (float, type(None)), "seconds for XLA to compile"),
    ("step_ms_mean", (float, type(None)), "mean step time, ms"),
    ("step_ms_std", (float, type(None)), "sample std of step time, ms"),
    ("step_ms_p50", (float, type(None)), "median step time, ms"),
    ("step_ms_p90", (float, type(None)), "90th percentile step time, ms"),
    ("step_ms_p99", (float, type(None)), "99th percentile step time, ms"),
    ("step_ms_min", (float, type(None)), "fastest step, ms"),
    ("step_ms_max", (float, type(None)), "slowest step, ms"),
    ("images_per_s", (float, type(None)), "batch / mean step time"),
    ("achieved_tflops", (float, type(None)), "model FLOPs of a step (all devices) / mean step time"),
    ("xla_tflops", (float, type(None)), "XLA FLOPs of a step (all devices) / mean step time"),
    ("peak_tflops_per_device", (float, type(None)), "dense peak used for MFU (table or --peak-tflops)"),
    ("mfu", (float, type(None)), "achieved / (peak x devices); None where the peak is unknown"),
    ("host_page_faults", (int, type(None)), "process page faults in the timed steps (fresh host memory)"),
    ("host_context_switches", (int, type(None)), "process context switches in the timed steps (threads that blocked and were woken, or were preempted)"),
    ("device_peak_bytes", (int, type(None)), "backend peak_bytes_in_use, process high-water mark; None on CPU"),
    ("compiled_total_bytes", (int, type(None)), "XLA memory_analysis per device: args + outputs - aliased + temps + code"),
    ("compiled_temp_bytes", (int, type(None)), "XLA memory_analysis per device: temporaries (activations)"),
    ("compiled_argument_bytes", (int, type(None)), "XLA memory_analysis per device: arguments (params, state, batch)"),
    ("optimizer", (str,), "train mode's optax recipe"),
    ("matmul_precision", (str,), "JAX's default matmul precision the step was lowered with: float32 products' arithmetic ('default': XLA's, TF32 on NVIDIA Ampere+)"),
    ("backend", (str,), "jax.default_backend()"),
    ("device_kind", (str,), "jax.devices()[0].device_kind"),
    ("num_devices", (int,), "jax.device_count()"),
    ("jax_version", (str,), ""),
    ("jaxlib_version", (str, type(None)), ""),
    ("flax_version", (str, type(None)), ""),
    ("optax_version", (str, type(None)), ""),
    ("python_version", (str,), ""),
    ("xla_flags", (str,), "XLA_FLAGS at run time"),
    ("compiler_options", (str, type(None)), "XLA options the step compiled with, key=value,... ('' = XLA's defaults; zoo.runtime.compiler_options)"),
    ("compilation_cache", (bool,), "JAX persistent compilation cache on (compile_s may be a cache read)"),
    ("host_malloc", (str,), "'kept' under zoo.runtime.keep_freed_host_memory, else 'system'"),
    ("host_cpu", (str,), "host CPU model (x86: with family/model numbers)"),
    ("host_cpu_vector", (str, type(None)), "widest vector extension of the host CPU (avx512f, avx2, asimd, ...)"),
    ("host_cpu_cores", (int,), "host cores this process may run on"),
    ("profile", (str, type(None)), "folder of the --profile-steps trace and ops.md, relative to the reports; None without"),
    ("step_ms_samples", (list,), "every timed step, ms (JSON lines only; not in CSV)"),
)
ROW_KEYS: tuple[str, ...] = tuple(key for key, _, _ in ROW_SCHEMA)
CSV_KEYS: tuple[str, ...] = tuple(key for key in ROW_KEYS if key != "step_ms_samples")


def matmul_precision_of(config: BenchConfig) -> str:
    """The matmul precision `config` lowers with: its own, else the process's."""
    import jax

    return str(config.matmul_precision or jax.config.jax_default_matmul_precision or "default")


def empty_row(config: BenchConfig, env: dict[str, Any]) -> dict[str, Any]:
    """A row for `config` with every measured value None (status "error")."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(
        model=config.model, mode=config.mode, dtype=config.dtype, parallel=config.parallel,
        batch_size=config.batch_size, requested_batch_size=config.batch_size,
        image_size=config.image_size, status="error", warmup_steps=config.warmup,
        timed_steps=config.steps, num_devices_used=0, optimizer=config.optimizer,
        matmul_precision=matmul_precision_of(config), step_ms_samples=[],
    )
    row.update({key: env[key] for key in env if key in row})
    return row


def check_row(row: dict[str, Any]) -> None:
    """Raises ValueError if `row` does not have exactly the schema's keys and types."""
    if set(row) != set(ROW_KEYS):
        raise ValueError(f"row keys differ from the schema: missing "
                         f"{sorted(set(ROW_KEYS) - set(row))}, extra {sorted(set(row) - set(ROW_KEYS))}")
    for key, types, _ in ROW_SCHEMA:
        value = row[key]
        # bool is an int subclass; a bool where a number belongs is a bug.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ValueError(f"row[{key!r}] = {value!r} is not of type {types}")


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row, allow_nan=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_KEYS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_KEYS})


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 2**20:
        return f"{value / 2**10:.0f} KiB"
    return f"{value / 2**20:.0f} MiB" if value < 2**30 else f"{value / 2**30:.2f} GiB"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


MARKDOWN_HEADER = ("model", "mode", "dtype", "parallel", "batch", "size", "status",
                   "p50 ms", "p90 ms", "p99 ms", "mean ± std ms", "img/s", "compile s",
                   "GFLOPs/img", "XLA GFLOPs/img", "TFLOP/s", "MFU", "peak mem")


def markdown_row(row: dict[str, Any]) -> tuple[str, ...]:
    batch = str(row["batch_size"])
    if row["requested_batch_size"] != row["batch_size"]:
        batch += f" (asked {row['requested_batch_size']})"
    memory = row["device_peak_bytes"]
    memory_text = _bytes(memory) if memory is not None else (
        "-" if row["compiled_total_bytes"] is None else f"{_bytes(row['compiled_total_bytes'])} (XLA)")
    mean = row["step_ms_mean"]
    return (
        row["model"], row["mode"], row["dtype"], row["parallel"], batch, str(row["image_size"]),
        row["status"], _num(row["step_ms_p50"], ".2f"), _num(row["step_ms_p90"], ".2f"),
        _num(row["step_ms_p99"], ".2f"),
        "-" if mean is None else f"{mean:.2f} ± {row['step_ms_std']:.2f}",
        _num(row["images_per_s"], ".1f"),
        _num(None if row["compile_s"] is None else row["compile_s"] + row["lower_s"], ".2f"),
        _num(None if row["flops_per_image"] is None else row["flops_per_image"] / 1e9, ".3f"),
        _num(None if row["xla_flops_per_image"] is None else row["xla_flops_per_image"] / 1e9, ".3f"),
        _num(row["achieved_tflops"], ".3f"),
        "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%",
        memory_text,
    )


def host_cpu_text(row: dict[str, Any]) -> str:
    """e.g. "AMD EPYC (family 25, model 17), avx512f, 2 cores"; "-" for rows
    written before the host CPU was recorded."""
    if not row.get("host_cpu"):
        return "-"
    vector = f", {row['host_cpu_vector']}" if row.get("host_cpu_vector") else ""
    return f"{row['host_cpu']}{vector}, {row.get('host_cpu_cores')} cores"


def setting_summary(rows: Sequence[dict[str, Any]], key: str, empty: str) -> str:
    """The rows' `key` in words: the one value they share (`empty` for ""),
    "per row" when they differ, "not recorded" when none has it (rows
    written before it was)."""
    seen = {row.get(key) for row in rows} - {None}
    if not seen:
        return "not recorded"
    if len(seen) > 1:
        return f"per row ({key} in the JSON lines)"
    (value,) = seen
    return value or empty


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of `rows`, with the device line above it."""
    lines = []
    if rows:
        first = rows[0]
        options = setting_summary(rows, "compiler_options", "XLA's defaults")
        precision = setting_summary(rows, "matmul_precision", "-")
        lines.append(f"Device: {first['device_kind']} x{first['num_devices']} "
                     f"({first['backend']}), jax {first['jax_version']}, "
                     f"flax {first['flax_version']}, XLA_FLAGS={first['xla_flags']!r}, "
                     f"compile options: {options}, matmul precision: {precision}, "
                     f"host malloc {first.get('host_malloc') or 'system'}; "
                     f"host CPU {host_cpu_text(first)}\n")
    lines.append("| " + " | ".join(MARKDOWN_HEADER) + " |")
    lines.append("|" + "---|" * len(MARKDOWN_HEADER))
    lines += ["| " + " | ".join(markdown_row(row)) + " |" for row in rows]
    return "\n".join(lines)


def write_reports(out: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """Writes results.csv and results.md into `out` (results.jsonl is appended
    while running); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "results.csv", out / "results.md"
    write_csv(csv_path, rows)
    md_path.write_text(markdown_table(rows) + "\n")
    return [csv_path, md_path]
