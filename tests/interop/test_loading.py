"""Reading weight files and reporting mismatches: every problem in one error,
safetensors without torch, .pth only through weights_only, weight metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.interop import load_torchvision, read_state_dict, weight_sources
from zoo.interop.mapping import zoo_variable_shapes


def fake_resnet18_state_dict() -> dict[str, np.ndarray]:
    """torchvision resnet18's keys and shapes (random values), built from Zoo's
    own variables, so these tests need no torch."""
    shapes = zoo_variable_shapes(zoo.create_model("resnet18"))
    rng = np.random.default_rng(0)
    state: dict[str, np.ndarray] = {}

    def add(key: str, shape: tuple[int, ...]) -> None:
        state[key] = rng.standard_normal(shape).astype(np.float32)

    def conv_bn(torch_conv: str, torch_bn: str, zoo_module: dict) -> None:
        kh, kw, cin, cout = zoo_module["conv"]["kernel"].shape
        add(f"{torch_conv}.weight", (cout, cin, kh, kw))
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            add(f"{torch_bn}.{suffix}", (cout,))
        state[f"{torch_bn}.running_var"] = np.abs(state[f"{torch_bn}.running_var"]) + 0.5
        state[f"{torch_bn}.num_batches_tracked"] = np.zeros((), np.int64)

    params = shapes["params"]
    conv_bn("conv1", "bn1", params["stem"])
    for stage in range(1, 5):
        for block in range(2):
            zoo_block = params[f"stage{stage}"][f"block{block + 1}"]
            prefix = f"layer{stage}.{block}"
            conv_bn(f"{prefix}.conv1", f"{prefix}.bn1", zoo_block["conv1"])
            conv_bn(f"{prefix}.conv2", f"{prefix}.bn2", zoo_block["conv2"])
            if "downsample" in zoo_block:
                conv_bn(f"{prefix}.downsample.0", f"{prefix}.downsample.1",
                        zoo_block["downsample"])
    add("fc.weight", (1000, 512))
    add("fc.bias", (1000,))
    return state


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return fake_resnet18_state_dict()


def test_a_complete_state_dict_loads_with_zoo_layouts(state_dict) -> None:
    variables = load_torchvision("resnet18", state_dict)
    stem = variables["params"]["stem"]["conv"]["kernel"]
    np.testing.assert_array_equal(stem, state_dict["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                  state_dict["fc.weight"].T)
    np.testing.assert_array_equal(variables["batch_stats"]["stage4"]["block2"]["conv2"]["bn"]
                                  ["var"], state_dict["layer4.1.bn2.running_var"])
    expected = zoo_variable_shapes(zoo.create_model("resnet18"))
    assert set(variables) == {"params", "batch_stats"}
    for collection in variables:
        got = {k: v.shape for k, v in _flat(variables[collection]).items()}
        want = {k: v.shape for k, v in _flat(expected[collection]).items()}
        assert got == want


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def test_missing_unexpected_and_misshaped_keys_are_all_listed(state_dict) -> None:
    broken = dict(state_dict)
    del broken["layer2.0.bn1.running_var"]           # missing key inside a module
    del broken["layer3.1.conv2.weight"]              # missing module
    broken["layer4.1.conv1.weight"] = np.zeros((512, 512, 5, 5), np.float32)  # wrong shape
    broken["extra.weight"] = np.zeros((7, 3), np.float32)                   # unexpected
    with pytest.raises(ValueError) as error:
        load_torchvision("resnet18", broken)
    message = str(error.value)
    assert "layer2.0.bn1.running_var" in message and "missing" in message
    assert "stage3/block2/conv2/conv" in message
    assert "'layer4.1.conv1.weight' (512, 512, 5, 5)" in message
    assert "(3, 3, 512, 512)" in message
    assert "unexpected: 'extra.weight' (7, 3)" in message
    assert "4 problem(s)" in message


def test_a_head_of_another_size_names_num_classes(state_dict) -> None:
    ten = dict(state_dict, **{"fc.weight": np.zeros((10, 512), np.float32),
                              "fc.bias": np.zeros((10,), np.float32)})
    with pytest.raises(ValueError, match="num_classes"):
        load_torchvision("resnet18", ten)
    variables = load_torchvision("resnet18", ten, num_classes=10)
    assert variables["params"]["head"]["kernel"].shape == (512, 10)


def test_unknown_model_and_bad_files_are_value_errors(tmp_path: Path, state_dict) -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        load_torchvision("resnet19", state_dict)
    with pytest.raises(ValueError, match="does not exist"):
        read_state_dict(tmp_path / "absent.pth")
    bad = tmp_path / "weights.h5"
    bad.write_bytes(b"\0")
    with pytest.raises(ValueError, match="suffix '.h5'"):
        read_state_dict(bad)


SAFETENSORS_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from zoo.interop import read_state_dict
state = read_state_dict(sys.argv[1])
assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
print(sorted(state), state["fc.weight"].shape, float(state["fc.weight"].sum()))
"""


