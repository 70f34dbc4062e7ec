"""Small helpers shared by the per-family model tests."""

import jax
import jax.numpy as jnp


def abstract_images(*dims: int) -> jax.ShapeDtypeStruct:
    """A float32 input of shape `dims` for `jax.eval_shape` (no data)."""
    return jax.ShapeDtypeStruct(dims, jnp.float32)


def outputs_of(names):
    """capture_intermediates filter: outputs of the submodules called `names`."""
    return lambda module, method: method == "__call__" and module.name in names
