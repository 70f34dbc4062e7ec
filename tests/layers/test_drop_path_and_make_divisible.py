import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.drop_path import DropPath
from zoo.layers.make_divisible import make_divisible


def test_drop_path_is_identity_in_eval_and_drops_whole_examples_in_train():
    x = jnp.ones((256, 3, 3, 4))
    module = DropPath(rate=0.25)
    np.testing.assert_array_equal(module.apply({}, x, train=False), x)
    y = np.asarray(module.apply({}, x, train=True, rngs={"dropout": jax.random.key(0)}))
    per_example = y.reshape(256, -1)
    # Each example is either dropped entirely or scaled by 1 / keep.
    assert set(np.unique(per_example)) <= {0.0, np.float32(1 / 0.75)}
    assert np.all(per_example.min(1) == per_example.max(1))
    dropped = np.mean(per_example[:, 0] == 0)
    assert 0.15 < dropped < 0.35


def test_drop_path_rejects_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        DropPath(rate=1.0).apply({}, jnp.ones((2, 2)), train=True,
                                 rngs={"dropout": jax.random.key(0)})


@pytest.mark.parametrize("value, divisor, expected", [
    (32 * 0.75, 8, 24), (16 * 1.4, 8, 24), (3, 8, 8), (37, 8, 40), (90, 8, 88), (100, 32, 96)])
def test_make_divisible(value, divisor, expected):
    assert make_divisible(value, divisor) == expected
