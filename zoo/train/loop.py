"""`fit` and `evaluate`: the training loop around the compiled steps.

    from zoo.train import fit, evaluate, load_config
    result = fit(load_config("digits_simple_cnn"), "workdirs/digits")
    evaluate(None, "workdirs/digits", which="best")

A workdir holds config.json, class_names.json, metrics.jsonl (one JSON object
per line: "step" plus "train/..." or "eval/..." names), TensorBoard events in
tensorboard/, and Orbax checkpoints in checkpoints/. `fit` on a workdir with
checkpoints resumes from the newest complete one, data position included, and
reaches bitwise the same params as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

import zoo
from zoo.train import config as config_lib
from zoo.train.checkpoint import Checkpointer, abstract_with_sharding
from zoo.train.config import TrainConfig
from zoo.train.init_from import Pretrained, apply_pretrained, freeze_backbone, load_pretrained
from zoo.train.optim import create_optimizer
from zoo.train.parallel import Trainer, check_batch_divisible, setup_training
from zoo.train.state import TrainState

Hook = Callable[[int, TrainState], None]
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "zoo" / "jax"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache (also for quick CPU compiles).

    The directory is `directory`, else $ZOO_COMPILATION_CACHE, else
    ~/.cache/zoo/jax; $ZOO_COMPILATION_CACHE=0 turns the cache off.
    """
    setting = directory if directory is not None else os.environ.get("ZOO_COMPILATION_CACHE")
    if setting is not None and str(setting) in ("0", ""):
        return None
    path = Path(setting) if setting is not None else DEFAULT_CACHE_DIR
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


def check_workdir_writable(workdir: str | os.PathLike) -> Path:
    """Creates `workdir` if needed; ValueError naming it when it cannot be written."""
    path = Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise ValueError(f"workdir {str(path)!r} is not writable: {error}") from error
    return path


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `fit` reached: final step, eval metrics, throughput, wall time, why it stopped."""

    step: int
    eval_metrics: dict[str, float]
    images_per_second: float
    wall_seconds: float
    stopped: Literal["completed", "preempted", "already complete"]


@dataclasses.dataclass
class _Run:
    """Everything `fit` / `evaluate` build from a config before any compute."""

    config: TrainConfig
    workdir: Path
    trainer: Trainer
    checkpointer: Checkpointer
    train_data: Any
    eval_data: Any
    total_steps: int
    is_main: bool
    pretrained: Pretrained | None = None


def _model(config: TrainConfig) -> Any:
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    return zoo.create_model(config.model, num_classes=config.num_classes, dtype=dtype,
                            param_dtype=jnp.float32, **dict(config.model_overrides))


def _build(config: TrainConfig, workdir: str | os.PathLike) -> _Run:
    """Validates and builds the run; raises before compiling or writing checkpoints."""
    from zoo.data import dataset_info, make_pipeline

    config = config_lib.validate(config)
    path = check_workdir_writable(workdir)
    info = dataset_info(config.dataset, data_dir=config.data_dir)
    if info.num_classes != config.num_classes:
        raise ValueError(f"num_classes={config.num_classes} but dataset {config.dataset!r} has "
                         f"{info.num_classes} classes")
    check_batch_divisible(config.global_batch_size, jax.device_count())
    if config.global_batch_size % jax.process_count():
        raise ValueError(f"global_batch_size {config.global_batch_size} must divide evenly over "
                         f"{jax.process_count()} processes")
    local_batch = config.global_batch_size // jax.process_count()
    common = dict(batch_size=local_batch, seed=config.seed, image_size=config.image_size,
                  channels=config.channels, data_dir=config.data_dir,
                  num_workers=config.num_workers)
    train_data = make_pipeline(config.dataset, config.train_split, train=True,
                               augment=config.augment, mixup_alpha=config.mixup_alpha,
                               cutmix_alpha=config.cutmix_alpha, **common)
    eval_data = make_pipeline(config.dataset, config.eval_split, train=False, **common)
    total = config_lib.total_steps(config, train_data.steps_per_epoch)
    optimizer = create_optimizer(config.optimizer, config.schedule, total_steps=total,
                                 warmup_steps=config_lib.warmup_steps(config, train_data.steps_per_epoch))
    metadata = {"model": config.model, "num_classes": config.num_classes,
                "image_size": config.image_size, "channels": config.channels,
                "optimizer": config.optimizer.name, "ema": config.ema_decay is not None,
                "accumulation": config.optimizer.accumulation}
    checkpointer = Checkpointer(path / "checkpoints", keep=config.keep, metadata=metadata)
    checkpointer.check_compatible()
    model, tx, pretrained = _model(config), optimizer.tx, None
    if config.init_from:
        pretrained = load_pretrained(config, model)
        if config.freeze_backbone:
            tx = freeze_backbone(tx, pretrained)
    trainer = setup_training(
        model, tx,
        (config.global_batch_size, config.image_size, config.image_size, config.channels),
        parallel=config.parallel, seed=config.seed, label_smoothing=config.label_smoothing,
        ema_decay=config.ema_decay, learning_rate_fn=optimizer.learning_rate_fn)
    return _Run(config, path, trainer, checkpointer, train_data, eval_data, total,
                is_main=jax.process_index() == 0, pretrained=pretrained)


def _restore(run: _Run, step: int | None = None) -> int:
    """Loads a checkpoint into run.trainer.state; returns its step (0 when none)."""
    if step is None and not run.checkpointer.steps():
        return 0
    target = abstract_with_sharding(run.trainer.abstract, run.trainer.replicated)
    restored = run.checkpointer.restore(target, step)
    run.trainer.state = run.trainer.place_state(restored.state)
    if restored.data_iterator:
        run.train_data.set_state(restored.data_iterator)
    return restored.step


def run_eval(trainer: Trainer, eval_data: Any, *, ema: bool = False) -> dict[str, float]:
    """Exact means over one pass of `eval_data`: {"loss", "top1", "top5", "count"}."""
    state = trainer.state
    if ema:
        if state.ema_params is None:
            raise ValueError("this run keeps no EMA params (set ema_decay in the config)")
        state = state.replace(params=state.ema_params)
    totals: dict[str, float] = {}
    for batch in eval_data:
        sums = trainer.metrics_to_host(trainer.eval_step(state, trainer.put_batch(batch)))
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + value
    count = max(totals.get("count", 0.0), 1.0)
    return {"loss": totals["loss"] / count, "top1": totals["top1"] / count,
            "top5": totals["top5"] / count, "count": totals["count"]}


class _Logger:
    """metrics.jsonl + TensorBoard, written by process 0 only."""

    def __init__(self, workdir: Path, enabled: bool):
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **metrics}) + "\n")
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[threading.Event]:
    """An event set by SIGTERM while inside the block (main thread only)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_finite(pending: list[tuple[int, dict[str, jax.Array]]], trainer: Trainer,
                  last_good: int | None, workdir: Path) -> dict[str, float]:
    """Host copy of the pending step metrics, averaged; stops on a NaN/Inf loss."""
    host = [(step, trainer.metrics_to_host(m)) for step, m in pending]
    for step, metrics in host:
        if not math.isfinite(metrics["loss"]):
            kept = (f"the last good checkpoint (step {last_good}) is kept in {workdir / 'checkpoints'}"
                    if last_good is not None else "no checkpoint was written")
            raise FloatingPointError(f"loss is {metrics['loss']} at step {step}; training "
                                     f"stopped, {kept}")
    return {key: float(np.mean([m[key] for _, m in host])) for key in host[-1][1]}


