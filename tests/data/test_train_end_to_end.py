"""`zoo train --dataset folder:PATH` and `--dataset tfds:NAME --data-dir D`, end to end."""

from __future__ import annotations

import json
from pathlib import Path

from tests.data.conftest import TFDS_CLASSES
from zoo.cli import main

# simple_cnn on 28x28 grey images (the pipeline resizes and converts whatever it
# reads); a global batch of 8 over the 8 test devices.
COMMON = ["--set", "steps=2", "--set", "global_batch_size=8", "--set", "checkpoint_every=2",
          "--set", "log_every=1", "--set", "epochs=None"]


def _eval_lines(workdir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "eval/top1" in line]


def test_zoo_train_on_a_class_folder(folder_tree, tmp_path, capsys):
    root, _ = folder_tree
    workdir = tmp_path / "run"
    code = main(["train", "--dataset", f"folder:{root}", "--num-classes", "2",
                 "--workdir", str(workdir), *COMMON])
    assert code == 0
    assert "completed at step 2" in capsys.readouterr().out
    assert json.loads((workdir / "class_names.json").read_text())["class_names"] == ["cat", "dog"]
    (final,) = _eval_lines(workdir)
    assert final["step"] == 2 and 0.0 <= final["eval/top1"] <= 1.0


def test_zoo_train_on_a_prepared_tfds_dataset(tfds_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    code = main(["train", "--dataset", "tfds:zoo_test_images", "--data-dir", tfds_dir,
                 "--num-classes", str(len(TFDS_CLASSES)), "--workdir", str(workdir), *COMMON])
    assert code == 0
    assert "completed at step 2" in capsys.readouterr().out
    config = json.loads((workdir / "config.json").read_text())
    assert config["dataset"] == "tfds:zoo_test_images" and config["data_dir"] == tfds_dir
    assert _eval_lines(workdir)[-1]["step"] == 2
