"""The timing protocol: compile apart from running, warm-up excluded, every
timed step ended by `block_until_ready`, inputs rotated among device buffers.

    lowered, lower_s = timed(lambda: jitted.lower(*args))
    compiled, compile_s = timed(lowered.compile)
    times = time_steps(step, inputs, warmup=5, steps=30)
    stats = summarize(times.seconds)

`step(inputs[i % len(inputs)])` runs one step on the i-th input buffer and
returns what it computed (any pytree of arrays); the clock stops only once
every array in it is ready, so asynchronous dispatch cannot hide device time.
`time_interleaved` times several such steps against each other, one step of
each in turn, for comparisons (benchmarks/compare_torch.py).

Warm-up goes on past the steps asked for while a step still first-touches a
lot of host memory (the heap growing: a resnet50 training step on CPU did so
in 2-3 of its first 10 steps, each then taking twice as long), up to
`MAX_SETTLE_ROUNDS` more; how many warm-up steps ran, and the host page faults
of the timed steps, are part of the result.
"""

from __future__ import annotations

import math
import mmap
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import jax

T = TypeVar("T")

# A warm-up step that page-faults at least this much fresh host memory (64 MiB)
# leaves the process unsettled: the next step is warm-up too. Steady steps of
# a CPU resnet50 training step fault ~0-400 pages (Python's own allocations);
# the heap growing faulted 215,000-236,000 (0.9 GB) in one step.
SETTLED_PAGE_FAULT_BYTES = 64 << 20
# At most this many warm-up rounds beyond the `warmup` asked for.
MAX_SETTLE_ROUNDS = 10


def _self_rusage() -> Any | None:
    """`resource.getrusage(RUSAGE_SELF)` (all threads), or None without `resource`."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF)


def host_page_faults() -> int | None:
    """Page faults (minor + major) of this process so far, all its threads;
    None where the platform does not count them (no `resource` module).

    A fault that maps a transparent huge page counts once, so for memory in
    huge pages this undercounts the bytes touched."""
    usage = _self_rusage()
    return None if usage is None else usage.ru_minflt + usage.ru_majflt


def host_context_switches() -> int | None:
    """Context switches (voluntary + involuntary) of this process so far, all
    its threads; None where the platform does not count them.

    A thread blocks (a voluntary switch) when it waits for work or for another
    thread: XLA's CPU thread pool and the caller waiting on it block ~75 times
    in an efficientnet_b0 inference step on the 2-core VM, and ~125 times in
    the steps of an episode when the whole machine slowed (benchmarks/NOTES.md,
    entry 17)."""
    usage = _self_rusage()
    return None if usage is None else usage.ru_nvcsw + usage.ru_nivcsw


class StepTimes(NamedTuple):
    """The timed steps of one run.

    seconds: wall seconds of each timed step.
    host_page_faults: page faults of the process during each timed step (None
      where the platform does not count them).
    warmup_steps: untimed steps run before them (at least the `warmup` asked for).
    context_switches: context switches of the process during each timed step
      (None where not counted).
    """

    seconds: list[float]
    host_page_faults: list[int] | None
    warmup_steps: int
    context_switches: list[int] | None = None

    @property
    def total_host_page_faults(self) -> int | None:
        """Page faults of all the timed steps together (None where not counted)."""
        return None if self.host_page_faults is None else sum(self.host_page_faults)

    @property
    def total_context_switches(self) -> int | None:
        """Context switches of all the timed steps together (None where not counted)."""
        return None if self.context_switches is None else sum(self.context_switches)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """`fn()` and the wall seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def time_steps(
    step: Callable[[Any], Any], inputs: Sequence[Any], *, warmup: int, steps: int,
    page_faults: Callable[[], int | None] = host_page_faults,
    context_switches: Callable[[], int | None] = host_context_switches,
) -> StepTimes:
    """Wall seconds of each of `steps` timed calls of `step`, after `warmup` or more
    untimed ones (see `time_interleaved` for when there are more).

    Args:
      step: runs one step on one input; returns its outputs (a pytree of arrays).
      inputs: device-resident inputs, used in turn so that no step re-reads
        the buffer the step before it just read (caches, donation).
      warmup: untimed calls first (autotuning, allocator growth, page faults).
      steps: timed calls.
      page_faults: the process's page-fault counter (tests pass a fake one).
      context_switches: the process's context-switch counter (likewise).
    """
    if not inputs:
        raise ValueError("time_steps needs at least one input buffer")
    # One run interleaved with nothing: the same loop, and its error re-raised.
    (times,) = time_interleaved({"step": (step, inputs)}, warmup=warmup, steps=steps,
                                page_faults=page_faults,
                                context_switches=context_switches).values()
    if isinstance(times, Exception):
        raise times
    return times


