"""Orbax checkpoints of the TrainState, the data-iterator position and metadata.

Layout of `<workdir>/checkpoints/`:

    <step>/state/          the TrainState arrays (StandardSave)
    <step>/data_iterator/  the train pipeline's `get_state()` dict (JsonSave)
    <step>/metadata/       model, num_classes, input shape, dtype (JsonSave)

Saves are asynchronous (arrays are copied to host before `save` returns, so
the state may be donated right after). Orbax writes each step into a
temporary directory and renames it when complete, so a save cut short by a
kill is never listed and never restored. Kept: the newest `keep` steps plus
the best one by "eval/top1".

Restoring checks the metadata against the run first: a different model,
number of classes or input shape is a ValueError, and nothing on disk changes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers
from orbax.checkpoint.path import step as step_lib

from zoo.train.state import TrainState

BEST_METRIC = "eval/top1"


@dataclasses.dataclass(frozen=True)
class Restored:
    """A restored checkpoint: state (in the target's shardings), iterator position, step."""

    state: TrainState
    data_iterator: dict[str, Any] | None
    metadata: dict[str, Any]
    step: int


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    preservation = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation,
        # best_fn makes Orbax write each step's metrics next to it, so the
        # best checkpoint is still known after a restart.
        best_fn=lambda m: m[BEST_METRIC],
        best_mode="max",
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(directory.absolute(), options=options,
                                 item_names=("state", "data_iterator", "metadata"))


class Checkpointer:
    """Saves and restores a run's checkpoints under `<workdir>/checkpoints`.

    Args:
      directory: the checkpoints directory.
      keep: newest checkpoints kept (the best by eval top-1 is kept as well).
      metadata: what identifies the run's state layout (model, num_classes,
        image_size, channels, ...); compared on restore.
    """

    def __init__(self, directory: str | Path, keep: int, metadata: dict[str, Any]):
        self.directory = Path(directory)
        self.metadata = dict(metadata)
        self.keep = keep
        self._manager: ocp.CheckpointManager | None = None

    @property
    def manager(self) -> ocp.CheckpointManager:
        # Created lazily: checking an existing workdir must not write to it.
        if self._manager is None:
            self._manager = _manager(self.directory, self.keep)
        return self._manager

    def steps(self) -> list[int]:
        """Complete checkpoint steps on disk, oldest first (temporary dirs excluded)."""
        if not self.directory.is_dir():
            return []
        return sorted(step_lib.checkpoint_steps(self.directory))

    def check_compatible(self) -> None:
        """Raises ValueError if the newest checkpoint belongs to another model/shape."""
        steps = self.steps()
        if not steps:
            return
        saved = self.read_metadata(steps[-1])
        for key, expected in self.metadata.items():
            if key in saved and saved[key] != expected:
                raise ValueError(
                    f"the checkpoints in {self.directory} were written with {key}={saved[key]!r}, "
                    f"but this run has {key}={expected!r}; use another --workdir (the "
                    f"existing checkpoints were left untouched)"
                )

    def read_metadata(self, step: int) -> dict[str, Any]:
        """The run metadata saved with `step` (read directly; nothing is written)."""
        path = self.directory / str(step) / "metadata" / "metadata"
        if not path.is_file():
            return {}
        return json.loads(path.read_text())

    def save(self, step: int, state: TrainState, data_iterator: dict[str, Any] | None,
             metrics: dict[str, float] | None = None) -> None:
        """Starts an asynchronous save of `state` (canonical, replicated) at `step`."""
        best = None
        if metrics is not None and BEST_METRIC in metrics:
            best = {BEST_METRIC: float(metrics[BEST_METRIC])}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_iterator=ocp.args.JsonSave(data_iterator or {}),
                metadata=ocp.args.JsonSave(self.metadata),
            ),
            metrics=best,
            force=True,
        )

    def restore(self, abstract: TrainState, step: int | None = None) -> Restored:
        """Restores `step` (default newest) into the shapes/shardings of `abstract`.

        Args:
          abstract: a TrainState of `jax.ShapeDtypeStruct`s with `.sharding` set.
          step: which step; None = the newest complete one.
        """
        self.check_compatible()
        steps = self.steps()
        if not steps:
            raise ValueError(f"no complete checkpoint in {self.directory}")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ValueError(f"no checkpoint for step {step} in {self.directory}; have {steps}")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            data_iterator=ocp.args.JsonRestore(),
            metadata=ocp.args.JsonRestore(),
        ))
        state = abstract.replace(**{
            f.name: getattr(restored["state"], f.name)
            for f in dataclasses.fields(TrainState) if f.metadata.get("pytree_node", True)
        })
        return Restored(state=state, data_iterator=restored["data_iterator"] or None,
                        metadata=restored["metadata"], step=step)

    def best_step(self) -> int | None:
        """The step with the highest eval top-1 among kept checkpoints, if any has one."""
        scored = []
        for step in self.steps():
            metrics = self.manager.metrics(step)
            if metrics and BEST_METRIC in metrics:
                scored.append((float(metrics[BEST_METRIC]), step))
        return max(scored)[1] if scored else None

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are complete."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def abstract_with_sharding(abstract: TrainState, sharding: jax.sharding.Sharding) -> TrainState:
    """`abstract` with every leaf given `sharding` (the restore target)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)
