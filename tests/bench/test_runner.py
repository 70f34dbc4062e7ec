"""The harness end to end on simple_cnn at batch 2: rows, schema, OOM, reports, CLI.

One real measurement is shared by the module (`measured`); tests about
bookkeeping reuse it by patching `zoo.bench.measure.measure`, so XLA compiles
only where a test is about what XLA produced.
"""

import csv
import dataclasses
import json

import jax
import pytest

from zoo.bench import measure
from zoo.bench.cli import register  # noqa: F401 - the sub-command module imports
from zoo.bench.report import CSV_KEYS, ROW_KEYS, check_row, markdown_table, read_jsonl
from zoo.bench.runner import BenchConfig, benchmark_config, expand_configs, run_benchmarks
from zoo.bench.environment import environment
from zoo.bench.suites import get_suite
from zoo.bench.timing import StepTimes
from zoo.cli import main
from zoo.runtime import compiler_options, compiler_options_text

CONFIG = BenchConfig("simple_cnn", "infer", batch_size=2, image_size=28, warmup=1, steps=4,
                     num_buffers=2)


@pytest.fixture(scope="module")
def measured():
    return measure.measure(CONFIG)


@pytest.fixture
def fake_measure(monkeypatch, measured):
    monkeypatch.setattr(measure, "measure", lambda config: measured)
    return measured


def test_ok_row_has_the_schema_and_consistent_numbers(fake_measure):
    row = benchmark_config(CONFIG, env=environment())
    check_row(row)
    assert row["status"] == "ok" and row["error"] is None
    assert row["params"] == 34_826
    assert len(row["step_ms_samples"]) == 4
    assert row["step_ms_min"] <= row["step_ms_p50"] <= row["step_ms_p90"] <= row["step_ms_p99"]
    assert row["images_per_s"] == pytest.approx(2 / (row["step_ms_mean"] / 1e3))
    assert row["flops_per_image"] == 2.0 * row["macs_per_image"] == 2.0 * 2_440_960
    # XLA counts a multiply-add as 2 FLOPs, plus bias/ReLU/pool: slightly above 2 x MACs.
    assert row["flops_per_image"] <= row["xla_flops_per_image"] <= 1.1 * row["flops_per_image"]
    assert row["compile_s"] > 0 and row["lower_s"] > 0
    assert row["compiled_total_bytes"] >= row["compiled_argument_bytes"] >= 4 * 34_826
    assert row["device_kind"] == jax.devices()[0].device_kind
    assert row["compiler_options"] == compiler_options_text(compiler_options("cpu")) != ""
    check_row(json.loads(json.dumps(row)))  # types survive JSON


def test_empty_step_fields_have_the_keys_of_measured_ones():
    # compare_torch's error rows take these, so both kinds of row share one schema.
    times = StepTimes([0.002, 0.001], [0, 1], warmup_steps=1, context_switches=[3, 4])
    measured = measure.step_fields(times, batch_size=2)
    assert measured["step_ms_min"] == pytest.approx(1.0) and measured["host_context_switches"] == 7
    empty = measure.empty_step_fields()
    assert set(empty) == set(measured)
    assert empty["step_ms_samples"] == [] and empty["step_ms_p50"] is None


def test_mfu_none_without_peak_and_computed_with_peak_tflops(fake_measure):
    env = environment()
    assert env["backend"] == "cpu"
    plain = benchmark_config(CONFIG, env=env)
    assert plain["peak_tflops_per_device"] is None and plain["mfu"] is None
    assert plain["achieved_tflops"] > 0
    given = benchmark_config(CONFIG, env=env, peak_override=0.25)
    assert given["peak_tflops_per_device"] == 0.25
    assert given["mfu"] == pytest.approx(given["achieved_tflops"] / 0.25)


