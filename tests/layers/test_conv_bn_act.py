"""ConvBNAct: square and rectangular kernels, PyTorch's symmetric padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.conv_bn_act import ConvBNAct, torch_padding
from zoo.layers.validation import int_pair


def test_pair_and_torch_padding_per_axis():
    assert int_pair(3, "kernel_size") == (3, 3)
    assert int_pair((1, 7), "kernel_size") == (1, 7)
    assert torch_padding(3) == ((1, 1), (1, 1))
    assert torch_padding(7, dilation=2) == ((6, 6), (6, 6))
    assert torch_padding((1, 7)) == ((0, 0), (3, 3))
    assert torch_padding((3, 1), dilation=2) == ((2, 2), (0, 0))
    with pytest.raises((TypeError, ValueError)):
        int_pair((1, 2, 3), "kernel_size")  # type: ignore[arg-type]


@pytest.mark.parametrize("kernel, padding, out_hw", [
    ((1, 7), None, (6, 9)),          # torch's default: (0, 3) keeps the size
    ((7, 1), (3, 0), (6, 9)),        # Inception's explicit factorised padding
    ((1, 3), (0, 0), (6, 7)),        # unpadded: width shrinks by 2 only
    (3, 1, (6, 9)),                  # square kernel, one padding for both axes
])
def test_rectangular_kernels_match_the_reference_conv_and_batch_norm(kernel, padding, out_hw):
    x = jax.random.normal(jax.random.key(0), (2, 6, 9, 5))
    block = ConvBNAct(4, kernel, padding=padding, bn_epsilon=1e-3)
    variables = block.init(jax.random.key(1), x, train=False)
    kh, kw = int_pair(kernel, "kernel")
    kernel_value = variables["params"]["conv"]["kernel"]
    assert kernel_value.shape == (kh, kw, 5, 4)
    # Non-trivial statistics and affine terms, so a mix-up of axes shows.
    rng = np.random.default_rng(0)
    stats = {"mean": jnp.asarray(rng.normal(size=4), jnp.float32),
             "var": jnp.asarray(rng.uniform(0.5, 2.0, size=4), jnp.float32)}
    bn = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, size=4), jnp.float32),
          "bias": jnp.asarray(rng.normal(size=4), jnp.float32)}
    variables = {"params": {"conv": {"kernel": kernel_value}, "bn": bn},
                 "batch_stats": {"bn": stats}}
    out = block.apply(variables, x, train=False)
    assert out.shape == (2, *out_hw, 4)

    pads = torch_padding(kernel) if padding is None else tuple((p, p) for p in int_pair(padding, "padding"))
    conv = jax.lax.conv_general_dilated(x, kernel_value, (1, 1), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    expected = jax.nn.relu((conv - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-3)
                           * bn["scale"] + bn["bias"])
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-5)
