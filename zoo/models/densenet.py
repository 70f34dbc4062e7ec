"""DenseNet-121/161/169/201, as defined by torchvision.

Paper: Huang et al. 2016, "Densely Connected Convolutional Networks",
https://arxiv.org/abs/1608.06993. The definition followed is torchvision's
`torchvision.models.densenet` (the DenseNet-BC variant), layer for layer:

- stem: conv 7x7/2 (no bias) -> BatchNorm -> ReLU -> max-pool 3/2 pad 1;
- four dense blocks; each dense layer is pre-activation
  BN -> ReLU -> conv 1x1 (bn_size * growth) -> BN -> ReLU -> conv 3x3 (growth),
  and its output is appended to the running feature map, so a block's output
  is the concatenation [block input, layer1 output, layer2 output, ...] in
  exactly torchvision's `torch.cat(features, 1)` order;
- between blocks a transition BN -> ReLU -> conv 1x1 (channels // 2) ->
  avg-pool 2/2 halves channels and resolution;
- final BatchNorm, then ReLU, global average pool, linear classifier.
BatchNorm is PyTorch's default (eps 1e-5, momentum 0.1 = Flax 0.9).
Submodule names follow torchvision's (norm1, conv1, norm2, conv2 inside a
layer; norm, conv inside a transition; norm5, classifier), with Zoo's
`stem`, `block{i}/layer{j}` and `transition{i}` around them.

Deviations from torchvision, all deliberate:
- `memory_efficient=True` rematerialises (`nn.remat`) each whole dense layer
  in the backward pass; torchvision checkpoints only its concat-BN-ReLU-conv1x1
  part. Same outputs and gradients, less activation memory, more compute.
- Initialisation: torchvision uses Kaiming-normal (fan_in) for convolutions;
  Zoo does too in the dense layers and transitions, but the stem goes through
  the shared ConvBNAct, whose initialiser is He-normal with fan_out. The
  classifier uses PyTorch's default uniform weights and a zero bias, as
  torchvision does.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.batch_norm import BatchNorm
from zoo.layers.conv_bn_act import ConvBNAct
from zoo.layers.cpu_conv import conv_general_dilated
from zoo.layers.fusion_fence import gradient_barrier
from zoo.layers.pooling import global_avg_pool, max_pool
from zoo.layers.validation import check_images
from zoo.registry import register_model

# torchvision: nn.init.kaiming_normal_(conv.weight) (fan_in, untruncated).
kaiming_normal_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# PyTorch's default nn.Linear weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def bn_relu_conv(
    x: jax.Array,
    features: int,
    kernel_size: int,
    *,
    train: bool,
    norm_name: str,
    conv_name: str,
    bn_axis_name: str | None,
    dtype: Any,
    param_dtype: Any,
) -> jax.Array:
    """Pre-activation unit BN -> ReLU -> conv (no bias, "same" size, stride 1).

    Must be called inside a compact method: the BatchNorm and Conv become
    submodules of the calling module, named `norm_name` and `conv_name`.
    x: [batch, h, w, c] -> [batch, h, w, features].
    """
    # Zoo's BatchNorm and CPU convolution forms, as in ConvBNAct (zoo.layers).
    x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                  axis_name=bn_axis_name, dtype=dtype, param_dtype=param_dtype,
                  name=norm_name)(x)
    x = nn.relu(x)
    pad = kernel_size // 2
    return nn.Conv(features, (kernel_size, kernel_size), padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=kaiming_normal_fan_in, dtype=dtype,
                   param_dtype=param_dtype, conv_general_dilated=conv_general_dilated,
                   name=conv_name)(x)


class DenseLayer(nn.Module):
    """One dense layer: BN-ReLU-conv1x1(bn_size * growth)-BN-ReLU-conv3x3(growth),
    then dropout. Returns only the new `growth_rate` channels.

    `train` is positional so `nn.remat` can mark it static (memory_efficient).
    """

    growth_rate: int
    bn_size: int
    drop_rate: float = 0.0
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, h, w, growth_rate]."""
        unit = functools.partial(bn_relu_conv, train=train, bn_axis_name=self.bn_axis_name,
                                 dtype=self.dtype, param_dtype=self.param_dtype)
        x = unit(x, self.bn_size * self.growth_rate, 1, norm_name="norm1", conv_name="conv1")
        x = unit(x, self.growth_rate, 3, norm_name="norm2", conv_name="conv2")
        return nn.Dropout(self.drop_rate, deterministic=not train)(x)


