"""Zoo against PyTorch: the same architectures, the same protocol, one process.

    python benchmarks/compare_torch.py --models resnet50,efficientnet_b0 \
        --batch-size 8 --mode infer,train --out benchmarks/results/cpu/torch

Needs the `torch` extra (torch, torchvision). For each model it measures Zoo
with `zoo.bench` and torchvision's definition of the same name with the same
protocol: `--warmup` untimed steps (more while the host's heap still grows,
`zoo.bench.timing`), `--steps` timed steps each ended by a device
synchronisation, inputs rotated among `--buffers` batches. PyTorch variants:
eager (NCHW), eager channels_last, and `torch.compile` (where it works; its
first call, the compile, is timed apart). `--dtype bfloat16` runs Zoo in
bfloat16 and PyTorch under `torch.autocast(bfloat16)`. Train mode is forward,
cross-entropy, backward and an SGD Nesterov-momentum update on both sides.

On a GPU both sides multiply float32 the same way (`--float32-precision`):
by default on TF32 tensor cores (JAX's matmul precision "tensorfloat32";
PyTorch's float32 matmul precision "high" and `cudnn.allow_tf32`),
or `ieee` for full float32 on both ("highest" in JAX). Left to their
defaults they differ: JAX runs float32 matmuls and convolutions on TF32,
PyTorch its convolutions on TF32 but its matmuls (every layer of a ViT) in
full float32. CPUs have no TF32: both compute float32 in full, and the
option changes nothing there. On a GPU PyTorch also autotunes its cuDNN
convolutions for the fixed input shape (`torch.backends.cudnn.benchmark`,
as timm's benchmark does), since XLA autotunes Zoo's; the first step, timed
apart, pays for it.

The timed steps of Zoo and of every PyTorch variant of a configuration are
interleaved, one step of each in turn (`zoo.bench.timing.time_interleaved`):
on a shared machine whose speed drifts, timing one framework after the other
put the drift into their ratio (resnet50 inference on the 2-core VM: 0.82x
PyTorch eager timed one after the other, 1.00x interleaved, within the
hour). Ratios compare median steps; against PyTorch eager the table also
gives the median of the rounds' own ratios with its 95% sign-test interval
(`zoo.bench.timing.paired_speed_ratio`), which says whether a difference is
larger than the machine's noise.

Writes zoo.jsonl (Zoo's rows, the zoo.bench schema), torch.jsonl (PyTorch
rows, with every timed step in step_ms_samples), comparison.md (also
printed): images/s at the median step of each, Zoo / PyTorch eager and Zoo /
the fastest PyTorch variant, and the per-round ratio to PyTorch eager.
"""

from __future__ import annotations

# Before anything imports JAX: glibc fixes its arena limit when a second
# thread first allocates, and importing JAX starts one (zoo.runtime).
if __name__ == "__main__":
    import os

    from zoo.runtime import keep_freed_host_memory

    keep_freed_host_memory()
    # On a GPU both frameworks share the device: JAX must not take 75% of its
    # memory up front (its default), or PyTorch's steps run out of memory.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from zoo.bench import expand_configs, markdown_table, measure
from zoo.bench.environment import environment
from zoo.bench.report import append_jsonl, host_cpu_text
from zoo.bench.runner import BenchConfig, benchmark_config, record_error
from zoo.bench.timing import StepTimes, paired_speed_ratio, time_interleaved, timed

VARIANTS = ("eager", "channels_last", "compile")
# --float32-precision (PyTorch's name for the arithmetic) -> JAX's matmul precision.
FLOAT32_PRECISIONS = {"tf32": "tensorfloat32", "ieee": "highest"}
# torchvision arguments that build the architecture Zoo's registry builds:
# Zoo's GoogLeNet and Inception v3 leave out the auxiliary heads by default
# (`aux_logits=False`), torchvision's build them (and return a namedtuple in
# training, which the loss cannot take). `init_weights=False` keeps PyTorch's
# default initialisation, which does not change a step's time, instead of the
# truncated normal torchvision warns is slow to draw.
TORCHVISION_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}


def set_torch_gpu_options(torch: Any, precision: str) -> None:
    """PyTorch's float32 matmuls (cuBLAS) and cuDNN convolutions on `precision`,
    "tf32" or "ieee", and cuDNN autotuned per shape.

    Through the long-standing switches (`torch.set_float32_matmul_precision`,
    `torch.backends.cudnn.allow_tf32`), which also set the per-backend
    `fp32_precision` of PyTorch 2.9 and newer. Writing `fp32_precision`
    itself would make every later read of those switches raise a "mix of the
    legacy and new APIs" error (torch 2.14.1), and torch.compile reads them.
    """
    if precision not in FLOAT32_PRECISIONS:
        raise ValueError(f"float32 precision must be one of {tuple(FLOAT32_PRECISIONS)}, "
                         f"got {precision!r}")
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.benchmark = True


