"""Contract tests run over the whole registry (timm-style).

For every registered model: the trainable parameter count equals the canonical
implementation's; in training mode, with num_classes=3, every parameter
reaches the float32 logits of shape [2, 3] (a walk of the traced pass); eval
and bf16 forwards are finite; bad inputs raise a ValueError naming the
expected shape; pooled features are available.

One variant of each distinct block design (`TRAIN_COMPILED`) also runs a
compiled training forward/backward and must give a finite, non-zero gradient
for every parameter. The other variants differ from their representative only
in the numbers of their family's spec table (depth, width, resolution), which
the traced checks, the compiled eval forward and the parameter counts cover;
compiling their backward passes took 40% of the suite's CPU time to run
blocks and layers that their representative's backward pass runs too.

Counts, error checks and the reachability walk are traces (no compute). The
compiled passes are the slow part of the suite on CPU; they are marked `slow`
for the big models, and CI runs them all.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.registry import synthetic_variables

from tests.models.helpers import (eval_apply, eval_overrides, eval_size, init_shapes_of,
                                  model_group)

ALL_MODELS = zoo.list_models(include_test_only=True)
# Models whose compiled passes take more than a few seconds on a 2-core CPU.
LARGE_PARAMS = 30_000_000

# The smallest variant of each distinct block design runs the compiled
# training and bfloat16 passes (see the module docstring); so do the tiny
# test-only variants.
TRAIN_COMPILED = frozenset({
    "simple_cnn", "lenet5", "alexnet",
    "vgg11", "vgg11_bn",                            # plain and BatchNorm convs
    "googlenet", "inception_v3",
    "resnet18", "resnet50",                         # basic and bottleneck blocks
    "resnext50_32x4d",                              # grouped 3x3 convs
    "seresnet50", "seresnext50_32x4d",              # squeeze-excitation, plain and grouped
    "densenet121",
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small",
    "efficientnet_b0",
    "vit_tiny_patch16_224",
    "convnext_tiny",
}) | frozenset(ALL_MODELS) - frozenset(zoo.list_models())


def _is_large(name: str) -> bool:
    entry = registry.get_entry(name)
    return entry.reference_params is not None and entry.reference_params > LARGE_PARAMS


def _params(names, *, mark_large_slow: bool = True):
    """One pytest param per model, in the model's xdist group; large ones slow."""
    return [pytest.param(n, marks=[model_group(n), *(
                [pytest.mark.slow] if mark_large_slow and _is_large(n) else [])], id=n)
            for n in names]


def _small_input(name: str, batch: int = 2) -> jax.ShapeDtypeStruct:
    model = zoo.create_model(name)
    size = model.min_input_size
    return jax.ShapeDtypeStruct((batch, size, size, model.in_channels), jnp.float32)


@pytest.mark.parametrize("name", _params(ALL_MODELS, mark_large_slow=False))
def test_param_count_matches_reference(name):
    entry = registry.get_entry(name)
    if entry.test_only:
        assert entry.reference_params is None
        return
    assert entry.reference_params is not None, f"{name} has no reference count"
    # The count `zoo models` and the README report (cached: the README test
    # of this model reuses it).
    assert registry.model_info(name)["params"] == entry.reference_params


@pytest.mark.parametrize("name", _params(ALL_MODELS, mark_large_slow=False))
def test_bad_inputs_raise_value_error_naming_expected_shape(name):
    model = zoo.create_model(name, num_classes=3)
    size, channels = model.min_input_size, model.in_channels
    # Variables do not depend on the input size: the (cached) ones of the
    # tests below serve.
    good = init_shapes_of(name, _small_input(name).shape, (("num_classes", 3),))
    bad_shapes = {
        "rank": (size, size, channels),
        "channels": (1, size, size, channels + 2),
        "at least": (1, size - 1, size, channels),
    }
    for what, shape in bad_shapes.items():
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        with pytest.raises(ValueError, match=what) as info:
            jax.eval_shape(lambda v, x: model.apply(v, x, train=False), good, x)
        assert "NHWC" in str(info.value)


@pytest.mark.parametrize("name", _params(ALL_MODELS, mark_large_slow=False))
def test_return_features_gives_one_vector_per_image(name):
    # num_classes=3: the training tests below check the logits of this model
    # (same cached variables); here only the pooled features.
    model = zoo.create_model(name, num_classes=3)
    x = _small_input(name)
    variables = init_shapes_of(name, x.shape, (("num_classes", 3),))
    features = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, return_features=True), variables, x)
    assert features.ndim == 2 and features.shape[0] == 2 and features.dtype == jnp.float32


def _init(name, shape, overrides=()):
    # Host-filled variables of the right shapes: compiling `model.init` (its
    # forward pass plus random-number kernels) would cost as much as the passes
    # under test. Initialisers themselves are checked in the family tests.
    return synthetic_variables(init_shapes_of(name, shape, tuple(overrides)))


def test_every_family_and_block_design_has_a_compiled_training_pass():
    assert TRAIN_COMPILED <= set(ALL_MODELS), TRAIN_COMPILED - set(ALL_MODELS)
    families = {registry.get_entry(n).family for n in ALL_MODELS}
    assert families == {registry.get_entry(n).family for n in TRAIN_COMPILED}