def _save(run: _Run, step: int, metrics: dict[str, float] | None = None) -> None:
    state = run.trainer.canonical_state()
    run.checkpointer.save(step, state, run.train_data.state_after(step), metrics)


def _evaluate_and_log(run: _Run, step: int, logger: _Logger) -> dict[str, float]:
    result = run_eval(run.trainer, run.eval_data)
    metrics = {f"eval/{k}": v for k, v in result.items() if k != "count"}
    if run.config.ema_decay is not None:
        ema = run_eval(run.trainer, run.eval_data, ema=True)
        metrics.update({f"eval_ema/{k}": v for k, v in ema.items() if k != "count"})
    logger.write(step, metrics)
    return metrics


def fit(config: TrainConfig, workdir: str | os.PathLike, *,
        hooks: Sequence[Hook] = (), progress: bool = True) -> FitResult:
    """Trains `config` in `workdir`, resuming from its newest complete checkpoint.

    Args:
      config: the run's TrainConfig.
      workdir: where config.json, metrics.jsonl, TensorBoard events and
        checkpoints go.
      hooks: called as hook(step, state) after every step (step = steps done).
      progress: show a tqdm progress bar (process 0).

    Raises:
      ValueError: bad config / workdir / incompatible checkpoints (before compiling).
      FloatingPointError: a NaN/Inf loss (names the step; last good checkpoint kept).
    """
    from tqdm import tqdm

    from zoo.data import write_class_names

    logging.getLogger("absl").setLevel(logging.ERROR)
    enable_compilation_cache()
    start_time = time.perf_counter()
    run = _build(config, workdir)
    config = run.config
    step = _restore(run)
    if step == 0 and run.pretrained is not None:
        message = apply_pretrained(run.trainer, run.pretrained)
        if run.is_main:
            print(message)
    if run.is_main:
        (run.workdir / "config.json").write_text(json.dumps(config_lib.to_dict(config), indent=1))
        write_class_names(run.workdir, config.dataset, config.data_dir)
    logger = _Logger(run.workdir, run.is_main)
    trainer, batch_images = run.trainer, config.global_batch_size
    last_good = run.checkpointer.steps()[-1] if run.checkpointer.steps() else None
    eval_metrics: dict[str, float] = {}
    stopped: Literal["completed", "preempted", "already complete"] = "completed"
    if step >= run.total_steps:
        # A finished workdir: report its accuracy again instead of NaNs.
        stopped = "already complete"
        result = run_eval(trainer, run.eval_data)
        eval_metrics = {f"eval/{k}": v for k, v in result.items() if k != "count"}
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    bar = tqdm(total=run.total_steps, initial=step, disable=not (progress and run.is_main),
               unit="step", dynamic_ncols=True)
    timed_steps, timed_seconds, window_start = 0, 0.0, time.perf_counter()
    try:
        with _sigterm_flag() as sigterm:
            for batch in _batches(run, step):
                trainer.state, metrics = trainer.train_step(trainer.state, batch)
                step += 1
                pending.append((step, metrics))
                for hook in hooks:
                    hook(step, trainer.state)
                done = step >= run.total_steps
                if step % config.log_every == 0 or done or sigterm.is_set() or (
                        step % config.checkpoint_every == 0):
                    means = _check_finite(pending, trainer, last_good, run.workdir)
                    elapsed = time.perf_counter() - window_start
                    rate = len(pending) / max(elapsed, 1e-9)
                    timed_steps, timed_seconds = timed_steps + len(pending), timed_seconds + elapsed
                    pending, window_start = [], time.perf_counter()
                    logger.write(step, {**{f"train/{k}": v for k, v in means.items()},
                                        "train/steps_per_second": rate,
                                        "train/images_per_second": rate * batch_images})
                    bar.set_postfix(loss=f"{means['loss']:.4f}", steps_s=f"{rate:.1f}",
                                    images_s=f"{rate * batch_images:.0f}")
                bar.update(1)
                metrics_for_best = None
                if done or (config.eval_every and step % config.eval_every == 0):
                    eval_metrics = _evaluate_and_log(run, step, logger)
                    metrics_for_best = eval_metrics
                    window_start = time.perf_counter()
                if done or sigterm.is_set() or step % config.checkpoint_every == 0:
                    _save(run, step, metrics_for_best)
                    last_good = step
                if sigterm.is_set():
                    stopped = "preempted"
                    break
                if done:
                    break
        run.checkpointer.wait()
    finally:
        bar.close()
        logger.close()
        run.checkpointer.close()
    wall = time.perf_counter() - start_time
    images_per_second = timed_steps * batch_images / max(timed_seconds, 1e-9)
    if run.is_main:
        print(_summary(config, step, eval_metrics, images_per_second, wall, stopped))
    return FitResult(step, eval_metrics, images_per_second, wall, stopped)


