"""Percentiles, step statistics, cost-analysis parsing and the peak table."""

import mmap
import time

import numpy as np
import pytest
from scipy.stats import binom

from zoo.bench.peaks import lookup_peak, peak_tflops
from zoo.bench import timing
from zoo.bench.timing import (StepTimes, flops_from_cost_analysis, paired_speed_ratio,
                              percentile, summarize, time_interleaved, time_steps)

SAMPLES = [
    [5.0],
    [3.0, 1.0],
    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
    list(np.random.default_rng(0).lognormal(size=101)),
    list(np.random.default_rng(1).exponential(size=37)),
]


@pytest.mark.parametrize("samples", SAMPLES)
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_equals_numpy_linear(samples, q):
    assert percentile(samples, q) == pytest.approx(np.percentile(samples, q), rel=1e-12)


def test_percentile_known_values():
    # 1..10: rank (n-1)q/100 = 8.1 for p90 -> 9 + 0.1 * (10 - 9).
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)
    assert percentile(list(range(1, 11)), 50) == pytest.approx(5.5)
    assert percentile([4.0, 1.0, 3.0], 50) == 3.0


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\].*101"):
        percentile([1.0], 101)


@pytest.mark.parametrize("samples", SAMPLES[2:])
def test_summarize_matches_numpy_in_milliseconds(samples):
    stats = summarize(samples)
    ms = np.asarray(samples) * 1e3
    assert stats.mean_ms == pytest.approx(ms.mean())
    assert stats.std_ms == pytest.approx(ms.std(ddof=1))
    assert stats.p50_ms == pytest.approx(np.percentile(ms, 50))
    assert stats.p90_ms == pytest.approx(np.percentile(ms, 90))
    assert stats.p99_ms == pytest.approx(np.percentile(ms, 99))
    assert (stats.min_ms, stats.max_ms) == (pytest.approx(ms.min()), pytest.approx(ms.max()))


def test_summarize_one_sample_has_zero_std():
    assert summarize([0.002]).std_ms == 0.0


def test_paired_speed_ratio_is_the_median_round_ratio_with_the_sign_test_interval():
    baseline = [1.0 + i / 100 for i in range(20)]  # the candidate takes 1 s each round
    ratio = paired_speed_ratio([1.0] * 20, baseline[::-1])
    assert ratio.rounds == 20 and ratio.median == pytest.approx(1.095)
    # 20 rounds at 95%: drop 5 ratios at each end, [r_6, r_15], coverage 1 - 2 P(X <= 5).
    assert (ratio.low, ratio.high) == (pytest.approx(1.05), pytest.approx(1.14))
    assert ratio.confidence == pytest.approx(1 - 2 * binom.cdf(5, 20, 0.5))
    # The next order statistic in would fall below 95%.
    assert 1 - 2 * binom.cdf(6, 20, 0.5) < 0.95 <= ratio.confidence
    # Each round is its own pair: the candidate faster in round 0 only.
    assert paired_speed_ratio([1.0, 2.0], [2.0, 1.0]).median == pytest.approx(1.25)


@pytest.mark.parametrize("rounds", [6, 7, 10, 15, 40])
def test_paired_speed_ratio_interval_is_the_widest_cut_that_keeps_the_level(rounds):
    ratio = paired_speed_ratio([1.0] * rounds, [1.0 + i for i in range(rounds)])
    k = int(ratio.low)  # the ratios are 1..n, so r_k = k
    assert ratio.high == rounds + 1 - k
    assert ratio.confidence == pytest.approx(1 - 2 * binom.cdf(k - 1, rounds, 0.5))
    assert ratio.confidence >= 0.95 > 1 - 2 * binom.cdf(k, rounds, 0.5)


def test_paired_speed_ratio_interval_covers_the_true_median_as_often_as_it_says():
    rng = np.random.default_rng(0)
    trials, covered = 2000, 0
    for _ in range(trials):
        candidate = rng.lognormal(0.0, 0.05, size=20)
        baseline = candidate * 1.1 * rng.lognormal(0.0, 0.03, size=20)  # true median ratio 1.1
        ratio = paired_speed_ratio(candidate, baseline)
        covered += ratio.low <= 1.1 <= ratio.high
    assert covered / trials == pytest.approx(ratio.confidence, abs=0.015)


