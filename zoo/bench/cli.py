"""`zoo bench`: measure models on this machine's JAX devices.

    zoo bench --models resnet50,efficientnet_b0 --batch-sizes 1,32,256 \
        --dtype bfloat16 --mode infer,train --out DIR
    zoo bench --suite quick --out DIR
    zoo bench --models resnet50 --mode train --batch-sizes 8 --profile-steps 5 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from zoo.bench.peaks import MATMUL_PRECISIONS

T = TypeVar("T")


def _comma_list(convert: Callable[[str], T]) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        try:
            return [convert(item) for item in items]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"bad list {text!r}: {error}") from error
    return parse


# Sweep options: None means "not given" (then the default below, or the suite's).
SWEEP_DEFAULTS: dict[str, Any] = {
    "models": None, "batch_sizes": [1], "image_sizes": [None], "dtype": ["float32"],
    "mode": ["infer"], "parallel": ["single"], "warmup": 5, "steps": 30,
}


def register(subparsers: Any) -> None:
    """Adds the `bench` sub-command."""
    p = subparsers.add_parser("bench", help="benchmark models on this machine's devices",
                              description=__doc__.split("\n")[0])
    p.add_argument("--models", type=_comma_list(str), help="names or globs, comma-separated")
    p.add_argument("--suite", help="a standard suite from benchmarks/suites.py (quick, accelerator, ...)")
    p.add_argument("--suites-file", type=Path, help="a Python file defining SUITES (default: benchmarks/suites.py)")
    p.add_argument("--batch-sizes", type=_comma_list(int), help="global batch sizes (default 1)")
    p.add_argument("--image-sizes", type=_comma_list(int), help="resolutions (default: each model's own)")
    p.add_argument("--dtype", type=_comma_list(str), help="float32 and/or bfloat16 (default float32)")
    p.add_argument("--mode", type=_comma_list(str), help="infer and/or train (default infer)")
    p.add_argument("--parallel", type=_comma_list(str), help="single, jit and/or pmap (default single)")
    p.add_argument("--warmup", type=int, help="untimed steps after compiling (default 5)")
    p.add_argument("--steps", type=int, help="timed steps (default 30)")
    p.add_argument("--buffers", type=int, default=3, help="input batches on device, used in turn")
    p.add_argument("--optimizer", default="sgd", help="train mode's optimizer: sgd or adamw")
    p.add_argument("--auto-batch", action="store_true", help="halve an out-of-memory batch until it fits")
    p.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s per device for MFU (overrides the table)")
    p.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS,
                   help="JAX's default precision of float32 matmuls and convolutions for every "
                        "configuration (default: the process's, XLA's choice unless "
                        "JAX_DEFAULT_MATMUL_PRECISION is set; TF32 on NVIDIA Ampere and newer). "
                        "'highest' measures full float32; its MFU needs --peak-tflops")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="directory for the reports")
    p.add_argument("--overwrite", action="store_true", help="replace reports already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="after timing, trace this many more steps of each configuration with "
                        "jax.profiler into OUT/profiles/<configuration>/, with ops.md (default 0: none)")
    p.set_defaults(run=run_bench)


def build_configs(args: argparse.Namespace) -> list[Any]:
    """The configurations `args` asks for; ValueError on anything invalid."""
    from zoo.bench.runner import expand_configs
    from zoo.bench.suites import STANDARD_SUITES_FILE, get_suite

    given = {key for key in SWEEP_DEFAULTS if getattr(args, key) is not None}
    if args.suite is not None:
        if given:
            raise ValueError(f"--suite {args.suite} sets the sweep itself; drop "
                             f"{', '.join('--' + k.replace('_', '-') for k in sorted(given))}")
        configs = get_suite(args.suite, args.suites_file or STANDARD_SUITES_FILE).configs()
        return [dataclasses.replace(c, matmul_precision=args.matmul_precision) for c in configs]
    if args.models is None:
        raise ValueError("pass --models NAME[,NAME...] or --suite NAME")
    values = {key: getattr(args, key) if key in given else default
              for key, default in SWEEP_DEFAULTS.items()}
    return expand_configs(
        values["models"], batch_sizes=values["batch_sizes"], image_sizes=values["image_sizes"],
        dtypes=values["dtype"], modes=values["mode"], parallel=values["parallel"],
        warmup=values["warmup"], steps=values["steps"], num_buffers=args.buffers,
        optimizer=args.optimizer, matmul_precision=args.matmul_precision,
    )


def run_bench(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Validates everything, runs every configuration, writes the reports."""
    from zoo.bench.environment import environment
    from zoo.bench.plots import write_plots
    from zoo.bench.report import append_jsonl, markdown_table, write_reports
    from zoo.bench.runner import run_benchmarks

    try:
        configs = build_configs(args)
        if args.peak_tflops is not None and args.peak_tflops <= 0:
            raise ValueError(f"--peak-tflops must be positive, got {args.peak_tflops}")
        if args.profile_steps < 0:
            raise ValueError(f"--profile-steps must be 0 (no profile) or more, got "
                             f"{args.profile_steps}")
    except ValueError as error:
        print(f"zoo bench: {error}", file=sys.stderr)
        return 2
    out: Path = args.out
    jsonl = out / "results.jsonl"
    if jsonl.exists() and not args.overwrite:
        print(f"zoo bench: {jsonl} exists; pick another --out or pass --overwrite",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    jsonl.unlink(missing_ok=True)
    command = "zoo bench " + shlex.join(sys.argv[2:] if argv is None else argv)
    (out / "command.txt").write_text(command + "\n")
    (out / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")
    rows = []
    for row in run_benchmarks(configs, auto_batch=args.auto_batch,
                              peak_override=args.peak_tflops, progress=not args.no_progress,
                              profile_steps=args.profile_steps, profile_root=out / "profiles"):
        append_jsonl(jsonl, row)  # written as it goes: a crash keeps finished rows
        rows.append(row)
    table = markdown_table(rows)
    print(table)
    paths = [jsonl, *write_reports(out, rows), *write_plots(out, rows)]
    print("\nwrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 1 if any(row["status"] == "error" for row in rows) else 0
