"""The environment a benchmark ran in, recorded with every row (no hostname)."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from typing import Any


# Vector extensions, widest first: the first one the CPU has names its SIMD width.
_VECTOR_FLAGS = ("avx512f", "avx2", "avx", "sse4_2", "sve", "asimd", "neon")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's `key: value` fields of /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def host_cpu(cpuinfo: str | None = None) -> dict[str, Any]:
    """The host CPU: what CPU-backend timings depend on.

    Keys: host_cpu (the model name, with x86's family/model numbers when the
    name alone is generic: "AMD EPYC" covers several generations),
    host_cpu_vector (the widest vector extension it has, e.g. "avx512f",
    "avx2", "asimd"; None if unknown) and host_cpu_cores (cores this process
    may run on). Read from /proc/cpuinfo on Linux (`cpuinfo` overrides it, for
    tests), `platform` elsewhere; never raises.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields = _cpuinfo_fields(cpuinfo)
    name = (fields.get("model name") or fields.get("Model") or fields.get("Hardware")
            or platform.processor() or platform.machine() or "unknown")
    if "cpu family" in fields and "model" in fields:
        name = f"{name} (family {fields['cpu family']}, model {fields['model']})"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vector = next((flag for flag in _VECTOR_FLAGS if flag in flags), None)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 0
    return {"host_cpu": name, "host_cpu_vector": vector, "host_cpu_cores": cores}


@functools.cache
def environment() -> dict[str, Any]:
    """Backend, device kind and count, library versions and XLA_FLAGS.

    Keys: backend, device_kind, num_devices, jax_version, jaxlib_version,
    flax_version, optax_version, python_version, xla_flags, compilation_cache
    (whether JAX's persistent compilation cache is on: compile_s may then be
    a cache read, not a compile), host_malloc ("kept" when
    `zoo.runtime.keep_freed_host_memory` is in effect, else "system": on CPU
    it changes step times), and the host CPU (`host_cpu`: model, widest
    vector extension, usable cores; on the CPU backend it is the device).
    Nothing that names the machine (hostname, user, paths) is recorded.
    """
    import jax

    from zoo.runtime import host_malloc_kept

    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
        "jaxlib_version": _version("jaxlib"),
        "flax_version": _version("flax"),
        "optax_version": _version("optax"),
        "python_version": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compilation_cache": bool(jax.config.jax_compilation_cache_dir),
        "host_malloc": "kept" if host_malloc_kept() else "system",
        **host_cpu(),
    }
