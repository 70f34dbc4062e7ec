"""Exporting a model's inference function for serving.

- StableHLO (`jax.export`): the inference function, weights embedded as
  constants and BatchNorm folded (`zoo.interop.fold`), serialised to one
  file that `jax.export.deserialize` reloads and runs without Zoo or Flax.
  With `batch_polymorphic=True` the batch dimension is symbolic
  (`jax.export.symbolic_shape("b, H, W, C")`), so one file serves any batch.
- TensorFlow SavedModel via `jax2tf`: needs TensorFlow (the `tf` extra).

Inputs are NHWC float32 images, normalised as for training; outputs are
float32 logits [batch, num_classes].
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.interop.fold import fold_batch_norm, folded_apply

STABLEHLO_FILE = "model.stablehlo"
METADATA_FILE = "export.json"


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What an exported function expects.

    Attributes:
      image_size: height and width of the input images.
      channels: image channels.
      batch_size: fixed batch size, or None for a symbolic batch dimension.
    """

    image_size: int
    channels: int = 3
    batch_size: int | None = None

    def input_spec(self) -> jax.ShapeDtypeStruct:
        """The abstract input [batch, image_size, image_size, channels] float32."""
        size, channels = self.image_size, self.channels
        if self.batch_size is None:
            shape = jax.export.symbolic_shape(f"b, {size}, {size}, {channels}")
        else:
            shape = (self.batch_size, size, size, channels)
        return jax.ShapeDtypeStruct(shape, jnp.float32)


def inference_function(model: nn.Module, variables: Mapping[str, Any], *,
                       fold: bool = True) -> Callable[[jax.Array], jax.Array]:
    """images [batch, h, w, c] -> logits [batch, classes], variables closed over
    (as constants); BatchNorm folded when `fold`."""
    if fold:
        folded = fold_batch_norm(model, variables)
        return lambda images: folded_apply(model, folded, images)
    frozen = jax.tree.map(np.asarray, dict(variables))
    return lambda images: model.apply(frozen, images, train=False)


def _check_spec(model: nn.Module, spec: ExportSpec) -> None:
    if spec.image_size < model.min_input_size:
        raise ValueError(f"image_size {spec.image_size} is below the model's minimum "
                         f"{model.min_input_size}")
    if spec.channels != model.in_channels:
        raise ValueError(f"channels {spec.channels} != the model's in_channels "
                         f"{model.in_channels}")
    if spec.batch_size is not None and spec.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None (symbolic), got {spec.batch_size}")


def export_stablehlo(model: nn.Module, variables: Mapping[str, Any], spec: ExportSpec, *,
                     fold: bool = True,
                     platforms: Sequence[str] | None = None) -> jax.export.Exported:
    """`jax.export` of the inference function for `spec`'s input.

    Args:
      model: the Flax module; variables: its {"params", "batch_stats"}.
      spec: input size and (optional) fixed batch size.
      fold: fold BatchNorm into the convolutions first.
      platforms: lowering platforms, e.g. ("cpu", "cuda"); None = this backend.
    """
    _check_spec(model, spec)
    function = jax.jit(inference_function(model, variables, fold=fold))
    return jax.export.export(function, platforms=platforms)(spec.input_spec())


def save_stablehlo(exported: jax.export.Exported, directory: str | os.PathLike,
                   metadata: Mapping[str, Any]) -> Path:
    """Writes `directory/model.stablehlo` (serialised) and `export.json`; returns the file."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / STABLEHLO_FILE
    path.write_bytes(exported.serialize())
    info = {**metadata, "format": "stablehlo", "input_layout": "NHWC float32",
            "in_shapes": [str(a.shape) for a in exported.in_avals],
            "platforms": list(exported.platforms)}
    (out / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return path


def load_stablehlo(path: str | os.PathLike) -> jax.export.Exported:
    """Reloads a serialised export; call it as `exported.call(images)`."""
    file = Path(path)
    if file.is_dir():
        file = file / STABLEHLO_FILE
    if not file.is_file():
        raise ValueError(f"no exported model at {str(file)!r}")
    return jax.export.deserialize(bytearray(file.read_bytes()))


def export_saved_model(model: nn.Module, variables: Mapping[str, Any], spec: ExportSpec,
                       directory: str | os.PathLike, *, fold: bool = True) -> Path:
    """Writes a TensorFlow SavedModel (jax2tf) serving `images -> logits`.

    Needs TensorFlow (pip install 'zoo[tf]'); untested in Zoo's CI, which
    does not install it.
    """
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError as error:
        raise ValueError("the SavedModel format needs TensorFlow: pip install 'zoo[tf]' "
                         "(or export --format stablehlo, which needs only jax)") from error
    _check_spec(model, spec)
    function = inference_function(model, variables, fold=fold)
    size, channels = spec.image_size, spec.channels
    batch = "b" if spec.batch_size is None else str(spec.batch_size)
    converted = jax2tf.convert(function, polymorphic_shapes=[f"({batch}, {size}, {size}, "
                                                             f"{channels})"])
    module = tf.Module()
    module.serve = tf.function(
        converted, autograph=False,
        input_signature=[tf.TensorSpec([spec.batch_size, size, size, channels], tf.float32)])
    out = Path(directory)
    tf.saved_model.save(module, str(out))
    return out
