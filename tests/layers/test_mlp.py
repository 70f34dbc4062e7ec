import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.mlp import Mlp, gelu


def test_gelu_is_the_exact_erf_form():
    x = np.linspace(-4, 4, 101, dtype=np.float32)
    erf = np.vectorize(math.erf)
    expected = 0.5 * x * (1 + erf(x / np.sqrt(2)))
    np.testing.assert_allclose(gelu(jnp.asarray(x)), expected, atol=1e-6)
    # The tanh approximation (flax's default) is measurably different.
    assert np.max(np.abs(jax.nn.gelu(x, approximate=True) - expected)) > 1e-4


def test_gelu_gradient_and_dtype():
    # d/dx [x * Phi(x)] = Phi(x) + x * phi(x), with Phi, phi the normal cdf and pdf.
    x = np.linspace(-6, 6, 97, dtype=np.float32)
    erf = np.vectorize(math.erf)
    expected = 0.5 * (1 + erf(x / np.sqrt(2))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    grad = jax.vmap(jax.grad(gelu))(jnp.asarray(x))
    np.testing.assert_allclose(grad, expected, atol=2e-6)
    assert gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


def test_bfloat16_gelu_is_the_float32_gelu_rounded_once():
    x = jnp.linspace(-6, 6, 401, dtype=jnp.float32).astype(jnp.bfloat16)
    y = jax.jit(gelu)(x)
    assert y.dtype == jnp.bfloat16
    want = gelu(x.astype(jnp.float32)).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(y.astype(jnp.float32)),
                                  np.asarray(want.astype(jnp.float32)))


def test_mlp_shapes_and_equals_manual_computation():
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    module = Mlp(hidden_features=32, out_features=6)
    variables = module.init(jax.random.key(1), x)
    p = variables["params"]
    assert p["fc1"]["kernel"].shape == (8, 32) and p["fc2"]["kernel"].shape == (32, 6)
    y = module.apply(variables, x)
    assert y.shape == (2, 5, 6)
    hidden = gelu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    np.testing.assert_allclose(y, hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"], atol=1e-5)


def test_mlp_keeps_width_by_default_and_dropout_only_in_train():
    x = jnp.ones((4, 16))
    module = Mlp(hidden_features=64, drop_rate=0.5)
    variables = module.init(jax.random.key(0), x)
    eval_out = module.apply(variables, x)
    assert eval_out.shape == (4, 16)
    np.testing.assert_array_equal(eval_out, module.apply(variables, x, train=False))
    train_out = module.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(train_out, eval_out)


def test_mlp_rejects_bad_rate():
    with pytest.raises(ValueError, match="drop_rate"):
        Mlp(hidden_features=4, drop_rate=1.0).init(jax.random.key(0), jnp.ones((1, 4)))