def test_safetensors_loads_without_torch(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "model.safetensors"
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    safetensors_numpy.save_file({"fc.weight": weights, "fc.bias": np.ones(2, np.float32)},
                                str(path))
    result = subprocess.run([sys.executable, "-c", SAFETENSORS_WITHOUT_TORCH, str(path)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['fc.bias', 'fc.weight'] (2, 3) 15.0"


class NotATensor:
    """A pickled object that weights_only loading must refuse."""


def test_pth_is_read_with_weights_only(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"module.fc.weight": torch.ones(2, 3)}}, path)
    state = read_state_dict(path)  # unwrapped and "module." stripped
    assert list(state) == ["fc.weight"]
    np.testing.assert_array_equal(state["fc.weight"], np.ones((2, 3), np.float32))
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"fc.weight": torch.ones(1), "payload": NotATensor()}, unsafe)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        read_state_dict(unsafe)


def test_weight_sources_are_listed_for_registered_models_only() -> None:
    rows = weight_sources("resnet50")
    assert [row["tag"] for row in rows[:2]] == ["resnet50.a1_in1k",
                                                "ResNet50_Weights.IMAGENET1K_V2"]
    assert rows == sorted(rows, key=lambda row: -row["top1"])
    assert {row["library"] for row in rows} == {"torchvision", "timm"}
    assert weight_sources("simple_cnn") == []
    assert weight_sources("vit_b_16")[0]["overrides"] == {"image_size": 384}
    with pytest.raises(ValueError, match="unknown model"):
        weight_sources("resnet5O")


def test_every_weight_source_names_a_registered_model() -> None:
    from zoo.interop.sources import WEIGHT_SOURCES

    registered = set(zoo.list_models())
    assert {source.model for source in WEIGHT_SOURCES} <= registered
    assert all(0 < source.top1 < 100 for source in WEIGHT_SOURCES)


def test_safetensors_sorted_by_name_convert_like_the_ordered_state_dict(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    reference = timm.create_model("convnext_tiny", pretrained=False)
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    path = tmp_path / "model.safetensors"
    safetensors_numpy.save_file(state, str(path))
    assert list(safetensors_numpy.load_file(str(path))) == sorted(state)  # order is lost
    from zoo.interop import load_timm

    from_file = load_timm("convnext_tiny", path)
    from_dict = load_timm("convnext_tiny", state)
    flat_file, flat_dict = _flat(from_file["params"]), _flat(from_dict["params"])
    assert list(flat_file) == list(flat_dict)
    for key in flat_dict:
        np.testing.assert_array_equal(flat_file[key], flat_dict[key])
    np.testing.assert_array_equal(flat_dict["stage2/block3/layer_scale/gamma"],
                                  state["stages.1.blocks.2.gamma"])
