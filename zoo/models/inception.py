"""Inception v3, as defined by torchvision.

Paper: Szegedy et al. 2015, "Rethinking the Inception Architecture for
Computer Vision", https://arxiv.org/abs/1512.00567. The definition followed
is torchvision's `Inception3` (`torchvision.models.inception_v3`), layer for
layer and with its module names (Conv2d_1a_3x3 -> conv1a, Mixed_5b -> mixed5b,
branch names unchanged):

- every convolution is BasicConv2d = conv (no bias) + BatchNorm(eps=0.001) + ReLU;
- stem: conv 3x3/2, conv 3x3, conv 3x3 pad 1, max-pool 3/2, conv 1x1,
  conv 3x3, max-pool 3/2 (unpadded convs, floor-mode pools);
- InceptionA x3 (mixed5b-d), InceptionB (mixed6a, /2), InceptionC x4
  (mixed6b-e, factorised 1x7 / 7x1), InceptionD (mixed7a, /2),
  InceptionE x2 (mixed7b-c); the average-pool branches are 3x3 stride 1
  pad 1 with `count_include_pad=True` (padded zeros count in the mean);
- global average pool, dropout 0.5, linear classifier.
23,834,568 parameters at 1000 classes without the auxiliary head,
27,161,264 with it. Default input 299x299; the smallest input is 75x75
(torchvision's documented minimum), or 299x299 with the auxiliary head,
whose unpadded 5x5 convolution needs the 17x17 map that only >= 299 inputs give.

Deviations from torchvision, all deliberate:
- `transform_input` (re-normalising ImageNet inputs inside the model) is not
  applied: Zoo's data pipeline normalises images.
- The auxiliary head is off by default (`aux_logits=False`; torchvision's
  default is on). With it on, it runs only when training, where the model
  returns the NamedTuple `InceptionOutputs(logits, aux)`, as torchvision does.
- Initialisation: torchvision draws weights from a normal with std 0.1
  (0.01 for the auxiliary 5x5 conv, 0.001 for the auxiliary classifier);
  Zoo's convolutions use the shared He-normal (fan_out) of ConvBNAct, the
  classifiers use torchvision's stds, and biases start at zero.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.conv_bn_act import ConvBNAct
from zoo.layers.pooling import global_avg_pool, max_pool
from zoo.layers.validation import check_images
from zoo.registry import register_model

# torchvision's Inception3 BasicConv2d uses BatchNorm2d(eps=0.001).
BN_EPSILON = 1e-3
# InceptionA's pool_features for mixed5b..d and InceptionC's channels_7x7 for mixed6b..e.
MIXED5_POOL_FEATURES = (32, 64, 64)
MIXED6_CHANNELS_7X7 = (128, 160, 160, 192)
MIN_INPUT_SIZE = 75
MIN_INPUT_SIZE_WITH_AUX = 299


class InceptionOutputs(NamedTuple):
    """Training outputs with the auxiliary head: each [batch, num_classes] float32."""

    logits: jax.Array
    aux: jax.Array


class _Block(nn.Module):
    """Base of the Inception blocks: helpers building their BasicConv2d layers."""

    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def conv(self, features: int, kernel: int | tuple[int, int], name: str, *, stride: int = 1,
             padding: int | tuple[int, int] = 0) -> ConvBNAct:
        """BasicConv2d (torchvision pads 0 unless told)."""
        return ConvBNAct(features, kernel, stride, padding=padding, bn_epsilon=BN_EPSILON,
                         bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=name)

    def conv_1xn(self, features: int, n: int, name: str) -> ConvBNAct:
        """Factorised BasicConv2d: kernel (1, n), padding (0, n // 2)."""
        return self.conv(features, (1, n), name, padding=(0, n // 2))

    def conv_nx1(self, features: int, n: int, name: str) -> ConvBNAct:
        """Factorised BasicConv2d: kernel (n, 1), padding (n // 2, 0)."""
        return self.conv(features, (n, 1), name, padding=(n // 2, 0))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # F.avg_pool2d(x, 3, stride=1, padding=1): count_include_pad=True is torch's default.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=True)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(_Block):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-pool-1x1 -> 224 + pool_features."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, h, w, 224 + pool_features]."""
        b1 = self.conv(64, 1, "branch1x1")(x, train=train)
        b5 = self.conv(48, 1, "branch5x5_1")(x, train=train)
        b5 = self.conv(64, 5, "branch5x5_2", padding=2)(b5, train=train)
        b3 = self.conv(64, 1, "branch3x3dbl_1")(x, train=train)
        b3 = self.conv(96, 3, "branch3x3dbl_2", padding=1)(b3, train=train)
        b3 = self.conv(96, 3, "branch3x3dbl_3", padding=1)(b3, train=train)
        bp = self.conv(self.pool_features, 1, "branch_pool")(_avg_pool_3x3(x), train=train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | max-pool 3/2."""

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, (h-3)//2+1, (w-3)//2+1, 480 + c]."""
        b3 = self.conv(384, 3, "branch3x3", stride=2)(x, train=train)
        bd = self.conv(64, 1, "branch3x3dbl_1")(x, train=train)
        bd = self.conv(96, 3, "branch3x3dbl_2", padding=1)(bd, train=train)
        bd = self.conv(96, 3, "branch3x3dbl_3", stride=2)(bd, train=train)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(_Block):
    """17x17 block with factorised 7x7s: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7
    | avg-pool-1x1 -> 768 channels."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, h, w, 768]."""
        c7 = self.channels_7x7
        b1 = self.conv(192, 1, "branch1x1")(x, train=train)
        b7 = self.conv(c7, 1, "branch7x7_1")(x, train=train)
        b7 = self.conv_1xn(c7, 7, "branch7x7_2")(b7, train=train)
        b7 = self.conv_nx1(192, 7, "branch7x7_3")(b7, train=train)
        bd = self.conv(c7, 1, "branch7x7dbl_1")(x, train=train)
        bd = self.conv_nx1(c7, 7, "branch7x7dbl_2")(bd, train=train)
        bd = self.conv_1xn(c7, 7, "branch7x7dbl_3")(bd, train=train)
        bd = self.conv_nx1(c7, 7, "branch7x7dbl_4")(bd, train=train)
        bd = self.conv_1xn(192, 7, "branch7x7dbl_5")(bd, train=train)
        bp = self.conv(192, 1, "branch_pool")(_avg_pool_3x3(x), train=train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max-pool 3/2."""

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, (h-3)//2+1, (w-3)//2+1, 512 + c]."""
        b3 = self.conv(192, 1, "branch3x3_1")(x, train=train)
        b3 = self.conv(320, 3, "branch3x3_2", stride=2)(b3, train=train)
        b7 = self.conv(192, 1, "branch7x7x3_1")(x, train=train)
        b7 = self.conv_1xn(192, 7, "branch7x7x3_2")(b7, train=train)
        b7 = self.conv_nx1(192, 7, "branch7x7x3_3")(b7, train=train)
        b7 = self.conv(192, 3, "branch7x7x3_4", stride=2)(b7, train=train)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(_Block):
    """8x8 block with split 1x3 / 3x1 outputs -> 2048 channels."""

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, h, w, 2048]."""
        b1 = self.conv(320, 1, "branch1x1")(x, train=train)
        b3 = self.conv(384, 1, "branch3x3_1")(x, train=train)
        b3 = jnp.concatenate([self.conv_1xn(384, 3, "branch3x3_2a")(b3, train=train),
                              self.conv_nx1(384, 3, "branch3x3_2b")(b3, train=train)], axis=-1)
        bd = self.conv(448, 1, "branch3x3dbl_1")(x, train=train)
        bd = self.conv(384, 3, "branch3x3dbl_2", padding=1)(bd, train=train)
        bd = jnp.concatenate([self.conv_1xn(384, 3, "branch3x3dbl_3a")(bd, train=train),
                              self.conv_nx1(384, 3, "branch3x3dbl_3b")(bd, train=train)], axis=-1)
        bp = self.conv(192, 1, "branch_pool")(_avg_pool_3x3(x), train=train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(_Block):
    """Auxiliary classifier on the 17x17 map: avg-pool 5/3 -> conv 1x1 (128)
    -> conv 5x5 (768, unpadded) -> global avg-pool -> fc num_classes."""

    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, 17, 17, 768] -> logits [batch, num_classes] (float32)."""
        x = nn.avg_pool(x, (5, 5), strides=(3, 3))
        x = self.conv(128, 1, "conv0")(x, train=train)
        x = self.conv(768, 5, "conv1")(x, train=train)
        x = global_avg_pool(x)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.001),
                        dtype=self.dtype, param_dtype=self.param_dtype,
                        name="fc")(x).astype(jnp.float32)


class InceptionV3(nn.Module):
    """Inception v3 (torchvision's Inception3).

    Attributes:
      num_classes: classifier outputs; 0 returns pooled features [batch, 2048].
      in_channels: image channels.
      drop_rate: dropout before the classifier (torchvision: 0.5).
      aux_logits: build the auxiliary head after mixed6e; it runs only when
        training, where the model returns `InceptionOutputs(logits, aux)`.
        Raises the minimum input to 299x299. Off by default.
      bn_axis_name: pmap axis for BatchNorm statistics (None under jit).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 1000
    in_channels: int = 3
    drop_rate: float = 0.5
    aux_logits: bool = False
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # 75 leaves 1x1 after mixed7a; the auxiliary head's unpadded 5x5 conv
        # after a 5/3 avg-pool needs mixed6e's 17x17, which needs 299.
        return MIN_INPUT_SIZE_WITH_AUX if self.aux_logits else MIN_INPUT_SIZE

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | InceptionOutputs:
        """x: [batch, height, width, in_channels] (299x299 by default) -> logits
        [batch, num_classes] (float32); `InceptionOutputs` when `aux_logits`
        and `train`; pooled features [batch, 2048] with `return_features=True`
        or `num_classes=0`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size,
                     model="InceptionV3")
        block = dict(bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                     param_dtype=self.param_dtype)
        conv = functools.partial(ConvBNAct, padding=0, bn_epsilon=BN_EPSILON, **block)
        x = x.astype(self.dtype)
        x = conv(32, 3, 2, name="conv1a")(x, train=train)
        x = conv(32, 3, name="conv2a")(x, train=train)
        x = conv(64, 3, padding=1, name="conv2b")(x, train=train)
        x = _max_pool_3x3_s2(x)
        x = conv(80, 1, name="conv3b")(x, train=train)
        x = conv(192, 3, name="conv4a")(x, train=train)
        x = _max_pool_3x3_s2(x)
        for letter, pool_features in zip("bcd", MIXED5_POOL_FEATURES):
            x = InceptionA(pool_features=pool_features, name=f"mixed5{letter}",
                           **block)(x, train=train)
        x = InceptionB(name="mixed6a", **block)(x, train=train)
        for letter, channels_7x7 in zip("bcde", MIXED6_CHANNELS_7X7):
            x = InceptionC(channels_7x7=channels_7x7, name=f"mixed6{letter}",
                           **block)(x, train=train)
        with_aux = self.aux_logits and self.num_classes > 0 and not return_features
        aux = None
        # The auxiliary head is traced at init too, so its parameters exist for training.
        if with_aux and (train or self.is_initializing()):
            aux = InceptionAux(num_classes=self.num_classes, name="aux", **block)(x, train=train)
        x = InceptionD(name="mixed7a", **block)(x, train=train)
        x = InceptionE(name="mixed7b", **block)(x, train=train)
        x = InceptionE(name="mixed7c", **block)(x, train=train)
        features = global_avg_pool(x)
        if return_features or self.num_classes == 0:
            return features.astype(jnp.float32)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(features)
        logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.1),
                          dtype=self.dtype, param_dtype=self.param_dtype,
                          name="fc")(x).astype(jnp.float32)
        if with_aux and train:
            return InceptionOutputs(logits, aux)
        return logits


register_model(
    "inception_v3",
    InceptionV3,
    family="inception",
    input_size=299,
    paper="https://arxiv.org/abs/1512.00567",
    reference_params=23_834_568,
    reference="torchvision",
)
