"""zoo.runtime: glibc keeps freed memory, so a freed large block is not re-faulted."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys

import numpy as np
import pytest

from zoo import runtime

# Frees and re-allocates a block of argv[2] bytes (the shape of XLA's per-step
# scratch) argv[3] times with libc's malloc and prints the minor page faults
# of touching it each time (JSON). Plain glibc returns blocks that large to
# the kernel on free.
_PROBE = """
import ctypes, ctypes.util, json, resource, sys
from zoo.runtime import keep_freed_host_memory
applied = keep_freed_host_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, faults = int(sys.argv[2]), []
for _ in range(int(sys.argv[3])):
    block = libc.malloc(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(block)
print(json.dumps({"applied": applied, "faults": faults[1:]}))
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting is glibc's malloc (Linux)")


def _probe(mode: str, size: int = 64 * 2**20, repeats: int = 6, **env: str) -> dict:
    variables = {k: v for k, v in os.environ.items() if k != runtime.OPT_OUT_VARIABLE}
    variables.update(XLA_FLAGS="", **env)
    out = subprocess.run([sys.executable, "-c", _PROBE, mode, str(size), str(repeats)],
                         env=variables, check=True, capture_output=True, text=True,
                         timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_kept_memory_is_not_faulted_in_again():
    pages = 64 * 2**20 // 4096
    system = _probe("system")
    kept = _probe("keep")
    assert not system["applied"] and kept["applied"]
    # Without the setting every allocation faults its pages in again ...
    assert min(system["faults"]) > pages // 2, system
    # ... with it, the freed block is reused.
    assert max(kept["faults"]) < pages // 20, kept


@glibc_only
def test_a_freed_block_above_2_gib_is_kept_too():
    # A convnext_tiny training step at batch 8 frees 4.8 GB of scratch at once;
    # a trim threshold (at most 2 GiB - 1 through mallopt) would hand it back to
    # the kernel every step. 2.5 GiB here: trimming must be off altogether.
    size = 5 * 2**29
    kept = _probe("keep", size=size, repeats=3)
    assert kept["applied"]
    assert max(kept["faults"]) < size // 4096 // 20, kept


@glibc_only
def test_the_documented_environment_variables_keep_it_too():
    # What the README and the late-call warning tell users to set instead.
    size = 5 * 2**29
    env = dict(pair.split("=") for pair in runtime.ENVIRONMENT_EQUIVALENT.split())
    kept = _probe("system", size=size, repeats=3, **env)
    assert max(kept["faults"]) < size // 4096 // 20, kept


@glibc_only
def test_opt_out_variable_leaves_the_allocator_alone():
    assert not _probe("keep", **{runtime.OPT_OUT_VARIABLE: "1"})["applied"]


def test_not_applied_in_this_process_unless_asked():
    # The test processes run with the system allocator: only the `zoo` script
    # and the benchmark scripts change it.
    assert runtime.host_malloc_kept() is False


def test_the_zoo_command_can_set_the_allocator_before_jax_is_imported():
    # glibc fixes its arena limit when a second thread first allocates, and
    # importing JAX starts a thread: `zoo.cli` and `zoo.runtime` must not
    # import it (zoo/__init__.py loads the registry lazily).
    code = ("import sys, zoo.cli, zoo.runtime; print('jax' in sys.modules); "
            "import zoo; zoo.list_models(); print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=300).stdout.split()
    assert out == ["False", "True"]


def test_readme_and_docstring_give_the_same_environment_variables():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert runtime.ENVIRONMENT_EQUIVALENT in " ".join(readme.split())
    assert runtime.ENVIRONMENT_EQUIVALENT in runtime.__doc__


# --- compiler options -------------------------------------------------------

def _conv_64_to_64():
    """A jitted 3x3 64 -> 64 NHWC convolution and its arguments (batch 2, 16x16)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 16, 16, 64)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 64, 64)) * 0.05, jnp.float32)

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.jit(conv), (x, w)


def test_cpu_steps_get_eigen_convolutions_and_other_platforms_nothing(monkeypatch):
    monkeypatch.delenv(runtime.XLA_DEFAULTS_VARIABLE, raising=False)
    assert runtime.compiler_options("cpu") == runtime.CPU_COMPILER_OPTIONS
    assert runtime.compiler_options("cpu") is not runtime.CPU_COMPILER_OPTIONS  # a copy
    assert runtime.compiler_options("gpu") == runtime.compiler_options("tpu") == {}
    assert runtime.compiler_options_text({}) == ""
    assert runtime.compiler_options_text({"b": "2", "a": "1"}) == "a=1,b=2"


def test_the_options_move_convolutions_out_of_ynnpack_with_the_same_result():
    # What the option is for (benchmarks/NOTES.md entry 13): if a jaxlib stops
    # fusing convolutions into YNNPACK, or the option stops moving them out,
    # this fails and the measurement behind it needs redoing.
    from tests.xla_helpers import ynn_fused_convolutions

    conv, args = _conv_64_to_64()
    lowered = conv.lower(*args)
    default = lowered.compile()
    zoo_options = lowered.compile(compiler_options=runtime.compiler_options("cpu"))
    assert ynn_fused_convolutions(default.as_text()) == 1
    assert ynn_fused_convolutions(zoo_options.as_text()) == 0
    assert " convolution(" in zoo_options.as_text()
    np.testing.assert_allclose(np.asarray(zoo_options(*args)), np.asarray(default(*args)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variable, value, expected", [
    (runtime.XLA_DEFAULTS_VARIABLE, "1", {}),
    (runtime.XLA_DEFAULTS_VARIABLE, "0", runtime.CPU_COMPILER_OPTIONS),
    ("XLA_FLAGS", f"--{runtime.YNN_FUSION_OPTION}=+individual_convolution", {}),
])
def test_opting_out_or_setting_the_flag_yourself_keeps_xla_defaults(monkeypatch, variable,
                                                                     value, expected):
    monkeypatch.setenv(variable, value)
    assert runtime.compiler_options("cpu") == expected


def test_an_option_this_jaxlib_rejects_warns_and_falls_back_to_defaults(monkeypatch):
    monkeypatch.setattr(runtime, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": "1"})
    with pytest.warns(RuntimeWarning, match="does not accept Zoo's CPU compiler options"):
        assert runtime.compiler_options("cpu") == {}
