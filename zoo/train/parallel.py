"""Data-parallel strategies: jit over a 1-D "data" mesh (default) and pmap.

jit: the batch is sharded along its first axis over the mesh axis "data"
(all devices of all processes), the state is replicated, and the state
argument is donated so the update happens in place. XLA inserts the gradient
all-reduce; BatchNorm statistics are global by construction.

pmap: the state carries a leading device axis, the batch is reshaped to
[devices, per_device, ...], and the step's `axis_name="data"` turns on the
explicit collectives (BatchNorm families are cloned with `bn_axis_name`).

Either way `Trainer.canonical_state` gives the single replicated state that
checkpoints hold, so a run saved under one strategy restores under the other.

The jit steps are compiled with `zoo.runtime.compiler_options` for the mesh's
platform (on CPU: XLA's Eigen convolutions instead of YNNPACK's);
`jax.pmap` takes no compiler options, so pmap steps get XLA's defaults.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from zoo.runtime import compiler_options
from zoo.train.state import TrainState, abstract_state, create_state
from zoo.train.steps import eval_step, train_step

AXIS = "data"
Parallel = Literal["jit", "pmap"]


def create_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named "data" over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    # Auto axes: XLA's partitioner places the gradient reductions itself.
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def check_batch_divisible(global_batch: int, num_devices: int) -> None:
    """Raises ValueError unless the global batch splits evenly over the devices."""
    if global_batch <= 0 or global_batch % num_devices:
        raise ValueError(
            f"global batch size {global_batch} must be a positive multiple of the "
            f"number of devices ({num_devices}); try {max(1, global_batch // num_devices) * num_devices}"
        )


def with_bn_axis(model: nn.Module, axis_name: str) -> nn.Module:
    """`model` with `bn_axis_name=axis_name` where the family has that field."""
    names = {f.name for f in dataclasses.fields(model)}
    return model.clone(bn_axis_name=axis_name) if "bn_axis_name" in names else model


@dataclasses.dataclass
class Trainer:
    """Compiled steps and placed state for one strategy (see `setup_training`).

    Attributes:
      state: the placed TrainState (leading device axis under pmap).
      parallel: "jit" or "pmap".
      mesh: the "data" mesh (used by both strategies for placement).
      train_step: compiled `(state, batch) -> (state, metrics)`, state donated.
      eval_step: compiled `(state, batch) -> sums`.
      compiler_options: the XLA options both steps compile with (empty: XLA's
        defaults; always empty under pmap).
    """

    state: TrainState
    parallel: Parallel
    mesh: jax.sharding.Mesh
    train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    eval_step: Callable[..., dict[str, jax.Array]]
    abstract: TrainState
    compiler_options: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Process-local numpy batch -> device arrays (global batch across processes).

        Under jit, a global array sharded over "data"; under pmap, arrays of
        shape [local_devices, per_device, ...].
        """
        local = self.num_devices // jax.process_count()
        for key, value in batch.items():
            check_batch_divisible(value.shape[0] * jax.process_count(), self.num_devices)
        if self.parallel == "jit":
            return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
                    for k, v in batch.items()}
        stacked = NamedSharding(self.mesh, PartitionSpec(AXIS))
        return {k: jax.make_array_from_process_local_data(
                    stacked, np.asarray(v).reshape(local, -1, *v.shape[1:]))
                for k, v in batch.items()}

    def canonical_state(self, state: TrainState | None = None) -> TrainState:
        """The single (unstacked) state, replicated on the mesh: what checkpoints hold."""
        state = self.state if state is None else state
        if self.parallel == "jit":
            return state
        return jax.tree.map(lambda x: jax.device_put(x[0], self.replicated), state)

    def place_state(self, state: TrainState) -> TrainState:
        """Inverse of `canonical_state`: a replicated state into this strategy's layout."""
        if self.parallel == "jit":
            return jax.device_put(state, self.replicated)
        return _stack_replicas(state, self.mesh)

    def lower_train_step(self, state: TrainState, batch: dict[str, jax.Array]) -> jax.stages.Lowered:
        """The lowered train step (for timing lower/compile and cost analysis)."""
        return self.train_step.lower(state, batch)

    def metrics_to_host(self, metrics: dict[str, jax.Array]) -> dict[str, float]:
        """Scalars as Python floats (first replica under pmap; all replicas agree)."""
        if self.parallel == "pmap":
            metrics = jax.tree.map(lambda x: x[0], metrics)
        return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _stack_replicas(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
    n = mesh.devices.size
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))

    def stack(x: jax.Array) -> jax.Array:
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(
            (n, *host.shape), sharding, lambda index: host[None].repeat(1, 0))

    return jax.tree.map(stack, state)


def setup_training(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: tuple[int, ...],
    parallel: Parallel = "jit",
    devices: Sequence[jax.Device] | None = None,
    seed: int = 0,
    label_smoothing: float = 0.0,
    *,
    ema_decay: float | None = None,
    learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> Trainer:
    """Builds the state and compiles nothing yet (jit compiles on first call).

    Args:
      model: a `flax.linen.Module` from `zoo.create_model(...)`.
      tx: the optax transform.
      input_shape: (global_batch, height, width, channels).
      parallel: "jit" or "pmap".
      devices: devices to use; default all devices of all processes.
      seed: init and dropout seed.
      label_smoothing: in [0, 1).
      ema_decay: keep an EMA of the params with this decay (None: no EMA).
      learning_rate_fn: schedule reported as the "learning_rate" metric.
    """
    if parallel not in ("jit", "pmap"):
        raise ValueError(f"parallel must be 'jit' or 'pmap', got {parallel!r}")
    mesh = create_mesh(devices)
    check_batch_divisible(input_shape[0], mesh.devices.size)
    step_kwargs = dict(label_smoothing=label_smoothing, ema_decay=ema_decay,
                       learning_rate_fn=learning_rate_fn)
    use_ema = ema_decay is not None
    if parallel == "pmap":
        model = with_bn_axis(model, AXIS)
    replicated = NamedSharding(mesh, PartitionSpec())
    state = create_state(model, tx, input_shape, seed, replicated, use_ema=use_ema)
    abstract = abstract_state(model, tx, input_shape, use_ema=use_ema)
    batch_sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    options: dict[str, str] = {}
    if parallel == "jit":
        options = compiler_options(mesh.devices.flat[0].platform)
        train = jax.jit(functools.partial(train_step, **step_kwargs),
                        in_shardings=(replicated, batch_sharding),
                        out_shardings=(replicated, replicated), donate_argnums=0,
                        compiler_options=options)
        evaluate = jax.jit(eval_step, in_shardings=(replicated, batch_sharding),
                           out_shardings=replicated, compiler_options=options)
    else:
        local_devices = list(mesh.local_devices)
        train = jax.pmap(functools.partial(train_step, axis_name=AXIS, **step_kwargs),
                         axis_name=AXIS, devices=local_devices, donate_argnums=0)
        evaluate = jax.pmap(functools.partial(eval_step, axis_name=AXIS), axis_name=AXIS,
                            devices=local_devices)
        state = _stack_replicas(state, mesh)
    return Trainer(state=state, parallel=parallel, mesh=mesh, train_step=train,
                   eval_step=evaluate, abstract=abstract, compiler_options=options)
