"""Zoo's input pipeline: datasets, transforms, a deterministic Grain loader.

    from zoo.data import make_pipeline, dataset_info
    info = dataset_info("digits")            # DatasetInfo(num_classes=10, splits={...}, ...)
    pipeline = make_pipeline("digits", "train", batch_size=128, train=True, seed=0)
    for batch in pipeline:                   # per-process numpy batches
        batch["image"]  # [batch_size, image_size, image_size, channels], normalised
        batch["label"]  # int32 [batch_size]
        batch["mask"]   # bool [batch_size]: False only on eval padding / corrupt eval rows
    state = pipeline.get_state()             # JSON dict, identical on every process
    pipeline.set_state(state)                # next iter() continues exactly there

Dataset names: "digits" (built in, the default), "tfds:NAME[:VERSION]" (prepared
offline, read from ArrayRecord without TensorFlow) and "folder:PATH" (class folders).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from zoo.data.loader import ExampleSpec, Pipeline
from zoo.data.presets import PRESETS, get_preset
from zoo.data.sources import DatasetInfo, dataset_info, open_source, stats_for_channels

__all__ = ["DatasetInfo", "Pipeline", "PRESETS", "dataset_info", "make_pipeline",
           "write_class_names"]


def _process_defaults(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not (isinstance(process_count, int) and process_count >= 1
            and isinstance(process_index, int) and 0 <= process_index < process_count):
        raise ValueError(f"need 0 <= process_index < process_count; got process_index="
                         f"{process_index!r}, process_count={process_count!r}")
    return process_index, process_count


def make_pipeline(name: str = "digits", split: str = "train", *, batch_size: int,
                  train: bool, seed: int = 0, image_size: int | None = None,
                  channels: int | None = None, augment: str = "none",
                  data_dir: str | None = None, num_workers: int = 0,
                  process_index: int | None = None, process_count: int | None = None,
                  dtype: Any = np.float32, strict: bool = False,
                  mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> Pipeline:
    """A per-process batch iterator over `split` of dataset `name`.

    batch_size is PER PROCESS. train=True: seeded shuffle per epoch, `augment`
    preset, repeats forever, drops the remainder. train=False: one ordered pass,
    eval transform, last batch padded with mask=False rows. image_size/channels
    default to the dataset's (info.image_shape). mixup_alpha / cutmix_alpha > 0
    (train only, opt-in) add "label_mix" int32 [B] and "mix_weight" float32 [B]:
    the loss is w * CE(label) + (1 - w) * CE(label_mix) (see zoo/data/mixing.py).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (per process); got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0; got {num_workers!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    preset = get_preset(augment if train else "none")
    info = dataset_info(name, data_dir=data_dir)
    image_size = info.image_shape[0] if image_size is None else image_size
    channels = info.image_shape[2] if channels is None else channels
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int; got {image_size!r}")
    if split not in info.splits:
        raise ValueError(f"{name} has splits {sorted(info.splits)}; got split {split!r}")
    process_index, process_count = _process_defaults(process_index, process_count)
    source = open_source(name, split, data_dir=data_dir, channels=channels, strict=strict)
    mean, std = stats_for_channels(info.mean, info.std, channels)
    spec = ExampleSpec(image_size=image_size, channels=channels, preset=preset, mean=mean,
                       std=std, dtype=np.dtype(dtype), seed=seed, strict=strict,
                       fixed_size=source.fixed_size)
    batch_transform = None
    if mixup_alpha > 0 or cutmix_alpha > 0:
        if not train:
            raise ValueError("mixup/cutmix are train-only; got train=False with "
                             f"mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}")
        from zoo.data.mixing import BatchMixer

        batch_transform = BatchMixer(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                                     seed=seed, process_index=process_index)
    return Pipeline(source, spec, name=name, split=split, batch_size=batch_size, train=train,
                    num_workers=num_workers, process_index=process_index,
                    process_count=process_count, batch_transform=batch_transform)


def write_class_names(workdir: str | os.PathLike, name: str,
                      data_dir: str | None = None) -> str:
    """Writes the dataset's class names (index order) to WORKDIR/class_names.json;
    returns the path. The engine calls this so predictions can be named later."""
    info = dataset_info(name, data_dir=data_dir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(os.fspath(workdir), "class_names.json")
    with open(path, "w") as handle:
        json.dump({"dataset": name, "class_names": info.class_names}, handle, indent=1)
    return path
