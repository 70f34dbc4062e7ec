"""Optimizer recipes: optax transforms built from the config, nothing in the loss.

    optimizer = create_optimizer(config.optimizer, config.schedule,
                                 total_steps=1000, warmup_steps=50)
    optimizer.tx                  # optax.GradientTransformation
    optimizer.learning_rate_fn(train_step)   # rate used at that train step

Weight decay is decoupled and masked off every parameter with ndim <= 1
(biases, BatchNorm / LayerNorm scales and offsets). Gradient accumulation wraps
the whole chain in `optax.MultiSteps`, so the schedule advances once per
optimizer update, not per micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from zoo.train.config import OptimizerConfig, ScheduleConfig


class Optimizer(NamedTuple):
    """An optax transform and the learning rate it applies at a train step."""

    tx: optax.GradientTransformation
    learning_rate_fn: Callable[[jax.Array], jax.Array]


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: kernels (ndim >= 2) only."""
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def create_schedule(
    schedule: ScheduleConfig, *, peak: float, total_updates: int, warmup_updates: int
) -> optax.Schedule:
    """Linear warm-up from 0 to `peak` over `warmup_updates`, then the decay."""
    if warmup_updates < 0 or warmup_updates > total_updates:
        raise ValueError(
            f"warm-up of {warmup_updates} updates must be in [0, total {total_updates}]"
        )
    decay_updates = max(1, total_updates - warmup_updates)
    if schedule.name == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_updates, alpha=schedule.final_fraction)
    elif schedule.name == "step":
        boundaries = {int(round(f * total_updates)) - warmup_updates: schedule.decay_factor
                      for f in schedule.boundaries}
        decay = optax.piecewise_constant_schedule(
            peak, {b: s for b, s in boundaries.items() if b > 0})
    elif schedule.name == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"unknown schedule {schedule.name!r}; expected cosine, step or constant")
    if warmup_updates == 0:
        return decay
    warmup = optax.linear_schedule(0.0, peak, warmup_updates)
    return optax.join_schedules([warmup, decay], [warmup_updates])


def _base_optimizer(opt: OptimizerConfig, lr: optax.Schedule) -> optax.GradientTransformation:
    wd = opt.weight_decay
    if opt.name == "sgd":
        parts = []
        if wd > 0:
            parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
        parts.append(optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov))
        return optax.chain(*parts)
    if opt.name == "adamw":
        return optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=wd, mask=decay_mask)
    if opt.name == "lamb":
        return optax.lamb(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=wd, mask=decay_mask)
    if opt.name == "lars":
        # LARS' trust ratio is also skipped for biases and norms, as in the paper.
        return optax.lars(lr, weight_decay=wd, weight_decay_mask=decay_mask,
                          trust_ratio_mask=decay_mask, momentum=opt.momentum,
                          nesterov=opt.nesterov)
    raise ValueError(f"unknown optimizer {opt.name!r}; expected sgd, adamw, lamb or lars")


def create_optimizer(
    opt: OptimizerConfig, schedule: ScheduleConfig, *, total_steps: int, warmup_steps: int
) -> Optimizer:
    """The optax recipe for `opt` and `schedule`.

    Args:
      opt, schedule: the config sections.
      total_steps: training length in train steps (micro-batches).
      warmup_steps: warm-up length in optimizer updates.
    """
    k = opt.accumulation
    total_updates = max(1, total_steps // k)
    lr = create_schedule(schedule, peak=opt.learning_rate, total_updates=total_updates,
                         warmup_updates=warmup_steps)
    tx = _base_optimizer(opt, lr)
    if opt.grad_clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), tx)
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()

    def learning_rate_fn(step: jax.Array) -> jax.Array:
        return lr(step // k)

    return Optimizer(tx=tx, learning_rate_fn=learning_rate_fn)
