"""The timing protocol: compile apart from running, warm-up excluded, every
timed step ended by `block_until_ready`, inputs rotated among device buffers.

    lowered, lower_s = timed(lambda: jitted.lower(*args))
    compiled, compile_s = timed(lowered.compile)
    samples = time_steps(step, inputs, warmup=5, steps=30)
    stats = summarize(samples)

`step(inputs[i % len(inputs)])` runs one step on the i-th input buffer and
returns what it computed (any pytree of arrays); the clock stops only once
every array in it is ready, so asynchronous dispatch cannot hide device time.
`time_interleaved` times several such steps against each other, one step of
each in turn, for comparisons (benchmarks/compare_torch.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import jax

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """`fn()` and the wall seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def time_steps(
    step: Callable[[Any], Any], inputs: Sequence[Any], *, warmup: int, steps: int
) -> list[float]:
    """Wall seconds of each of `steps` timed calls of `step`, after `warmup` untimed ones.

    Args:
      step: runs one step on one input; returns its outputs (a pytree of arrays).
      inputs: device-resident inputs, used in turn so that no step re-reads
        the buffer the step before it just read (caches, donation).
      warmup: untimed calls first (autotuning, allocator growth, page faults).
      steps: timed calls.
    """
    if not inputs:
        raise ValueError("time_steps needs at least one input buffer")
    # One run interleaved with nothing: the same loop, and its error re-raised.
    (samples,) = time_interleaved({"step": (step, inputs)}, warmup=warmup, steps=steps).values()
    if isinstance(samples, Exception):
        raise samples
    return samples


def time_interleaved(
    runs: Mapping[str, tuple[Callable[[Any], Any], Sequence[Any]]], *, warmup: int, steps: int
) -> dict[str, list[float] | Exception]:
    """Times several (step, inputs) pairs against each other, one step of each in turn.

    A shared machine's speed drifts over seconds to minutes (other tenants,
    clocks, heat); timing all of A's steps and then all of B's puts the drift
    into their ratio (up to 18% on the 2-core development VM). Here every round runs one
    timed step of each run, starting one further along each round so that no
    run always follows the same other, and the drift falls on all of them
    alike. Each step is timed alone and ended by `block_until_ready`, as in
    `time_steps`; first `warmup` untimed rounds.

    A run whose step raises leaves the rotation, its exception returned in
    place of its samples; the others go on.

    Returns:
      name -> its `steps` timed wall seconds, or the exception it raised.
    """
    if warmup < 0 or steps < 1:
        raise ValueError(f"need warmup >= 0 and steps >= 1, got warmup={warmup}, steps={steps}")
    for name, (_, inputs) in runs.items():
        if not inputs:
            raise ValueError(f"time_interleaved: run {name!r} has no input buffer")
    results: dict[str, list[float] | Exception] = {name: [] for name in runs}
    names = list(runs)
    for round_index in range(warmup + steps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples = results[name]
            if isinstance(samples, Exception):
                continue
            step, inputs = runs[name]
            batch = inputs[round_index % len(inputs)]
            try:
                start = time.perf_counter()
                jax.block_until_ready(step(batch))
                elapsed = time.perf_counter() - start
            except Exception as error:  # noqa: BLE001 - a failing run leaves, the others go on
                results[name] = error
                continue
            if round_index >= warmup:
                samples.append(elapsed)
    return results


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks.

    The same definition as `numpy.percentile(samples, q)` (method "linear"):
    rank h = (n - 1) * q / 100 between sorted[floor(h)] and sorted[ceil(h)].
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class StepStats(NamedTuple):
    """Summary of step times, in milliseconds.

    std is the sample standard deviation (n - 1 in the denominator; 0 for one sample).
    """

    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float


def summarize(samples_s: Sequence[float]) -> StepStats:
    """Mean, std, p50/p90/p99, min and max of step times given in seconds."""
    ms = [s * 1e3 for s in samples_s]
    if not ms:
        raise ValueError("summarize needs at least one sample")
    mean = sum(ms) / len(ms)
    var = sum((x - mean) ** 2 for x in ms) / (len(ms) - 1) if len(ms) > 1 else 0.0
    return StepStats(
        mean_ms=mean,
        std_ms=math.sqrt(var),
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        min_ms=min(ms),
        max_ms=max(ms),
    )


def flops_from_cost_analysis(cost: Any) -> float | None:
    """Total 'flops' of `compiled.cost_analysis()`, or None if XLA gave none.

    jax 0.10 returns one dict; older versions a list of dicts (one per
    computation). Under jit with sharding and under pmap the count is per device.
    """
    if cost is None:
        return None
    entries = cost if isinstance(cost, (list, tuple)) else [cost]
    values = [entry.get("flops") for entry in entries if isinstance(entry, dict)]
    values = [float(v) for v in values if v is not None and v >= 0]
    return sum(values) if values else None
