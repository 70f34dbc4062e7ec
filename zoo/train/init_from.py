"""Starting a run from imported weights (`zoo train --init-from DIR`).

DIR is what `zoo convert` writes (zoo.interop.save_variables). Every tensor
of the same shape is copied into the fresh model; tensors whose shape differs
(a classifier for another number of classes) keep their fresh initialisation,
and a message names them. With `freeze_backbone` only those re-initialised
tensors are trained. A workdir that already has a checkpoint resumes from it
and ignores DIR.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax

import zoo
from zoo.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Imported variables and the "collection/path" names that stay fresh."""

    variables: dict[str, Any]
    reinitialised: list[str]
    source: str


def load_pretrained(config: TrainConfig, model: Any) -> Pretrained:
    """Reads `config.init_from` and checks it fits `model`, before any compute.

    Raises:
      ValueError: not a converted-weights directory, weights of another
        model, or an architecture that differs in more than shapes.
    """
    from zoo.interop import load_variables, merge_pretrained

    variables, metadata = load_variables(config.init_from)
    if metadata.get("model") != config.model:
        raise ValueError(f"init_from {config.init_from!r} holds weights of "
                         f"{metadata.get('model')!r}, but the config trains {config.model!r}")
    shape = (1, config.image_size, config.image_size, config.channels)
    _, reinitialised = merge_pretrained(zoo.registry.init_shapes(model, shape), variables)
    return Pretrained(variables, reinitialised, str(config.init_from))


def freeze_backbone(tx: optax.GradientTransformation,
                    pretrained: Pretrained) -> optax.GradientTransformation:
    """`tx` for the re-initialised tensors, zero updates for everything else."""
    from zoo.interop import trainable_mask

    trainable = [p for p in pretrained.reinitialised if p.startswith("params/")]
    if not trainable:
        raise ValueError("freeze_backbone: every tensor was imported, so nothing would train "
                         "(freezing is for a new head: set num_classes to the new task's)")
    return optax.multi_transform(
        {True: tx, False: optax.set_to_zero()},
        lambda params: trainable_mask(params, trainable))


def apply_pretrained(trainer: Any, pretrained: Pretrained) -> str:
    """Copies the imported tensors into `trainer.state`; returns a message."""
    from zoo.interop import merge_pretrained

    state = trainer.canonical_state()
    merged, _ = merge_pretrained(jax.device_get(state.variables()), pretrained.variables)
    state = state.replace(
        params=merged["params"], batch_stats=merged.get("batch_stats", state.batch_stats),
        ema_params=merged["params"] if state.ema_params is not None else None)
    trainer.state = trainer.place_state(state)
    fresh = ", ".join(pretrained.reinitialised) or "nothing"
    return f"initialised from {pretrained.source}; re-initialised: {fresh}"