def test_matmul_precision_is_lowered_with_and_recorded(fake_measure):
    # The row records the precision the step lowers with: the config's, else
    # the process's (XLA's "default" here).
    plain = benchmark_config(CONFIG, env=environment())
    assert plain["matmul_precision"] == "default"
    highest = dataclasses.replace(CONFIG, matmul_precision="highest")
    row = benchmark_config(highest, env=environment(), peak_override=None)
    check_row(row)
    assert row["matmul_precision"] == "highest" and "matmul=highest" in highest.label
    # A process-wide precision is recorded too, and one the peak table does
    # not know (a dot algorithm) leaves MFU out instead of stopping the run.
    with jax.default_matmul_precision("BF16_BF16_F32_X3"):
        process = benchmark_config(CONFIG, env={**environment(), "device_kind": "NVIDIA H100"})
    assert process["matmul_precision"] == "BF16_BF16_F32_X3" and process["status"] == "ok"
    assert process["peak_tflops_per_device"] is None and process["mfu"] is None
    # The report's header says it: one for all, or per row.
    assert "matmul precision: highest," in markdown_table([row])
    assert "matmul precision: per row (matmul_precision" in markdown_table([plain, row])
    # And the step really is lowered with it: every convolution and dot of
    # the compiled program asks for HIGHEST, which the plain one does not.
    plain_hlo = measure.prepare(CONFIG).hlo_text()
    highest_hlo = measure.prepare(highest).hlo_text()
    assert "HIGHEST" not in plain_hlo
    products = highest_hlo.count(" convolution(") + highest_hlo.count(" dot(")
    assert products and highest_hlo.count("operand_precision={highest,highest}") == products
    with pytest.raises(ValueError, match="matmul precision must be one of"):
        expand_configs(["simple_cnn"], matmul_precision="tf32")


class FakeXlaRuntimeError(RuntimeError):
    pass


def _oom_above(limit):
    real = measure.time_steps

    def time_steps(step, inputs, *, warmup, steps):
        batch = jax.tree.leaves(inputs[0])[0].shape[0]
        if batch > limit:
            raise FakeXlaRuntimeError(f"RESOURCE_EXHAUSTED: Out of memory while trying to "
                                      f"allocate {batch} images")
        return real(step, inputs, warmup=warmup, steps=steps)

    return time_steps


def test_oom_is_a_row_and_the_run_continues(monkeypatch, measured):
    # The real path for batch 4 (compiles, then its timed step raises), the
    # shared measurement for batch 2.
    real_measure = measure.measure
    monkeypatch.setattr(measure, "time_steps", _oom_above(2))
    monkeypatch.setattr(measure, "measure",
                        lambda c: real_measure(c) if c.batch_size > 2 else measured)
    configs = [dataclasses.replace(CONFIG, batch_size=4), CONFIG]
    rows = list(run_benchmarks(configs, progress=False))
    assert [r["status"] for r in rows] == ["oom", "ok"]
    assert "RESOURCE_EXHAUSTED" in rows[0]["error"]
    assert rows[0]["step_ms_mean"] is None and rows[0]["step_ms_samples"] == []
    for row in rows:
        check_row(row)


def test_auto_batch_halves_until_it_fits(monkeypatch, measured):
    tried = []

    def step_fails_above_2(config):
        tried.append(config.batch_size)
        if config.batch_size > 2:
            raise FakeXlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory")
        return measured

    monkeypatch.setattr(measure, "measure", step_fails_above_2)
    (row,) = run_benchmarks([dataclasses.replace(CONFIG, batch_size=8)], auto_batch=True,
                            progress=False)
    assert tried == [8, 4, 2]
    assert (row["status"], row["batch_size"], row["requested_batch_size"]) == ("ok", 2, 8)
    tried.clear()
    (row,) = run_benchmarks([dataclasses.replace(CONFIG, batch_size=8)], progress=False)
    assert tried == [8] and row["status"] == "oom"


def test_other_errors_are_error_rows(monkeypatch):
    def broken(config):
        raise TypeError("bad shapes")

    monkeypatch.setattr(measure, "measure", broken)
    (row,) = run_benchmarks([CONFIG], auto_batch=True, progress=False)
    assert row["status"] == "error" and row["error"] == "TypeError: bad shapes"
    check_row(row)


def test_train_row_times_the_engine_step():
    config = dataclasses.replace(CONFIG, mode="train", steps=2)
    (row,) = run_benchmarks([config], progress=False)
    check_row(row)
    assert row["status"] == "ok", row["error"]
    assert row["params"] == 34_826
    # forward + weight gradients + input gradients (none for the image): about
    # 3x (the input-gradient convolutions of VALID convs run over the padding).
    assert 2.5 < row["flops_per_image"] / (2 * row["macs_per_image"]) < 3.5
    assert row["xla_flops_per_image"] > 2.5 * 2 * row["macs_per_image"]