def _batches(run: _Run, step: int) -> Iterator[dict[str, jax.Array]]:
    """Device-placed train batches continuing after `step` (or nothing if done)."""
    from zoo.data.prefetch import prefetch_to_device

    if step >= run.total_steps:
        return iter(())
    trainer = run.trainer
    target = (trainer.batch_sharding if trainer.parallel == "jit"
              else list(trainer.mesh.local_devices))
    return prefetch_to_device(iter(run.train_data), target, buffer_size=2)


def _summary(config: TrainConfig, step: int, metrics: dict[str, float], images_per_second: float,
             wall: float, stopped: str) -> str:
    top1 = metrics.get("eval/top1", float("nan"))
    top5 = metrics.get("eval/top5", float("nan"))
    speed = f"{images_per_second:,.0f} images/s; " if images_per_second > 0 else ""
    return (f"{config.name}: {stopped} at step {step}; eval top-1 {top1:.2%}, top-5 {top5:.2%}; "
            f"{speed}wall time {wall:.1f} s")


def evaluate(config: TrainConfig | None, workdir: str | os.PathLike,
             which: Literal["latest", "best", "ema"] = "latest") -> dict[str, float]:
    """Evaluates a checkpoint of `workdir` on the eval split.

    Args:
      config: the run's config; None reads workdir/config.json.
      workdir: a workdir written by `fit`.
      which: "latest" checkpoint, "best" by eval top-1, or "ema" (latest, EMA params).

    Returns:
      {"step", "loss", "top1", "top5", "count"}.
    """
    if which not in ("latest", "best", "ema"):
        raise ValueError(f"which must be 'latest', 'best' or 'ema', got {which!r}")
    logging.getLogger("absl").setLevel(logging.ERROR)
    path = Path(workdir)
    if config is None:
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ValueError(f"{str(path)!r} has no config.json; is it a workdir written by fit?")
        config = config_lib.from_dict(json.loads(config_path.read_text()))
    steps = Checkpointer(path / "checkpoints", config.keep, {}).steps()
    if not steps:
        raise ValueError(f"no complete checkpoint in {str(path / 'checkpoints')!r}")
    enable_compilation_cache()
    run = _build(config, path)
    step = steps[-1]
    if which == "best":
        best = run.checkpointer.best_step()
        if best is None:
            raise ValueError(f"no checkpoint in {str(path)!r} has eval metrics to pick the best")
        step = best
    _restore(run, step)
    result = run_eval(run.trainer, run.eval_data, ema=which == "ema")
    run.checkpointer.close()
    return {"step": step, **result}
