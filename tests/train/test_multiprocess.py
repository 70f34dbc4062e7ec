"""Two processes on localhost (jax.distributed, gloo CPU collectives) train in lockstep."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from zoo.train.checkpoint import Checkpointer
from zoo.train.config import OptimizerConfig, TrainConfig, to_dict

WORKER = """
import json, sys
from zoo.train.distributed import maybe_initialize_distributed
address, process_id, config_json, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
assert maybe_initialize_distributed(address, 2, process_id)
import jax
from zoo.train.config import from_dict
from zoo.train.loop import fit
assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
result = fit(from_dict(json.loads(config_json)), workdir, progress=False)
print("RESULT", json.dumps({"step": result.step, "top1": result.eval_metrics["eval/top1"]}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_in_lockstep_and_write_one_checkpoint(tmp_path):
    config = TrainConfig(name="multiprocess", global_batch_size=16, epochs=None, steps=4,
                         optimizer=OptimizerConfig(name="adamw", learning_rate=1e-3),
                         checkpoint_every=100, log_every=2)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    address = f"localhost:{_free_port()}"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, address, str(i),
                                 json.dumps(to_dict(config)), str(tmp_path)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=400) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    results = [json.loads(out.split("RESULT ")[1]) for out, _ in outputs]
    assert results[0] == results[1] and results[0]["step"] == 4  # same eval on both processes
    assert Checkpointer(tmp_path / "checkpoints", 3, {}).steps() == [4]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 4]  # process 0 writes once
