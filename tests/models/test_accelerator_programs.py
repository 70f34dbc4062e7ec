"""What a GPU runs: every model's program lowered for CUDA, on this CPU.

Zoo's CPU forms (`zoo.layers.cpu_conv`, `depthwise`, `winograd`,
`cpu_matmul`, `fusion_fence`, the CPU max-pool) sit behind
`lax.platform_dependent`, so on a GPU or TPU XLA must get the plain program:
one convolution per conv kernel forward and, in training, two more per kernel
for its gradients (less the input gradient of the stem, whose input is the
image), nothing rounded by a fusion fence, and in bfloat16 every convolution
and matrix product on bfloat16 operands, so none leaves the tensor cores.

`jax.export` lowers for a platform that is not present (no GPU needed, no
compile), so these checks run in CI; the float32 eval forward and the
bfloat16 engine training step of one variant of each block design
(`TRAIN_COMPILED`) are checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import zoo
from zoo.train.state import abstract_state
from zoo.train.steps import train_step

from tests.models.helpers import init_shapes_of
from tests.models.test_every_model import ALL_MODELS, TRAIN_COMPILED, _params
from tests.xla_helpers import stablehlo_operand_types


def _model(name: str, dtype=jnp.float32):
    """(model, input shape, overrides): `name` with 3 classes at its minimum
    input size; ViTs get position embeddings built for that size, so no
    interpolation (a float32 resize of the embeddings, run once per step)
    enters the program."""
    size = zoo.create_model(name).min_input_size
    overrides = (("num_classes", 3),) + ((("image_size", size),) if name.startswith("vit") else ())
    model = zoo.create_model(name, dtype=dtype, **dict(overrides))
    return model, (2, size, size, model.in_channels), overrides


def _conv_kernels(params) -> int:
    return sum(1 for leaf in jax.tree.leaves(params) if leaf.ndim == 4)


def _train_step_mlir(name: str, platform: str) -> tuple[str, int]:
    """The bfloat16 engine training step (SGD with Nesterov momentum) of
    `name` lowered for `platform`, and its number of conv kernels."""
    model, shape, _ = _model(name, jnp.bfloat16)
    state = abstract_state(model, optax.sgd(0.1, 0.9, nesterov=True), shape)
    batch = {"image": jax.ShapeDtypeStruct(shape, jnp.float32),
             "label": jax.ShapeDtypeStruct(shape[:1], jnp.int32)}
    exported = jax.export.export(jax.jit(train_step), platforms=[platform])(state, batch)
    return exported.mlir_module(), _conv_kernels(state.params)


REPRESENTATIVES = _params(sorted(TRAIN_COMPILED, key=ALL_MODELS.index))


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_gpu_eval_forward_is_one_xla_convolution_per_conv(name):
    model, shape, overrides = _model(name)
    variables = init_shapes_of(name, shape, overrides)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    mlir = jax.export.export(forward, platforms=["cuda"])(
        variables, jax.ShapeDtypeStruct(shape, jnp.float32)).mlir_module()
    convolutions = stablehlo_operand_types(mlir, "convolution")
    assert len(convolutions) == _conv_kernels(variables["params"])
    assert set(convolutions) == {("f32", "f32")}
    assert "reduce_precision" not in mlir


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_gpu_bfloat16_train_step_multiplies_only_bfloat16(name):
    mlir, kernels = _train_step_mlir(name, "cuda")
    convolutions = stablehlo_operand_types(mlir, "convolution")
    # Forward, input gradient and kernel gradient of each conv; the image
    # gets no gradient.
    assert len(convolutions) == 3 * kernels - 1
    products = convolutions + stablehlo_operand_types(mlir, "dot_general")
    assert products and set(products) == {("bf16", "bf16")}, \
        f"products on other operands: {sorted(set(products) - {('bf16', 'bf16')})}"
    assert "reduce_precision" not in mlir and "custom_call" not in mlir


@pytest.mark.parametrize("name", [pytest.param("resnet50", marks=pytest.mark.xdist_group(
    "model-resnet50"))])
def test_the_cpu_program_is_zoos_own(name):
    # The same step lowered for the CPU runs Zoo's forms instead (im2col
    # products, shifted multiply-adds, fences): what the checks above would
    # see if a CPU form leaked onto GPUs.
    mlir, kernels = _train_step_mlir(name, "cpu")
    assert len(stablehlo_operand_types(mlir, "convolution")) < 3 * kernels - 1
    assert "reduce_precision" in mlir
