"""BatchNorm folding, StableHLO export and reload, the convert / export
commands, and merging pretrained weights into a model with another head."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.cli import main
from zoo.data.transforms import normalize
from zoo.interop import (ExportSpec, export_saved_model, export_stablehlo, fold_batch_norm,
                         folded_apply,
                         load_stablehlo, load_torchvision, load_variables, merge_pretrained,
                         trainable_mask)
from zoo.interop.export import STABLEHLO_FILE
from zoo.layers.conv_bn_act import ConvBNAct
from tests.interop.test_loading import fake_resnet18_state_dict


class TinyBNNet(nn.Module):
    """Every BatchNorm placement folding must handle: after a conv with bias
    (VGG), after a conv without bias (ConvBNAct), standalone (DenseNet's
    pre-activation), and a non-default epsilon."""

    num_classes: int = 5
    in_channels: int = 3
    min_input_size: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = ConvBNAct(8, 3, use_bias=True, name="with_bias")(x, train=train)
        x = ConvBNAct(16, 3, 2, groups=8, bn_epsilon=1e-3, name="grouped")(x, train=train)
        x = nn.BatchNorm(use_running_average=not train, name="standalone")(x)
        x = nn.Conv(8, (1, 1), name="conv")(nn.relu(x))
        return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


def randomised_stats(variables: dict[str, Any], seed: int = 1) -> dict[str, Any]:
    """Random BatchNorm statistics and affine, so folding is not a no-op."""
    rng = np.random.default_rng(seed)

    def randomise(tree: dict[str, Any], low: float, high: float) -> dict[str, Any]:
        return jax.tree.map(lambda v: rng.uniform(low, high, v.shape).astype(np.float32), tree)

    params = jax.tree.map(np.asarray, variables["params"])
    stats = randomise(variables["batch_stats"], 0.5, 2.0)
    return {"params": params, "batch_stats": stats}


def test_fold_batch_norm_equals_the_unfolded_model() -> None:
    model = TinyBNNet()
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype(np.float32)
    variables = randomised_stats(model.init(jax.random.key(0), x))
    folded = fold_batch_norm(model, variables)
    assert set(folded) == {"params"}
    params = folded["params"]
    assert set(params["with_bias"]["bn"]) == {"bias"}          # folded into the conv
    assert set(params["grouped"]["bn"]) == {"bias"}
    assert set(params["standalone"]) == {"scale", "bias"}      # affine, stats combined
    bn, stats = variables["params"]["grouped"]["bn"], variables["batch_stats"]["grouped"]["bn"]
    scale = bn["scale"] / np.sqrt(stats["var"] + 1e-3)
    np.testing.assert_allclose(params["grouped"]["conv"]["kernel"],
                               variables["params"]["grouped"]["conv"]["kernel"] * scale,
                               rtol=1e-6)
    expected = model.apply(variables, x, train=False)
    np.testing.assert_allclose(folded_apply(model, folded, x), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def resnet18_variables() -> dict[str, Any]:
    return randomised_stats(load_torchvision("resnet18", fake_resnet18_state_dict()))


def test_stablehlo_export_folds_batch_norm_and_reloads_for_any_batch(
        resnet18_variables, tmp_path: Path) -> None:
    model = zoo.create_model("resnet18")
    spec = ExportSpec(image_size=32, batch_size=None)
    exported = export_stablehlo(model, resnet18_variables, spec)
    assert "rsqrt" not in exported.mlir_module()  # no BatchNorm left to normalise
    path = tmp_path / "model.stablehlo"
    path.write_bytes(exported.serialize())
    reloaded = load_stablehlo(path)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 32, 32, 3)).astype(np.float32)
        logits = np.asarray(reloaded.call(x))
        expected = np.asarray(apply(resnet18_variables, x))
        assert logits.shape == (batch, 1000)
        assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4
        np.testing.assert_array_equal(logits.argmax(-1), expected.argmax(-1))


def _pixels(batch: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, channels),
                                                dtype=np.uint8)


def _normalised(pixels: np.ndarray, mean, std) -> np.ndarray:
    """What the training pipeline feeds the model for these pixels."""
    images = [normalize(image, np.float32(mean), np.float32(std)) for image in pixels]
    return np.stack(images)


def test_stablehlo_export_with_preprocessing_takes_uint8_pixels() -> None:
    model = TinyBNNet()
    variables = randomised_stats(model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    spec = ExportSpec(image_size=12, normalize=(mean, std))
    exported = export_stablehlo(model, variables, spec)
    assert exported.in_avals[0].dtype == jnp.uint8
    pixels = _pixels(3, 12, 3)
    expected = model.apply(variables, _normalised(pixels, mean, std), train=False)
    np.testing.assert_allclose(exported.call(pixels), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"one mean and one std per channel \(3\)"):
        export_stablehlo(model, variables, ExportSpec(image_size=12, normalize=((0.5,), (1.0,))))
    with pytest.raises(ValueError, match="std must be > 0"):
        export_stablehlo(model, variables, ExportSpec(image_size=12,
                                                      normalize=(mean, (0.2, 0.0, 0.3))))


def test_savedmodel_export_reloads_in_tensorflow_and_matches(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow", reason="the tf extra: pip install -e '.[tf]'")
    model = TinyBNNet()
    variables = randomised_stats(model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    out = tmp_path / "saved"
    export_saved_model(model, variables, ExportSpec(image_size=12), out,
                       metadata={"model": "tiny"})
    assert (out / "saved_model.pb").is_file()
    info = json.loads((out / "export.json").read_text())
    assert info["format"] == "savedmodel" and info["input_shape"] == ["b", 12, 12, 3]
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    for batch in (1, 3):       # one SavedModel, any batch size
        x = np.random.default_rng(batch).standard_normal((batch, 12, 12, 3)).astype(np.float32)
        logits = serve(images=tf.constant(x))["logits"].numpy()
        expected = np.asarray(model.apply(variables, x, train=False))
        assert logits.shape == (batch, 5)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="is not an empty directory"):
        export_saved_model(model, variables, ExportSpec(image_size=12), out)


def test_export_spec_errors_and_fixed_batch() -> None:
    model = TinyBNNet()
    variables = randomised_stats(model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    with pytest.raises(ValueError, match="below the model's minimum 8"):
        export_stablehlo(model, variables, ExportSpec(image_size=4))
    with pytest.raises(ValueError, match="channels 1"):
        export_stablehlo(model, variables, ExportSpec(image_size=8, channels=1))
    exported = export_stablehlo(model, variables, ExportSpec(image_size=8, batch_size=2),
                                fold=False)
    assert exported.in_avals[0].shape == (2, 8, 8, 3)
    assert "rsqrt" in exported.mlir_module()  # unfolded BatchNorm normalises at run time


def test_convert_then_export_commands(tmp_path: Path, capsys) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    # safetensors sorts tensors by name; the definition order comes from torchvision.
    pytest.importorskip("torchvision")
    state = fake_resnet18_state_dict()
    weights = tmp_path / "resnet18.safetensors"
    safetensors_numpy.save_file(state, str(weights))
    out = tmp_path / "converted"
    args = ["convert", "--from", "torchvision", "--model", "resnet18", "--weights",
            str(weights), "--out", str(out)]
    assert main(args) == 0
    variables, metadata = load_variables(out)
    assert metadata["model"] == "resnet18" and metadata["num_classes"] == 1000
    assert len(metadata["sha256"]) == 64
    expected = load_torchvision("resnet18", state)
    for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(got, want)
    before = sorted(p.name for p in out.rglob("*"))
    assert main(args) == 1                          # refuses to overwrite
    assert "already holds converted weights" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before

    served = tmp_path / "served"
    assert main(["export", "--checkpoint", str(out), "--model", "resnet18", "--image-size",
                 "32", "--out", str(served)]) == 0
    info = json.loads((served / "export.json").read_text())
    assert info["model"] == "resnet18" and info["batch_size"] is None
    x = np.ones((2, 32, 32, 3), np.float32)
    assert load_stablehlo(served).call(x).shape == (2, 1000)
    assert main(["export", "--checkpoint", str(out), "--model", "resnet50", "--out",
                 str(tmp_path / "x")]) == 1
    assert "weights are for 'resnet18'" in capsys.readouterr().err
    # An export never writes over a directory that holds something.
    stamp = (served / STABLEHLO_FILE).stat().st_mtime_ns
    assert main(["export", "--checkpoint", str(out), "--out", str(served)]) == 1
    assert "is not an empty directory" in capsys.readouterr().err
    assert (served / STABLEHLO_FILE).stat().st_mtime_ns == stamp


def test_savedmodel_without_tensorflow_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    # A None entry in sys.modules makes `import tensorflow` raise ImportError,
    # as on a machine without the tf extra, whether or not it is installed here.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    out = tmp_path / "converted"
    from zoo.interop.export import export_saved_model

    model = TinyBNNet()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"needs TensorFlow: pip install 'zoo\[tf\]'"):
        export_saved_model(model, variables, ExportSpec(image_size=8), out)


def test_merge_pretrained_reinitialises_only_what_changed_shape() -> None:
    fresh = {"params": {"stem": {"kernel": np.zeros((3, 3, 3, 8))},
                        "head": {"kernel": np.zeros((8, 10)), "bias": np.zeros(10)}},
             "batch_stats": {"stem": {"mean": np.zeros(8)}}}
    pretrained = {"params": {"stem": {"kernel": np.ones((3, 3, 3, 8))},
                             "head": {"kernel": np.ones((8, 1000)), "bias": np.ones(1000)}},
                  "batch_stats": {"stem": {"mean": np.ones(8)}}}
    merged, reinitialised = merge_pretrained(fresh, pretrained)
    assert reinitialised == ["params/head/bias", "params/head/kernel"]
    np.testing.assert_array_equal(merged["params"]["stem"]["kernel"], 1.0)
    np.testing.assert_array_equal(merged["batch_stats"]["stem"]["mean"], 1.0)
    assert merged["params"]["head"]["kernel"].shape == (8, 10)
    np.testing.assert_array_equal(merged["params"]["head"]["kernel"], 0.0)
    abstract = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), fresh)
    assert merge_pretrained(abstract, pretrained)[1] == reinitialised
    mask = trainable_mask(merged["params"], reinitialised)
    assert mask == {"stem": {"kernel": False}, "head": {"kernel": True, "bias": True}}
    other = {"params": {"conv": {"kernel": np.ones((3, 3, 3, 8))}}, "batch_stats": {}}
    with pytest.raises(ValueError, match=r"another architecture.*params/stem/kernel.*"
                                         r"params/conv/kernel"):
        merge_pretrained(fresh, other)


def test_export_from_a_training_workdir(tmp_path: Path) -> None:
    from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig
    from zoo.train.loop import fit

    config = TrainConfig(name="export", model="simple_cnn", num_classes=10, dataset="digits",
                         global_batch_size=16, epochs=None, steps=2,
                         optimizer=OptimizerConfig(name="adamw", learning_rate=1e-3),
                         schedule=ScheduleConfig(name="constant"), checkpoint_every=2,
                         eval_every=0, log_every=1)
    workdir = tmp_path / "run"
    params: dict[str, Any] = {}
    fit(config, workdir, hooks=[lambda step, state: params.update(last=state.params)],
        progress=False)
    served = tmp_path / "served"
    assert main(["export", "--workdir", str(workdir), "--batch-size", "4", "--out",
                 str(served)]) == 0
    info = json.loads((served / "export.json").read_text())
    assert (info["model"], info["num_classes"], info["image_size"]) == ("simple_cnn", 10, 28)
    assert info["input_shape"] == [4, 28, 28, 1] and info["input_dtype"] == "float32"
    x = np.random.default_rng(0).standard_normal((4, 28, 28, 1)).astype(np.float32)
    model = zoo.create_model("simple_cnn", num_classes=10)
    trained = {"params": jax.device_get(params["last"])}
    expected = model.apply(trained, x, train=False)
    np.testing.assert_allclose(load_stablehlo(served).call(x), expected, rtol=1e-5, atol=1e-5)

    # With --preprocess the export takes raw pixels and applies the run's
    # dataset statistics (digits: computed from its training pixels).
    from zoo.data import dataset_info

    stats = dataset_info("digits")
    raw = tmp_path / "served_raw"
    assert main(["export", "--workdir", str(workdir), "--preprocess", "--out", str(raw)]) == 0
    info = json.loads((raw / "export.json").read_text())
    assert info["input_shape"] == ["b", 28, 28, 1] and info["input_dtype"] == "uint8"
    np.testing.assert_allclose(info["mean"], stats.mean, rtol=1e-6)
    pixels = _pixels(2, 28, 1)
    expected = model.apply(trained, _normalised(pixels, stats.mean, stats.std), train=False)
    np.testing.assert_allclose(load_stablehlo(raw).call(pixels), expected, rtol=1e-5, atol=1e-5)

    with_tf = pytest.importorskip("tensorflow", reason="the tf extra: pip install -e '.[tf]'")
    saved = tmp_path / "saved"
    assert main(["export", "--workdir", str(workdir), "--format", "savedmodel", "--preprocess",
                 "--out", str(saved)]) == 0
    serve = with_tf.saved_model.load(str(saved)).signatures["serving_default"]
    np.testing.assert_allclose(serve(images=with_tf.constant(pixels))["logits"].numpy(),
                               expected, rtol=1e-4, atol=1e-5)


def test_trainable_mask_freezes_the_backbone_in_an_optax_update() -> None:
    import optax

    params = {"stem": {"kernel": np.ones((2, 2))}, "head": {"kernel": np.ones((2, 3))}}
    mask = trainable_mask(params, ["params/head/kernel"])
    tx = optax.multi_transform({True: optax.sgd(0.5), False: optax.set_to_zero()}, mask)
    grads = jax.tree.map(np.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["stem"]["kernel"], 1.0)
    np.testing.assert_array_equal(new["head"]["kernel"], 0.5)
