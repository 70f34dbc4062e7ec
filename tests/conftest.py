"""Test set-up: 8 virtual CPU devices, so multi-device code runs on any machine.

XLA reads XLA_FLAGS once, when jax first initialises a backend, so this must
run before anything imports jax.
"""

import atexit
import os
import shutil
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


def _private_compilation_cache() -> None:
    """fit() turns on JAX's persistent compilation cache: keep the tests' entries
    out of the user's ~/.cache, in a fresh directory that the xdist workers and
    subprocesses inherit through the environment. The process that made it
    removes it when it exits (after those children): a run leaves about 150 MB
    there, and a machine that runs the suite often would otherwise fill its disk
    (one did, and CI's install then failed for want of space)."""
    if "ZOO_COMPILATION_CACHE" in os.environ:
        return  # the user's choice, or a parent test process's directory: not ours
    directory = tempfile.mkdtemp(prefix="zoo-test-jax-cache-")
    os.environ["ZOO_COMPILATION_CACHE"] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


_private_compilation_cache()


def pytest_collection_modifyitems(config, items):
    """Slow tests first (longest-processing-time-first scheduling): with two
    xdist workers the run then ends on short tests spread over both workers,
    not on one long compile while the other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
