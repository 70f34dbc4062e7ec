"""`zoo bench --profile-steps`: the trace, the ops table, and a failed profile
that leaves the measured row alone. The end-to-end tests reuse
test_runner's simple_cnn configuration, whose compiled step is cached."""

import gzip
import json
import warnings

import pytest

from zoo.bench import measure, profile
from zoo.bench.profile import (OpTime, op_sources, op_times, ops_markdown,
                               profile_directory_name, trace_steps)
from zoo.bench.report import check_row
from zoo.bench.runner import run_benchmarks
from zoo.cli import main

from tests.bench.test_runner import CONFIG


def _write_trace(path, events):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        json.dump({"traceEvents": events}, f)


@pytest.mark.parametrize("name", ["trace.json", "perfetto_trace.json.gz"])
def test_op_times_sums_complete_events_per_step(tmp_path, name):
    path = tmp_path / name
    _write_trace(path, [
        {"ph": "X", "name": "dot.1", "dur": 3000},
        {"ph": "X", "name": "dot.1", "dur": 1000},
        {"ph": "X", "name": "fusion.2", "dur": 6000},
        {"ph": "X", "name": "$api.py:10 block_until_ready", "dur": 99000},  # Python tracer
        {"ph": "B", "name": "begin-only", "ts": 0},                          # not complete
        {"ph": "X", "name": "no-duration"},
        {"ph": "M", "name": "process_name", "args": {"name": "host"}},
    ])
    ops = op_times(path, steps=2, sources={"dot.1": "jit(forward)/Net/fc/dot_general"})
    assert ops == [OpTime("fusion.2", 3.0, 0.5, ""),
                   OpTime("dot.1", 2.0, 1.0, "jit(forward)/Net/fc/dot_general")]


def test_op_sources_reads_instruction_metadata():
    hlo = """HloModule jit_forward
%fused_computation.1 (param_0: f32[2,3]) -> f32[2,3] {
  ROOT %add.3 = f32[2,3]{1,0} add(%param_0, %param_0), metadata={op_name="jit(forward)/Net/add"}
}
ENTRY %main.5 (p: f32[2,3]) -> f32[2,3] {
  %p = f32[2,3]{1,0} parameter(0)
  ROOT %ynn_fusion.7 = f32[2,3]{1,0} fusion(%p), kind=kCustom, calls=%fused_computation.1, metadata={op_name="jit(forward)/Net/fc/dot_general" stack_frame_id=4}
}
"""
    assert op_sources(hlo) == {"add.3": "jit(forward)/Net/add",
                               "ynn_fusion.7": "jit(forward)/Net/fc/dot_general"}


def test_ops_markdown_lists_the_longest_first_and_escapes_pipes():
    ops = [OpTime("b", 5.0, 1.0, "x|y"), OpTime("a", 1.0, 2.0, "")]
    text = ops_markdown(ops, title="t", step_ms=10.0, top=1)
    assert "Median timed step: 10.00 ms" in text
    assert "| 5.000 | 1 | `b` | x/y |" in text
    assert "`a`" not in text  # beyond top


def test_profile_directory_name_is_a_plain_folder_name():
    assert (profile_directory_name("resnet50 infer float32 b8 224px single")
            == "resnet50_infer_float32_b8_224px_single")


def test_trace_steps_needs_a_step(tmp_path):
    with pytest.raises(ValueError, match="at least 1 step"):
        trace_steps(lambda x: x, [0], 0, tmp_path)


def test_profile_steps_write_a_trace_and_an_ops_table(tmp_path):
    rows = list(run_benchmarks([CONFIG], progress=False, profile_steps=2,
                               profile_root=tmp_path / "profiles"))
    (row,) = rows
    check_row(row)
    assert row["status"] == "ok"
    assert row["profile"] == "profiles/simple_cnn_infer_float32_b2_28px_single"
    folder = tmp_path / row["profile"]
    assert list(folder.glob("plugins/profile/*/perfetto_trace.json.gz"))
    table = (folder / "ops.md").read_text()
    assert table.startswith("# simple_cnn infer float32 b2 28px single: 2 profiled steps")
    # At least one of XLA's ops of this model, named with the layer it came from.
    assert "jit(forward)/SimpleCNN" in table


def test_a_failed_profile_keeps_the_measured_row(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no profiler here")
    monkeypatch.setattr(profile, "trace_steps", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = measure.measure(CONFIG, profile_dir=tmp_path / "p", profile_steps=1)
    assert result.profile is None and len(result.times.seconds) == CONFIG.steps
    assert any("no profile for simple_cnn" in str(w.message) for w in caught)


def test_cli_rejects_negative_profile_steps(tmp_path, capsys):
    code = main(["bench", "--models", "simple_cnn", "--profile-steps", "-1",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--profile-steps must be 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written