class DenseBlock(nn.Module):
    """`num_layers` dense layers; each sees the concatenation of the block input
    and every earlier layer's output, and the block returns
    [input, new1, new2, ...] concatenated on channels (torchvision's order)."""

    num_layers: int
    growth_rate: int
    bn_size: int
    drop_rate: float = 0.0
    memory_efficient: bool = False
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, h, w, c + num_layers * growth_rate]."""
        layer_class = nn.remat(DenseLayer, static_argnums=(2,)) if self.memory_efficient \
            else DenseLayer
        for index in range(self.num_layers):
            layer = layer_class(self.growth_rate, self.bn_size, self.drop_rate,
                                self.bn_axis_name, self.dtype, self.param_dtype,
                                name=f"layer{index + 1}")
            # Appending keeps torch.cat([previous features..., new], 1) order.
            x = jnp.concatenate([x, layer(x, train)], axis=-1)
        return x


class Transition(nn.Module):
    """BN -> ReLU -> conv 1x1 (features) -> avg-pool 2/2 (floor)."""

    features: int
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, h // 2, w // 2, features]."""
        x = bn_relu_conv(x, self.features, 1, train=train, norm_name="norm", conv_name="conv",
                         bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                         param_dtype=self.param_dtype)
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
    """DenseNet-BC (torchvision's definition).

    Attributes:
      num_classes: classifier outputs; 0 returns pooled features.
      in_channels: image channels.
      growth_rate: channels each dense layer adds (32; 48 for DenseNet-161).
      block_config: dense layers in each of the four blocks.
      num_init_features: stem output channels (64; 96 for DenseNet-161).
      bn_size: bottleneck width multiplier of the 1x1 conv (4).
      drop_rate: dropout after each dense layer, active only when training.
      memory_efficient: recompute each dense layer in the backward pass
        (`nn.remat`) instead of storing its activations.
      bn_axis_name: pmap axis for BatchNorm statistics (None under jit).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 1000
    in_channels: int = 3
    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    drop_rate: float = 0.0
    memory_efficient: bool = False
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # /32 network: the last transition's 2x2 pool needs a 2x2 map (29 is
        # the exact minimum; 32 is the /32 convention).
        return 32

    @property
    def num_features(self) -> int:
        """Channels of the pooled features (1024 for DenseNet-121)."""
        channels = self.num_init_features
        for index, num_layers in enumerate(self.block_config):
            channels += num_layers * self.growth_rate
            if index != len(self.block_config) - 1:
                channels //= 2
        return channels

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32), or pooled features [batch, num_features] with
        `return_features=True` or `num_classes=0`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size, model="DenseNet")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"DenseNet drop_rate must be in [0, 1), got {self.drop_rate}")
        common = dict(bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                      param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        x = ConvBNAct(self.num_init_features, 7, 2, name="stem", **common)(x, train=train)
        x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        if train:
            # The pool's gradient sums the first block's layers; written once, it is
            # not recomputed at each of the pool's 9 taps on CPU (training 1.09-1.14x;
            # benchmarks/NOTES.md, entry 18).
            x = gradient_barrier(x, self.variables["params"]["stem"]["conv"]["kernel"])
        for index, num_layers in enumerate(self.block_config):
            x = DenseBlock(num_layers, self.growth_rate, self.bn_size, self.drop_rate,
                           self.memory_efficient, name=f"block{index + 1}", **common)(
                               x, train=train)
            if index != len(self.block_config) - 1:
                x = Transition(x.shape[-1] // 2, name=f"transition{index + 1}", **common)(
                    x, train=train)
        x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      axis_name=self.bn_axis_name, dtype=self.dtype,
                      param_dtype=self.param_dtype, name="norm5")(x)
        features = global_avg_pool(nn.relu(x))
        if return_features or self.num_classes == 0:
            return features.astype(jnp.float32)
        x = nn.Dense(self.num_classes, kernel_init=torch_linear_init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="classifier")(features)
        return x.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class DenseNetSpec:
    """One torchvision DenseNet variant and its canonical parameter count."""

    growth_rate: int
    block_config: tuple[int, int, int, int]
    num_init_features: int
    reference_params: int


DENSENET_SPECS: dict[str, DenseNetSpec] = {
    "densenet121": DenseNetSpec(32, (6, 12, 24, 16), 64, 7_978_856),
    "densenet161": DenseNetSpec(48, (6, 12, 36, 24), 96, 28_681_000),
    "densenet169": DenseNetSpec(32, (6, 12, 32, 32), 64, 14_149_480),
    "densenet201": DenseNetSpec(32, (6, 12, 48, 32), 64, 20_013_928),
}

for _name, _spec in DENSENET_SPECS.items():
    register_model(
        _name,
        functools.partial(DenseNet, growth_rate=_spec.growth_rate,
                          block_config=_spec.block_config,
                          num_init_features=_spec.num_init_features),
        family="densenet",
        input_size=224,
        paper="https://arxiv.org/abs/1608.06993",
        reference_params=_spec.reference_params,
        reference="torchvision",
    )
