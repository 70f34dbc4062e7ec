"""Measuring one configuration: the inference forward or the engine's train step.

Both paths follow the same protocol (see `zoo.bench.timing`): lower and compile
timed on their own, `warmup` untimed steps, `steps` timed steps each ended by
`block_until_ready`, inputs rotated among `num_buffers` device batches.
Inputs are float32 images (as the data pipeline delivers them); the model casts
to its computation dtype.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from zoo.bench.timing import StepTimes, flops_from_cost_analysis, summarize, time_steps, timed
from zoo.runtime import compiler_options, compiler_options_text

if TYPE_CHECKING:
    from zoo.bench.runner import BenchConfig

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Measurement(NamedTuple):
    """What one configuration measured.

    step_macs_per_image: multiply-accumulates of the whole measured step per
    image, counted by `zoo.counting` on the step's jaxpr (train: forward,
    backward and update); model FLOPs = 2 x this.
    flops_per_device_step: XLA's cost-analysis FLOPs of one step on one device
    (under jit-with-sharding and pmap XLA reports the per-device program).
    compiled_memory: per-device sizes from `compiled.memory_analysis()`.
    device_peak_bytes: the backend's peak_bytes_in_use (None on CPU).
    profile: the folder of this configuration's `--profile-steps` trace and
      ops.md, as the caller named it; None when none was taken.
    compiler_options: the XLA options the step was compiled with, as
    `zoo.runtime.compiler_options_text` writes them ("" for XLA's defaults).
    times: the timed steps (`zoo.bench.timing.StepTimes`: seconds, page faults
    and context switches of each, and the warm-up steps that ran first).
    """

    params: int
    macs_per_image: int
    step_macs_per_image: float
    devices_used: int
    lower_s: float
    compile_s: float
    flops_per_device_step: float | None
    times: StepTimes
    compiled_memory: dict[str, int] | None
    device_peak_bytes: int | None
    compiler_options: str
    profile: str | None = None


class Prepared(NamedTuple):
    """A configuration built and compiled, ready to time.

    step: runs one step on one of `inputs` and returns its outputs (train mode
    carries the donated state from call to call). hlo_text: the compiled
    program's text, on demand (for a profile's op names). The other fields are
    those of `Measurement` known before any step runs.
    """

    step: Callable[[Any], Any]
    inputs: list[Any]
    params: int
    macs_per_image: int
    step_macs_per_image: float
    devices: list[jax.Device]
    lower_s: float
    compile_s: float
    flops_per_device_step: float | None
    compiled_memory: dict[str, int] | None
    compiler_options: str
    hlo_text: Callable[[], str] | None = None

    def measurement(self, times: StepTimes) -> Measurement:
        """The Measurement of these timed steps."""
        return Measurement(
            params=self.params,
            macs_per_image=self.macs_per_image,
            step_macs_per_image=self.step_macs_per_image,
            devices_used=len(self.devices),
            lower_s=self.lower_s,
            compile_s=self.compile_s,
            flops_per_device_step=self.flops_per_device_step,
            times=times,
            compiled_memory=self.compiled_memory,
            device_peak_bytes=_device_peak_bytes(self.devices),
            compiler_options=self.compiler_options,
        )


@functools.cache
def _macs_per_image(model_name: str, image_size: int) -> int:
    from zoo.counting import count_macs
    from zoo.registry import create_model, init_shapes, synthetic_variables

    model = create_model(model_name)
    shape = (1, image_size, image_size, model.in_channels)
    variables = init_shapes(model, shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return count_macs(lambda v, images: model.apply(v, images, train=False), variables, x)


def _devices(config: BenchConfig) -> list[jax.Device]:
    return [jax.devices()[0]] if config.parallel == "single" else list(jax.devices())


def _random_images(config: BenchConfig, in_channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (config.batch_size, config.image_size, config.image_size, in_channels)
    return rng.standard_normal(shape, dtype=np.float32)


def _compiled_memory(compiled: Any) -> dict[str, int] | None:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if stats is None:
        return None
    argument = int(stats.argument_size_in_bytes)
    output = int(stats.output_size_in_bytes)
    alias = int(stats.alias_size_in_bytes)
    temp = int(stats.temp_size_in_bytes)
    code = int(stats.generated_code_size_in_bytes)
    return {"argument": argument, "output": output, "alias": alias, "temp": temp,
            "code": code, "total": argument + output - alias + temp + code}


def _device_peak_bytes(devices: list[jax.Device]) -> int | None:
    peaks = []
    for device in devices:
        stats = device.memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def _prepare_infer(config: BenchConfig) -> Prepared:
    from zoo.counting import count_params
    from zoo.registry import create_model, init_shapes, synthetic_variables

    model = create_model(config.model, dtype=COMPUTE_DTYPES[config.dtype])
    devices = _devices(config)
    n = len(devices)
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    shape = (1, config.image_size, config.image_size, model.in_channels)
    variables = jax.device_put(synthetic_variables(init_shapes(model, shape)), replicated)

    def forward(variables: Any, images: jax.Array) -> jax.Array:
        return model.apply(variables, images, train=False)

    images = []
    for seed in range(config.num_buffers):
        batch = _random_images(config, model.in_channels, seed)
        if config.parallel == "pmap":
            batch = batch.reshape(n, config.batch_size // n, *batch.shape[1:])
        images.append(jax.device_put(batch, batch_sharding))
    # As the engine compiles its steps: jit with Zoo's compiler options for
    # the platform, pmap with XLA's defaults (jax.pmap takes no options).
    options: dict[str, str] = {}
    if config.parallel == "pmap":
        function = jax.pmap(forward, in_axes=(None, 0), devices=devices)
    else:
        options = compiler_options(devices[0].platform)
        function = jax.jit(forward, compiler_options=options)
    lowered, lower_s = timed(lambda: function.lower(variables, images[0]))
    compiled, compile_s = timed(lowered.compile)
    return Prepared(
        step=lambda x: compiled(variables, x),
        inputs=images,
        params=count_params(variables["params"]),
        macs_per_image=_macs_per_image(config.model, config.image_size),
        step_macs_per_image=float(_macs_per_image(config.model, config.image_size)),
        devices=devices,
        lower_s=lower_s,
        compile_s=compile_s,
        flops_per_device_step=flops_from_cost_analysis(compiled.cost_analysis()),
        compiled_memory=_compiled_memory(compiled),
        compiler_options=compiler_options_text(options),
        hlo_text=compiled.as_text,
    )


def _prepare_train(config: BenchConfig) -> Prepared:
    from zoo.counting import count_macs, count_params
    from zoo.registry import create_model
    from zoo.train.config import OptimizerConfig, ScheduleConfig
    from zoo.train import setup_training
    from zoo.train.optim import create_optimizer

    model = create_model(config.model, dtype=COMPUTE_DTYPES[config.dtype])
    devices = _devices(config)
    tx = create_optimizer(OptimizerConfig(name=config.optimizer),  # type: ignore[arg-type]
                          ScheduleConfig(name="constant"), total_steps=1, warmup_steps=0).tx
    shape = (config.batch_size, config.image_size, config.image_size, model.in_channels)
    trainer = setup_training(model, tx, input_shape=shape,
                             parallel="pmap" if config.parallel == "pmap" else "jit",
                             devices=devices, seed=0)
    num_classes = max(1, int(getattr(model, "num_classes", 1)))
    batches = []
    for seed in range(config.num_buffers):
        labels = np.random.default_rng(seed).integers(0, num_classes, config.batch_size)
        batches.append(trainer.put_batch({
            "image": _random_images(config, model.in_channels, seed),
            "label": labels.astype(np.int32),
            "mask": np.ones((config.batch_size,), bool),
        }))
    params = count_params(trainer.state.params)
    # Traced only (no compute). Under pmap the jaxpr is one device's program.
    step_macs = count_macs(trainer.train_step, trainer.state, batches[0])
    if config.parallel == "pmap":
        step_macs *= len(devices)
    lowered, lower_s = timed(lambda: trainer.lower_train_step(trainer.state, batches[0]))
    compiled, compile_s = timed(lowered.compile)
    state = trainer.state

    def step(batch: Any) -> Any:
        # The state is donated: each step consumes the previous step's state.
        nonlocal state
        state, metrics = compiled(state, batch)
        return state, metrics

    return Prepared(
        step=step,
        inputs=batches,
        params=params,
        macs_per_image=_macs_per_image(config.model, config.image_size),
        step_macs_per_image=step_macs / config.batch_size,
        devices=devices,
        lower_s=lower_s,
        compile_s=compile_s,
        flops_per_device_step=flops_from_cost_analysis(compiled.cost_analysis()),
        compiled_memory=_compiled_memory(compiled),
        compiler_options=compiler_options_text(trainer.compiler_options),
        hlo_text=compiled.as_text,
    )


def prepare(config: BenchConfig) -> Prepared:
    """Builds and compiles `config` (lowering and compilation timed); no step runs.

    The step is lowered under `config.matmul_precision` when it is set; the
    compiled step keeps it.
    """
    if config.mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {config.mode!r}")
    prepare_mode = _prepare_infer if config.mode == "infer" else _prepare_train
    if config.matmul_precision is None:
        return prepare_mode(config)
    with jax.default_matmul_precision(config.matmul_precision):
        return prepare_mode(config)


def measure(config: BenchConfig, *, profile_dir: Path | None = None,
            profile_steps: int = 0) -> Measurement:
    """Builds, compiles and times `config`; errors (incl. out of memory) propagate.

    With `profile_steps` > 0, that many more steps run after the timed ones
    inside a `jax.profiler` trace written to `profile_dir`, with `ops.md`
    beside it (`zoo.bench.profile`). A profile that fails warns and is left
    out; the measurement stands.
    """
    prepared = prepare(config)
    times = time_steps(prepared.step, prepared.inputs, warmup=config.warmup, steps=config.steps)
    result = prepared.measurement(times)
    if profile_steps > 0 and profile_dir is not None:
        try:
            _write_profile(prepared, config, profile_dir, profile_steps,
                           step_ms=summarize(times.seconds).p50_ms)
        except Exception as error:  # noqa: BLE001 - the measured row must survive
            warnings.warn(f"zoo bench: no profile for {config.label}: "
                          f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=2)
        else:
            result = result._replace(profile=str(profile_dir))
    return result


def _write_profile(prepared: Prepared, config: BenchConfig, profile_dir: Path, steps: int,
                   step_ms: float) -> None:
    from zoo.bench.profile import op_sources, op_times, ops_markdown, trace_steps

    trace = trace_steps(prepared.step, prepared.inputs, steps, profile_dir)
    try:  # op names are a nicety: a program without text still gets its table
        sources = op_sources(prepared.hlo_text()) if prepared.hlo_text is not None else {}
    except Exception:  # noqa: BLE001
        sources = {}
    ops = op_times(trace, steps, sources)
    (profile_dir / "ops.md").write_text(ops_markdown(
        ops, title=f"{config.label}: {steps} profiled steps", step_ms=step_ms))


def step_fields(times: StepTimes, batch_size: int) -> dict[str, Any]:
    """The row fields of a run's timed steps, the same for Zoo's rows and for
    benchmarks/compare_torch.py's PyTorch rows: step-time statistics (ms:
    mean, spread, percentiles, fastest and slowest),
    images/s at the mean step, every step (ms), the warm-up steps that ran,
    and the process's page faults and context switches in the timed steps."""
    stats = summarize(times.seconds)
    return dict(
        step_ms_mean=stats.mean_ms, step_ms_std=stats.std_ms,
        step_ms_p50=stats.p50_ms, step_ms_p90=stats.p90_ms, step_ms_p99=stats.p99_ms,
        step_ms_min=stats.min_ms, step_ms_max=stats.max_ms,
        images_per_s=batch_size / (stats.mean_ms / 1e3),
        step_ms_samples=[s * 1e3 for s in times.seconds],
        warmup_steps=times.warmup_steps,
        host_page_faults=times.total_host_page_faults,
        host_context_switches=times.total_context_switches,
    )


