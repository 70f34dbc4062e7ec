"""The environment a benchmark ran in, recorded with every row (no hostname)."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from typing import Any


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def environment() -> dict[str, Any]:
    """Backend, device kind and count, library versions and XLA_FLAGS.

    Keys: backend, device_kind, num_devices, jax_version, jaxlib_version,
    flax_version, optax_version, python_version, xla_flags, compilation_cache
    (whether JAX's persistent compilation cache is on: compile_s may then be
    a cache read, not a compile), host_malloc ("kept" when
    `zoo.runtime.keep_freed_host_memory` is in effect, else "system": on CPU
    it changes step times). Nothing that names
    the machine (hostname, user, paths) is recorded.
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
    }
