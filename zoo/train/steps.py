"""The pure train and eval steps, shared by every parallel strategy.

Under `jax.jit` with a data-sharded batch, `axis_name` is None and XLA inserts
the cross-device reductions itself. Under `jax.pmap`, `axis_name="data"` turns
on explicit collectives: gradients, BatchNorm statistics and metrics are
averaged over devices (each device's loss is a mean over its equal share of
the global batch, so the average of the means is the global mean).

Hyper-parameters arrive as keyword arguments bound once by the caller (the
optax transform lives in the state); nothing here reads a config or a global.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from zoo.train.state import TrainState

Batch = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy: logits [batch, classes], labels int [batch] -> [batch]."""
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def correct_topk(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the top-k logits: [batch, classes] -> [batch]."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def _mean(x: jax.Array, axis_name: str | None) -> jax.Array:
    return x if axis_name is None else jax.lax.pmean(x, axis_name)


def _dropout_key(state: TrainState, axis_name: str | None) -> jax.Array:
    key = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
        # Each pmap device draws independent masks for its own examples.
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    return key


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    axis_name: str | None = None,
    label_smoothing: float = 0.0,
    ema_decay: float | None = None,
    learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step (or one accumulation micro-step under MultiSteps).

    Args:
      state: the TrainState.
      batch: "image" [batch, height, width, channels], "label" int32 [batch],
        optional "mask" bool [batch] (rows with False do not count), and
        optional "label_mix" int32 [batch] with "mix_weight" float32 [batch]
        (mixup / cutmix, from `zoo.data`): the loss of an example is then
        w * CE(label) + (1 - w) * CE(label_mix). Accuracy counts `label`.
      axis_name: pmap axis to average over; None under jit.
      label_smoothing: in [0, 1).
      ema_decay: decay for `state.ema_params` (ignored when it is None).
      learning_rate_fn: the schedule, to report "learning_rate".

    Returns:
      (new state, metrics) with scalar "loss", "top1", "top5", "grad_norm" and
      "learning_rate" (0 when no schedule is given).
    """
    images, labels = batch["image"], batch["label"]
    mask = batch.get("mask")
    weights = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    count = jnp.maximum(weights.sum(), 1.0)
    if ("label_mix" in batch) != ("mix_weight" in batch):
        raise ValueError(f"a mixed batch needs both 'label_mix' and 'mix_weight'; got keys "
                         f"{sorted(batch)}")
    has_bn = bool(state.batch_stats)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        variables = state.variables(params)
        rngs = {"dropout": _dropout_key(state, axis_name)}
        if has_bn:
            logits, updates = state.apply_fn(variables, images, train=True, rngs=rngs,
                                             mutable=["batch_stats"])
            new_stats = updates["batch_stats"]
        else:
            logits = state.apply_fn(variables, images, train=True, rngs=rngs)
            new_stats = state.batch_stats
        per_example = cross_entropy(logits, labels, label_smoothing)
        if "label_mix" in batch:
            mix = batch["mix_weight"].astype(jnp.float32)
            per_example = (mix * per_example + (1.0 - mix)
                           * cross_entropy(logits, batch["label_mix"], label_smoothing))
        loss = (per_example * weights).sum() / count
        return loss, (logits, new_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = _mean(grads, axis_name)
    batch_stats = _mean(batch_stats, axis_name)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_params is not None and ema_decay is not None:
        ema_params = optax.incremental_update(params, ema_params, step_size=1.0 - ema_decay)
    metrics = {
        "loss": _mean(loss, axis_name),
        "top1": _mean((correct_topk(logits, labels, 1) * weights).sum() / count, axis_name),
        "top5": _mean((correct_topk(logits, labels, 5) * weights).sum() / count, axis_name),
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": (learning_rate_fn(state.step) if learning_rate_fn is not None
                          else jnp.zeros((), jnp.float32)),
    }
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, ema_params=ema_params)
    return new_state, metrics


def eval_step(state: TrainState, batch: Batch, *, axis_name: str | None = None) -> dict[str, jax.Array]:
    """Sums over the valid (mask=True) rows of a batch, so padding is exact.

    Args:
      state: the TrainState (evaluate EMA weights by passing
        `state.replace(params=state.ema_params)`).
      batch: "image", "label" and "mask" as in `train_step`.
      axis_name: pmap axis to sum over; None under jit.

    Returns:
      "loss", "top1", "top5": sums over valid rows; "count": number of valid rows.
      Divide by "count" (after summing over batches) for the means.
    """
    images, labels = batch["image"], batch["label"]
    mask = batch.get("mask")
    weights = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    logits = state.apply_fn(state.variables(), images, train=False)
    sums = {
        "loss": (cross_entropy(logits, labels, 0.0) * weights).sum(),
        "top1": (correct_topk(logits, labels, 1) * weights).sum(),
        "top5": (correct_topk(logits, labels, 5) * weights).sum(),
        "count": weights.sum(),
    }
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    return sums
