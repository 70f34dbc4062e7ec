"""zoo.runtime: glibc keeps freed memory, so XLA's per-step scratch is not re-faulted."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from zoo import runtime

# A jitted step whose 64 MiB scratch buffer is freed after every call; prints
# the minor page faults of its last 5 calls (of 8) as JSON.
_PROBE = """
import json, resource, sys
from zoo.runtime import keep_freed_host_memory
applied = keep_freed_host_memory() if sys.argv[1] == "keep" else False
import jax, jax.numpy as jnp
x = jnp.ones((2048, 8192), jnp.float32)          # 64 MiB
step = jax.jit(lambda x: jnp.sin(jnp.cos(x) * 2.0).sum(axis=0))
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults[3:]}))
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting is glibc's malloc (Linux)")


def _probe(mode: str, **env: str) -> dict:
    variables = {k: v for k, v in os.environ.items() if k != runtime.OPT_OUT_VARIABLE}
    variables.update(XLA_FLAGS="", **env)
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=variables, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_kept_memory_is_not_faulted_in_again_on_every_step():
    pages = 64 * 2**20 // 4096
    system = _probe("system")
    kept = _probe("keep")
    assert not system["applied"] and kept["applied"]
    # Without the setting every call faults its scratch in again ...
    assert min(system["faults"]) > pages // 2, system
    # ... with it, the freed scratch is reused.
    assert max(kept["faults"]) < pages // 20, kept


@glibc_only
def test_opt_out_variable_leaves_the_allocator_alone():
    assert not _probe("keep", **{runtime.OPT_OUT_VARIABLE: "1"})["applied"]


def test_not_applied_in_this_process_unless_asked():
    # The test processes run with the system allocator: only the `zoo` script
    # and the benchmark scripts change it.
    assert runtime.host_malloc_kept() is False
