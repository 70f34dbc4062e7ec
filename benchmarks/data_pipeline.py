"""Images/s of the ImageNet-style train pipeline, by worker count.

Writes JPEGs (natural-image-sized, 500x375, smooth content so they compress
like photos) into a temp class-folder tree, then times zoo.data's train pipeline
on it: decode (Pillow) + random-resized crop 224 + flip + normalise, float32,
batch 32, for num_workers 0, 1, 2. The first batch (worker start-up) is timed
separately and excluded from images/s.

    .venv/bin/python benchmarks/data_pipeline.py [--images 256] [--batches 12]
"""

from __future__ import annotations

# Before anything imports JAX: glibc fixes its arena limit when a second
# thread first allocates, and importing JAX starts one (zoo.runtime).
if __name__ == "__main__":
    from zoo.runtime import keep_freed_host_memory

    keep_freed_host_memory()

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
from PIL import Image

from zoo.data import make_pipeline

RESULT = os.path.join(os.path.dirname(__file__), "results", "cpu", "data_pipeline.json")


def write_jpegs(root: str, count: int, classes: int = 4) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = os.path.join(root, "train", f"class{index % classes}")
        os.makedirs(folder, exist_ok=True)
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
        image.save(os.path.join(folder, f"{index:05d}.jpg"), quality=90)


def time_pipeline(root: str, workers: int, batch_size: int, batches: int) -> dict:
    pipeline = make_pipeline(f"folder:{root}", "train", batch_size=batch_size, train=True,
                             image_size=224, channels=3, augment="imagenet",
                             num_workers=workers, process_index=0, process_count=1)
    start = time.perf_counter()
    iterator = iter(pipeline)
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    seconds = time.perf_counter() - start
    assert batch["image"].shape == (batch_size, 224, 224, 3)
    return {"num_workers": workers, "batch_size": batch_size, "batches_timed": batches,
            "first_batch_s": round(first, 2), "images_per_s": round(batches * batch_size / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, args.images)
        rows = []
        for workers in args.workers:
            row = time_pipeline(root, workers, args.batch_size, args.batches)
            print(f"num_workers={workers}: {row['images_per_s']:.1f} images/s "
                  f"(first batch {row['first_batch_s']:.1f} s)", flush=True)
            rows.append(row)
    result = {
        "benchmark": "train pipeline: JPEG 500x375 decode + random-resized crop 224 + flip + normalise (float32)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs while measured)",
        "python": platform.python_version(),
        "rows": rows,
        "resnet50_train_images_per_s": None,
        "resnet50_note": ("not measured here: one resnet50 train step at batch 32 on this shared "
                          "2-core CPU costs minutes to compile and run; compare rows with "
                          "`zoo bench` results for the accelerator you train on (an A100/H100 "
                          "trains resnet50 at ~2,500-3,000 images/s in bf16, so it needs "
                          "~that many decoded images/s: many cores of workers)."),
    }
    os.makedirs(os.path.dirname(RESULT), exist_ok=True)
    with open(RESULT, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
