"""TrainState: everything that changes during training, as one pytree.

The state is built abstractly first (`jax.eval_shape`, no FLOPs, no memory),
then materialised by a jitted init whose outputs land directly in their
shardings, so a large model is never first built on one device and copied.
The abstract state is also the restore target of checkpoints.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Params, BatchNorm statistics, optimizer state, step, RNG key and EMA.

    Attributes:
      step: int32 scalar, train steps (micro-batches) taken.
      params: the model's trainable parameters (float32).
      batch_stats: BatchNorm running statistics ({} for models without BN).
      opt_state: the optax state of `tx`.
      rng: uint32[2] base key; the step's dropout key is fold_in(rng, step).
      ema_params: exponential moving average of `params`, or None.
      apply_fn: the model's `apply` (static, not saved).
      tx: the optax transform (static, not saved).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None
    apply_fn: Any = struct.field(pytree_node=False, default=None)
    tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)

    def variables(self, params: Any | None = None) -> dict[str, Any]:
        """The `variables` dict for `apply_fn` (optionally with other params)."""
        variables = {"params": self.params if params is None else params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def init_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: tuple[int, ...],
    seed: int,
    *,
    use_ema: bool = False,
) -> TrainState:
    """A fresh TrainState (call under jit / eval_shape; pure in `seed`).

    Args:
      model: the Flax module.
      tx: the optax transform.
      input_shape: NHWC shape of one batch (only its per-example shape matters).
      seed: integer seed; params use fold_in(key, 0), dropout fold_in(key, 1).
      use_ema: keep an EMA copy of the params.
    """
    key = jax.random.PRNGKey(seed)
    init_key, dropout_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    x = jnp.zeros((1, *input_shape[1:]), jnp.float32)
    variables = model.init(init_key, x, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=dropout_key,
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        apply_fn=model.apply,
        tx=tx,
    )


def abstract_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: tuple[int, ...],
    *,
    use_ema: bool = False,
) -> TrainState:
    """The TrainState as `jax.ShapeDtypeStruct`s (no compute, no memory)."""
    return jax.eval_shape(
        functools.partial(init_state, model, tx, input_shape, use_ema=use_ema), 0
    )


def create_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: tuple[int, ...],
    seed: int,
    sharding: jax.sharding.Sharding,
    *,
    use_ema: bool = False,
) -> TrainState:
    """Materialises the state straight into `sharding` (e.g. replicated on a mesh)."""
    abstract = abstract_state(model, tx, input_shape, use_ema=use_ema)
    shardings = jax.tree.map(lambda _: sharding, abstract)
    init = jax.jit(
        functools.partial(init_state, model, tx, input_shape, use_ema=use_ema),
        static_argnums=0,
        out_shardings=shardings,
    )
    return init(seed)
