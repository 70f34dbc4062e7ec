"""Convolution + BatchNorm + activation, the building block of every CNN family.

Padding defaults to PyTorch's symmetric `kernel_size // 2` (times dilation),
not XLA's "SAME": the two differ for stride 2 on even inputs, and matching
PyTorch keeps torchvision / timm weights importable one to one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from zoo.layers.batch_norm import BatchNorm
from zoo.layers.cpu_conv import conv_general_dilated
from zoo.layers.validation import int_pair

# He-normal with fan_out, the initialisation torchvision uses for convolutions.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_padding(kernel_size: int | tuple[int, int],
                  dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric padding that PyTorch uses for odd kernel sizes, per axis."""
    kh, kw = int_pair(kernel_size, "kernel_size")
    pad_h, pad_w = (kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation
    return ((pad_h, pad_h), (pad_w, pad_w))


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> activation.

    Submodules are named `conv` and `bn` (checkpoint and weight-import keys).

    Attributes:
      features: output channels.
      kernel_size: kernel size, square (3) or (height, width) (Inception's 1x7 and 7x1).
      strides: square stride.
      padding: symmetric padding in pixels, one for both axes or (height, width);
        None means `(kernel - 1) // 2 * dilation` on each axis.
      groups: `feature_group_count` (in_channels for depthwise convolutions).
      dilation: kernel dilation.
      use_bias: conv bias (off when followed by BatchNorm).
      act: activation, or None for none.
      norm: whether to apply BatchNorm.
      bn_momentum: running-average decay in Flax's convention (PyTorch 0.1 == Flax 0.9).
      bn_epsilon: BatchNorm epsilon.
      bn_scale_init: initialiser of the BatchNorm scale (zeros for zero-init residuals).
      bn_axis_name: pmap axis to average batch statistics over (None under jit).
    """

    features: int
    kernel_size: int | tuple[int, int] = 3
    strides: int = 1
    padding: int | tuple[int, int] | None = None
    groups: int = 1
    dilation: int = 1
    use_bias: bool = False
    act: Callable[[jax.Array], jax.Array] | None = nn.relu
    norm: bool = True
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_scale_init: Callable[..., Any] = nn.initializers.ones
    bn_axis_name: str | None = None
    dtype: Any = None
    param_dtype: Any = jax.numpy.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, height, width, in_channels] -> [batch, height', width', features]."""
        if self.padding is None:
            padding = torch_padding(self.kernel_size, self.dilation)
        else:
            pad_h, pad_w = int_pair(self.padding, "padding")
            padding = ((pad_h, pad_h), (pad_w, pad_w))
        x = nn.Conv(
            self.features,
            int_pair(self.kernel_size, "kernel_size"),
            strides=self.strides,
            padding=padding,
            kernel_dilation=self.dilation,
            feature_group_count=self.groups,
            # On CPU, forms XLA runs faster (zoo.layers.cpu_conv); XLA's conv elsewhere.
            conv_general_dilated=conv_general_dilated,
            use_bias=self.use_bias,
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if self.norm:
            x = BatchNorm(  # flax's, with a leaner training-mode gradient
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                scale_init=self.bn_scale_init,
                axis_name=self.bn_axis_name,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="bn",
            )(x)
        if self.act is not None:
            x = self.act(x)
        return x
