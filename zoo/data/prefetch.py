"""Device prefetch: overlap host->device copies with compute.

    it = prefetch_to_device(iter(pipeline), sharding, buffer_size=2)

With a `jax.sharding.Sharding` (a NamedSharding whose batch axis is sharded over
the mesh axis "data") every yielded leaf is a GLOBAL jax.Array built by
`jax.make_array_from_process_local_data` from this process's rows. With a list
of local devices (pmap) every leaf is [n_devices, per_device, ...] sharded one
slice per device (what jax.pmap consumes).

Prefetching reads `buffer_size` batches ahead of the consumer: the pipeline's
get_state() then counts those too, so save `pipeline.state_after(steps_done)`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np


def _place_sharded(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict:
    return {key: jax.make_array_from_process_local_data(sharding, value)
            for key, value in batch.items()}


def _place_on_devices(batch: dict[str, np.ndarray], devices: Sequence[jax.Device]) -> dict:
    # [B, ...] -> [n_devices, B / n_devices, ...], leading axis sharded one slice per
    # device: the layout jax.pmap consumes without a copy.
    count = len(devices)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("devices",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices"))
    placed = {}
    for key, value in batch.items():
        if value.shape[0] % count:
            raise ValueError(f"batch[{key!r}] has {value.shape[0]} rows, not divisible by "
                             f"{count} local devices")
        shards = np.reshape(value, (count, value.shape[0] // count) + value.shape[1:])
        placed[key] = jax.device_put(shards, sharding)
    return placed


def prefetch_to_device(iterator: Iterator[dict[str, np.ndarray]],
                       sharding: jax.sharding.Sharding | Sequence[jax.Device],
                       buffer_size: int = 2) -> Iterator[dict[str, Any]]:
    """Yields batches of `iterator` as device arrays, `buffer_size` placed ahead.

    jax's transfers are asynchronous, so keeping `buffer_size` batches enqueued
    overlaps the copy of batch t+1 with the step on batch t.
    """
    if not isinstance(buffer_size, int) or buffer_size < 1:
        raise ValueError(f"buffer_size must be an int >= 1; got {buffer_size!r}")
    if isinstance(sharding, jax.sharding.Sharding):
        place = lambda batch: _place_sharded(batch, sharding)  # noqa: E731
    else:
        devices = list(sharding)
        if not devices:
            raise ValueError("prefetch_to_device needs a Sharding or a non-empty list of devices")
        place = lambda batch: _place_on_devices(batch, devices)  # noqa: E731
    queue: collections.deque = collections.deque()
    for batch in iterator:
        queue.append(place(batch))
        if len(queue) >= buffer_size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
