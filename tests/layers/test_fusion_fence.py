"""The fences of zoo.layers.fusion_fence: exact identities, kept on CPU, absent elsewhere."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.xla_helpers import GATHERING_COLLECTIVES, batch_and_replicated_shardings
from zoo.layers.fusion_fence import (cpu_library_fusion_fence, gradient_barrier,
                                     library_fusion_fence, loop_fusion_barrier, recompute_fence)
from zoo.layers.mlp import gelu
from zoo.layers.pooling import max_pool

EDGE_VALUES = [0.0, -0.0, 1e-45, 1.2e-38, 3.4e38, 1.0 + 2.0 ** -23, -7.25, np.inf, -np.inf]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_fence_returns_every_bit_unchanged(dtype):
    values = jnp.asarray(EDGE_VALUES, jnp.float32).astype(dtype)
    for fence in (library_fusion_fence, cpu_library_fusion_fence):
        fenced = jax.jit(fence)(values)
        assert fenced.dtype == values.dtype
        np.testing.assert_array_equal(np.asarray(fenced).view(np.uint8),
                                      np.asarray(values).view(np.uint8))
    assert bool(jnp.isnan(jax.jit(library_fusion_fence)(jnp.float32(np.nan))))


def test_fence_rejects_integers():
    with pytest.raises(TypeError, match="floating-point"):
        library_fusion_fence(jnp.arange(3))


def test_fence_is_in_the_cpu_program_only():
    x = jnp.ones((4, 8), jnp.float32)
    cpu = jax.jit(gelu).lower(x).compile().as_text()
    assert "reduce-precision" in cpu, "the fence must survive XLA's CPU optimisations"
    gpu = jax.export.export(jax.jit(gelu), platforms=["cuda"])(x).mlir_module()
    assert "reduce_precision" not in gpu
    assert "erf" in gpu


def test_loop_fusion_barrier_returns_every_bit_unchanged():
    values = jnp.asarray(EDGE_VALUES, jnp.float32)
    with_nan = values.at[len(EDGE_VALUES) // 2].set(np.nan)  # takes the other branch
    for a in (values, with_nan):
        b = jnp.asarray(EDGE_VALUES[::-1], jnp.bfloat16)
        got = jax.jit(loop_fusion_barrier)(a, b)
        for g, want in zip(got, (a, b)):
            assert g.dtype == want.dtype
            np.testing.assert_array_equal(np.asarray(g).view(np.uint8),
                                          np.asarray(want).view(np.uint8))
    nan_key = jnp.asarray([1.0, np.nan, 2.0])  # predicate from another array: false
    (got,) = jax.jit(lambda a, k: loop_fusion_barrier(a, predicate_from=k))(values, nan_key)
    np.testing.assert_array_equal(np.asarray(got).view(np.uint8), np.asarray(values).view(np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        loop_fusion_barrier()


def test_loop_fusion_barrier_survives_cpu_compilation():
    # A compile-time predicate or identical branches would let XLA drop the
    # conditional, and with it the barrier (its effect on fusion:
    # tests/layers/test_depthwise.py).
    x = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    padded = lambda x: loop_fusion_barrier(jnp.pad(x, 1) * 2.0)[0]  # noqa: E731
    assert "conditional(" in jax.jit(padded).lower(x).compile().as_text()


@pytest.mark.parametrize("per_element", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_recompute_fence_returns_every_bit_and_gradient_unchanged(dtype, per_element):
    fence = jax.jit(functools.partial(recompute_fence, per_element=per_element))
    normal = [v for v in EDGE_VALUES if not 0 < abs(v) < np.finfo(np.float32).tiny]
    values = jnp.asarray(normal + [np.nan], jnp.float32).astype(dtype)
    anchor = jnp.asarray([[-3.5, 2.0]], jnp.float32)
    fenced = fence(values, anchor)
    assert fenced.dtype == values.dtype
    # Every bit; the per-element divisor makes NaN of infinities (documented).
    infinite = np.isinf(np.asarray(values, np.float32)) & per_element
    assert infinite.any() == per_element
    np.testing.assert_array_equal(np.asarray(fenced)[~infinite].view(np.uint8),
                                  np.asarray(values)[~infinite].view(np.uint8))
    assert np.isnan(np.asarray(fenced, np.float32)[infinite]).all()
    # Subnormals flush to zero, as in XLA's own CPU arithmetic (a ReLU's too),
    # so a fenced ReLU output is every bit the ReLU output.
    subnormal = jnp.asarray([1e-45, -3e-39], jnp.float32)
    relu = jax.jit(jax.nn.relu)(subnormal)
    np.testing.assert_array_equal(np.asarray(fence(relu, anchor)), np.asarray(relu))
    weights = jnp.linspace(-2.0, 3.0, values.size).astype(dtype)
    x_grad, anchor_grad = jax.jit(jax.grad(
        lambda x, a: jnp.sum(fence(x, a) * weights).astype(jnp.float32),
        argnums=(0, 1)))(jnp.where(jnp.isfinite(values), values, 0), anchor)
    np.testing.assert_array_equal(np.asarray(x_grad).view(np.uint8),
                                  np.asarray(weights).view(np.uint8))
    assert not anchor_grad.any()  # the anchor only supplies a 1.0: no gradient flows to it


def test_recompute_fence_bad_input():
    with pytest.raises(TypeError, match="floating-point"):
        recompute_fence(jnp.arange(3), jnp.ones(2))
    # A diverged anchor (documented): the result is NaN, not silently wrong.
    assert bool(jnp.isnan(jax.jit(recompute_fence)(jnp.ones(3), jnp.asarray([np.inf]))).all())


def _residual_chain(fence: bool, blocks: int = 4):
    def loss(kernels, x):
        for kernel in kernels:
            x = jax.nn.relu((x @ kernel) * 0.5 + x)
            if fence:
                x = recompute_fence(x, kernel)
        return x.sum()
    return loss


def test_recompute_fence_stops_xla_recomputing_a_residual_stream():
    # Differentiated, XLA's CPU backend fuses every earlier block's ReLU into
    # the later blocks' loops (13 maximums for 4 blocks in jaxlib 0.10.2); with
    # the fence each block's output is computed once. When XLA stops
    # duplicating, the first assertion fails and ResNet's fence can go.
    blocks = 4
    kernels = [jnp.full((16, 16), 0.01 * (i + 1), jnp.float32) for i in range(blocks)]
    x = jnp.ones((32, 16), jnp.float32)
    maximums = {}
    for fence in (False, True):
        program = jax.jit(jax.grad(_residual_chain(fence, blocks))).lower(kernels, x).compile()
        maximums[fence] = program.as_text().count(" maximum(")
    assert maximums[False] > blocks
    assert maximums[True] <= blocks
    # Same gradients either way.
    plain, fenced = (jax.jit(jax.grad(_residual_chain(f, blocks)))(kernels, x)
                     for f in (False, True))
    for a, b in zip(plain, fenced):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_recompute_fence_is_in_the_cpu_program_only():
    x, anchor = jnp.ones((4, 8), jnp.float32), jnp.ones((3, 3), jnp.float32)
    gpu = jax.export.export(jax.jit(recompute_fence), platforms=["cuda"])(x, anchor).mlir_module()
    assert "divide" not in gpu
    assert " divide(" in jax.jit(recompute_fence).lower(x, anchor).compile().as_text()


def test_recompute_fence_keeps_data_parallel_training_local():
    # The anchor is a replicated kernel: under jit over a mesh no device has to
    # fetch an element of a batch-sharded activation from another.
    batch_sharded, replicated = batch_and_replicated_shardings()
    x = jax.ShapeDtypeStruct((4 * jax.device_count(), 16), jnp.float32, sharding=batch_sharded)
    kernels = [jax.ShapeDtypeStruct((16, 16), jnp.float32, sharding=replicated)] * 3
    programs = [jax.jit(jax.grad(_residual_chain(fence, 3)), out_shardings=replicated)
                .lower(kernels, x).compile().as_text() for fence in (False, True)]
    assert " divide(" in programs[1]
    # The kernel gradients' one all-reduce, no more (an activation as anchor
    # added an all-reduce per block to fetch its element); nothing gathered.
    assert programs[1].count(" all-reduce(") == programs[0].count(" all-reduce(")
    for collective in GATHERING_COLLECTIVES:
        assert collective not in programs[1], collective


def _pooled_loss(barrier: bool):
    # The pooled activation's gradient is a sum over several consumers, as
    # DenseNet's stem pool's is over the first block's layers.
    def loss(weights, x):
        pooled = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        if barrier:
            pooled = gradient_barrier(pooled, weights[0])
        return sum(jnp.sum(jnp.tanh(pooled * w)) for w in weights)
    return loss


_POOL_WEIGHTS = [jnp.full((8,), 0.1 * (i + 1), jnp.float32) for i in range(4)]
_POOL_INPUT = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 8), jnp.float32)


def test_gradient_barrier_is_the_identity_and_keeps_the_gradient():
    x = jnp.asarray(EDGE_VALUES, jnp.float32)
    barred = jax.jit(gradient_barrier)(x, jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(barred).view(np.uint8), np.asarray(x).view(np.uint8))
    grads = [jax.jit(jax.grad(_pooled_loss(b), argnums=(0, 1)))(_POOL_WEIGHTS, _POOL_INPUT)
             for b in (False, True)]
    for plain, fenced in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(np.asarray(plain), np.asarray(fenced), rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match="floating-point"):
        gradient_barrier(jnp.arange(3), jnp.ones(2))


def test_gradient_barrier_stops_the_pool_backward_recomputing_its_gradient():
    # Without the barrier, XLA's CPU backend fuses the sum that makes the pooled
    # gradient (here the tanh derivatives) into the max-pool backward's loop,
    # which reads it at each of the 9 taps; with it, that loop reads a buffer.
    # When XLA stops fusing so, the first assertion fails and DenseNet's
    # barrier can go.
    tanhs_in_pool_backward = {}
    for barrier in (False, True):
        hlo = (jax.jit(jax.grad(_pooled_loss(barrier), argnums=1))
               .lower(_POOL_WEIGHTS, _POOL_INPUT).compile().as_text())
        bodies = re.findall(r"\n%[\w.\-]+ [^\n]*\{\n(.*?)\n\}", hlo, re.S)
        (pool_backward,) = [b for b in bodies if " select(" in b and " pad(" in b]
        tanhs_in_pool_backward[barrier] = pool_backward.count(" tanh(")
        assert ("conditional(" in hlo) == barrier
    assert tanhs_in_pool_backward[False] > 0
    assert tanhs_in_pool_backward[True] == 0


def test_gradient_barrier_is_in_the_cpu_program_only_and_stays_local():
    x, anchor = jnp.ones((4, 8), jnp.float32), jnp.ones((3, 3), jnp.float32)
    grad = jax.jit(jax.grad(lambda x, a: jnp.sum(gradient_barrier(x, a) ** 2)))
    # The barrier's other branch rounds through reduce_precision.
    exported = {platform: jax.export.export(grad, platforms=[platform])(x, anchor).mlir_module()
                for platform in ("cpu", "cuda")}
    assert "reduce_precision" in exported["cpu"]
    assert "reduce_precision" not in exported["cuda"]
    batch_sharded, replicated = batch_and_replicated_shardings()
    x = jax.ShapeDtypeStruct((jax.device_count(), 8, 8, 4), jnp.float32, sharding=batch_sharded)
    weights = [jax.ShapeDtypeStruct((4,), jnp.float32, sharding=replicated)] * 2
    hlo = (jax.jit(jax.grad(_pooled_loss(True), argnums=(0, 1)),
                   out_shardings=(replicated, batch_sharded))
           .lower(weights, x).compile().as_text())
    assert "conditional(" in hlo
    # The predicate comes from the replicated anchor: nothing is fetched from
    # another device (only the weights' gradient is all-reduced).
    for collective in GATHERING_COLLECTIVES:
        assert collective not in hlo, collective
