"""Zoo's benchmark harness: latency percentiles, compile time, FLOPs, MFU and
memory for any registered model on any JAX device.

    from zoo.bench import expand_configs, run_benchmarks
    configs = expand_configs(["resnet50"], batch_sizes=[1, 64], dtypes=["bfloat16"],
                             modes=["infer", "train"])
    rows = list(run_benchmarks(configs, auto_batch=True))

The command line is `zoo bench` (zoo/bench/cli.py); the protocol and the
meaning of every column are in benchmarks/README.md.
"""

from zoo.bench.peaks import lookup_peak, peak_tflops
from zoo.bench.report import ROW_KEYS, ROW_SCHEMA, check_row, markdown_table
from zoo.bench.runner import BenchConfig, expand_configs, run_benchmarks
from zoo.bench.suites import Suite, Sweep, get_suite
from zoo.bench.timing import percentile, summarize

__all__ = [
    "ROW_KEYS", "ROW_SCHEMA", "BenchConfig", "Suite", "Sweep", "check_row", "expand_configs",
    "get_suite", "lookup_peak", "markdown_table", "peak_tflops", "percentile", "run_benchmarks",
    "summarize",
]
