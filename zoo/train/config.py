"""The typed training configuration: frozen dataclasses, loaded from recipe files.

A recipe is `experiments/configs/<name>.py` with a `get_config() -> TrainConfig`.
Command-line overrides (`--set optimizer.learning_rate=0.1`) are applied with
`apply_overrides`, which checks every key and value against the dataclass
field types, so a typo or a wrong type fails before anything is compiled.

Durations (`epochs` or `steps`, warm-up in epochs or steps) are converted to
steps once, by `total_steps` / `warmup_steps`, when the number of steps per
epoch is known.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "experiments" / "configs"
DEFAULT_CONFIG = "digits_simple_cnn"


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The optax recipe (see `zoo.train.optim.create_optimizer`).

    Attributes:
      name: "sgd" (momentum, Nesterov by default), "adamw", "lamb" or "lars".
      learning_rate: peak learning rate (reached at the end of warm-up), for
        the global batch.
      momentum: SGD / LARS momentum; nesterov: Nesterov momentum for SGD.
      b1, b2, eps: Adam-family moments.
      weight_decay: decoupled weight decay; never applied to parameters with
        ndim <= 1 (biases, norm scales and offsets).
      grad_clip: clip gradients to this global norm; None = no clipping.
      accumulation: micro-batches accumulated (optax.MultiSteps) per update.
    """

    name: Literal["sgd", "adamw", "lamb", "lars"] = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None
    accumulation: int = 1


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule: linear warm-up, then decay.

    Attributes:
      name: "cosine" (to `final_fraction` of the peak), "step" (multiply by
        `decay_factor` at each fraction of training in `boundaries`) or "constant".
      warmup_epochs: warm-up length in epochs (used when `warmup_steps` is None).
      warmup_steps: warm-up length in optimizer steps; overrides `warmup_epochs`.
      final_fraction: cosine end value as a fraction of the peak.
      boundaries: for "step": fractions of total training where the rate decays.
      decay_factor: for "step": multiplier at each boundary.
    """

    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None
    final_fraction: float = 0.0
    boundaries: tuple[float, ...] = (0.3, 0.6, 0.9)
    decay_factor: float = 0.1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; `config.json` in the workdir is this.

    Attributes:
      name: recipe name (default workdir is ./workdirs/<name>).
      model: registered model name; num_classes: classifier outputs.
      model_overrides: extra module fields for `create_model`, as (key, value) pairs.
      dataset: "digits" | "tfds:NAME" | "folder:PATH"; data_dir: where it lives.
      train_split, eval_split: split names.
      image_size, channels: input resolution and channels fed to the model.
      augment: transform preset name for training.
      global_batch_size: examples per step over all devices and processes.
      epochs / steps: training length; give exactly one.
      optimizer, schedule: see their classes.
      label_smoothing: in [0, 1).
      mixup_alpha, cutmix_alpha: Beta(alpha, alpha) parameters of mixup and
        cutmix (0 = off; both > 0: one of the two per batch, as timm). The
        loss is then w * CE(label) + (1 - w) * CE(label_mix) per example.
      ema_decay: decay of an exponential moving average of the params
        (evaluated with `--checkpoint ema`); None = no EMA.
      dtype: model computation dtype; params and optimizer state stay float32.
      parallel: "jit" (NamedSharding over a "data" mesh) or "pmap".
      seed: seeds init, dropout and data order.
      checkpoint_every, eval_every, log_every: intervals in steps; eval also
        runs at the end; 0 disables periodic eval (the final one still runs).
      keep: newest checkpoints kept (plus the best by eval top-1).
      num_workers: data-loading worker processes (0 = in-process).
      init_from: directory written by `zoo convert` (or `save_variables`) to
        start from; tensors whose shape differs (a head of another size) are
        re-initialised. Ignored when the workdir already has a checkpoint.
      freeze_backbone: with `init_from`, train only the re-initialised tensors.
    """

    name: str = "custom"
    model: str = "simple_cnn"
    num_classes: int = 10
    model_overrides: tuple[tuple[str, Any], ...] = ()
    dataset: str = "digits"
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int = 28
    channels: int = 1
    augment: str = "none"
    global_batch_size: int = 128
    epochs: float | None = 10.0
    steps: int | None = None
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    parallel: Literal["jit", "pmap"] = "jit"
    seed: int = 0
    checkpoint_every: int = 500
    keep: int = 3
    eval_every: int = 0
    log_every: int = 50
    num_workers: int = 0
    init_from: str | None = None
    freeze_backbone: bool = False