def test_paired_speed_ratio_without_an_interval_or_with_bad_input():
    few = paired_speed_ratio([1.0] * 5, [2.0] * 5)  # 2 P(X = 0) = 1/16 > 5%: no interval
    assert (few.median, few.low, few.high, few.confidence) == (2.0, None, None, None)
    with pytest.raises(ValueError, match="one candidate step per baseline step, got 3 and 2"):
        paired_speed_ratio([1.0] * 3, [1.0] * 2)
    with pytest.raises(ValueError, match="no steps"):
        paired_speed_ratio([], [])
    with pytest.raises(ValueError, match="positive"):
        paired_speed_ratio([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 95"):
        paired_speed_ratio([1.0], [1.0], confidence=95)


def test_time_steps_excludes_warmup_and_rotates_inputs():
    seen = []
    times = time_steps(lambda x: seen.append(x) or np.zeros(1), ["a", "b", "c"], warmup=2, steps=4,
                       page_faults=lambda: 0)
    assert len(times.seconds) == 4 and all(s >= 0 for s in times.seconds)
    assert times.host_page_faults == [0, 0, 0, 0] and times.warmup_steps == 2
    assert seen == ["a", "b", "c", "a", "b", "c"]
    with pytest.raises(ValueError, match="steps >= 1"):
        time_steps(lambda x: x, ["a"], warmup=0, steps=0)


def test_time_steps_raises_the_error_of_a_failing_step():
    def fails(x):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        time_steps(fails, ["a"], warmup=1, steps=2)


def test_time_interleaved_rotates_the_order_and_excludes_warmup():
    calls = []

    def run(name):
        return lambda x: calls.append((name, x)) or np.zeros(1)

    results = time_interleaved({"a": (run("a"), ["a0", "a1"]), "b": (run("b"), ["b0"]),
                                "c": (run("c"), ["c0"])}, warmup=1, steps=3)
    lengths = {name: len(times.seconds) for name, times in results.items()}
    assert lengths == {"a": 3, "b": 3, "c": 3}
    # One step of each per round, each round starting one further along.
    assert [name for name, _ in calls] == list("abc" "bca" "cab" "abc")
    assert [x for name, x in calls if name == "a"] == ["a0", "a1", "a0", "a1"]
    with pytest.raises(ValueError, match="no input buffer"):
        time_interleaved({"a": (run("a"), [])}, warmup=0, steps=1)


def test_time_interleaved_drops_a_failing_run_and_the_others_go_on():
    count = [0]

    def flaky(x):
        count[0] += 1
        if count[0] == 3:
            raise RuntimeError("third call fails")
        return np.zeros(1)

    results = time_interleaved({"ok": (lambda x: np.zeros(1), [0]), "flaky": (flaky, [0])},
                               warmup=1, steps=4)
    assert len(results["ok"].seconds) == 4
    assert isinstance(results["flaky"], RuntimeError) and count[0] == 3


def test_time_interleaved_spreads_drift_over_all_runs(monkeypatch):
    # A machine slowing down steadily: every step costs 1 s + 10 ms per step
    # run before it, on a fake clock. Two identical steps timed one after the
    # other differ by the drift; interleaved, by one step's share of it.
    clock = [0.0]
    done = [0]

    def step(x):
        clock[0] += 1.0 + 0.01 * done[0]
        done[0] += 1
        return np.zeros(1)

    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    first = np.median(time_steps(step, [0], warmup=0, steps=20).seconds)
    second = np.median(time_steps(step, [0], warmup=0, steps=20).seconds)
    both = time_interleaved({"first": (step, [0]), "second": (step, [0])}, warmup=0, steps=20)
    assert second / first > 1.15
    assert (np.median(both["second"].seconds) / np.median(both["first"].seconds)
            == pytest.approx(1.0, abs=0.01))


class FakeHeap:
    """A page-fault counter that steps fault into: `grow[i]` pages at the i-th call."""

    def __init__(self, grow):
        self.grow, self.calls, self.count = list(grow), 0, 0

    def step(self, x):
        self.count += self.grow[self.calls] if self.calls < len(self.grow) else 0
        self.calls += 1
        return np.zeros(1)


def test_warmup_goes_on_while_the_heap_grows():
    big = timing.SETTLED_PAGE_FAULT_BYTES // mmap.PAGESIZE
    # Steps 0-3 grow the heap; step 4 settles; warm-up asked: 2 steps.
    heap = FakeHeap([big, big, big, big, 10, 7, 0])
    times = time_steps(heap.step, [0], warmup=2, steps=3, page_faults=lambda: heap.count)
    assert times.warmup_steps == 5          # 2 asked + 3 more: the last warm-up step faulted 10
    assert times.host_page_faults == [7, 0, 0] and heap.calls == 8
    assert times.total_host_page_faults == 7
    # A step just under the threshold counts as settled.
    heap = FakeHeap([big, big - 1])
    times = time_steps(heap.step, [0], warmup=1, steps=2, page_faults=lambda: heap.count)
    assert times.warmup_steps == 2 and times.host_page_faults == [0, 0]


def test_warmup_settling_is_capped_and_off_without_warmup():
    big = timing.SETTLED_PAGE_FAULT_BYTES // mmap.PAGESIZE
    heap = FakeHeap([big] * 100)
    times = time_steps(heap.step, [0], warmup=1, steps=2, page_faults=lambda: heap.count)
    assert times.warmup_steps == 1 + timing.MAX_SETTLE_ROUNDS
    assert times.host_page_faults == [big, big]          # recorded, not hidden
    heap = FakeHeap([big] * 3)
    times = time_steps(heap.step, [0], warmup=0, steps=3, page_faults=lambda: heap.count)
    assert times.warmup_steps == 0 and times.host_page_faults == [big] * 3
    assert StepTimes([0.1], None, 0).total_host_page_faults is None


def test_interleaved_runs_share_the_extra_warmup_rounds():
    big = timing.SETTLED_PAGE_FAULT_BYTES // mmap.PAGESIZE
    counter = [0]
    grows = {"a": [0, 0, 0], "b": [big, big, 0]}
    calls = {"a": 0, "b": 0}

    def run(name):
        def step(x):
            n = calls[name]
            counter[0] += grows[name][n] if n < len(grows[name]) else 0
            calls[name] += 1
            return np.zeros(1)
        return step

    results = time_interleaved({"a": (run("a"), [0]), "b": (run("b"), [0])}, warmup=1, steps=2,
                               page_faults=lambda: counter[0])
    assert results["a"].warmup_steps == results["b"].warmup_steps == 3
    assert calls == {"a": 5, "b": 5}


def test_context_switches_are_counted_per_timed_step():
    counter = [0]

    def step(x):
        counter[0] += 10 if x == "slow" else 1   # "slow" blocks and is woken 10 times
        return np.zeros(1)

    times = time_steps(step, ["fast", "slow"], warmup=1, steps=3, page_faults=lambda: 0,
                       context_switches=lambda: counter[0])
    # Warm-up ran "fast"; the timed steps "slow", "fast", "slow".
    assert times.context_switches == [10, 1, 10] and times.total_context_switches == 21
    uncounted = time_steps(step, ["fast"], warmup=0, steps=2, context_switches=lambda: None)
    assert uncounted.context_switches is None and uncounted.total_context_switches is None


def test_host_context_switches_counts_a_thread_that_blocks():
    if timing.host_context_switches() is None:
        pytest.skip("this platform does not count context switches")
    before = timing.host_context_switches()
    for _ in range(5):
        time.sleep(0.002)   # the thread blocks: one voluntary switch each
    assert timing.host_context_switches() - before >= 5


def test_host_page_faults_counts_fresh_memory_touched():
    if timing.host_page_faults() is None:
        pytest.skip("this platform does not count page faults")
    size = 16 << 20
    region = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)   # one fault per small page
    page = mmap.PAGESIZE
    before = timing.host_page_faults()
    for offset in range(0, size, page):
        region[offset] = 1
    after = timing.host_page_faults()
    region.close()
    assert after - before >= size // page // 2


def test_flops_from_cost_analysis_dict_list_and_missing():
    assert flops_from_cost_analysis({"flops": 12.0, "bytes accessed": 3.0}) == 12.0
    assert flops_from_cost_analysis([{"flops": 2.0}, {"flops": 3.0}]) == 5.0
    assert flops_from_cost_analysis(None) is None
    assert flops_from_cost_analysis({"bytes accessed": 3.0}) is None


@pytest.mark.parametrize("kind, name", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A10G", "A10G"),
    ("NVIDIA L4", "L4"),
    ("Tesla V100-SXM2-16GB", "V100 SXM2"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("TPU v4", "TPU v4"),
    ("TPU v5 lite", "TPU v5e"),
    ("TPU v5", "TPU v5p"),
    ("TPU v6 lite", "TPU v6e"),
])
def test_peak_table_matches_device_kinds(kind, name):
    assert lookup_peak(kind).name == name


def test_peak_unknown_devices_have_none():
    assert lookup_peak("NVIDIA L40S") is None  # not the L4
    assert peak_tflops("cpu", "float32") is None
    assert peak_tflops("Tesla V100-SXM2-16GB", "bfloat16") is None  # no bf16 unit


def test_peak_values_and_override():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert peak_tflops("NVIDIA A100-SXM4-40GB", "float32") == 156.0
    assert peak_tflops("cpu", "float32", override=1.5) == 1.5
    with pytest.raises(ValueError, match="dtype must be one of"):
        peak_tflops("cpu", "float16")
    with pytest.raises(ValueError, match="positive"):
        peak_tflops("cpu", "float32", override=0.0)


def test_float32_peak_holds_only_at_the_precision_it_was_written_for():
    h100, tpu = "NVIDIA H100 80GB HBM3", "TPU v4"
    # XLA's default and TF32 by name on an NVIDIA GPU: the TF32 column.
    for precision in ("default", "tensorfloat32", "high"):
        assert peak_tflops(h100, "float32", matmul_precision=precision) == 494.7
    # Full float32 (CUDA cores, or 6 bf16 passes on a TPU): not in the table.
    for precision in ("highest", "float32", "bfloat16"):
        assert peak_tflops(h100, "float32", matmul_precision=precision) is None
    assert peak_tflops(tpu, "float32", matmul_precision="default") == 275.0
    assert peak_tflops(tpu, "float32", matmul_precision="tensorfloat32") is None  # 3 passes
    # bfloat16 products do not change with it; a given peak always wins.
    assert peak_tflops(h100, "bfloat16", matmul_precision="highest") == 989.4
    assert peak_tflops(h100, "float32", override=60.0, matmul_precision="highest") == 60.0
    # Whatever the process was given (JAX_DEFAULT_MATMUL_PRECISION may name a
    # dot algorithm): unknown, so no peak, and no error that would stop a run.
    assert peak_tflops(h100, "float32", matmul_precision="BF16_BF16_F32_X3") is None


def test_synthetic_variables_match_init_shapes():
    import jax

    from zoo.registry import synthetic_variables
    from zoo.registry import create_model, init_shapes

    shapes = init_shapes(create_model("simple_cnn"), (1, 28, 28, 1))
    values = synthetic_variables(shapes)
    assert jax.tree.structure(values) == jax.tree.structure(shapes)
    for value, shape in zip(jax.tree.leaves(values), jax.tree.leaves(shapes)):
        assert (value.shape, value.dtype) == (shape.shape, shape.dtype)
    params = values["params"]
    assert not params["conv1"]["bias"].any()
    # Kernels have std 1/sqrt(fan-in): 3*3*1 for conv1, 3*3*32 for conv2.
    assert abs(params["conv2"]["kernel"].std() * np.sqrt(288) - 1) < 0.05
