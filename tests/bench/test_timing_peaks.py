"""Percentiles, step statistics, cost-analysis parsing and the peak table."""

import numpy as np
import pytest

from zoo.bench.peaks import lookup_peak, peak_tflops
from zoo.bench import timing
from zoo.bench.timing import (flops_from_cost_analysis, percentile, summarize, time_interleaved,
                              time_steps)

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


def test_time_steps_excludes_warmup_and_rotates_inputs():
    seen = []
    samples = time_steps(lambda x: seen.append(x) or np.zeros(1), ["a", "b", "c"], warmup=2, steps=4)
    assert len(samples) == 4 and all(s >= 0 for s in samples)
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
    assert {name: len(samples) for name, samples in results.items()} == {"a": 3, "b": 3, "c": 3}
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
    assert len(results["ok"]) == 4
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
    first = np.median(time_steps(step, [0], warmup=0, steps=20))
    second = np.median(time_steps(step, [0], warmup=0, steps=20))
    both = time_interleaved({"first": (step, [0]), "second": (step, [0])}, warmup=0, steps=20)
    assert second / first > 1.15
    assert np.median(both["second"]) / np.median(both["first"]) == pytest.approx(1.0, abs=0.01)


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
