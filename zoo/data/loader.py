"""The pipeline: a source, per-example transforms and batching on Grain.

Order of examples (what makes resume exact and shards disjoint):
- train: epoch e visits the examples in `permutation(seed, e)`, truncated to
  steps_per_epoch * global_batch (drop remainder). Global batch k of the epoch is
  positions [k*G, (k+1)*G); process p takes rows [p*B, (p+1)*B) of it (B = the
  per-process batch, G = B * process_count), i.e. exactly the rows
  `jax.make_array_from_process_local_data` expects from process p. The stream
  repeats forever.
- eval: positions 0..ceil(n/G)*G-1 in dataset order, sharded the same way; a
  position >= n is padding (zeros, label 0, mask False).
Example i of epoch e is augmented with np.random.default_rng([seed, e, i]).
The whole stream is one Grain MapDataset indexed by position, so resuming is
slicing it at `batches_consumed * B`, and workers (`num_workers` processes via
`IterDataset.mp_prefetch`) produce whole batches in round-robin order.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from zoo.data.presets import AugmentPreset, eval_transform, train_transform
from zoo.data.sources import CorruptImageError, Source
from zoo.data.transforms import normalize

log = logging.getLogger(__name__)

# The train stream is "infinite": this many epochs of positions (index space only).
MAX_EPOCHS = 1_000_000
# How many following examples a train batch tries when an image fails to decode.
MAX_SUBSTITUTES = 16
STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """Everything a worker needs to make example rows (picklable)."""

    image_size: int
    channels: int
    preset: AugmentPreset
    mean: np.ndarray  # float32 [channels]
    std: np.ndarray  # float32 [channels]
    dtype: Any
    seed: int
    strict: bool
    fixed_size: bool


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The order of examples in train epoch `epoch`: int64 [num_examples]."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(num_examples)


class MakeExample:
    """position in the stream -> {"image", "label", "mask"} for one row."""

    def __init__(self, source: Source, spec: ExampleSpec, *, train: bool,
                 batch_size: int, process_index: int, process_count: int,
                 steps_per_epoch: int):
        self.source, self.spec, self.train = source, spec, train
        self.batch_size, self.process_index = batch_size, process_index
        self.global_batch = batch_size * process_count
        self.steps_per_epoch = steps_per_epoch

    def global_position(self, position: int) -> tuple[int, int]:
        """(epoch, position within the epoch's global order) of a process-local position."""
        batch, row = divmod(position, self.batch_size)
        epoch, batch_in_epoch = divmod(batch, self.steps_per_epoch)
        return epoch, batch_in_epoch * self.global_batch + self.process_index * self.batch_size + row

    def example_index(self, position: int) -> tuple[int, int]:
        """(epoch, source index) of a process-local stream position; eval padding -> -1."""
        epoch, global_position = self.global_position(position)
        if not self.train:
            return epoch, global_position if global_position < len(self.source) else -1
        order = epoch_permutation(self.spec.seed, epoch, len(self.source))
        return epoch, int(order[global_position])

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        epoch, global_position = self.global_position(position)
        if self.train:
            order = epoch_permutation(self.spec.seed, epoch, len(self.source))
            return self._train_example(order, global_position, epoch)
        return self._eval_example(global_position)

    def _padding(self) -> dict[str, np.ndarray]:
        spec = self.spec
        shape = (spec.image_size, spec.image_size, spec.channels)
        return {"image": np.zeros(shape, spec.dtype), "label": np.int32(0), "mask": np.bool_(False)}

    def _load(self, index: int) -> tuple[np.ndarray, int] | None:
        try:
            return self.source.load(index)
        except CorruptImageError as error:
            if self.spec.strict:
                raise
            warnings.warn(f"skipping corrupt example {self.source.describe(index)}: {error}",
                          stacklevel=2)
            return None

    def _train_example(self, order: np.ndarray, global_position: int,
                       epoch: int) -> dict[str, np.ndarray]:
        # A corrupt image is replaced by the next example of the epoch's order:
        # deterministic, keeps batch shapes, and identical on every process.
        n = len(order)
        for offset in range(MAX_SUBSTITUTES):
            index = int(order[(global_position + offset) % n])
            loaded = self._load(index)
            if loaded is not None:
                break
        else:
            raise ValueError(f"{MAX_SUBSTITUTES} consecutive examples failed to decode near "
                             f"{self.source.describe(index)}; is the dataset corrupt?")
        image, label = loaded
        spec = self.spec
        rng = np.random.default_rng([spec.seed, epoch, index])
        image = train_transform(image, spec.image_size, spec.preset, rng, fixed_size=spec.fixed_size)
        return {"image": normalize(image, spec.mean, spec.std, spec.dtype),
                "label": np.int32(label), "mask": np.bool_(True)}

    def _eval_example(self, global_position: int) -> dict[str, np.ndarray]:
        if global_position >= len(self.source):
            return self._padding()
        loaded = self._load(global_position)
        if loaded is None:  # corrupt in eval: counted out through the mask
            return self._padding()
        image, label = loaded
        spec = self.spec
        image = eval_transform(image, spec.image_size, fixed_size=spec.fixed_size)
        return {"image": normalize(image, spec.mean, spec.std, spec.dtype),
                "label": np.int32(label), "mask": np.bool_(True)}


def stack_rows(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows of one batch -> {"image": [B, h, w, c], "label": int32 [B], "mask": bool [B]}."""
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


class Pipeline:
    """An iterable of per-process batches (see zoo/data/__init__.py for the contract)."""

    def __init__(self, source: Source, spec: ExampleSpec, *, name: str, split: str,
                 batch_size: int, train: bool, num_workers: int, process_index: int,
                 process_count: int, batch_transform: Any = None):
        self.name, self.split, self.source, self.spec = name, split, source, spec
        self.batch_size, self.train, self.num_workers = batch_size, train, num_workers
        self.process_index, self.process_count = process_index, process_count
        self.global_batch_size = batch_size * process_count
        self.num_examples = len(source)
        self.batch_transform = batch_transform
        if train:
            self.steps_per_epoch = self.num_examples // self.global_batch_size
            if self.steps_per_epoch == 0:
                raise ValueError(
                    f"{name} split {split!r} has {self.num_examples} examples, fewer than one "
                    f"global batch of {self.global_batch_size} (batch_size {batch_size} x "
                    f"{process_count} processes); lower batch_size")
        else:
            self.steps_per_epoch = -(-self.num_examples // self.global_batch_size)
        self._batches_consumed = 0  # train: global batches yielded since the stream start
        # Files dropped when the source was indexed (folder sources), as (path, reason).
        self.skipped: tuple[tuple[str, str], ...] = tuple(getattr(source, "skipped", ()))
        self.num_skipped = len(self.skipped)

    def _make_example(self) -> MakeExample:
        return MakeExample(self.source, self.spec, train=self.train,
                           batch_size=self.batch_size, process_index=self.process_index,
                           process_count=self.process_count,
                           steps_per_epoch=self.steps_per_epoch)

    def batch_indices(self, batch_number: int) -> np.ndarray:
        """Source indices of this process's rows in batch `batch_number` of the stream
        (train: counted from the start of epoch 0; eval: of the pass; -1 = padding).
        int64 [batch_size]; what the loader reads, exposed for checks and debugging."""
        make = self._make_example()
        first = batch_number * self.batch_size
        return np.asarray([make.example_index(first + row)[1] for row in range(self.batch_size)])

    # ----------------------------------------------------------------- state
    def state_after(self, batches: int) -> dict[str, int]:
        """The state after `batches` train batches from the start of the stream
        (use this with a read-ahead prefetcher: pass the steps actually trained)."""
        epoch, batches_into_epoch = divmod(int(batches), self.steps_per_epoch)
        return {"version": STATE_VERSION, "seed": self.spec.seed, "epoch": epoch,
                "batches_into_epoch": batches_into_epoch,
                "global_batch_size": self.global_batch_size,
                "num_examples": self.num_examples}

    def get_state(self) -> dict[str, int]:
        """JSON-serialisable position of the train stream; the same on every process."""
        return self.state_after(self._batches_consumed)

    def set_state(self, state: dict[str, int]) -> None:
        """Continue (at the next iter()) exactly after the batch `state` was taken at."""
        expected = self.state_after(0)
        for key in ("version", "seed", "global_batch_size", "num_examples"):
            if state.get(key) != expected[key]:
                raise ValueError(
                    f"cannot resume {self.name} {self.split!r}: state has {key}={state.get(key)!r} "
                    f"but this pipeline has {key}={expected[key]!r} (state {state})")
        epoch, into = int(state["epoch"]), int(state["batches_into_epoch"])
        if not 0 <= into < self.steps_per_epoch or epoch < 0:
            raise ValueError(f"state {state} is outside an epoch of {self.steps_per_epoch} batches")
        self._batches_consumed = epoch * self.steps_per_epoch + into

    # ----------------------------------------------------------------- iteration
    def _dataset(self, first_batch: int) -> grain.IterDataset:
        total_batches = self.steps_per_epoch * (MAX_EPOCHS if self.train else 1)
        make = self._make_example()
        dataset = grain.MapDataset.range(first_batch * self.batch_size,
                                         total_batches * self.batch_size)
        dataset = dataset.map(make).batch(self.batch_size, drop_remainder=True, batch_fn=stack_rows)
        if self.batch_transform is not None:
            dataset = dataset.map_with_index(
                functools.partial(_apply_batch_transform, self.batch_transform, first_batch))
        threads = 1 if self.num_workers > 0 else 2
        iterable = dataset.to_iter_dataset(
            grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
        if self.num_workers > 0:
            _mark_absl_flags_parsed()
            iterable = iterable.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.num_workers,
                                             per_worker_buffer_size=2))
        return iterable

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if not self.train:
            yield from self._batches(0)
            return
        for batch in self._batches(self._batches_consumed):
            self._batches_consumed += 1
            yield batch

    def _batches(self, first_batch: int) -> Iterator[dict[str, np.ndarray]]:
        for batch in self._dataset(first_batch):
            if self.num_workers > 0:
                # Worker batches arrive as grain SharedMemoryArrays; a plain copy frees the
                # shared segment at once and keeps callers from holding it past shutdown.
                batch = {key: np.array(value) for key, value in batch.items()}
            yield batch

    def __len__(self) -> int:
        """Batches per epoch (== steps_per_epoch)."""
        return self.steps_per_epoch


def _mark_absl_flags_parsed() -> None:
    # grain 0.2.18's mp_prefetch reads an absl flag directly, which raises unless
    # absl parsed the command line (only absl.app programs do); defaults are fine.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _apply_batch_transform(transform: Any, first_batch: int, index: int,
                           batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # index counts from the slice start; the absolute batch number keys the rng.
    return transform(batch, first_batch + index)
