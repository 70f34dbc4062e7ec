"""Running benchmark configurations: build, compile, time, summarise, never crash.

    configs = expand_configs(["resnet50"], batch_sizes=[1, 32], modes=["infer", "train"])
    for row in run_benchmarks(configs, auto_batch=True):
        print(row["images_per_s"])

Each configuration yields one row (see `zoo.bench.report.ROW_SCHEMA`), also
when it fails: status "oom" for an out-of-memory error, "error" for any other,
and the run goes on with the next configuration.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from zoo.bench import measure
from zoo.bench.environment import environment
from zoo.bench.peaks import DTYPES, MATMUL_PRECISIONS, peak_tflops
from zoo.bench.report import empty_row

Mode = Literal["infer", "train"]
Parallel = Literal["single", "jit", "pmap"]
MODES: tuple[str, ...] = ("infer", "train")
PARALLEL: tuple[str, ...] = ("single", "jit", "pmap")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One configuration to measure.

    Attributes:
      model: registered model name.
      mode: "infer" (forward, train=False) or "train" (the engine's full train
        step: forward, backward, optimizer update, donated state).
      batch_size: global batch (split over the devices for "jit" and "pmap").
      image_size: square input resolution in pixels.
      dtype: computation dtype, "float32" or "bfloat16" (parameters stay float32).
      parallel: "single" (jit on one device), "jit" (jit with the batch sharded
        over all devices) or "pmap" (pmap over all devices).
      warmup: untimed steps after compilation.
      steps: timed steps.
      num_buffers: input batches on device, used in turn.
      optimizer: train mode's optax recipe (zoo.train.optim), "sgd" or "adamw".
      matmul_precision: JAX's default precision for float32 matmuls and
        convolutions while the step is lowered (`jax.default_matmul_precision`,
        one of `zoo.bench.peaks.MATMUL_PRECISIONS`); None keeps the process's
        (`JAX_DEFAULT_MATMUL_PRECISION`, else XLA's choice: TF32 on NVIDIA
        Ampere and newer).
    """

    model: str
    mode: Mode
    batch_size: int
    image_size: int
    dtype: str = "float32"
    parallel: Parallel = "single"
    warmup: int = 5
    steps: int = 30
    num_buffers: int = 3
    optimizer: str = "sgd"
    matmul_precision: str | None = None

    @property
    def label(self) -> str:
        precision = f" matmul={self.matmul_precision}" if self.matmul_precision else ""
        return (f"{self.model} {self.mode} {self.dtype} b{self.batch_size} "
                f"{self.image_size}px {self.parallel}{precision}")


def resolve_models(names: Sequence[str]) -> list[str]:
    """Registered names for `names` (exact names or globs), in the given order.

    Raises ValueError before anything runs: an unknown exact name lists the
    closest registered ones; a glob matching nothing says so.
    """
    from zoo.registry import get_entry, list_models

    resolved: list[str] = []
    for name in names:
        if any(ch in name for ch in "*?["):
            matches = list_models(name)
            if not matches:
                raise ValueError(f"model pattern {name!r} matches no registered model")
        else:
            get_entry(name)  # raises with the closest names
            matches = [name]
        resolved += [m for m in matches if m not in resolved]
    if not resolved:
        raise ValueError("no models given; pass --models or --suite")
    return resolved


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{kind} must be one of {', '.join(allowed)}; got {value!r}")


