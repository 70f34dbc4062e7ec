"""`fit` end to end on digits: resume after SIGKILL is bitwise, SIGTERM saves,
partial checkpoints are ignored, NaN stops, incompatible restores change nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import zoo

from zoo.train.checkpoint import Checkpointer
from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig, to_dict
from zoo.train.loop import evaluate, fit
from zoo.train.state import abstract_state

CONFIG = TrainConfig(
    name="test", model="simple_cnn", num_classes=10, dataset="digits", global_batch_size=32,
    epochs=None, steps=8, optimizer=OptimizerConfig(name="adamw", learning_rate=1e-3),
    schedule=ScheduleConfig(warmup_steps=2), ema_decay=0.9, checkpoint_every=3, keep=2,
    eval_every=0, log_every=2,
)

# The killed run: trains CONFIG in a fresh process and SIGKILLs itself once a
# complete checkpoint exists and training has gone past it.
KILLED_RUN = """
import json, os, signal, sys
from zoo.train.checkpoint import Checkpointer
from zoo.train.config import from_dict
from zoo.train.loop import fit
config, workdir = from_dict(json.loads(sys.argv[1])), sys.argv[2]
def kill_after_a_checkpoint(step, state):
    if step >= 5 and Checkpointer(os.path.join(workdir, "checkpoints"), 2, {}).steps():
        os.kill(os.getpid(), signal.SIGKILL)
fit(config, workdir, hooks=[kill_after_a_checkpoint], progress=False)
"""


def _final_params(store: dict):
    def hook(step: int, state) -> None:
        store[step] = jax.device_get(state.params)
    return hook


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    params: dict = {}
    result = fit(CONFIG, workdir, hooks=[_final_params(params)], progress=False)
    return workdir, result, params[CONFIG.steps]


def test_fit_writes_the_workdir(reference):
    workdir, result, _ = reference
    assert result.step == 8 and result.stopped == "completed"
    assert json.loads((workdir / "config.json").read_text())["global_batch_size"] == 32
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    # Logged every 2 steps, and also before each checkpoint (steps 3, 6) so it is NaN-checked.
    assert [line["step"] for line in lines if "train/loss" in line] == [2, 3, 4, 6, 8]
    final = [line for line in lines if "eval/top1" in line][-1]
    assert final["step"] == 8 and 0.0 <= final["eval/top1"] <= final["eval/top5"] <= 1.0
    assert "eval_ema/top1" in final
    assert Checkpointer(workdir / "checkpoints", 2, {}).steps() == [6, 8]
    assert any((workdir / "tensorboard").iterdir())
    restored = evaluate(None, workdir, which="latest")
    assert restored["step"] == 8 and restored["count"] == 360
    assert restored["top1"] == pytest.approx(final["eval/top1"])
    # Running again on the finished workdir trains nothing and reports the same accuracy.
    again = fit(CONFIG, workdir, progress=False)
    assert again.stopped == "already complete" and again.step == 8
    assert again.eval_metrics["eval/top1"] == pytest.approx(final["eval/top1"])


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(reference, tmp_path):
    _, _, expected = reference
    workdir = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(to_dict(CONFIG)),
                            str(workdir)], capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    saved = Checkpointer(workdir / "checkpoints", 2, {}).steps()
    assert saved and max(saved) < CONFIG.steps
    params: dict = {}
    result = fit(CONFIG, workdir, hooks=[_final_params(params)], progress=False)
    assert result.step == CONFIG.steps
    assert min(params) == max(saved) + 1  # resumed after the checkpoint, not from scratch
    jax.tree.map(np.testing.assert_array_equal, params[CONFIG.steps], expected)


def test_sigterm_saves_and_exits_cleanly_then_partial_checkpoint_is_ignored(tmp_path):
    def sigterm_at_step_2(step: int, state) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    config = dataclasses.replace(CONFIG, steps=4, checkpoint_every=100)
    result = fit(config, tmp_path, hooks=[sigterm_at_step_2], progress=False)
    assert result.stopped == "preempted" and result.step == 2
    checkpoints = tmp_path / "checkpoints"
    assert Checkpointer(checkpoints, 2, {}).steps() == [2]
    # What a kill in the middle of an Orbax save leaves behind: an unfinalised tmp dir.
    partial = checkpoints / "3.orbax-checkpoint-tmp-1234567"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_text("half written")
    assert Checkpointer(checkpoints, 2, {}).steps() == [2]
    params: dict = {}
    resumed = fit(config, tmp_path, hooks=[_final_params(params)], progress=False)
    assert resumed.step == 4 and sorted(params) == [3, 4]


def test_restore_into_other_num_classes_is_an_error_that_changes_nothing(reference):
    workdir, _, _ = reference
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    model = zoo.create_model("simple_cnn", num_classes=5)
    abstract = abstract_state(model, optax.adamw(1e-3), (32, 28, 28, 1), use_ema=True)
    checkpointer = Checkpointer(workdir / "checkpoints", 2,
                                {"model": "simple_cnn", "num_classes": 5})
    with pytest.raises(ValueError, match="num_classes=10, but this run has num_classes=5"):
        checkpointer.restore(abstract)
    with pytest.raises(ValueError, match="image_size=28, but this run has image_size=32"):
        fit(dataclasses.replace(CONFIG, image_size=32), workdir, progress=False)
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = dataclasses.replace(
        CONFIG, steps=6, ema_decay=None, checkpoint_every=1, log_every=1,
        optimizer=OptimizerConfig(name="sgd", learning_rate=1e30, momentum=0.0),
        schedule=ScheduleConfig(name="constant"))
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step (\d+)") as error:
        fit(config, tmp_path, progress=False)
    bad_step = int(str(error.value).split("at step ")[1].split(";")[0])
    saved = Checkpointer(tmp_path / "checkpoints", 2, {}).steps()
    assert saved and max(saved) == bad_step - 1
    assert f"last good checkpoint (step {bad_step - 1})" in str(error.value)