def time_interleaved(
    runs: Mapping[str, tuple[Callable[[Any], Any], Sequence[Any]]], *, warmup: int, steps: int,
    page_faults: Callable[[], int | None] = host_page_faults,
    context_switches: Callable[[], int | None] = host_context_switches,
) -> dict[str, StepTimes | Exception]:
    """Times several (step, inputs) pairs against each other, one step of each in turn.

    A shared machine's speed drifts over seconds to minutes (other tenants,
    clocks, heat); timing all of A's steps and then all of B's puts the drift
    into their ratio (up to 18% on the 2-core development VM). Here every round runs one
    timed step of each run, starting one further along each round so that no
    run always follows the same other, and the drift falls on all of them
    alike. Each step is timed alone and ended by `block_until_ready`, as in
    `time_steps`; first `warmup` untimed rounds.

    Warm-up settles the host: when `warmup` >= 1 and a step of the last
    warm-up round page-faulted SETTLED_PAGE_FAULT_BYTES or more (the heap
    still growing, memory touched for the first time), one more warm-up round
    runs, up to MAX_SETTLE_ROUNDS more. Otherwise a timed step would measure
    the kernel zeroing fresh pages (a CPU resnet50 training step took 2.6 s
    instead of 1.3 s in such steps). `warmup=0` times from the first step.

    A run whose step raises leaves the rotation, its exception returned in
    place of its samples; the others go on. Each timed step's page faults and
    context switches are counted too: a step that blocked and was woken far
    more often than its neighbours may have run while the machine was
    disturbed (benchmarks/NOTES.md, entry 17).

    Returns:
      name -> its `StepTimes` (`steps` timed steps), or the exception it raised.
    """
    if warmup < 0 or steps < 1:
        raise ValueError(f"need warmup >= 0 and steps >= 1, got warmup={warmup}, steps={steps}")
    for name, (_, inputs) in runs.items():
        if not inputs:
            raise ValueError(f"time_interleaved: run {name!r} has no input buffer")
    unsettled_pages = SETTLED_PAGE_FAULT_BYTES // mmap.PAGESIZE
    counts_faults = page_faults() is not None
    counts_switches = context_switches() is not None

    def faults_now() -> int:
        return (page_faults() or 0) if counts_faults else 0

    def switches_now() -> int:
        return (context_switches() or 0) if counts_switches else 0

    seconds: dict[str, list[float]] = {name: [] for name in runs}
    faults: dict[str, list[int]] = {name: [] for name in runs}
    switches: dict[str, list[int]] = {name: [] for name in runs}
    failed: dict[str, Exception] = {}
    names = list(runs)
    warmup_rounds, round_index = warmup, 0
    while round_index < warmup_rounds + steps:
        timing = round_index >= warmup_rounds
        settled = True
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if name in failed:
                continue
            step, inputs = runs[name]
            batch = inputs[round_index % len(inputs)]
            try:
                faults_before, switches_before = faults_now(), switches_now()
                start = time.perf_counter()
                jax.block_until_ready(step(batch))
                elapsed = time.perf_counter() - start
                step_faults = faults_now() - faults_before
                step_switches = switches_now() - switches_before
            except Exception as error:  # noqa: BLE001 - a failing run leaves, the others go on
                failed[name] = error
                continue
            if timing:
                seconds[name].append(elapsed)
                faults[name].append(step_faults)
                switches[name].append(step_switches)
            elif step_faults >= unsettled_pages:
                settled = False
        if (not timing and not settled and round_index == warmup_rounds - 1
                and warmup_rounds < warmup + MAX_SETTLE_ROUNDS):
            warmup_rounds += 1
        round_index += 1
    return {name: failed[name] if name in failed else
            StepTimes(seconds[name], faults[name] if counts_faults else None, warmup_rounds,
                      switches[name] if counts_switches else None)
            for name in names}


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


class RatioInterval(NamedTuple):
    """A speed ratio from paired steps, with a distribution-free confidence interval.

    median: the median over rounds of (baseline step time / candidate step time),
      so > 1 means the candidate was faster.
    low, high: the sign-test interval for that median (None with too few rounds).
    confidence: the interval's exact coverage, at least the level asked for (None
      with no interval).
    rounds: the number of paired steps.
    """

    median: float
    low: float | None
    high: float | None
    confidence: float | None
    rounds: int


def paired_speed_ratio(candidate_s: Sequence[float], baseline_s: Sequence[float],
                       confidence: float = 0.95) -> RatioInterval:
    """How much faster the candidate ran than the baseline, round by round.

    `candidate_s[i]` and `baseline_s[i]` are the two steps of round i of
    `time_interleaved`, timed within seconds of each other, so their ratio
    cancels the machine's drift that a ratio of two medians keeps. The
    interval is the sign-test (binomial) interval of the median ratio: sorted
    ratios r_1..r_n, [r_k, r_(n+1-k)] with the largest k such that a
    Binomial(n, 1/2) count is below k with probability at most
    (1 - confidence) / 2. It assumes only that rounds are independent; with 20
    rounds at 95% it is [r_6, r_15] (exact coverage 95.9%); below 6 rounds
    there is none.
    """
    if len(candidate_s) != len(baseline_s):
        raise ValueError(f"paired_speed_ratio needs one candidate step per baseline step, got "
                         f"{len(candidate_s)} and {len(baseline_s)}")
    if len(candidate_s) == 0:
        raise ValueError("paired_speed_ratio of no steps")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if min(candidate_s) <= 0 or min(baseline_s) <= 0:
        raise ValueError("paired_speed_ratio needs positive step times")
    ratios = sorted(b / c for c, b in zip(candidate_s, baseline_s))
    n = len(ratios)
    tail_allowed = (1 - confidence) / 2
    below = 0.0  # P(X <= k - 1) for X ~ Binomial(n, 1/2), as k grows
    k = 0
    while True:
        below_next = below + math.comb(n, k) / 2**n  # P(X <= k)
        if below_next > tail_allowed or k + 1 > n - k:
            break
        below, k = below_next, k + 1
    median = percentile(ratios, 50)
    if k == 0:
        return RatioInterval(median, None, None, None, n)
    return RatioInterval(median, ratios[k - 1], ratios[n - k], 1 - 2 * below, n)


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
