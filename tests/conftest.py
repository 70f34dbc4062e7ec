"""Test set-up: 8 virtual CPU devices, so multi-device code runs on any machine.

XLA reads XLA_FLAGS once, when jax first initialises a backend, so this must
run before anything imports jax.
"""

import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
# Tests must never reach the network (TFDS, hubs): fail fast instead of hanging.
os.environ.setdefault("TFDS_DISABLE_DOWNLOAD", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")
