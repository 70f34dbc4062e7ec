"""`zoo.layers.dense.flat_dot_general` is `lax.dot_general` for nn.Dense, in a
form whose kernel gradient XLA's CPU backend computes without copies."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.xla_helpers import dot_operand_types
from zoo import runtime
from zoo.layers.dense import flat_dot_general

DENSE = (((3,), (0,)), ((), ()))


def _random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 3, 4, 7), (4, 7)])
def test_dense_equals_plain_dense_values_and_gradients(shape):
    x = _random(shape, 0)
    fast = nn.Dense(6, dot_general=flat_dot_general)
    plain = nn.Dense(6)
    variables = plain.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, variables)

    def loss(module, variables, x):
        return jnp.sum(jnp.sin(module.apply(variables, x)))
    got = jax.value_and_grad(loss, argnums=(1, 2))(fast, variables, x)
    want = jax.value_and_grad(loss, argnums=(1, 2))(plain, variables, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_other_contractions_pass_through_unchanged():
    lhs, rhs = _random((3, 4, 5), 1), _random((3, 5, 2), 2)
    batched = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_allclose(flat_dot_general(lhs, rhs, batched),
                               lax.dot_general(lhs, rhs, batched), rtol=1e-6)
    first_axis = (((0,), (0,)), ((), ()))
    rhs2 = _random((3, 6), 3)
    np.testing.assert_allclose(flat_dot_general(lhs, rhs2, first_axis),
                               lax.dot_general(lhs, rhs2, first_axis), rtol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA's CPU HLO")
def test_kernel_gradient_has_no_transposed_copy_of_the_activations():
    x, kernel = _random((2, 9, 9, 6), 4), _random((6, 10), 5)

    def transposes(dot_general):
        grad = jax.grad(lambda k: jnp.sum(jnp.sin(dot_general(x, k, DENSE))))
        hlo = jax.jit(grad).lower(kernel).compile().as_text()
        return [line for line in hlo.splitlines() if " transpose(" in line]
    # With lax.dot_general (jax 0.10) there is one: [10, 2, 9, 9] from x.
    assert transposes(flat_dot_general) == []


def test_bfloat16_dense_is_the_float32_product_rounded_and_multiplies_bfloat16_on_cpu():
    x = _random((2, 5, 24), 6).astype(jnp.bfloat16)
    kernel = _random((24, 16), 7).astype(jnp.bfloat16)
    out = flat_dot_general(x, kernel, (((2,), (0,)), ((), ())))
    assert out.dtype == jnp.bfloat16 and out.shape == (2, 5, 16)
    want = x.astype(jnp.float32) @ kernel.astype(jnp.float32)
    np.testing.assert_allclose(out.astype(jnp.float32), want, rtol=2.0 ** -8, atol=1e-4)
    grad = jax.grad(lambda x, k: jnp.sum(jnp.sin(flat_dot_general(
        x, k, (((2,), (0,)), ((), ()))).astype(jnp.float32))), argnums=(0, 1))
    assert [g.dtype for g in grad(x, kernel)] == [jnp.bfloat16, jnp.bfloat16]
    if jax.default_backend() == "cpu":   # zoo.layers.cpu_matmul's form: no float32 dot
        hlo = jax.jit(grad, compiler_options=runtime.compiler_options("cpu")).lower(
            x, kernel).compile().as_text()
        assert dot_operand_types(hlo) == [("bf16", "bf16")] * 3
