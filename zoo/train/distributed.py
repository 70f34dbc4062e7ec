"""Multi-process start-up: `jax.distributed.initialize` when several processes run.

The number of processes comes from the flags, else from the environment:
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or SLURM
(SLURM_NTASKS > 1, where JAX detects the rest itself). One process (the
default) initialises nothing. After initialisation `jax.devices()` lists the
devices of every process, the "data" mesh spans them all, and each process
feeds only its own shard of every batch (`jax.process_index()` of
`jax.process_count()`).
"""

from __future__ import annotations

import os

import jax


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from error


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Initialises JAX's multi-controller runtime when there are several processes.

    Args:
      coordinator_address: "host:port" of process 0 (flag or JAX_COORDINATOR_ADDRESS).
      num_processes: total processes (flag or JAX_NUM_PROCESSES).
      process_id: this process, 0-based (flag or JAX_PROCESS_ID).

    Returns:
      True if `jax.distributed.initialize` was called.
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    slurm_tasks = _env_int("SLURM_NTASKS")
    if num_processes is None and slurm_tasks is not None and slurm_tasks > 1:
        jax.distributed.initialize()  # JAX reads the SLURM variables itself.
        return True
    if num_processes is None or num_processes <= 1:
        return False
    if coordinator_address is None or process_id is None:
        raise ValueError(
            f"{num_processes} processes need a coordinator address and a process id; got "
            f"coordinator_address={coordinator_address!r}, process_id={process_id!r}"
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    # CPU devices of different processes talk through gloo (no effect on GPU/TPU).
    # Asking for the backend here would initialise it too early, so set it always.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True
