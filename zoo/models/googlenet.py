"""GoogLeNet (Inception v1), as defined by torchvision.

Paper: Szegedy et al. 2014, "Going Deeper with Convolutions",
https://arxiv.org/abs/1409.4842. The definition followed is torchvision's
`torchvision.models.googlenet` (the BatchNorm variant), layer for layer:

- every convolution is BasicConv2d = conv (no bias) + BatchNorm(eps=0.001) + ReLU;
- the stem is conv 7x7/2 -> max-pool 3/2 -> conv 1x1 -> conv 3x3 -> max-pool 3/2,
  and every max-pool between stages uses `ceil_mode=True` (the one before
  stage 5 is 2x2/2);
- nine Inception blocks with four branches (1x1; 1x1 -> 3x3; 1x1 -> "5x5";
  max-pool 3/1 -> 1x1), concatenated in that order;
- global average pool, dropout 0.2, linear classifier.
6,624,904 parameters at 1000 classes without the auxiliary heads
(13,004,888 with them).

Deviations from torchvision, all deliberate:
- torchvision's "5x5" branch (branch3) uses a 3x3 kernel (a known torchvision
  quirk kept for its weights); Zoo keeps the quirk, so the count matches.
- `transform_input` (re-normalising ImageNet inputs inside the model) is not
  applied: Zoo's data pipeline normalises images.
- With `aux_logits=True` and `train=True` the model returns the NamedTuple
  `GoogLeNetOutputs(logits, aux1, aux2)`, with aux1 from after inception4a and
  aux2 from after inception4d. torchvision's namedtuple orders them
  `(logits, aux_logits2, aux_logits1)`; Zoo names the fields instead.
  Auxiliary heads are off by default (torchvision's default is on when no
  weights are loaded, off for the pretrained model).
- Initialisation: torchvision draws convolution and linear weights from a
  normal with std 0.01; Zoo's shared ConvBNAct uses He-normal (fan_out) for
  convolutions; linear layers here use std 0.01 and zero bias.
- The auxiliary heads flatten their 128x4x4 maps in PyTorch's channel-major
  (C, H, W) order, so torchvision's fc1 weights import without permutation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.conv_bn_act import ConvBNAct
from zoo.layers.pooling import adaptive_avg_pool, global_avg_pool, max_pool_ceil
from zoo.layers.validation import check_images
from zoo.registry import register_model

# torchvision's GoogLeNet BasicConv2d uses BatchNorm2d(eps=0.001).
BN_EPSILON = 1e-3
linear_init = nn.initializers.normal(stddev=0.01)
# torchvision taps the auxiliary heads after inception4a (aux1) and 4d (aux2).
AUX_TAPS = {"inception4a": "aux1", "inception4d": "aux2"}


class GoogLeNetOutputs(NamedTuple):
    """Training outputs with auxiliary heads: each [batch, num_classes] float32."""

    logits: jax.Array
    aux1: jax.Array
    aux2: jax.Array


@dataclasses.dataclass(frozen=True)
class InceptionSpec:
    """Output channels of the branches of one Inception block (torchvision's
    `Inception(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`)."""

    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    ch5x5_reduce: int
    ch5x5: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels.

    Submodules: branch1 (1x1), branch2_reduce / branch2 (1x1 -> 3x3),
    branch3_reduce / branch3 (1x1 -> 3x3, torchvision's "5x5"), branch4
    (max-pool 3/1 -> 1x1).
    """

    spec: InceptionSpec
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> [batch, h, w, spec.out_channels]."""
        conv = functools.partial(ConvBNAct, bn_epsilon=BN_EPSILON, bn_axis_name=self.bn_axis_name,
                                 dtype=self.dtype, param_dtype=self.param_dtype)
        s = self.spec
        branch1 = conv(s.ch1x1, 1, name="branch1")(x, train=train)
        branch2 = conv(s.ch3x3_reduce, 1, name="branch2_reduce")(x, train=train)
        branch2 = conv(s.ch3x3, 3, name="branch2")(branch2, train=train)
        branch3 = conv(s.ch5x5_reduce, 1, name="branch3_reduce")(x, train=train)
        # torchvision uses a 3x3 kernel here despite the "5x5" name; kept for its weights.
        branch3 = conv(s.ch5x5, 3, name="branch3")(branch3, train=train)
        branch4 = max_pool_ceil(x, 3, 1, 1)
        branch4 = conv(s.pool_proj, 1, name="branch4")(branch4, train=train)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class AuxHead(nn.Module):
    """Auxiliary classifier: adaptive avg-pool 4x4 -> conv 1x1 (128) -> fc 1024
    -> ReLU -> dropout 0.7 -> fc num_classes."""

    num_classes: int
    drop_rate: float = 0.7
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [batch, h, w, c] -> logits [batch, num_classes] (float32)."""
        x = adaptive_avg_pool(x, 4)
        x = ConvBNAct(128, 1, bn_epsilon=BN_EPSILON, bn_axis_name=self.bn_axis_name,
                      dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x, train=train)
        # Channel-major flatten, as torch.flatten on NCHW: fc1 imports one to one.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        dense = functools.partial(nn.Dense, kernel_init=linear_init, dtype=self.dtype,
                                  param_dtype=self.param_dtype)
        x = nn.relu(dense(1024, name="fc1")(x))
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return dense(self.num_classes, name="fc2")(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
    """GoogLeNet / Inception v1 (torchvision's definition).

    Attributes:
      num_classes: classifier outputs; 0 returns pooled features [batch, 1024].
      in_channels: image channels.
      stages: Inception specs of stage 3, 4 and 5 (max-pool between stages).
      drop_rate: dropout before the classifier (torchvision: 0.2).
      aux_logits: build the two auxiliary heads (after inception4a and 4d);
        they run only when training, where the model returns
        `GoogLeNetOutputs(logits, aux1, aux2)`. Off by default.
      aux_drop_rate: dropout inside the auxiliary heads (torchvision: 0.7).
      bn_axis_name: pmap axis for BatchNorm statistics (None under jit).
      dtype: computation dtype; param_dtype: parameter dtype.
    """

    num_classes: int = 1000
    in_channels: int = 3
    stages: tuple[tuple[InceptionSpec, ...], ...] = ()
    drop_rate: float = 0.2
    aux_logits: bool = False
    aux_drop_rate: float = 0.7
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def min_input_size(self) -> int:
        # /32 network: 32 keeps every ceil-mode pool's input at least its window
        # (31 is the exact minimum; 32 is the /32 convention).
        return 32

    def _conv(self, features: int, kernel: int, stride: int, name: str) -> ConvBNAct:
        return ConvBNAct(features, kernel, stride, bn_epsilon=BN_EPSILON,
                         bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=name)

    def _aux(self, name: str) -> AuxHead:
        return AuxHead(self.num_classes, self.aux_drop_rate, self.bn_axis_name,
                       self.dtype, self.param_dtype, name=name)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, return_features: bool = False
    ) -> jax.Array | GoogLeNetOutputs:
        """x: [batch, height, width, in_channels] -> logits [batch, num_classes]
        (float32); `GoogLeNetOutputs` when `aux_logits` and `train`; pooled
        features [batch, 1024] with `return_features=True` or `num_classes=0`."""
        check_images(x, channels=self.in_channels, min_size=self.min_input_size, model="GoogLeNet")
        if len(self.stages) != 3:
            raise ValueError(f"GoogLeNet needs 3 stages of Inception specs, got {len(self.stages)}")
        x = x.astype(self.dtype)
        x = self._conv(64, 7, 2, "conv1")(x, train=train)
        x = max_pool_ceil(x, 3, 2)
        x = self._conv(64, 1, 1, "conv2")(x, train=train)
        x = self._conv(192, 3, 1, "conv3")(x, train=train)
        x = max_pool_ceil(x, 3, 2)
        with_aux = self.aux_logits and self.num_classes > 0 and not return_features
        # Auxiliary heads are traced at init too, so their parameters exist for training.
        run_aux = with_aux and (train or self.is_initializing())
        aux: dict[str, jax.Array] = {}
        for stage_index, stage in enumerate(self.stages):
            if stage_index == 1:
                x = max_pool_ceil(x, 3, 2)
            elif stage_index == 2:
                x = max_pool_ceil(x, 2, 2)
            for block_index, spec in enumerate(stage):
                name = f"inception{stage_index + 3}{'abcdefghi'[block_index]}"
                x = InceptionBlock(spec, self.bn_axis_name, self.dtype, self.param_dtype,
                                   name=name)(x, train=train)
                head = AUX_TAPS.get(name)
                if run_aux and head is not None:
                    aux[head] = self._aux(head)(x, train=train)
        features = global_avg_pool(x)
        if return_features or self.num_classes == 0:
            return features.astype(jnp.float32)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(features)
        logits = nn.Dense(self.num_classes, kernel_init=linear_init, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="fc")(x).astype(jnp.float32)
        if with_aux and train:
            return GoogLeNetOutputs(logits, aux["aux1"], aux["aux2"])
        return logits


# torchvision's table: Inception(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj).
GOOGLENET_STAGES: tuple[tuple[InceptionSpec, ...], ...] = (
    (  # stage 3: 3a, 3b
        InceptionSpec(64, 96, 128, 16, 32, 32),
        InceptionSpec(128, 128, 192, 32, 96, 64),
    ),
    (  # stage 4: 4a .. 4e
        InceptionSpec(192, 96, 208, 16, 48, 64),
        InceptionSpec(160, 112, 224, 24, 64, 64),
        InceptionSpec(128, 128, 256, 24, 64, 64),
        InceptionSpec(112, 144, 288, 32, 64, 64),
        InceptionSpec(256, 160, 320, 32, 128, 128),
    ),
    (  # stage 5: 5a, 5b
        InceptionSpec(256, 160, 320, 32, 128, 128),
        InceptionSpec(384, 192, 384, 48, 128, 128),
    ),
)

register_model(
    "googlenet",
    functools.partial(GoogLeNet, stages=GOOGLENET_STAGES),
    family="googlenet",
    input_size=224,
    paper="https://arxiv.org/abs/1409.4842",
    reference_params=6_624_904,
    reference="torchvision",
)