def inputs_reaching_outputs(jaxpr: jax_core.Jaxpr, wanted: list[bool] | None = None) -> list[bool]:
    """For each input of `jaxpr`, whether an output (each one, or those flagged
    in `wanted`) depends on it other than through `stop_gradient` (which blocks
    gradients). A call whose own jaxpr lines up with its operands (jit) is
    walked inside; any other nested computation (cond, custom_vjp, scan)
    counts all its operands as used when any of its results is."""
    wanted = [True] * len(jaxpr.outvars) if wanted is None else wanted
    used = {v for v, w in zip(jaxpr.outvars, wanted) if w and isinstance(v, jax_core.Var)}
    for eqn in reversed(jaxpr.eqns):
        results_used = [v in used for v in eqn.outvars]
        if not any(results_used) or eqn.primitive.name == "stop_gradient":
            continue
        inner = eqn.params.get("jaxpr")
        inner = getattr(inner, "jaxpr", inner)
        if (isinstance(inner, jax_core.Jaxpr) and len(inner.invars) == len(eqn.invars)
                and len(inner.outvars) == len(eqn.outvars)):
            reached = inputs_reaching_outputs(inner, results_used)
            operands = [v for v, r in zip(eqn.invars, reached) if r]
        else:
            operands = eqn.invars
        used.update(v for v in operands if isinstance(v, jax_core.Var))
    return [v in used for v in jaxpr.invars]


def test_reachability_walk_sees_unused_and_stopped_inputs():
    def f(a, b, c, d):
        inner = jax.jit(lambda p, q: (p * 2, q))(a, b)[0]   # b goes in, never out
        return inner + jax.lax.stop_gradient(c) + jnp.sin(d)

    closed = jax.make_jaxpr(f)(1.0, 2.0, 3.0, 4.0)
    assert inputs_reaching_outputs(closed.jaxpr) == [True, False, False, True]


@pytest.mark.parametrize("name", _params(ALL_MODELS, mark_large_slow=False))
def test_train_mode_logits_depend_on_every_param(name):
    model = zoo.create_model(name, num_classes=3)
    x = _small_input(name)
    variables = init_shapes_of(name, x.shape, (("num_classes", 3),))

    def logits_of(params, batch_stats, images):
        logits, _ = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True,
            mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
        return logits

    closed = jax.make_jaxpr(logits_of)(
        variables["params"], variables.get("batch_stats", {}), x)
    (logits,) = closed.out_avals
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32, "num_classes=3 heads"
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
    reached = inputs_reaching_outputs(closed.jaxpr)[:len(leaves)]
    unused = [jax.tree_util.keystr(path) for (path, _), r in zip(leaves, reached) if not r]
    assert not unused, f"parameters the training logits do not depend on: {unused}"


@pytest.mark.parametrize("name", _params(sorted(TRAIN_COMPILED, key=ALL_MODELS.index)))
def test_train_forward_backward_every_param_gets_a_gradient(name):
    model = zoo.create_model(name, num_classes=3)
    if "drop_path_rate" in {f.name for f in dataclasses.fields(model)}:
        # With stochastic depth a whole block can be dropped for the 2 examples
        # and rightly get no gradient; reachability is what is checked here
        # (tests/models/test_<family>.py check drop path itself).
        model = zoo.create_model(name, num_classes=3, drop_path_rate=0.0)
    shape = _small_input(name).shape
    variables = _init(name, shape, (("num_classes", 3),))
    images = jax.random.normal(jax.random.key(1), shape)

    @jax.jit
    def loss_and_grad(params):
        def loss_fn(params):
            logits, _ = model.apply(
                {**variables, "params": params}, images, train=True,
                mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
            # A loss that depends on every logit with different weights.
            return jnp.sum(logits * jnp.arange(1, logits.size + 1).reshape(logits.shape)), logits
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, logits), grads = loss_and_grad(variables["params"])
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32, "num_classes=3 heads"
    assert np.isfinite(float(loss))
    # In training mode a BatchNorm removes any per-channel shift of its input,
    # so a BatchNorm bias whose every path to the loss runs through another
    # training-mode BatchNorm (MobileNet-V2's project BatchNorms feed the next
    # block's 1x1 expand conv) has a gradient that is zero in exact
    # arithmetic; only rounding made it non-zero. Those may be zero.
    norm_paths = {tuple(path[:-1]) for path, _ in
                  jax.tree_util.tree_leaves_with_path(variables.get("batch_stats", {}))}
    no_gradient = []
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)), f"non-finite gradient at {jax.tree_util.keystr(path)}"
        batch_norm_bias = tuple(path[:-1]) in norm_paths and path[-1].key == "bias"
        if not np.any(grad) and not batch_norm_bias:
            no_gradient.append(jax.tree_util.keystr(path))
    assert not no_gradient, f"parameters with an all-zero gradient: {no_gradient}"


@pytest.mark.parametrize("name", _params(ALL_MODELS))
def test_eval_forward_float32_and_bfloat16(name):
    # The float32 pass is the one the parity tests (tests/interop) run on
    # imported weights: same model fields and input shape, one compile.
    overrides, size = eval_overrides(name), eval_size(name)
    f32 = zoo.create_model(name, **dict(overrides))
    bf16 = zoo.create_model(name, dtype=jnp.bfloat16, **dict(overrides))
    shape = (2, size, size, f32.in_channels)
    images = jax.random.normal(jax.random.key(1), shape)
    variables = _init(name, shape, overrides)
    out32 = eval_apply(name, overrides)(variables, images)
    assert out32.shape == (2, f32.num_classes)
    assert np.all(np.isfinite(np.asarray(out32)))
    bf16_apply = lambda v, x: bf16.apply(v, x, train=False)  # noqa: E731
    # The bfloat16 pass is the same code at every depth and width: computed
    # for the compiled-training representatives, traced for the others.
    if name in TRAIN_COMPILED:
        out16 = jax.jit(bf16_apply)(variables, images)
        assert np.all(np.isfinite(np.asarray(out16)))
    else:
        out16 = jax.eval_shape(bf16_apply, variables, images)
    assert out16.shape == out32.shape
    assert out16.dtype == jnp.float32, "logits are returned in float32 whatever the dtype"
    # bf16 params stay float32: mixed precision keeps the master copy exact.
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
