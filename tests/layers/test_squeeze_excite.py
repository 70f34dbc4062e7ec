import jax
import jax.numpy as jnp
import numpy as np

from zoo.layers.squeeze_excite import SqueezeExcite


def test_gate_is_per_example_per_channel_and_in_range():
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 16))
    module = SqueezeExcite(reduced_channels=4)
    variables = module.init(jax.random.key(1), x)
    assert variables["params"]["fc1"]["kernel"].shape == (1, 1, 16, 4)
    assert variables["params"]["fc2"]["kernel"].shape == (1, 1, 4, 16)
    y = module.apply(variables, x)
    assert y.shape == x.shape
    # y = x * g with g in (0, 1) constant over height and width.
    ratio = np.asarray(y / x)
    assert np.allclose(ratio, ratio[:, :1, :1, :], atol=1e-5)
    assert np.all((ratio > 0) & (ratio < 1))
    assert not np.allclose(ratio[0], ratio[1])


def test_hard_sigmoid_gate():
    x = jnp.ones((1, 2, 2, 8))
    module = SqueezeExcite(reduced_channels=8, gate=jax.nn.hard_sigmoid)
    variables = module.init(jax.random.key(0), x)
    zeroed = jax.tree.map(jnp.zeros_like, variables)
    # All-zero weights: hard_sigmoid(0) = 0.5 exactly.
    np.testing.assert_allclose(module.apply(zeroed, x), 0.5 * x)
