"""Small single-topic blocks shared by the model families.

Import from the submodule that defines a block, e.g.
`from zoo.layers.conv_bn_act import ConvBNAct`. One topic per file:
conv_bn_act, validation, make_divisible, drop_path, pooling, squeeze_excite,
mlp, activations (SiLU, sigmoid, hard-swish computed in float32 for
bfloat16 input), attention, layer_scale, depthwise (a CPU-fast depthwise convolution),
cpu_conv (CPU-fast convolutions), cpu_matmul (matrix products XLA's CPU
backend runs in bfloat16 kernels), dense (a dot_general for nn.Dense on tokens),
batch_norm (nn.BatchNorm with a hand-written training gradient), fusion_fence
(exact identities that steer XLA's CPU fusions: bound library fusions, stop
recomputation).
"""
