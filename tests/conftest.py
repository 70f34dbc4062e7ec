"""Test set-up: 8 virtual CPU devices, so multi-device code runs on any machine.

XLA reads XLA_FLAGS once, when jax first initialises a backend, so this must
run before anything imports jax.
"""

import os
import tempfile

# 8 CPU devices; and XLA's cheapest CPU compilation, since on the tiny inputs
# the tests use compiling, not running, is the cost: the -O0 back-end halves
# it (resnet50 forward+backward: 52 s -> 26 s of CPU), and the classic fusion
# emitters halve it again (densenet121 backward: 33 s -> 18 s of compile CPU).
_FLAGS = (
    "--xla_force_host_platform_device_count=8",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false",
)
_existing = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join([_existing, *(f for f in _FLAGS if f not in _existing)]).strip()
# Tests must never reach the network (TFDS, hubs): fail fast instead of hanging.
os.environ.setdefault("TFDS_DISABLE_DOWNLOAD", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")
# fit() turns on JAX's persistent compilation cache; keep the tests' entries out
# of the user's ~/.cache (a fresh directory per test process, shared with the
# subprocesses it starts).
os.environ.setdefault("ZOO_COMPILATION_CACHE", tempfile.mkdtemp(prefix="zoo-test-jax-cache-"))


def pytest_collection_modifyitems(config, items):
    """Slow tests first (longest-processing-time-first scheduling): with two
    xdist workers the run then ends on short tests spread over both workers,
    not on one long compile while the other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
