"""ConvNeXt specifics: stage widths and resolutions, layer scale init,
stochastic depth schedule and train-only activity. Real variants are checked
with `jax.eval_shape`; compiled checks use a tiny ConvNeXt."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests.xla_helpers import ynn_fusion_bodies
from zoo import registry
from zoo.models import convnext
from zoo.models.convnext import CNBlock, ConvNeXt
from zoo.runtime import compiler_options

TINY = dict(depths=(1, 1, 1, 1), widths=(8, 16, 24, 32), num_classes=3)


def _stage_outputs(model, shape):
    variables = registry.init_shapes(model, shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        variables, x)
    inter = state["intermediates"]
    return {name: inter[name]["__call__"][0].shape for name in inter if name.startswith("stage")}


@pytest.mark.parametrize("name, widths", [
    ("convnext_tiny", (96, 192, 384, 768)), ("convnext_base", (128, 256, 512, 1024))])
def test_stage_output_widths_and_resolutions(name, widths):
    outputs = _stage_outputs(zoo.create_model(name), (1, 64, 64, 3))
    assert outputs == {f"stage{i + 1}": (1, 16 // 2**i, 16 // 2**i, w)
                       for i, w in enumerate(widths)}


def test_parameter_layout_of_convnext_small():
    params = registry.init_shapes(zoo.create_model("convnext_small"), (1, 32, 32, 3))["params"]
    assert params["stem"]["conv"]["kernel"].shape == (4, 4, 3, 96)
    assert "downsample" not in params["stage1"]
    assert params["stage2"]["downsample"]["conv"]["kernel"].shape == (2, 2, 96, 192)
    assert len([k for k in params["stage3"] if k.startswith("block")]) == 27
    block = params["stage3"]["block27"]
    assert block["dwconv"]["kernel"].shape == (7, 7, 1, 384)  # depthwise
    assert block["dwconv"]["bias"].shape == (384,)
    assert block["mlp"]["fc1"]["kernel"].shape == (384, 1536)
    assert block["layer_scale"]["gamma"].shape == (384,)
    assert params["head_norm"]["scale"].shape == (768,)
    assert params["head"]["kernel"].shape == (768, 1000)


def test_default_stochastic_depth_schedules_match_torchvision():
    for name, last in (("convnext_tiny", 0.1), ("convnext_small", 0.4), ("convnext_base", 0.5)):
        rates = zoo.create_model(name).block_drop_path_rates()
        assert rates[0] == 0.0 and rates[-1] == pytest.approx(last)
        np.testing.assert_allclose(np.diff(rates), last / (len(rates) - 1))
    assert len(zoo.create_model("convnext_tiny").block_drop_path_rates()) == 18
    assert zoo.create_model("convnext_tiny", drop_path_rate=0.0).block_drop_path_rates() == [
        0.0] * 18


@pytest.fixture(scope="module")
def tiny():
    model = ConvNeXt(**TINY)
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    return model, jax.jit(model.init)(jax.random.key(1), x), x


def test_layer_scale_starts_at_one_in_a_million(tiny):
    _, variables, _ = tiny
    gammas = {jax.tree_util.keystr(path): leaf for path, leaf in
              jax.tree_util.tree_leaves_with_path(variables["params"])
              if "gamma" in jax.tree_util.keystr(path)}
    assert len(gammas) == 4
    for gamma in gammas.values():
        np.testing.assert_array_equal(gamma, np.full(gamma.shape, 1e-6, np.float32))


def test_drop_path_inactive_in_eval_and_active_in_train(tiny):
    _, variables, x = tiny
    # A large layer scale makes the residual branches visible in the output.
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.ones_like(a) if "gamma" in jax.tree_util.keystr(path) else a,
        variables["params"])
    variables = {"params": params}
    dropping = ConvNeXt(**TINY, drop_path_rate=0.9)
    plain = ConvNeXt(**TINY, drop_path_rate=0.0)

    def run(model, train, key):
        return model.apply(variables, x, train=train, rngs={"dropout": key})

    run = jax.jit(run, static_argnums=(0, 1))
    key = jax.random.key(3)
    eval_out = run(dropping, False, key)
    np.testing.assert_array_equal(eval_out, run(plain, False, key))
    # Without drop path, training and evaluation compute the same function.
    np.testing.assert_allclose(run(plain, True, key), eval_out, rtol=1e-5, atol=1e-5)
    first, second = run(dropping, True, key), run(dropping, True, jax.random.key(4))
    assert not np.allclose(first, eval_out, atol=1e-3)
    assert not np.allclose(first, second, atol=1e-3)


def test_features_are_the_normalised_pooled_map(tiny):
    model, variables, x = tiny
    features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, x)
    assert features.shape == (8, 32)
    # head_norm has unit scale and zero bias at init: zero mean, unit variance.
    np.testing.assert_allclose(features.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(features.var(-1), 1.0, rtol=1e-3)


def test_mismatched_spec_raises():
    model = ConvNeXt(depths=(1, 1), widths=(8,))
    with pytest.raises(ValueError, match="same length"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("train", [False, True])
def test_each_depthwise_conv_is_computed_once_on_cpu(train, monkeypatch):
    # Without the fence, XLA's CPU backend recomputes the 49 shifted windows of
    # the depthwise conv inside every loop that reads its output (the LayerNorm,
    # and in training its gradient): with jaxlib 0.10.2, 195 slices against 98
    # in this inference program, 537 against 248 in the gradient program. When
    # XLA stops duplicating, this fails and CNBlock's fence can go
    # (benchmarks/NOTES.md, entry 19).
    block = CNBlock()  # no stochastic depth: training computes what inference does
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 16)), jnp.float32)
    variables = block.init(jax.random.PRNGKey(0), x, train=False)

    def program():
        def forward(variables, x):
            return block.apply(variables, x, train=train)
        fn = jax.grad(lambda v, x: jnp.sum(forward(v, x) ** 2), argnums=(0, 1)) if train \
            else forward
        return jax.jit(fn, compiler_options=compiler_options("cpu"))

    fenced = program()
    with monkeypatch.context() as patch:
        patch.setattr(convnext, "recompute_fence", lambda y, anchor, per_element: y)
        plain = program()
        plain_text = plain.lower(variables, x).compile().as_text()
        plain_out = plain(variables, x)
    slices = {"plain": plain_text.count(" slice("),
              "fenced": fenced.lower(variables, x).compile().as_text().count(" slice(")}
    assert slices["plain"] - slices["fenced"] >= 49  # at least one more copy of the windows
    # The same numbers either way.
    for a, b in zip(jax.tree.leaves(plain_out), jax.tree.leaves(fenced(variables, x))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_layer_norm_stays_out_of_the_fc1_product_on_cpu(monkeypatch):
    # At stage 1's size (56x56x96), without the fence XLA's CPU backend puts
    # the LayerNorm (its two reductions) inside the YNNPACK fusion of fc1's
    # product, which then ran 3x slower in convnext_tiny's inference
    # (benchmarks/NOTES.md, entry 22). Compiled only, never run. When XLA stops
    # fusing them, the second assertion fails and CNBlock's fence can go.
    block = CNBlock()
    x = jax.ShapeDtypeStruct((2, 56, 56, 96), jnp.float32)
    variables = jax.eval_shape(
        lambda: block.init(jax.random.PRNGKey(0), jnp.zeros(x.shape), train=False))

    def products_with_reductions():
        forward = jax.jit(lambda v, x: block.apply(v, x, train=False),
                          compiler_options=compiler_options("cpu"))
        bodies = ynn_fusion_bodies(forward.lower(variables, x).compile().as_text())
        products = [body for body in bodies if " dot(" in body]
        assert len(products) == 2  # fc1 and fc2
        return sum(" reduce(" in body for body in products)

    assert products_with_reductions() == 0
    with monkeypatch.context() as patch:
        patch.setattr(convnext, "cpu_library_fusion_fence", lambda y: y)
        assert products_with_reductions() == 1