def validate(config: TrainConfig) -> TrainConfig:
    """Checks value ranges; raises ValueError naming the bad key and value."""
    positive = {
        "global_batch_size": config.global_batch_size,
        "image_size": config.image_size,
        "channels": config.channels,
        "num_classes": config.num_classes,
        "checkpoint_every": config.checkpoint_every,
        "keep": config.keep,
        "log_every": config.log_every,
        "optimizer.accumulation": config.optimizer.accumulation,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value}")
    if (config.epochs is None) == (config.steps is None):
        raise ValueError(
            f"give exactly one of epochs and steps, got epochs={config.epochs}, steps={config.steps}"
        )
    if config.epochs is not None and config.epochs <= 0:
        raise ValueError(f"epochs must be positive, got {config.epochs}")
    if config.steps is not None and config.steps <= 0:
        raise ValueError(f"steps must be positive, got {config.steps}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if getattr(config, key) < 0:
            raise ValueError(f"{key} must be >= 0 (0 turns it off), got {getattr(config, key)}")
    if config.ema_decay is not None and not 0.0 < config.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) or None, got {config.ema_decay}")
    if config.optimizer.learning_rate <= 0:
        raise ValueError(f"optimizer.learning_rate must be positive, got {config.optimizer.learning_rate}")
    if config.optimizer.weight_decay < 0:
        raise ValueError(f"optimizer.weight_decay must be >= 0, got {config.optimizer.weight_decay}")
    if config.optimizer.grad_clip is not None and config.optimizer.grad_clip <= 0:
        raise ValueError(f"optimizer.grad_clip must be positive or None, got {config.optimizer.grad_clip}")
    if config.eval_every < 0:
        raise ValueError(f"eval_every must be >= 0, got {config.eval_every}")
    if config.freeze_backbone and not config.init_from:
        raise ValueError("freeze_backbone=True needs init_from (pretrained weights to freeze)")
    return config


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Training length in steps (micro-steps when accumulating), converted once."""
    if config.steps is not None:
        return config.steps
    return max(1, math.ceil(config.epochs * steps_per_epoch))


def warmup_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Warm-up length in optimizer updates."""
    if config.schedule.warmup_steps is not None:
        return config.schedule.warmup_steps
    updates_per_epoch = steps_per_epoch / config.optimizer.accumulation
    return int(round(config.schedule.warmup_epochs * updates_per_epoch))


# ----------------------------------------------------------------------------- overrides


def _type_matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(map(_type_matches, value, args))
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _parse_value(text: str) -> Any:
    """Python literal if it parses as one (0.1, 5, None, True, (1, 2)), else the string."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return tuple(value) if isinstance(value, list) else value


def _set(config: Any, keys: Sequence[str], value: Any, full_key: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(config)}
    if keys[0] not in fields:
        raise ValueError(
            f"unknown config key {full_key!r}: {type(config).__name__} has no field "
            f"{keys[0]!r}; known: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(type(config))
    annotation = hints[keys[0]]
    current = getattr(config, keys[0])
    if len(keys) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"config key {full_key!r}: {keys[0]!r} is not a section")
        return dataclasses.replace(config, **{keys[0]: _set(current, keys[1:], value, full_key)})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"config key {full_key!r} is a section; set one of its fields")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not _type_matches(value, annotation):
        raise ValueError(
            f"config key {full_key!r} expects {annotation}, got {value!r} ({type(value).__name__})"
        )
    return dataclasses.replace(config, **{keys[0]: value})


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Applies `key=value` strings (`optimizer.learning_rate=0.1`, `epochs=5`).

    Setting `epochs` clears `steps` and vice versa, so either can be given.
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value, e.g. epochs=5")
        key, text = item.split("=", 1)
        key = key.strip()
        value = _parse_value(text.strip())
        config = _set(config, key.split("."), value, key)
        if key == "epochs" and value is not None:
            config = dataclasses.replace(config, steps=None)
        if key == "steps" and value is not None:
            config = dataclasses.replace(config, epochs=None)
    return validate(config)


def load_config(path_or_name: str | None = None) -> TrainConfig:
    """Loads `get_config()` from a recipe file path or a name in experiments/configs/."""
    path_or_name = path_or_name or DEFAULT_CONFIG
    path = Path(path_or_name)
    if path.suffix != ".py":
        path = CONFIG_DIR / f"{path_or_name}.py"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.py")) if CONFIG_DIR.is_dir() else []
        raise ValueError(f"no config {path_or_name!r} (looked for {path}); known: {', '.join(known)}")
    spec = importlib.util.spec_from_file_location(f"zoo_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"{path}: get_config() must return a TrainConfig, got {type(config).__name__}")
    return validate(config)


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """JSON-ready dict of the config (what `config.json` holds)."""
    return dataclasses.asdict(config)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of `to_dict` (lists become tuples)."""
    data = dict(data)
    data["optimizer"] = OptimizerConfig(**data["optimizer"])
    schedule = dict(data["schedule"])
    schedule["boundaries"] = tuple(schedule["boundaries"])
    data["schedule"] = ScheduleConfig(**schedule)
    data["model_overrides"] = tuple(tuple(pair) for pair in data["model_overrides"])
    return validate(TrainConfig(**data))
