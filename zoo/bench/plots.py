"""Plots of benchmark rows (matplotlib, Agg backend: no display needed).

throughput.png: images/s against batch size, one line per model, dtype and
parallel strategy, one panel per mode. latency.png: the distribution of every
timed step (box: quartiles, whiskers: 1.5 IQR, points: outliers) per
configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """images/s vs batch size (log-2 x axis) for the rows with status ok."""
    plt = _pyplot()
    ok = [r for r in rows if r["status"] == "ok"]
    modes = sorted({r["mode"] for r in ok}) or ["infer"]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        lines: dict[tuple[str, str, str, int], list[tuple[int, float]]] = {}
        for r in ok:
            if r["mode"] == mode:
                key = (r["model"], r["dtype"], r["parallel"], r["image_size"])
                lines.setdefault(key, []).append((r["batch_size"], r["images_per_s"]))
        for (model, dtype, parallel, size), points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    label=f"{model} {dtype} {parallel} {size}px")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("global batch size")
        ax.set_ylabel("images / s")
        ax.set_title(f"{mode} throughput")
        ax.grid(True, alpha=0.3)
        if lines:
            ax.legend(fontsize=7)
    _title(fig, rows)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Box plot of the timed step times of every ok configuration."""
    plt = _pyplot()
    ok = [r for r in rows if r["status"] == "ok" and r["step_ms_samples"]]
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.35 * max(1, len(ok))))
    if ok:
        labels = [f"{r['model']} {r['mode']} {r['dtype']} b{r['batch_size']} "
                  f"{r['image_size']}px {r['parallel']}" for r in ok]
        ax.boxplot([r["step_ms_samples"] for r in ok], orientation="horizontal",
                   tick_labels=labels)
        ax.set_xscale("log")
    ax.set_xlabel("step time, ms (log)")
    ax.set_title("latency distribution of timed steps")
    ax.grid(True, axis="x", alpha=0.3)
    ax.tick_params(axis="y", labelsize=7)
    _title(fig, rows)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _title(fig: Any, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        fig.suptitle(f"{rows[0]['device_kind']} x{rows[0]['num_devices']}, "
                     f"jax {rows[0]['jax_version']}", fontsize=9)


def write_plots(out: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """throughput.png and latency.png in `out`."""
    return [plot_throughput(rows, out / "throughput.png"), plot_latency(rows, out / "latency.png")]
