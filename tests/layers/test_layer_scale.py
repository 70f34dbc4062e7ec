import jax
import jax.numpy as jnp
import numpy as np

from zoo.layers.layer_scale import LayerScale


def test_layer_scale_is_a_per_channel_scale_initialised_to_init_value():
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 8))
    module = LayerScale(init_value=1e-6)
    variables = module.init(jax.random.key(1), x)
    gamma = variables["params"]["gamma"]
    assert gamma.shape == (8,)
    np.testing.assert_array_equal(gamma, np.full(8, 1e-6, np.float32))
    np.testing.assert_allclose(module.apply(variables, x), x * 1e-6, rtol=1e-6)
    new_gamma = jnp.arange(8, dtype=jnp.float32)
    y = module.apply({"params": {"gamma": new_gamma}}, x)
    np.testing.assert_allclose(y, x * new_gamma, rtol=1e-6)


def test_layer_scale_keeps_computation_dtype():
    x = jnp.ones((2, 4), jnp.bfloat16)
    module = LayerScale(init_value=0.5)
    variables = module.init(jax.random.key(0), x)
    assert variables["params"]["gamma"].dtype == jnp.float32
    y = module.apply(variables, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(y, np.float32), 0.5)
