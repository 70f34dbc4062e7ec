"""Test set-up: 8 virtual CPU devices, so multi-device code runs on any machine.

XLA reads XLA_FLAGS once, when jax first initialises a backend, so this must
run before anything imports jax.
"""

import os
import tempfile

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
# Tests must never reach the network (TFDS, hubs): fail fast instead of hanging.
os.environ.setdefault("TFDS_DISABLE_DOWNLOAD", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")
# fit() turns on JAX's persistent compilation cache; keep the tests' entries out
# of the user's ~/.cache (a fresh directory per test process, shared with the
# subprocesses it starts).
os.environ.setdefault("ZOO_COMPILATION_CACHE", tempfile.mkdtemp(prefix="zoo-test-jax-cache-"))
