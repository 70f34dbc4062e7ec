"""3x3 stride-1 convolutions by Winograd's minimal filtering, F(2x2, 3x3).

Each 2x2 block of outputs is computed from the 4x4 block of input around it
with 16 multiplications per channel pair instead of 36 (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", 2015):

    Y = A^T [(G g G^T) * (B^T d B)] A

for a 3x3 kernel g and a 4x4 input tile d (tiles overlap by two pixels).
Over channels the elementwise product becomes 16 independent matrix products,
[tiles, in] x [in, out], one per position of the transformed 4x4 tile: 2.25x
fewer multiply-adds than the direct convolution, in one batched dot, plus
transforms before and after that only add, subtract and halve. Their cost
grows with pixels x channels while the dot's grows with pixels x channels^2,
so the method pays where channels are many. Gradients are JAX's transposes of
the same steps (again one batched dot each for the input and the kernel).

Rounding differs from a direct convolution's by about 1e-6 relative in
float32. `zoo.layers.cpu_conv` uses this on CPU only, for float32 convolutions
with at least 256 input and output channels and outputs of at least 10x10,
where XLA's CPU convolutions were slower (benchmarks/NOTES.md, entry 21).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _input_transform(a0: jax.Array, a1: jax.Array, a2: jax.Array,
                     a3: jax.Array) -> list[jax.Array]:
    """B^T @ [a0, a1, a2, a3] along one axis of the 4x4 input tile."""
    return [a0 - a2, a1 + a2, a2 - a1, a1 - a3]


def _kernel_transform(k0: jax.Array, k1: jax.Array, k2: jax.Array) -> list[jax.Array]:
    """G @ [k0, k1, k2] along one axis of the 3x3 kernel."""
    return [k0, (k0 + k1 + k2) * 0.5, (k0 - k1 + k2) * 0.5, k2]


def _output_transform(m0: jax.Array, m1: jax.Array, m2: jax.Array,
                      m3: jax.Array) -> list[jax.Array]:
    """A^T @ [m0, m1, m2, m3] along one axis of the transformed tile."""
    return [m0 + m1 + m2, m1 - m2 - m3]


def winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 3x3 convolution, stride 1, padding 1 ("SAME"), groups 1, by F(2x2, 3x3).

    Args:
      x: [batch, height, width, in_channels].
      kernel: [3, 3, in_channels, out_channels] (HWIO).

    Returns:
      [batch, height, width, out_channels] in x's dtype, equal (up to rounding)
      to `lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)))` in NHWC.
    """
    if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[:3] != (3, 3, x.shape[-1]):
        raise ValueError(f"winograd_conv3x3 needs NHWC input and a [3, 3, in_channels, out] "
                         f"kernel with in_channels = the input's; got input {x.shape} and "
                         f"kernel {kernel.shape}")
    batch, height, width, _ = x.shape
    out_channels = kernel.shape[3]
    # Odd sizes are padded to whole 2x2 output tiles and cropped at the end.
    tiles_h, tiles_w = (height + 1) // 2, (width + 1) // 2
    padded = jnp.pad(x, ((0, 0), (1, 1 + 2 * tiles_h - height),
                         (1, 1 + 2 * tiles_w - width), (0, 0)))
    # Row r of every tile is padded[:, r::2] (tiles start every 2 rows).
    rows = _input_transform(*[padded[:, r:r + 2 * tiles_h:2] for r in range(4)])
    # [16, batch, tiles_h, tiles_w, in_channels]: the transformed tiles.
    tiles = jnp.stack([v for row in rows for v in _input_transform(
        *[row[:, :, c:c + 2 * tiles_w:2] for c in range(4)])])
    kernel_rows = _kernel_transform(kernel[0], kernel[1], kernel[2])   # each [3, in, out]
    # [16, in_channels, out_channels]
    transformed_kernel = jnp.stack(
        [u for row in kernel_rows for u in _kernel_transform(row[0], row[1], row[2])])
    # One product per position of the transformed tile; the batch stays its
    # own dimension, so a batch-sharded input keeps the dot local to each device.
    products = lax.dot_general(tiles, transformed_kernel.astype(x.dtype),
                               (((4,), (1,)), ((0,), (0,))))
    products = products.reshape(4, 4, batch, tiles_h, tiles_w, out_channels)
    out_rows = _output_transform(products[0], products[1], products[2], products[3])
    out = [_output_transform(r[0], r[1], r[2], r[3]) for r in out_rows]  # out[u][v]
    # Output pixel (2i + u, 2j + v) is out[u][v] of tile (i, j).
    y = jnp.stack([jnp.stack(out[0], axis=3), jnp.stack(out[1], axis=3)], axis=2)
    y = y.reshape(batch, 2 * tiles_h, 2 * tiles_w, out_channels)
    return y[:, :height, :width]
