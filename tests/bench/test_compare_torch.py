"""benchmarks/compare_torch.py: Zoo and PyTorch timed interleaved, ratios by median step."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_torch.py"


@pytest.fixture(scope="module")
def compare_torch():
    spec = importlib.util.spec_from_file_location("compare_torch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(variant, p50_ms, mean_ms, status="ok"):
    return {"model": "resnet50", "mode": "infer", "variant": variant, "batch_size": 8,
            "status": status, "step_ms_p50": p50_ms if status == "ok" else None,
            "step_ms_mean": mean_ms, "images_per_s": None if status != "ok" else 8e3 / mean_ms}


def test_ratios_use_the_median_step_against_eager_and_the_fastest(compare_torch):
    zoo = {**_row(None, 100.0, 400.0), "image_size": 224, "dtype": "float32"}  # one slow step
    torch_rows = [_row("eager", 200.0, 200.0), _row("channels_last", 50.0, 60.0),
                  _row("compile", None, None, status="error")]
    line = compare_torch.comparison_table([zoo], torch_rows).splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    # zoo 80 img/s at its median step (not 20 from its mean), eager 40, channels-last 160.
    # No per-step samples in these rows (as in results from before they were kept): no round ratio.
    assert cells[5:] == ["80.0", "40.0", "160.0", "error", "2.00x", "0.50x", "-"]


def test_round_ratios_pair_each_zoo_step_with_the_eager_step_of_its_round(compare_torch):
    # The machine slows down over the run and Zoo is 10% faster in every round but
    # the first (a slow step); the rows give both median steps as 100 ms.
    eager_ms = [50.0 + 5 * i for i in range(21)]
    zoo_ms = [eager_ms[0] * 2] + [t / 1.1 for t in eager_ms[1:]]
    zoo = {**_row(None, 100.0, 100.0), "image_size": 224, "dtype": "float32",
           "step_ms_samples": zoo_ms}
    eager = {**_row("eager", 100.0, 100.0), "step_ms_samples": eager_ms}
    cells = [c.strip() for c in compare_torch.comparison_table([zoo], [eager])
             .splitlines()[2].strip("|").split("|")]
    assert cells[-3] == "1.00x"  # ratio of the medians
    assert cells[-1] == "1.10x [1.10-1.10]"
    failed = {**zoo, "status": "error"}
    assert compare_torch.round_ratio_text(failed, eager) == "-"
    assert compare_torch.round_ratio_text(zoo, None) == "-"
    short = {**eager, "step_ms_samples": eager_ms[:5]}
    assert compare_torch.round_ratio_text({**zoo, "step_ms_samples": zoo_ms[:5]}, short) == "1.10x"


def test_one_run_writes_every_report_with_interleaved_steps(compare_torch, tmp_path, monkeypatch):
    seen = []
    real = compare_torch.time_interleaved

    def spy(runs, *, warmup, steps):
        seen.append(sorted(runs))
        return real(runs, warmup=warmup, steps=steps)

    monkeypatch.setattr(compare_torch, "time_interleaved", spy)
    out = tmp_path / "cmp"
    assert compare_torch.main([
        "--models", "resnet18", "--image-size", "32", "--batch-size", "2", "--mode", "infer",
        "--variants", "eager,channels_last", "--warmup", "1", "--steps", "3", "--buffers", "2",
        "--out", str(out)]) == 0
    assert seen == [["channels_last", "eager", "zoo"]]  # one interleaved timing, all three
    (zoo,) = [json.loads(line) for line in (out / "zoo.jsonl").read_text().splitlines()]
    torch_rows = [json.loads(line) for line in (out / "torch.jsonl").read_text().splitlines()]
    assert zoo["status"] == "ok" and len(zoo["step_ms_samples"]) == 3
    assert [(r["variant"], r["status"]) for r in torch_rows] == [("eager", "ok"),
                                                                 ("channels_last", "ok")]
    assert all(r["first_step_s"] > 0 and r["step_ms_p50"] > 0 for r in torch_rows)
    assert all(len(r["step_ms_samples"]) == 3 and min(r["step_ms_samples"]) > 0 for r in torch_rows)
    # The same step-time fields as Zoo's rows, fastest and slowest step included.
    for r in (zoo, *torch_rows):
        assert r["step_ms_min"] == pytest.approx(min(r["step_ms_samples"]))
        assert r["step_ms_max"] == pytest.approx(max(r["step_ms_samples"]))
    # Counted per timed step on Linux (getrusage), for Zoo and PyTorch alike.
    assert all(isinstance(r["host_context_switches"], int) and r["host_context_switches"] >= 0
               for r in (zoo, *torch_rows))
    # The same architecture: torchvision's parameter count is Zoo's.
    assert [r["params"] for r in torch_rows] == [zoo["params"]] * 2 == [11_689_512] * 2
    report = (out / "comparison.md").read_text()
    assert "interleaved" in report and zoo["host_cpu"] in report
    assert "Same parameter count in Zoo and torchvision: resnet18." in report
    # A CPU has no TF32: both sides multiply float32 in full, whatever the option says.
    assert {r["float32_precision"] for r in torch_rows} == {"ieee"}
    assert {r["cudnn_benchmark"] for r in torch_rows} == {None}
    assert zoo["matmul_precision"] == "default"
    assert "float32 products in full float32 on both sides" in report
    assert re.search(r"\| resnet18 \| infer \| 2 \| 32 \| float32 \|.*\| \d+\.\d\dx \| \d+\.\d\dx "
                     r"\| \d+\.\d\dx \|", report)  # 3 rounds: a round ratio, no interval


def test_torch_gpu_options_set_float32_precision_and_cudnn_autotuning(compare_torch):
    import torch

    cudnn = torch.backends.cudnn
    before = torch.get_float32_matmul_precision(), cudnn.allow_tf32, cudnn.benchmark

    def every_switch():
        # Every reader, old and new: none may raise (torch.compile reads the old ones).
        return (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
                cudnn.allow_tf32, torch.backends.cuda.matmul.fp32_precision, cudnn.benchmark)

    try:
        compare_torch.set_torch_gpu_options(torch, "tf32")
        assert every_switch() == ("high", True, True, "tf32", True)
        assert cudnn.conv.fp32_precision == "tf32"
        compare_torch.set_torch_gpu_options(torch, "ieee")
        assert every_switch() == ("highest", False, False, "ieee", True)
        with pytest.raises(ValueError, match="float32 precision must be one of"):
            compare_torch.set_torch_gpu_options(torch, "highest")
    finally:
        torch.set_float32_matmul_precision(before[0])
        cudnn.allow_tf32, cudnn.benchmark = before[1:]


def test_the_report_names_models_whose_parameter_counts_differ(compare_torch):
    zoo = [{"model": "googlenet", "params": 6_624_904}, {"model": "resnet18", "params": 11}]
    same = [{"model": "googlenet", "params": 6_624_904}, {"model": "resnet18", "params": 11}]
    assert compare_torch.parameter_check(zoo, same) == (
        "Same parameter count in Zoo and torchvision: googlenet, resnet18.")
    aux = [{"model": "googlenet", "params": 13_004_888}, {"model": "resnet18", "params": 11}]
    assert compare_torch.parameter_check(zoo, aux) == (
        "Parameter counts differ, so these are not the same architecture: "
        "googlenet (Zoo 6,624,904, torchvision 13,004,888)")
    failed = [{"model": "googlenet", "params": None}]
    assert compare_torch.parameter_check(zoo, failed).startswith("Parameter counts not compared")


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_torchvision_is_built_as_zoo_builds_the_model(compare_torch, name):
    """GoogLeNet and Inception v3 without auxiliary heads on both sides."""
    import jax
    import jax.numpy as jnp
    import torchvision

    from zoo import create_model
    from zoo.counting import count_params

    assert name in compare_torch.TORCHVISION_KWARGS
    model = create_model(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 299, 299, 3)), train=False))
    torch_model = torchvision.models.get_model(name, weights=None,
                                               **compare_torch.TORCHVISION_KWARGS[name])
    assert count_params(shapes["params"]) == sum(p.numel() for p in torch_model.parameters())


def test_a_failing_variant_is_an_error_row_and_the_others_are_timed(compare_torch, tmp_path,
                                                                     monkeypatch):
    real = compare_torch._torch_step

    def broken_channels_last(torch, model, mode, device, amp):
        step = real(torch, model, mode, device, amp)
        if next(model.parameters()).is_contiguous():
            return step
        calls = [0]

        def fails_on_the_third_call(batch):
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("channels-last kernel missing")
            return step(batch)
        return fails_on_the_third_call

    monkeypatch.setattr(compare_torch, "_torch_step", broken_channels_last)
    out = tmp_path / "cmp"
    compare_torch.main(["--models", "resnet18", "--image-size", "32", "--batch-size", "2",
                        "--mode", "infer", "--variants", "eager,channels_last", "--warmup", "1",
                        "--steps", "3", "--buffers", "2", "--out", str(out)])
    rows = {r["variant"]: r for r in map(json.loads, (out / "torch.jsonl").read_text().splitlines())}
    assert rows["eager"]["status"] == "ok"
    assert rows["channels_last"]["status"] == "error"
    assert "channels-last kernel missing" in rows["channels_last"]["error"]
    # An error row has a measured row's keys, its step fields empty.
    assert set(rows["channels_last"]) == set(rows["eager"])
    assert rows["channels_last"]["step_ms_p50"] is None
    assert rows["channels_last"]["step_ms_samples"] == []
    assert json.loads((out / "zoo.jsonl").read_text())["status"] == "ok"
