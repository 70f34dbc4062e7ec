import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.attention import MultiHeadSelfAttention, scaled_dot_product_attention

from tests.xla_helpers import stablehlo_operand_types

BATCH, TOKENS, WIDTH, HEADS = 2, 7, 16, 4


def naive_attention(x, params, num_heads):
    """Textbook multi-head self-attention in float64 numpy."""
    x = np.asarray(x, np.float64)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    batch, tokens, width = x.shape
    head_dim = width // num_heads
    qkv = x @ p["qkv"]["kernel"] + p["qkv"]["bias"]
    q, k, v = (qkv[..., i * width:(i + 1) * width] for i in range(3))
    out = np.zeros_like(x)
    for h in range(num_heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        logits = q[..., cols] @ np.swapaxes(k[..., cols], 1, 2) / np.sqrt(head_dim)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        out[..., cols] = probs @ v[..., cols]
    return out @ p["proj"]["kernel"] + p["proj"]["bias"]


@pytest.fixture(scope="module")
def setup():
    x = jax.random.normal(jax.random.key(0), (BATCH, TOKENS, WIDTH))
    module = MultiHeadSelfAttention(num_heads=HEADS)
    variables = module.init(jax.random.key(1), x)
    # Larger weights than the 0.02 init so the softmax is far from uniform.
    variables = jax.tree.map(lambda a: a * 20.0, variables)
    return module, variables, x


def test_parameter_shapes_follow_the_fused_qkv_layout(setup):
    _, variables, _ = setup
    p = variables["params"]
    assert p["qkv"]["kernel"].shape == (WIDTH, 3 * WIDTH)
    assert p["qkv"]["bias"].shape == (3 * WIDTH,)
    assert p["proj"]["kernel"].shape == (WIDTH, WIDTH)


def test_equals_naive_numpy_attention(setup):
    module, variables, x = setup
    y = module.apply(variables, x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, naive_attention(x, variables["params"], HEADS),
                               rtol=1e-4, atol=1e-4)


def test_permuting_tokens_permutes_outputs(setup):
    module, variables, x = setup
    perm = np.random.default_rng(0).permutation(TOKENS)
    y = module.apply(variables, x)
    np.testing.assert_allclose(module.apply(variables, x[:, perm]), y[:, perm],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_heads_major_attention_equals_jax_dot_product_attention(dtype):
    # jax.nn's layout is [batch, tokens, heads, head_dim]; Zoo's heads-major.
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 5, 3, 4), dtype) for i in range(3))
    heads_major = lambda a: a.transpose(0, 2, 1, 3)  # noqa: E731
    out = scaled_dot_product_attention(heads_major(q), heads_major(k), heads_major(v))
    assert out.dtype == dtype
    tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(np.asarray(heads_major(out), np.float32),
                               np.asarray(jax.nn.dot_product_attention(q, k, v), np.float32),
                               rtol=tolerance, atol=tolerance)
    dropped = scaled_dot_product_attention(heads_major(q), heads_major(k), heads_major(v),
                                           dropout=jnp.zeros_like)
    np.testing.assert_array_equal(np.asarray(dropped, np.float32), 0.0)


def test_attention_dropout_only_in_train(setup):
    _, variables, x = setup
    module = MultiHeadSelfAttention(num_heads=HEADS, attn_drop_rate=0.5)
    eval_out = module.apply(variables, x)
    np.testing.assert_allclose(eval_out, setup[0].apply(variables, x), rtol=1e-6)
    train = functools.partial(module.apply, variables, x, train=True)
    a = train(rngs={"dropout": jax.random.key(3)})
    np.testing.assert_array_equal(a, train(rngs={"dropout": jax.random.key(3)}))
    assert not np.allclose(a, eval_out, atol=1e-3)


def test_bfloat16_close_to_float32(setup):
    _, variables, x = setup
    module = MultiHeadSelfAttention(num_heads=HEADS, dtype=jnp.bfloat16)
    y = module.apply(variables, x)
    assert y.dtype == jnp.bfloat16
    reference = naive_attention(x, variables["params"], HEADS)
    np.testing.assert_allclose(np.asarray(y, np.float32), reference,
                               atol=0.1 * np.abs(reference).max())


def test_bad_heads_raise():
    with pytest.raises(ValueError, match="num_heads=3"):
        MultiHeadSelfAttention(num_heads=3).init(jax.random.key(0), jnp.ones((1, 2, 16)))


def _attention_loss(q, k, v):
    out = scaled_dot_product_attention(q, k, v)
    # Weights that differ per element, so no gradient cancels by symmetry.
    return jnp.sum(out.astype(jnp.float32) * jnp.arange(out.size).reshape(out.shape) / out.size)


def _qkv(dtype):
    # Large enough that the softmax is far from uniform.
    return [3.0 * jax.random.normal(jax.random.key(i), (2, 3, 7, 8)).astype(dtype)
            for i in range(3)]


def test_float32_gradient_is_plain_autodiff():
    q, k, v = _qkv(jnp.float32)

    def plain(q, k, v):
        probs = jax.nn.softmax(jnp.einsum("bnth,bnsh->bnts", q, k) * 8 ** -0.5, axis=-1)
        out = jnp.einsum("bnts,bnsh->bnth", probs, v)
        return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size)

    for ours, theirs in zip(jax.grad(_attention_loss, (0, 1, 2))(q, k, v),
                            jax.grad(plain, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_bfloat16_gradient_multiplies_bfloat16_and_matches_float32():
    q, k, v = _qkv(jnp.bfloat16)
    grads = jax.grad(_attention_loss, (0, 1, 2))
    # Every product of the backward pass takes bfloat16 operands: autodiff of
    # the float32-accumulated logits would multiply their float32 gradient by
    # the (promoted) query and key.
    # (Two forward products, four backward.)
    lowered = jax.jit(jax.value_and_grad(_attention_loss, (0, 1, 2))).lower(q, k, v).as_text()
    products = stablehlo_operand_types(lowered, "dot_general")
    assert len(products) == 6 and set(products) == {("bf16", "bf16")}, products
    # Same gradients as float32 arithmetic on the same (bfloat16) values, to
    # bfloat16's precision.
    exact = jax.grad(_attention_loss, (0, 1, 2))(*(a.astype(jnp.float32) for a in (q, k, v)))
    for ours, reference in zip(grads(q, k, v), exact):
        assert ours.dtype == jnp.bfloat16
        reference = np.asarray(reference)
        np.testing.assert_allclose(np.asarray(ours, np.float32), reference,
                                   atol=2e-2 * np.abs(reference).max())