def test_jit_and_pmap_report_per_image_flops_like_single(measured):
    assert jax.device_count() == 8
    single = measured.flops_per_device_step / CONFIG.batch_size
    for parallel in ("jit", "pmap"):
        config = dataclasses.replace(CONFIG, batch_size=8, parallel=parallel, steps=2)
        (row,) = run_benchmarks([config], progress=False)
        assert row["status"] == "ok", row["error"]
        assert row["num_devices_used"] == 8
        # The engine's own rule: jit steps get Zoo's options, pmap XLA's defaults.
        assert (row["compiler_options"] != "") == (parallel == "jit")
        assert row["flops_per_image"] == 2.0 * 2_440_960
        # XLA reports the per-device program; the harness scales it back.
        assert row["xla_flops_per_image"] == pytest.approx(single, rel=0.05)
        assert row["xla_tflops"] == pytest.approx(
            row["xla_flops_per_image"] * 8 / row["step_ms_mean"] / 1e9)


def test_unknown_model_fails_before_anything_runs(monkeypatch, tmp_path, capsys):
    def never(config):
        raise AssertionError("nothing may run")

    monkeypatch.setattr(measure, "measure", never)
    with pytest.raises(ValueError, match="unknown model 'simple_cnm'.*Closest: simple_cnn"):
        expand_configs(["simple_cnn", "simple_cnm"])
    out = tmp_path / "out"
    assert main(["bench", "--models", "simple_cnn,simple_cnm", "--out", str(out)]) == 2
    assert "Closest: simple_cnn" in capsys.readouterr().err
    assert not out.exists()


def test_bad_sweeps_fail_early():
    with pytest.raises(ValueError, match="dtype must be one of.*'float16'"):
        expand_configs(["simple_cnn"], dtypes=["float16"])
    with pytest.raises(ValueError, match="batch 3 does not split over 8 devices"):
        expand_configs(["simple_cnn"], batch_sizes=[3], parallel=["jit"], num_devices=8)
    with pytest.raises(ValueError, match="image size 16 is below simple_cnn's minimum 28"):
        expand_configs(["simple_cnn"], image_sizes=[16])
    with pytest.raises(ValueError, match="matches no registered model"):
        expand_configs(["nothing_like_this*"])


def test_cli_writes_every_report(fake_measure, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["bench", "--models", "simple_cnn", "--batch-sizes", "2", "--steps", "4",
            "--peak-tflops", "0.5", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "| simple_cnn | infer | float32 | single | 2 | 28 | ok |" in capsys.readouterr().out
    (row,) = read_jsonl(out / "results.jsonl")
    check_row(row)
    assert row["mfu"] == pytest.approx(row["achieved_tflops"] / 0.5)
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_KEYS and set(CSV_KEYS) < set(ROW_KEYS)
    assert "| simple_cnn |" in (out / "results.md").read_text()
    for name in ("throughput.png", "latency.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "command.txt").read_text().startswith("zoo bench ")
    # A second run into the same directory refuses instead of overwriting.
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err


def test_standard_suites_expand_and_validate():
    quick = get_suite("quick")
    configs = quick.configs()
    assert {c.model for c in configs} == {"simple_cnn", "resnet18", "mobilenet_v2"}
    assert {c.mode for c in configs} == {"infer", "train"}
    assert {(c.model, c.image_size) for c in configs if c.model != "simple_cnn"} == {
        ("resnet18", 64), ("mobilenet_v2", 64)}
    with pytest.raises(ValueError, match="unknown suite 'quik'.*quick"):
        get_suite("quik")


def test_cli_suite_from_a_file(fake_measure, tmp_path, capsys):
    suites_file = tmp_path / "my_suites.py"
    suites_file.write_text(
        "from zoo.bench.suites import Suite, Sweep\n"
        "SUITES = {'tiny': Suite('tiny', 'one config', (Sweep(models=('simple_cnn',), "
        "batch_sizes=(2,), steps=4),))}\n")
    out = tmp_path / "out"
    base = ["bench", "--suite", "tiny", "--suites-file", str(suites_file), "--no-progress"]
    assert main([*base, "--models", "simple_cnn", "--out", str(out)]) == 2
    assert "--suite tiny sets the sweep itself; drop --models" in capsys.readouterr().err
    assert main([*base, "--out", str(out)]) == 0
    (row,) = read_jsonl(out / "results.jsonl")
    assert (row["model"], row["batch_size"], row["status"]) == ("simple_cnn", 2, "ok")
