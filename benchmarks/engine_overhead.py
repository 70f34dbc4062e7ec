"""What the training engine costs on top of a bare jitted step, on the CPU at hand.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        .venv/bin/python benchmarks/engine_overhead.py --model resnet50 --batch 8 --image-size 64

Measures (and writes benchmarks/results/cpu/engine_overhead.json):
  * train images/s of a bare `jax.jit(value_and_grad + optax update)` on one
    device vs the engine's `setup_training(..., parallel="jit" | "pmap")` over
    all local devices (same global batch);
  * the stall of a checkpoint save (time until `save` returns and training may
    continue; the write finishes in the background) and the full write time;
  * cold vs warm compile of the engine step with the persistent cache.
Numbers only; nothing here asserts a timing.
"""

from __future__ import annotations

# Before anything imports JAX: glibc fixes its arena limit when a second
# thread first allocates, and importing JAX starts one (zoo.runtime).
if __name__ == "__main__":
    from zoo.runtime import keep_freed_host_memory

    keep_freed_host_memory()

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import zoo
from zoo.train import setup_training
from zoo.train.checkpoint import Checkpointer
from zoo.train.loop import enable_compilation_cache


def _batch(batch: int, size: int) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    return {"image": rng.randn(batch, size, size, 3).astype(np.float32),
            "label": rng.randint(0, 10, batch).astype(np.int32),
            "mask": np.ones(batch, bool)}


def _images_per_second(step, state, batch, images: int, steps: int) -> tuple[float, object]:
    state, metrics = step(state, batch)  # compile + warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return images * steps / (time.perf_counter() - start), state


def bare_step_rate(model, tx, batch: dict[str, np.ndarray], steps: int) -> float:
    """A minimal hand-written jitted train step on one device (the baseline)."""
    variables = model.init(jax.random.PRNGKey(0), jnp.asarray(batch["image"][:1]), train=False)
    state = (variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"]))

    def step(state, batch):
        params, stats, opt_state = state

        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": stats}, batch["image"],
                                          train=True, mutable=["batch_stats"])
            labels = jax.nn.one_hot(batch["label"], logits.shape[-1])
            return optax.softmax_cross_entropy(logits, labels).mean(), updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    device_batch = jax.device_put({k: batch[k] for k in ("image", "label")}, jax.devices()[0])
    rate, _ = _images_per_second(jax.jit(step, donate_argnums=0), state, device_batch,
                                 len(batch["label"]), steps)
    return rate


def engine_rate(model, tx, batch, parallel: str, steps: int) -> tuple[float, object]:
    shape = batch["image"].shape
    trainer = setup_training(model, tx, shape, parallel=parallel)
    rate, state = _images_per_second(trainer.train_step, trainer.state, trainer.put_batch(batch),
                                     shape[0], steps)
    trainer.state = state
    return rate, trainer


def checkpoint_stall(trainer) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        checkpointer = Checkpointer(Path(directory) / "checkpoints", 2, {"model": "bench"})
        state = trainer.canonical_state()
        checkpointer.save(0, state, {})  # first save sets up the manager's directories
        checkpointer.wait()
        start = time.perf_counter()
        checkpointer.save(1, state, {})
        stall = time.perf_counter() - start
        checkpointer.wait()
        total = time.perf_counter() - start
        checkpointer.close()
    return {"save_stall_s": stall, "save_total_s": total}


def compile_times(model, tx, batch) -> dict[str, float]:
    # A fresh cache directory makes the first compile cold; it stays in place
    # because JAX keeps writing to the configured directory for the whole process.
    enable_compilation_cache(tempfile.mkdtemp(prefix="zoo-bench-jax-cache-"))
    times = {}
    for label in ("cold_compile_s", "warm_compile_s"):
        jax.clear_caches()
        trainer = setup_training(model, tx, batch["image"].shape, parallel="jit")
        placed = trainer.put_batch(batch)
        start = time.perf_counter()
        trainer.lower_train_step(trainer.state, placed).compile()
        times[label] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/cpu/engine_overhead.json")
    args = parser.parse_args()
    model = zoo.create_model(args.model, num_classes=10)
    tx = optax.sgd(0.01, momentum=0.9, nesterov=True)
    batch = _batch(args.batch, args.image_size)
    result = {"model": args.model, "global_batch": args.batch, "image_size": args.image_size,
              "timed_steps": args.steps, "devices": [str(d) for d in jax.devices()],
              "device_count": jax.device_count(), "jax": jax.__version__,
              "machine": f"{platform.machine()} {platform.processor()}".strip()}
    result.update(compile_times(model, tx, batch))
    print(json.dumps(result), flush=True)
    result["bare_jit_1_device_images_per_s"] = bare_step_rate(model, tx, batch, args.steps)
    result["engine_jit_images_per_s"], trainer = engine_rate(model, tx, batch, "jit", args.steps)
    result.update(checkpoint_stall(trainer))
    result["engine_pmap_images_per_s"], _ = engine_rate(model, tx, batch, "pmap", args.steps)
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
