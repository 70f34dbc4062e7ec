"""`zoo.layers.batch_norm.BatchNorm` is flax's `nn.BatchNorm`: same variables,
values, gradients and running averages, in training and in evaluation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.batch_norm import BatchNorm


def _variables(channels):
    params = {"scale": jnp.linspace(0.5, 2.0, channels), "bias": jnp.linspace(-1.0, 1.0, channels)}
    stats = {"mean": jnp.linspace(-0.2, 0.3, channels), "var": jnp.linspace(0.5, 1.5, channels)}
    return params, stats


def _loss_and_grads(module, params, stats, x, train):
    def loss(params, x):
        y, updates = module.apply({"params": params, "batch_stats": stats}, x,
                                  use_running_average=not train, mutable=["batch_stats"])
        # ReLU then sin: a non-trivial cotangent, as after ConvBNAct's activation.
        return jnp.sum(jnp.sin(jax.nn.relu(y))), (y, updates)
    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)


@pytest.mark.parametrize("shape,train,dtype,module_dtype", [
    ((4, 5, 5, 6), True, jnp.float32, None),       # the hand-written gradient
    ((16, 6), True, jnp.float32, None),            # tokens / features: also the fast path
    ((4, 5, 5, 6), False, jnp.float32, None),      # running averages: flax's code
    ((4, 5, 5, 6), True, jnp.bfloat16, None),      # bfloat16 in, float32 out (flax's promotion)
    ((4, 5, 5, 6), True, jnp.bfloat16, jnp.bfloat16),   # a bfloat16 model's layer
    ((4, 5, 5, 6), False, jnp.bfloat16, jnp.bfloat16),  # its evaluation: flax's code
    ((4, 5, 5, 6), True, jnp.float16, jnp.float16),     # float16: flax's code
])
def test_equals_flax_batch_norm(shape, train, dtype, module_dtype):
    x = (jax.random.normal(jax.random.key(0), shape) * 3.0 + 1.0).astype(dtype)
    params, stats = _variables(shape[-1])
    ours = BatchNorm(momentum=0.9, dtype=module_dtype)
    flax_bn = nn.BatchNorm(momentum=0.9, dtype=module_dtype)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x, use_running_average=False)) \
        == jax.tree.map(jnp.shape, flax_bn.init(jax.random.key(1), x, use_running_average=False))
    (got_loss, (got_y, got_stats)), got_grads = _loss_and_grads(ours, params, stats, x, train)
    (want_loss, (want_y, want_stats)), want_grads = _loss_and_grads(flax_bn, params, stats, x, train)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    assert got_y.dtype == want_y.dtype
    np.testing.assert_allclose(got_loss, want_loss, rtol=tol)
    for got, want in zip(jax.tree.leaves((got_y, got_stats, got_grads)),
                         jax.tree.leaves((want_y, want_stats, want_grads))):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   rtol=tol, atol=tol)


def test_is_a_flax_batch_norm_for_folding_and_weight_import():
    # zoo.interop.fold intercepts nn.BatchNorm instances.
    assert isinstance(BatchNorm(), nn.BatchNorm)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_training_gradient_stores_no_centred_copy_of_the_input(dtype):
    # What the hand-written VJP is for: flax's autodiff keeps x - mean (in
    # float32, for bfloat16 x too) as a residual beside x; ours keeps x, in its
    # own dtype, the mean and 1/std.
    x = jax.random.normal(jax.random.key(2), (4, 5, 5, 6)).astype(dtype)
    params, stats = _variables(6)

    def full_size_residuals(module):
        def forward(params, x):
            return module.apply({"params": params, "batch_stats": stats}, x,
                                use_running_average=False, mutable=["batch_stats"])[0]
        _, vjp = jax.vjp(forward, params, x)
        return [leaf.dtype for leaf in jax.tree.leaves(vjp) if leaf.shape == x.shape]
    ours = full_size_residuals(BatchNorm(dtype=dtype))
    assert ours == [dtype]
    assert len(full_size_residuals(nn.BatchNorm(dtype=dtype))) > 1
