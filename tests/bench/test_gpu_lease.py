"""benchmarks/gpu_lease.sh: start the plan in the background, collect what finished."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from zoo.bench.environment import environment
from zoo.bench.report import check_row, empty_row
from zoo.bench.runner import BenchConfig

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_lease.sh"


def _lease(tmp_path: Path, *args: str, plan: str = "smoke") -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOO_LEASE_DIR": str(tmp_path / "lease"), "ZOO_LEASE_PLAN": plan,
           "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_smoke_plan_runs_in_the_background_and_collect_packs_every_run(tmp_path):
    started = _lease(tmp_path, "start")
    assert started.returncode == 0, started.stderr
    assert "started the 'smoke' plan" in started.stdout
    again = _lease(tmp_path, "start")  # the first plan is still running: refused
    assert again.returncode == 1 and "already running" in again.stderr
    collected = _lease(tmp_path, "collect", "540")
    assert collected.returncode == 0, collected.stderr
    assert "all done" in collected.stdout
    with tarfile.open(tmp_path / "out" / "gpu_results.tar.gz") as tar:
        names = {Path(n).as_posix().removeprefix("./") for n in tar.getnames()}
        assert {"machine.txt", "progress.log", "torch_smoke/.done", "torch_smoke/comparison.md",
                "bench_smoke/.done", "bench_smoke/results.jsonl", "bench_smoke/results.md",
                "bench_smoke/throughput.png"} <= names
        assert tar.extractfile("./torch_smoke/.done").read().strip() == b"0"
        row = json.loads(tar.extractfile("./bench_smoke/results.jsonl").readline())
        assert (row["model"], row["status"]) == ("simple_cnn", "ok")
        assert b"jax " in tar.extractfile("./machine.txt").read()
    # The finished plan's results stay: a new start refuses to write over them.
    third = _lease(tmp_path, "start")
    assert third.returncode == 1 and "already holds results" in third.stderr
    assert (tmp_path / "lease" / "bench_smoke" / "results.jsonl").exists()


def _finished_row() -> dict:
    row = empty_row(BenchConfig(model="resnet50", mode="train", dtype="bfloat16",
                                parallel="single", batch_size=128, image_size=224, warmup=10,
                                steps=3, num_buffers=3), environment())
    samples = [250.0, 251.0, 255.0]
    row.update(status="ok", step_ms_samples=samples, step_ms_p50=251.0, step_ms_p90=254.2,
               step_ms_p99=254.9, step_ms_mean=252.0, step_ms_std=2.6, step_ms_min=250.0,
               step_ms_max=255.0, images_per_s=128 / 0.252, compile_s=30.0, lower_s=2.0)
    check_row(row)
    return row


def test_collect_writes_the_reports_of_a_run_cut_short(tmp_path):
    # A zoo bench run that the lease ended after one row: results.jsonl only.
    lease = tmp_path / "lease"
    run = lease / "accelerator"
    run.mkdir(parents=True)
    (lease / "progress.log").write_text("accelerator: started 2026-11-25T00:00:00Z\n")
    (run / "results.jsonl").write_text(json.dumps(_finished_row()) + "\n")
    collected = _lease(tmp_path, "collect")
    assert collected.returncode == 0, collected.stderr
    assert "could not write" not in collected.stderr
    assert (run / "partial.txt").read_text() == "cut short: 1 rows finished when collected\n"
    assert "| resnet50 | train | bfloat16 |" in (run / "results.md").read_text()
    assert (run / "results.csv").exists() and (run / "throughput.png").exists()
    with tarfile.open(tmp_path / "out" / "gpu_results.tar.gz") as tar:
        assert "./accelerator/results.md" in tar.getnames()


def test_unknown_plan_and_nothing_to_collect_are_clear_errors(tmp_path):
    unknown = _lease(tmp_path, "start", plan="tpu")
    assert unknown.returncode == 2 and "unknown ZOO_LEASE_PLAN 'tpu'" in unknown.stderr
    assert not (tmp_path / "lease" / "progress.log").exists()
    nothing = _lease(tmp_path, "collect")
    assert nothing.returncode == 1 and "nothing started" in nothing.stderr
    usage = _lease(tmp_path, "go")
    assert usage.returncode == 2 and "usage:" in usage.stderr