def expand_configs(
    models: Sequence[str],
    *,
    batch_sizes: Sequence[int] = (1,),
    image_sizes: Sequence[int | None] = (None,),
    dtypes: Sequence[str] = ("float32",),
    modes: Sequence[str] = ("infer",),
    parallel: Sequence[str] = ("single",),
    warmup: int = 5,
    steps: int = 30,
    num_buffers: int = 3,
    optimizer: str = "sgd",
    num_devices: int | None = None,
    matmul_precision: str | None = None,
) -> list[BenchConfig]:
    """Every combination, validated up front (names, sizes, divisibility).

    Args:
      models: names or globs (see `resolve_models`).
      image_sizes: None means the model's registered input size.
      num_devices: devices that "jit" and "pmap" split the batch over
        (default: `jax.device_count()`).
      matmul_precision: for every configuration (see `BenchConfig`).

    Returns:
      Configurations ordered model, mode, dtype, parallel, image size, batch.
    """
    import jax

    from zoo.registry import create_model, get_entry

    names = resolve_models(models)
    for d in dtypes:
        _check_choice("dtype", d, DTYPES)
    for m in modes:
        _check_choice("mode", m, MODES)
    for p in parallel:
        _check_choice("parallel", p, PARALLEL)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    if matmul_precision is not None:
        _check_choice("matmul precision", matmul_precision, MATMUL_PRECISIONS)
    if warmup < 0 or steps < 1 or num_buffers < 1:
        raise ValueError(f"need warmup >= 0, steps >= 1, buffers >= 1; got "
                         f"{warmup}, {steps}, {num_buffers}")
    for b in batch_sizes:
        if b < 1:
            raise ValueError(f"batch sizes must be positive, got {b}")
    devices = jax.device_count() if num_devices is None else num_devices
    configs = []
    for name in names:
        model = create_model(name)
        for size in image_sizes:
            size = get_entry(name).input_size if size is None else size
            if size < model.min_input_size:
                raise ValueError(f"image size {size} is below {name}'s minimum "
                                 f"{model.min_input_size}")
        # Batches ascending: the device's peak-memory high-water mark then
        # belongs to the configuration that set it.
        for mode, dtype, par, size, batch in itertools.product(
                modes, dtypes, parallel, image_sizes, sorted(set(batch_sizes))):
            if par != "single" and batch % devices:
                raise ValueError(f"batch {batch} does not split over {devices} devices "
                                 f"for parallel={par!r}; use a multiple of {devices}")
            size = get_entry(name).input_size if size is None else size
            configs.append(BenchConfig(name, mode, batch, size, dtype, par,  # type: ignore[arg-type]
                                       warmup, steps, num_buffers, optimizer, matmul_precision))
    return configs


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is XLA running out of device (or host) memory."""
    text = f"{type(error).__name__}: {error}"
    return any(key in text for key in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                                       "OutOfMemory"))


def record_error(row: dict[str, Any], error: BaseException) -> None:
    """Marks `row` failed: status "oom" or "error", and the error's type and
    first line (at most 500 characters) in row["error"]."""
    row["status"] = "oom" if is_out_of_memory(error) else "error"
    first_line = str(error).splitlines()[0][:500] if str(error) else ""
    row["error"] = f"{type(error).__name__}: {first_line}"


def benchmark_config(
    config: BenchConfig, *, env: dict[str, Any], peak_override: float | None = None,
    measure_fn: Callable[[BenchConfig], measure.Measurement] | None = None,
) -> dict[str, Any]:
    """One row for `config`: measured, or status "oom" / "error" with the message.

    `measure_fn` builds and times the configuration (None: `measure.measure`;
    benchmarks/compare_torch.py passes one that times PyTorch's steps
    interleaved with Zoo's)."""
    row = empty_row(config, env)
    row["peak_tflops_per_device"] = peak_tflops(env["device_kind"], config.dtype, peak_override,
                                                row["matmul_precision"])
    try:
        result = (measure_fn or measure.measure)(config)
    except Exception as error:  # noqa: BLE001 - any failure becomes a row, the run goes on
        record_error(row, error)
        gc.collect()
        return row
    measure.fill_row(row, result)
    return row


def _halved(config: BenchConfig, devices: int) -> BenchConfig | None:
    batch = config.batch_size // 2
    unit = 1 if config.parallel == "single" else devices
    if batch < unit or batch % unit:
        return None
    return dataclasses.replace(config, batch_size=batch)


def run_benchmarks(
    configs: Sequence[BenchConfig],
    *,
    auto_batch: bool = False,
    peak_override: float | None = None,
    progress: bool = True,
    profile_steps: int = 0,
    profile_root: Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Measures each configuration in turn, yielding its row as soon as it is done.

    With `auto_batch`, a configuration that runs out of memory is retried at
    half the batch until it fits (or cannot be halved); the row keeps the
    requested batch in `requested_batch_size`. With `profile_steps` > 0, each
    configuration also writes a trace of that many steps and its ops.md into
    its own folder under `profile_root` (`zoo.bench.profile`); the row's
    "profile" is that folder relative to `profile_root`'s parent.
    """
    from tqdm.auto import tqdm

    from zoo.bench.profile import profile_directory_name

    if profile_steps < 0:
        raise ValueError(f"profile_steps must be >= 0, got {profile_steps}")
    if profile_steps and profile_root is None:
        raise ValueError("profile_steps needs a profile_root folder")

    def measure_fn(config: BenchConfig) -> measure.Measurement:
        if not profile_steps:
            return measure.measure(config)
        name = profile_directory_name(config.label)
        result = measure.measure(config, profile_dir=profile_root / name,  # type: ignore[operator]
                                 profile_steps=profile_steps)
        # The row names the folder relative to the reports (profile_root's parent).
        return (result if result.profile is None
                else result._replace(profile=f"{profile_root.name}/{name}"))  # type: ignore[union-attr]

    env = environment()
    bar = tqdm(configs, desc="zoo bench", unit="config", file=sys.stderr, disable=not progress)
    for config in bar:
        bar.set_postfix_str(config.label)
        row = benchmark_config(config, env=env, peak_override=peak_override,
                               measure_fn=measure_fn)
        attempt = config
        while auto_batch and row["status"] == "oom":
            smaller = _halved(attempt, env["num_devices"])
            if smaller is None:
                break
            attempt = smaller
            bar.set_postfix_str(attempt.label + " (auto-batch)")
            row = benchmark_config(attempt, env=env, peak_override=peak_override,
                                   measure_fn=measure_fn)
        row["requested_batch_size"] = config.batch_size
        yield row