def _sync(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _torch_step(torch: Any, model: Any, mode: str, device: Any, amp: bool) -> Callable[[Any], Any]:
    """One step on a (images, labels) pair: forward, or forward+backward+update."""
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else None
    if mode == "infer":
        model.eval()

        def infer(batch: Any) -> Any:
            with torch.inference_mode():
                if autocast is None:
                    return model(batch[0])
                with autocast():
                    return model(batch[0])
        return infer
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train(batch: Any) -> Any:
        optimizer.zero_grad(set_to_none=True)
        if autocast is None:
            loss = loss_fn(model(batch[0]), batch[1])
        else:
            with autocast():
                loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss
    return train


class TorchRun(NamedTuple):
    """A PyTorch variant built and run once, ready to time: its row (status
    "error" until timed), its step and its input batches."""

    row: dict[str, Any]
    step: Callable[[Any], None] | None
    batches: list[Any]


def prepare_torch(args: argparse.Namespace, name: str, mode: str, variant: str,
                  image_size: int) -> TorchRun:
    """torchvision's `name` as `variant`, its first call (torch.compile's compile,
    oneDNN / cuDNN set-up) timed apart; a failure is an error row with no step."""
    import torch
    import torchvision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    row: dict[str, Any] = {
        "framework": "torch", "model": name, "mode": mode, "variant": variant,
        "dtype": args.dtype, "batch_size": args.batch_size, "image_size": image_size,
        "status": "error", "error": None, "first_step_s": None,
        **measure.empty_step_fields(),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__, "device": str(device),
        "num_threads": torch.get_num_threads(), "params": None,
        "float32_precision": args.float32_precision if device.type == "cuda" else "ieee",
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if device.type == "cuda" else None,
    }
    try:
        model = torchvision.models.get_model(
            name, weights=None, **TORCHVISION_KWARGS.get(name, {})).to(device)
        row["params"] = sum(p.numel() for p in model.parameters())
        memory_format = torch.channels_last if variant == "channels_last" else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        step = _torch_step(torch, model, mode, device, args.dtype == "bfloat16")
        if variant == "compile":
            step = torch.compile(step)
        generator = torch.Generator().manual_seed(0)
        batches = []
        for _ in range(args.buffers):
            images = torch.randn(args.batch_size, 3, image_size, image_size, generator=generator)
            labels = torch.randint(0, 1000, (args.batch_size,), generator=generator)
            batches.append((images.to(device, memory_format=memory_format), labels.to(device)))

        def run(batch: Any) -> None:
            step(batch)
            _sync(torch, device)

        _, row["first_step_s"] = timed(lambda: run(batches[0]))
    except Exception as error:  # noqa: BLE001 - a failing variant is a row, the run goes on
        record_error(row, error)
        return TorchRun(row, None, [])
    return TorchRun(row, run, batches)


def fill_torch_row(row: dict[str, Any], times: StepTimes | Exception) -> None:
    """The timed steps, or the error a timed step raised, into `row`."""
    if isinstance(times, Exception):
        record_error(row, times)
        return
    row.update(status="ok", **measure.step_fields(times, row["batch_size"]))


def compare_config(args: argparse.Namespace, config: BenchConfig, variants: list[str],
                   env: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Zoo's row and one row per PyTorch variant for `config`, their timed steps
    interleaved (`zoo.bench.timing.time_interleaved`): one step of each in
    turn, so that the machine's drift falls on all of them alike."""
    torch_runs = {variant: prepare_torch(args, config.model, config.mode, variant,
                                         config.image_size) for variant in variants}
    runnable = {variant: (run.step, run.batches) for variant, run in torch_runs.items()
                if run.step is not None}
    timed_torch: dict[str, StepTimes | Exception] = {}

    def measure_interleaved(config: BenchConfig) -> measure.Measurement:
        prepared = measure.prepare(config)
        results = time_interleaved({"zoo": (prepared.step, prepared.inputs), **runnable},
                                   warmup=config.warmup, steps=config.steps)
        zoo_times = results.pop("zoo")
        timed_torch.update(results)
        if isinstance(zoo_times, Exception):
            raise zoo_times
        return prepared.measurement(zoo_times)

    zoo_row = benchmark_config(config, env=env, measure_fn=measure_interleaved)
    if runnable and not timed_torch:  # Zoo failed before its steps: time PyTorch alone
        timed_torch = time_interleaved(runnable, warmup=config.warmup, steps=config.steps)
    for variant, samples in timed_torch.items():
        fill_torch_row(torch_runs[variant].row, samples)
    return zoo_row, [run.row for run in torch_runs.values()]


def _median_speed(row: dict[str, Any]) -> float | None:
    """Images/s at the median step: one slow step (another tenant, a page-fault
    burst) moves the mean but not this, so ratios use it."""
    if row["status"] != "ok" or not row["step_ms_p50"]:
        return None
    return row["batch_size"] / (row["step_ms_p50"] / 1e3)


def round_ratio_text(zoo: dict[str, Any], torch_row: dict[str, Any] | None) -> str:
    """Zoo's speed over a PyTorch variant's, round by round: "median [low-high]"
    (the 95% sign-test interval, `zoo.bench.timing.paired_speed_ratio`); "-"
    without both rows' samples (a failed run, rows from before they were kept)."""
    zoo_ms = zoo.get("step_ms_samples") or []
    torch_ms = (torch_row or {}).get("step_ms_samples") or []
    if zoo["status"] != "ok" or not torch_ms or len(zoo_ms) != len(torch_ms):
        return "-"
    ratio = paired_speed_ratio(zoo_ms, torch_ms)
    if ratio.low is None:
        return f"{ratio.median:.2f}x"
    return f"{ratio.median:.2f}x [{ratio.low:.2f}-{ratio.high:.2f}]"


def comparison_table(zoo_rows: list[dict[str, Any]], torch_rows: list[dict[str, Any]]) -> str:
    """Markdown: per model and mode, images/s at the median step of Zoo and of
    each PyTorch variant, Zoo / PyTorch eager and Zoo / the fastest variant
    (ratios of median steps), and Zoo / PyTorch eager round by round with its
    95% interval."""
    header = ["model", "mode", "batch", "size", "dtype", "zoo img/s",
              *[f"torch {v} img/s" for v in VARIANTS], "zoo / torch eager", "zoo / best torch",
              "zoo / torch eager per round [95% CI]"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for z in zoo_rows:
        mine = {r["variant"]: r for r in torch_rows
                if (r["model"], r["mode"]) == (z["model"], z["mode"])}
        speeds = {v: s for v, r in mine.items() if (s := _median_speed(r)) is not None}
        cells = [f"{speeds[v]:.1f}" if v in speeds else (mine[v]["status"] if v in mine else "-")
                 for v in VARIANTS]
        zoo_speed = _median_speed(z)
        eager = (f"{zoo_speed / speeds['eager']:.2f}x"
                 if zoo_speed is not None and "eager" in speeds else "-")
        best = (f"{zoo_speed / max(speeds.values()):.2f}x"
                if zoo_speed is not None and speeds else "-")
        lines.append("| " + " | ".join([
            z["model"], z["mode"], str(z["batch_size"]), str(z["image_size"]), z["dtype"],
            "-" if zoo_speed is None else f"{zoo_speed:.1f}", *cells, eager, best,
            round_ratio_text(z, mine.get("eager"))]) + " |")
    return "\n".join(lines)


def parameter_check(zoo_rows: list[dict[str, Any]], torch_rows: list[dict[str, Any]]) -> str:
    """One line saying whether each model has as many parameters in Zoo as in
    torchvision (the same architecture), naming those that do not."""
    counts = {(r["model"], r["params"]) for r in torch_rows if r.get("params") is not None}
    differ = sorted({f"{z['model']} (Zoo {z['params']:,}, torchvision {p:,})"
                     for z in zoo_rows if z.get("params") is not None
                     for m, p in counts if m == z["model"] and p != z["params"]})
    if differ:
        return "Parameter counts differ, so these are not the same architecture: " + "; ".join(differ)
    checked = sorted({z["model"] for z in zoo_rows if z.get("params") is not None
                      and any(m == z["model"] for m, _ in counts)})
    if not checked:
        return "Parameter counts not compared (no model built in both)."
    return "Same parameter count in Zoo and torchvision: " + ", ".join(checked) + "."


def write_comparison(out: Path, zoo_rows: list[dict[str, Any]],
                     torch_rows: list[dict[str, Any]], command: str) -> str:
    """comparison.md (device line, ratio table, Zoo's own table, command); returns it."""
    env, first = zoo_rows[0], torch_rows[0] if torch_rows else {}
    float32 = {"tf32": "float32 products on TF32 tensor cores on both sides",
               "ieee": "float32 products in full float32 on both sides"}.get(
                   first.get("float32_precision"), "float32 products as each side's default")
    device = (f"Device: {env['device_kind']} x{env['num_devices']}, host CPU {host_cpu_text(env)}, "
              f"jax {env['jax_version']}, torch {first.get('torch_version', '-')} "
              f"({first.get('num_threads', '-')} threads); {float32} (Zoo: matmul precision "
              f"{env.get('matmul_precision', '-')}). Steps of Zoo and of each PyTorch "
              f"variant interleaved (one of each in turn); images/s = batch / median step. "
              f"Per round: the median over rounds of PyTorch eager's step over Zoo's step in "
              f"the same round, with its 95% sign-test interval; an interval that holds 1.00x "
              f"says the two are level within this machine's noise.")
    text = (f"{device}\n\n{comparison_table(zoo_rows, torch_rows)}\n\n"
            f"{parameter_check(zoo_rows, torch_rows)}\n\nZoo rows:\n\n"
            f"{markdown_table(zoo_rows)}\n\nCommand: {command}\n")
    (out / "comparison.md").write_text(text)
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet50,mobilenet_v3_large,efficientnet_b0,vit_b_16,convnext_tiny")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--mode", default="infer,train")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {VARIANTS}")
    p.add_argument("--train-variants", default=None,
                   help="PyTorch variants for train mode (default: --variants); e.g. "
                        "eager,channels_last where torch.compile's CPU train step compiles "
                        "for longer than the run is worth")
    p.add_argument("--float32-precision", choices=tuple(FLOAT32_PRECISIONS), default="tf32",
                   help="float32 products on a GPU, the same for both: tf32 (tensor cores; JAX's "
                        "default) or ieee (full float32). CPUs compute float32 in full either way")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--buffers", type=int, default=3)
    p.add_argument("--skip-missing", action="store_true",
                   help="skip models not (yet) registered in Zoo instead of failing")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
        import torchvision
    except ImportError:
        print("compare_torch needs the torch extra: pip install -e '.[torch]'", file=sys.stderr)
        return 2
    from zoo.registry import list_models

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.skip_missing:
        names = [n for n in names if n in list_models()]
    variants = [v for v in args.variants.split(",") if v]
    train_variants = ([v for v in args.train_variants.split(",") if v]
                      if args.train_variants is not None else variants)
    for v in (*variants, *train_variants):
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; expected some of {VARIANTS}")
    missing = [n for n in names if n not in torchvision.models.list_models()]
    if missing:
        raise ValueError(f"torchvision has no model named {missing}")
    modes = [m for m in args.mode.split(",") if m]
    # Both sides multiply float32 alike on a GPU; a CPU has one way only.
    env = environment()
    if torch.cuda.is_available():
        set_torch_gpu_options(torch, args.float32_precision)
    matmul_precision = FLOAT32_PRECISIONS[args.float32_precision] if env["backend"] == "gpu" else None
    configs = expand_configs(names, batch_sizes=[args.batch_size], image_sizes=[args.image_size],
                             dtypes=[args.dtype], modes=modes, warmup=args.warmup,
                             steps=args.steps, num_buffers=args.buffers,
                             matmul_precision=matmul_precision)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (args.out / "zoo.jsonl", args.out / "torch.jsonl"):
        path.unlink(missing_ok=True)
    zoo_rows, torch_rows = [], []
    command = "python benchmarks/compare_torch.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = ""
    for config in configs:
        row, trows = compare_config(
            args, config, train_variants if config.mode == "train" else variants, env)
        append_jsonl(args.out / "zoo.jsonl", row)
        zoo_rows.append(row)
        print(f"zoo   {config.label}: {row['status']} p50 {row['step_ms_p50']} ms "
              f"{row['error'] or ''}", file=sys.stderr)
        for trow in trows:
            append_jsonl(args.out / "torch.jsonl", trow)
            torch_rows.append(trow)
            print(f"torch {config.label} {trow['variant']}: {trow['status']} "
                  f"p50 {trow['step_ms_p50']} ms {trow['error'] or ''}", file=sys.stderr)
        # Rewritten after every configuration: an interrupted run keeps a report.
        text = write_comparison(args.out, zoo_rows, torch_rows, command)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