def empty_step_fields() -> dict[str, Any]:
    """`step_fields`' keys for a row whose steps did not run: every value None, no
    samples (so that error rows and measured rows have the same keys)."""
    return dict(
        step_ms_mean=None, step_ms_std=None, step_ms_p50=None, step_ms_p90=None,
        step_ms_p99=None, step_ms_min=None, step_ms_max=None, images_per_s=None,
        step_ms_samples=[], warmup_steps=None, host_page_faults=None,
        host_context_switches=None,
    )


def fill_row(row: dict[str, Any], result: Measurement) -> None:
    """Writes `result` and the numbers derived from it into `row` (status "ok")."""
    batch = row["batch_size"]
    per_device_batch = batch / result.devices_used
    row.update(
        status="ok",
        params=result.params,
        macs_per_image=result.macs_per_image,
        num_devices_used=result.devices_used,
        lower_s=result.lower_s,
        compile_s=result.compile_s,
        **step_fields(result.times, batch),
        device_peak_bytes=result.device_peak_bytes,
        compiler_options=result.compiler_options,
        profile=result.profile,
    )
    if result.compiled_memory is not None:
        row["compiled_total_bytes"] = result.compiled_memory["total"]
        row["compiled_temp_bytes"] = result.compiled_memory["temp"]
        row["compiled_argument_bytes"] = result.compiled_memory["argument"]
    seconds = row["step_ms_mean"] / 1e3   # the mean step, as step_fields summarised it
    row["flops_per_image"] = 2.0 * result.step_macs_per_image
    row["achieved_tflops"] = row["flops_per_image"] * batch / seconds / 1e12
    peak = row["peak_tflops_per_device"]
    if peak is not None:
        row["mfu"] = row["achieved_tflops"] / (peak * result.devices_used)
    if result.flops_per_device_step is not None:
        row["xla_flops_per_image"] = result.flops_per_device_step / per_device_batch
        row["xla_tflops"] = result.flops_per_device_step * result.devices_used / seconds / 1e12
