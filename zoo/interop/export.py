"""Exporting a model's inference function for serving.

- StableHLO (`jax.export`): the inference function, weights embedded as
  constants and BatchNorm folded (`zoo.interop.fold`), serialised to one
  file that `jax.export.deserialize` reloads and runs without Zoo or Flax.
  With `ExportSpec(batch_size=None)` the batch dimension is symbolic
  (`jax.export.symbolic_shape("b, H, W, C")`), so one file serves any batch.
- TensorFlow SavedModel via `jax2tf`: needs TensorFlow (the `tf` extra);
  its `serve` signature is what TensorFlow Serving calls.

Inputs are NHWC float32 images normalised as for training or, with
`ExportSpec.normalize` set, raw uint8 pixels that the exported function
normalises itself (`(pixel / 255 - mean) / std`, as `zoo.data` does); outputs
are float32 logits [batch, num_classes].
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
      normalize: (mean, std) per channel, in [0, 1] pixel units: the exported
        function then takes uint8 pixels and normalises them itself. None: it
        takes float32 images already normalised.
    """

    image_size: int
    channels: int = 3
    batch_size: int | None = None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def input_dtype(self) -> jnp.dtype:
        return jnp.dtype(jnp.uint8 if self.normalize is not None else jnp.float32)

    def input_spec(self) -> jax.ShapeDtypeStruct:
        """The abstract input [batch, image_size, image_size, channels]."""
        size, channels = self.image_size, self.channels
        if self.batch_size is None:
            shape = jax.export.symbolic_shape(f"b, {size}, {size}, {channels}")
        else:
            shape = (self.batch_size, size, size, channels)
        return jax.ShapeDtypeStruct(shape, self.input_dtype)


def inference_function(model: nn.Module, variables: Mapping[str, Any], *,
                       fold: bool = True,
                       normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                       ) -> Callable[[jax.Array], jax.Array]:
    """images [batch, h, w, c] -> logits [batch, classes], variables closed over
    (as constants); BatchNorm folded when `fold`; uint8 pixels normalised
    first when `normalize` = (mean, std)."""
    if fold:
        folded = fold_batch_norm(model, variables)
        apply = lambda images: folded_apply(model, folded, images)  # noqa: E731
    else:
        frozen = jax.tree.map(np.asarray, dict(variables))
        apply = lambda images: model.apply(frozen, images, train=False)  # noqa: E731
    if normalize is None:
        return apply
    from zoo.data.transforms import normalize as normalize_pixels

    mean = np.asarray(normalize[0], np.float32)
    std = np.asarray(normalize[1], np.float32)

    def preprocess_and_apply(pixels: jax.Array) -> jax.Array:
        # The training pipeline's own normalisation (it is array-agnostic), so
        # the export sees exactly the inputs the model was trained on.
        return apply(normalize_pixels(pixels, mean, std))
    return preprocess_and_apply


def _check_spec(model: nn.Module, spec: ExportSpec) -> None:
    if spec.image_size < model.min_input_size:
        raise ValueError(f"image_size {spec.image_size} is below the model's minimum "
                         f"{model.min_input_size}")
    if spec.channels != model.in_channels:
        raise ValueError(f"channels {spec.channels} != the model's in_channels "
                         f"{model.in_channels}")
    if spec.batch_size is not None and spec.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None (symbolic), got {spec.batch_size}")
    if spec.normalize is not None:
        mean, std = spec.normalize
        if len(mean) != spec.channels or len(std) != spec.channels:
            raise ValueError(f"normalize needs one mean and one std per channel "
                             f"({spec.channels}), got mean {tuple(mean)} and std {tuple(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"normalize std must be > 0, got {tuple(std)}")


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
    function = jax.jit(inference_function(model, variables, fold=fold,
                                          normalize=spec.normalize))
    return jax.export.export(function, platforms=platforms)(spec.input_spec())


def _input_metadata(spec: ExportSpec) -> dict[str, Any]:
    """What a serving client must send, for export.json."""
    batch = "b" if spec.batch_size is None else spec.batch_size
    info: dict[str, Any] = {
        "input_shape": [batch, spec.image_size, spec.image_size, spec.channels],
        "input_dtype": spec.input_dtype.name, "input_layout": "NHWC"}
    if spec.normalize is None:
        info["input"] = "images already normalised as for training"
    else:
        info["input"] = "raw pixels 0..255; the model normalises (pixel / 255 - mean) / std"
        info["mean"], info["std"] = list(spec.normalize[0]), list(spec.normalize[1])
    return info


def check_new_directory(out: Path) -> None:
    """Raises ValueError unless `out` is missing or an empty directory: an export
    never overwrites (the directory may hold a model being served)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{str(out)!r} already exists and is not an empty directory; "
                         f"choose a new --out")


def save_stablehlo(exported: jax.export.Exported, directory: str | os.PathLike,
                   metadata: Mapping[str, Any], spec: ExportSpec | None = None) -> Path:
    """Writes `directory/model.stablehlo` (serialised) and `export.json`; returns the file.

    `directory` must be new or empty."""
    out = Path(directory)
    check_new_directory(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / STABLEHLO_FILE
    path.write_bytes(exported.serialize())
    info = {**metadata, "format": "stablehlo", **(_input_metadata(spec) if spec else {}),
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
                       directory: str | os.PathLike, *, fold: bool = True,
                       metadata: Mapping[str, Any] | None = None) -> Path:
    """Writes a TensorFlow SavedModel (jax2tf) serving `images -> logits`.

    The `serving_default` signature takes `images` ([batch, h, w, c], the
    spec's dtype) and returns `logits`; the weights are constants of the
    graph. Needs TensorFlow (pip install 'zoo[tf]'). `directory` must be new
    or empty; `export.json` is written beside `saved_model.pb`.
    """
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError as error:
        raise ValueError("the SavedModel format needs TensorFlow: pip install 'zoo[tf]' "
                         "(or export --format stablehlo, which needs only jax)") from error
    _check_spec(model, spec)
    out = Path(directory)
    check_new_directory(out)
    function = inference_function(model, variables, fold=fold, normalize=spec.normalize)
    size, channels = spec.image_size, spec.channels
    batch = "b" if spec.batch_size is None else str(spec.batch_size)
    converted = jax2tf.convert(function, with_gradient=False,
                               polymorphic_shapes=[f"({batch}, {size}, {size}, {channels})"])
    dtype = tf.uint8 if spec.normalize is not None else tf.float32
    signature = tf.TensorSpec([spec.batch_size, size, size, channels], dtype, name="images")
    module = tf.Module()
    module.serve = tf.function(lambda images: {"logits": converted(images)}, autograph=False,
                               input_signature=[signature])
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    info = {**(metadata or {}), "format": "savedmodel", **_input_metadata(spec),
            "signature": "serving_default", "output": "logits"}
    (out / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out
