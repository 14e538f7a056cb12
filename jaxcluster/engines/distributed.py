"""One simulation over many processes: `jax.distributed`, as under `srun` (one process per GPU).

Every process runs the same program on the same arguments; `jax.devices()`
then lists the devices of all processes, a `SlabDecomposition` over them
spreads one box across hosts, and the collectives (`ppermute`,
`all_to_all`, `psum`) cross process boundaries (NCCL on GPUs, gloo on CPUs).
This module is the edge where that is set up; the physics never sees it.

* `initialize` starts `jax.distributed`: with no arguments JAX detects the
  cluster itself (SLURM's ``SLURM_*`` variables under ``srun``, Open MPI's
  ``OMPI_*`` under ``mpirun``); or give the coordinator ``host:port``, the
  number of processes and this one's id explicitly (what the tests do on
  localhost). On CPU it selects gloo collectives, the implementation that
  crosses processes.
* `is_writer`: only process 0 writes files and prints (`writer_print`).
* `gather`: a sharded array, whole, as numpy on every process (for small
  outputs: maps, spectra, catalogues; never the particles of a large box).
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import numpy as np

__all__ = ["initialize", "is_writer", "writer_print", "gather", "add_distributed_options", "initialize_from_args"]


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: list[int] | None = None,
    timeout_s: int = 300,
) -> None:
    """Start `jax.distributed` before any JAX computation; a no-op if it is already running.

    Args:
        coordinator: ``host:port`` of process 0's coordinator; None: auto-detect (SLURM, Open MPI).
        num_processes: total number of processes, ≥ 1; None: auto-detect.
        process_id: this process's id in [0, num_processes); None: auto-detect.
        local_device_ids: the local devices this process uses; None: all (or JAX's cluster default).
        timeout_s: how long to wait for all processes to join [s], > 0.

    Raises:
        ValueError: an explicit setting out of range, or only some of the three given.
    """
    explicit = [coordinator, num_processes, process_id]
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ValueError("coordinator, num_processes and process_id must be given together (or none, to auto-detect)")
    if num_processes is not None:
        if not isinstance(num_processes, int) or num_processes < 1:
            raise ValueError(f"num_processes = {num_processes!r} is outside its allowed range: an integer >= 1")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(f"process_id = {process_id!r} is outside its allowed range [0, {num_processes - 1}]")
        if ":" not in coordinator:
            raise ValueError(f"coordinator = {coordinator!r} must be host:port")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s = {timeout_s} is outside its allowed range (0, inf) s")
    if jax.distributed.is_initialized():
        return
    # CPU devices of different processes talk through gloo (the default "none" cannot cross processes).
    # Set before the backend starts; harmless on GPU hosts, whose collectives are NCCL.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids, initialization_timeout=timeout_s)


def is_writer() -> bool:
    """Whether this process writes files and prints: process 0 (or the only one)."""
    return jax.process_index() == 0


def writer_print(*args: Any, **kwargs: Any) -> None:
    """`print` on process 0 only."""
    if is_writer():
        print(*args, **kwargs)


def gather(x: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-process) sharded array as numpy, on every process."""
    if jax.process_count() == 1 or getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def add_distributed_options(parser: argparse.ArgumentParser) -> None:
    """The `--distributed` options shared by `jaxcluster run` and `jaxcluster simulate`."""
    g = parser.add_argument_group("one simulation over several processes (jax.distributed)")
    g.add_argument("--distributed", action="store_true",
                   help="start jax.distributed and decompose each box over the devices of all processes; with no "
                   "other option JAX detects SLURM (srun) or Open MPI (mpirun)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="coordinator address (process 0), with --num-processes and --process-id")
    g.add_argument("--num-processes", type=int, default=None, metavar="N", help="total number of processes")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's id, in [0, N)")
    g.add_argument("--halo", type=int, default=None, metavar="CELLS",
                   help="halo of the slab or pencil decomposition [mesh cells]; default: 6 σ of the linear-theory "
                   "displacement (nbody.domain.halo_for_box)")


def initialize_from_args(args: argparse.Namespace) -> bool:
    """Start `jax.distributed` if `--distributed` was given; returns whether it was."""
    explicit = [args.coordinator, args.num_processes, args.process_id]
    if not args.distributed:
        if any(v is not None for v in explicit):
            raise ValueError("--coordinator, --num-processes and --process-id need --distributed")
        return False
    initialize(args.coordinator, args.num_processes, args.process_id)
    return True
