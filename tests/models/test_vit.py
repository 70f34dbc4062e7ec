"""ViT specifics: resolution handling via position-embedding resizing, the
class token, stochastic depth, parameter shapes. Shape checks on the real
variants use `jax.eval_shape`; compiled checks use a tiny ViT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.models.vit import VisionTransformer, resize_pos_embed

TINY = dict(patch_size=8, width=16, depth=2, num_heads=2, mlp_dim=32, image_size=32,
            num_classes=5)


def _shapes(model, shape, **kwargs):
    variables = registry.init_shapes(model, shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return variables, jax.eval_shape(lambda v, x: model.apply(v, x, **kwargs), variables, x)


@pytest.mark.parametrize("height, width", [(32, 32), (48, 64), (224, 224), (240, 160)])
def test_vit_tiny_runs_at_other_resolutions_with_unchanged_pos_embed(height, width):
    model = zoo.create_model("vit_tiny_patch16_224")
    default = registry.init_shapes(model, (1, 224, 224, 3))["params"]["pos_embed"]
    assert default.shape == (1, 1 + 14 * 14, 192)
    variables, logits = _shapes(model, (2, height, width, 3))
    assert variables["params"]["pos_embed"].shape == default.shape
    assert logits.shape == (2, 1000)


def test_vit_tiny_parameter_layout():
    model = zoo.create_model("vit_tiny_patch16_224")
    params = registry.init_shapes(model, (1, 224, 224, 3))["params"]
    assert params["cls_token"].shape == (1, 1, 192)
    assert params["patch_embed"]["kernel"].shape == (16, 16, 3, 192)
    assert sorted(k for k in params if k.startswith("block")) == sorted(
        f"block{i}" for i in range(1, 13))
    block = params["block12"]
    assert set(block) == {"norm1", "attn", "norm2", "mlp"}
    assert block["attn"]["qkv"]["kernel"].shape == (192, 576)
    assert block["mlp"]["fc1"]["kernel"].shape == (192, 768)
    assert params["head"]["kernel"].shape == (192, 1000)


def test_vit_b_32_min_input_size_is_its_patch():
    model = zoo.create_model("vit_b_32")
    assert model.min_input_size == 32
    _, features = _shapes(model, (1, 32, 32, 3), return_features=True)
    assert features.shape == (1, 768)


def test_resize_pos_embed_identity_at_default_grid_and_shapes_elsewhere():
    pos = jax.random.normal(jax.random.key(0), (1, 1 + 14 * 14, 8))
    assert resize_pos_embed(pos, (14, 14)) is pos
    resized = resize_pos_embed(pos, (3, 4))
    assert resized.shape == (1, 1 + 12, 8)
    np.testing.assert_array_equal(resized[:, 0], pos[:, 0])
    # Bicubic resizing keeps a constant field constant (the weights sum to 1).
    constant = jnp.concatenate([pos[:, :1], jnp.full((1, 196, 8), 0.7)], axis=1)
    np.testing.assert_allclose(resize_pos_embed(constant, (20, 9))[:, 1:], 0.7, rtol=1e-5)
    # Resizing a smooth ramp up keeps it a monotone ramp over the same range.
    ramp = jnp.linspace(0.0, 1.0, 14)[None, :, None] * jnp.ones((14, 14, 1))
    ramp_pos = jnp.concatenate([jnp.zeros((1, 1, 1)), ramp.reshape(1, 196, 1)], axis=1)
    up = np.asarray(resize_pos_embed(ramp_pos, (28, 28))[0, 1:, 0]).reshape(28, 28)
    assert np.all(np.diff(up[0]) > 0) and np.allclose(up, up[:1])
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(jnp.zeros((1, 1 + 12, 8)), (2, 2))


@pytest.fixture(scope="module")
def tiny():
    model = VisionTransformer(**TINY)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(1), x)
    return model, variables, x


def test_tiny_vit_at_default_size_uses_every_pos_embed_token(tiny):
    model, variables, x = tiny
    # A random (not constant: LayerNorm removes constant shifts) change of the
    # class token's or the last patch's position embedding changes the output.
    features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))
    base = features(variables, x)
    assert base.shape == (2, 16)
    for token in (0, 16):
        delta = jax.random.normal(jax.random.key(token), (16,))
        pos = variables["params"]["pos_embed"].at[0, token].add(delta)
        changed = features({"params": {**variables["params"], "pos_embed": pos}}, x)
        assert not np.allclose(changed, base)


def test_tiny_vit_non_square_input_and_class_token(tiny):
    model, variables, _ = tiny
    x = jax.random.normal(jax.random.key(2), (2, 24, 40, 3))  # a 3x5 patch grid
    features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))
    out = features(variables, x)
    assert out.shape == (2, 16) and np.all(np.isfinite(out))
    params = variables["params"]
    assert params["cls_token"].shape == (1, 1, 16)
    moved = features({"params": {**params, "cls_token": params["cls_token"] + 1.0}}, x)
    assert not np.allclose(moved, out)
    logits = jax.jit(model.apply)(variables, x)
    np.testing.assert_allclose(
        logits, out @ params["head"]["kernel"] + params["head"]["bias"], rtol=1e-5, atol=1e-5)


def test_stochastic_depth_rates_rise_linearly_over_blocks():
    model = zoo.create_model("vit_small_patch16_224", drop_path_rate=0.1)
    rates = model.block_drop_path_rates()
    assert len(rates) == 12 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    np.testing.assert_allclose(np.diff(rates), 0.1 / 11)
    assert zoo.create_model("vit_b_16").block_drop_path_rates() == [0.0] * 12
    assert VisionTransformer(**{**TINY, "depth": 1, "drop_path_rate": 0.5}
                             ).block_drop_path_rates() == [0.0]


def test_dropout_active_only_in_train(tiny):
    _, variables, x = tiny
    model = VisionTransformer(**TINY, drop_rate=0.3, attn_drop_rate=0.3, drop_path_rate=0.3)
    # Same weights, so eval matches the model without dropout exactly.
    eval_out = jax.jit(model.apply)(variables, x)
    np.testing.assert_allclose(eval_out, jax.jit(tiny[0].apply)(variables, x), rtol=1e-6)
    train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key}))
    train_out = train(variables, x, jax.random.key(0))
    assert not np.allclose(train_out, eval_out)


def test_image_size_below_patch_raises():
    model = VisionTransformer(**{**TINY, "image_size": 4})
    with pytest.raises(ValueError, match="image_size=4"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
