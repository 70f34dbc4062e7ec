"""Settings for fast steps on XLA's CPU backend: the host allocator
(process-wide) and the XLA options Zoo compiles its steps with.

## The host allocator

XLA's CPU client allocates each execution's scratch memory (1.5 GB for a
resnet50 training step at batch 8) with `malloc` and frees it when the step
ends. glibc hands blocks that large straight back to the kernel (`munmap`),
so the next step takes a page fault on every 4 KiB page of its scratch
again: 386,000 faults per resnet50 step, about 0.4 s of a 2.4 s step on a
2-core VM (benchmarks/NOTES.md, entry 4). PyTorch's eager ops allocate
tensors one at a time, each small enough for glibc to keep.

`keep_freed_host_memory()` tells glibc to keep freed memory mapped (no
`mmap` for large blocks, one arena, never trim the heap), so from the third
step on the scratch is reused without faults. The cost: the process keeps its
peak heap until it exits. Trimming must be off, not just rare: the largest
threshold `mallopt` takes is 2 GiB - 1, and a convnext_tiny training step at
batch 8 frees 4.8 GB at once; with that threshold it re-faulted 1.17 million
pages per step, 4.1 s against 2.7 s with trimming off (benchmarks/NOTES.md,
entry 8). The `zoo` command and the benchmark
scripts call it before anything imports JAX (`import zoo` does not import
JAX until a model is asked for); library users call it themselves, before
importing jax, or set the equivalent environment variables before Python
starts:

    MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1

Set `ZOO_SYSTEM_MALLOC=1` to leave the allocator alone.

## Compiler options

XLA's CPU backend hands every 2-D convolution to YNNPACK by default. On a
2-core AVX-512 host (Zen 4) YNNPACK runs the convolutions with 64 output
channels on one core (resnet50's stem and its first stage: 20.8 and 18.7 ms
for the 7x7/2 RGB stem and a 56x56 3x3 64 -> 64 conv at batch 8, against 17.0
and 11.2 ms in XLA's own Eigen convolution, and within 3% on the wider
ones). `compiler_options(platform)` gives the options every step Zoo compiles
itself is compiled with: on CPU, YNNPACK keeps the matrix products and
reductions and convolutions go to Eigen (resnet50 inference at batch 8:
425 -> 384 ms; densenet121, inception_v3 and resnet18 20-25% faster; in
training, the large stride-1 convolutions that `zoo.layers.cpu_conv` leaves
to XLA run in Eigen too, gradients included; benchmarks/NOTES.md, entry 13). Options
are per compilation, not process-wide: a function the user jits
themselves keeps XLA's defaults unless they pass
`jax.jit(f, compiler_options=zoo.runtime.compiler_options("cpu"))`.

They are left out (XLA's defaults) when `ZOO_XLA_DEFAULTS` is set to a
non-empty value other than "0", when XLA_FLAGS already sets the option, and
when this jaxlib does not accept it (a RuntimeWarning says so).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import sys
import warnings

# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# -1 turns trimming off (glibc's mallopt(3): "Setting M_TRIM_THRESHOLD to -1
# disables trimming completely"); a positive int would cap it at 2 GiB - 1.
NEVER_TRIM = -1

OPT_OUT_VARIABLE = "ZOO_SYSTEM_MALLOC"
# The same three settings as glibc reads them from the environment at start-up.
ENVIRONMENT_EQUIVALENT = "MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1"

_applied = False


def host_malloc_kept() -> bool:
    """Whether `keep_freed_host_memory` has changed this process's allocator."""
    return _applied


def keep_freed_host_memory() -> bool:
    """Make glibc keep freed memory, so XLA's per-step scratch is not re-faulted.

    Call it before anything imports JAX: importing JAX starts a thread, and
    glibc fixes its arena limit the first time a second thread allocates
    (a RuntimeWarning says when JAX was imported first). Idempotent.

    Returns:
      True if the allocator now keeps freed memory; False where this does not
      apply (not Linux with glibc) or `ZOO_SYSTEM_MALLOC` is set to a
      non-empty value other than "0".
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(OPT_OUT_VARIABLE, "0") not in ("", "0"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc_path = ctypes.util.find_library("c")
    if libc_path is None:
        return False
    if "jax" in sys.modules:
        warnings.warn(
            "zoo.runtime.keep_freed_host_memory() called after JAX was imported: importing "
            "JAX starts a thread, and glibc may already have fixed its malloc arena limit, "
            "so XLA's step scratch may still be page-faulted every step. Call it before "
            f"importing jax or anything that imports it, or set {ENVIRONMENT_EQUIVALENT} "
            "before Python starts.",
            RuntimeWarning, stacklevel=2)
    mallopt = ctypes.CDLL(libc_path).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; all three or the setting is not coherent.
    ok = all(mallopt(param, value) == 1 for param, value in (
        (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM)))
    _applied = ok
    return ok


# XLA's default YNNPACK fusion types (jaxlib 0.10.2) are individual dots,
# individual convolutions and reductions; this keeps the first and the last.
YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_FUSIONS_WITHOUT_CONVOLUTION = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
CPU_COMPILER_OPTIONS: dict[str, str] = {YNN_FUSION_OPTION: YNN_FUSIONS_WITHOUT_CONVOLUTION}
XLA_DEFAULTS_VARIABLE = "ZOO_XLA_DEFAULTS"


def compiler_options(platform: str) -> dict[str, str]:
    """XLA compile options for a Zoo step on devices of `platform` ("cpu",
    "gpu", "tpu", ...): `CPU_COMPILER_OPTIONS` on CPU, else none (see the
    module docstring). A new dict each call; pass it to
    `jax.jit(..., compiler_options=...)` or `lowered.compile(compiler_options=...)`.
    """
    if platform != "cpu":
        return {}
    if os.environ.get(XLA_DEFAULTS_VARIABLE, "0") not in ("", "0"):
        return {}
    if YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}  # the user's own choice stands
    if not _accepted_on_cpu(tuple(sorted(CPU_COMPILER_OPTIONS.items()))):
        return {}
    return dict(CPU_COMPILER_OPTIONS)


def compiler_options_text(options: dict[str, str]) -> str:
    """"key=value,key=value" (sorted), "" for none: how reports record them."""
    return ",".join(f"{key}={value}" for key, value in sorted(options.items()))


@functools.cache
def _accepted_on_cpu(options: tuple[tuple[str, str], ...]) -> bool:
    """Whether this jaxlib's XLA compiles a trivial CPU function with `options`
    (an option it does not know, or a value it does not take, is an error)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import SingleDeviceSharding

    probe = jax.ShapeDtypeStruct((1,), jnp.float32,
                                 sharding=SingleDeviceSharding(jax.devices("cpu")[0]))
    try:
        jax.jit(lambda x: x + 1).lower(probe).compile(compiler_options=dict(options))
    except jax.errors.JaxRuntimeError as error:
        warnings.warn(
            f"this jaxlib does not accept Zoo's CPU compiler options {dict(options)} "
            f"({str(error).splitlines()[0]}); compiling with XLA's defaults, which may "
            "be slower (zoo.runtime, benchmarks/NOTES.md entry 13).",
            RuntimeWarning, stacklevel=3)
        return False
    return True
