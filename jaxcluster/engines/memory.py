"""Up-front memory checks: refuse at once a job that cannot fit, instead of grinding for minutes into an OOM.

A survey, a dataset chunk or a training set too large for the machine used
to run for minutes and die with an out-of-memory error (or an internal int32
overflow); the commands now estimate what they need before starting and
refuse with the estimate and the limit:

    estimate = estimate_survey_bytes(config)
    check_memory(estimate, "the survey simulation")   # MemoryEstimateError if it cannot fit

The limit is the memory available now (``MemAvailable`` of ``/proc/meminfo``,
else the physical memory from `os.sysconf`), capped by the cgroup limit of a
container or SLURM job (``memory.max`` / ``memory.limit_in_bytes``) and, when
JAX's default backend is an accelerator, by that device's memory
(``bytes_limit`` of `jax.Device.memory_stats`). The estimates are rough (within
a factor of about 2, see each function); a job just above the limit may still
fit, so every command that checks has ``--no-memory-check``, and setting the
environment variable ``JAXCLUSTER_NO_MEMORY_CHECK=1`` switches every check off
(for library callers and for commands without the flag).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "MemoryEstimateError",
    "available_memory_bytes",
    "estimate_survey_bytes",
    "estimate_dataset_chunk_bytes",
    "estimate_training_bytes",
    "check_memory",
    "format_bytes",
]

ENV_OFF = "JAXCLUSTER_NO_MEMORY_CHECK"

# Calibration of `estimate_survey_bytes` (measured peak RSS, jit-compiled `simulate_xod` on the CPU, float32,
# 2-core x86 machine; see its docstring): the fixed part (JAX, XLA's compiled programs, eLDL, tables) and the
# bytes per voxel of the largest box and per map pixel.
_SURVEY_BASE_BYTES = 1.0e9
_SURVEY_BYTES_PER_VOXEL = 500.0
_SURVEY_BYTES_PER_PIXEL = 32.0


class MemoryEstimateError(ValueError):
    """A job whose memory estimate exceeds the memory available (a `ValueError`: the commands print it in one line)."""


def format_bytes(n: int | float) -> str:
    """``1.5 GiB``-style size."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} TiB"  # pragma: no cover


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit() -> int | None:
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(p).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            return int(text)
    return None


def _host_memory() -> tuple[int, str]:
    avail = _meminfo_available()
    source = "MemAvailable"
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            source = "physical memory"
        except (ValueError, OSError, AttributeError):
            return 0, "unknown"
    cg = _cgroup_limit()
    if cg is not None and cg < avail:
        return cg, "the cgroup's memory limit"
    return avail, source


def _device_memory() -> int | None:
    """Memory of JAX's first accelerator (None on the CPU or when unknown); imports jax only if already imported."""
    import sys

    if "jax" not in sys.modules:
        return None
    import jax

    try:
        dev = jax.devices()[0]
        if dev.platform == "cpu":
            return None
        stats = dev.memory_stats() or {}
        return int(stats["bytes_limit"]) if "bytes_limit" in stats else None
    except Exception:  # noqa: BLE001  # no stats on this backend: no device limit
        return None


def available_memory_bytes() -> tuple[int, str]:
    """(bytes, where the number comes from): the memory a job may use now.

    The host's available memory (``MemAvailable``; `os.sysconf` physical memory
    where /proc is absent), capped by a cgroup limit, and by the accelerator's
    memory when JAX runs on one (the arrays live there). 0 if unknown.
    """
    host, source = _host_memory()
    dev = _device_memory()
    if dev is not None and (host == 0 or dev < host):
        return dev, "the accelerator's memory (jax memory_stats bytes_limit)"
    return host, source


def check_memory(estimate: int | float, what: str, *, limit: int | float | None = None, enabled: bool = True,
                 flag: str = "--no-memory-check") -> None:
    """Refuse a job whose estimated memory exceeds the limit, naming both.

    Args:
        estimate: the job's estimated peak memory [bytes].
        what: the job, for the message ("the survey of 4 deg² in 12 boxes of 150² × 61 voxels").
        limit: the memory allowed [bytes] (default `available_memory_bytes`).
        enabled: False skips the check (the commands' ``--no-memory-check``); so does the
            environment variable ``JAXCLUSTER_NO_MEMORY_CHECK=1``.
        flag: the override the message suggests.

    Raises:
        MemoryEstimateError: the estimate is larger than the limit.
    """
    if not enabled or os.environ.get(ENV_OFF, "").strip() not in ("", "0"):
        return
    source = "the given limit"
    if limit is None:
        limit, source = available_memory_bytes()
        if limit <= 0:
            return  # unknown: nothing to check against
    if not math.isfinite(float(estimate)) or estimate > limit:
        raise MemoryEstimateError(
            f"{what} needs about {format_bytes(estimate)} of memory (rough estimate), more than the "
            f"{format_bytes(limit)} available ({source}); make it smaller (fewer or coarser cells, a smaller "
            f"area, chunk or batch), or pass {flag} (or set {ENV_OFF}=1) to try anyway")


def estimate_survey_bytes(config, *, keep_maps: bool = True, mesh_factor: int | None = None) -> int:
    """Peak memory [bytes] of one survey simulation (`survey.simulate_xod` / ``jaxcluster simulate``) with `config`.

    Model: ``base + a · V · f³ + b · P``, where V is the voxel count of one
    lightcone box (`LightconeGeometry.mesh_shape`; the boxes are simulated one
    at a time, `lax.map`), f the force-mesh factor, P the map pixels kept for
    the whole survey (n_lightcones × n_boxes × n_pix², the maps are stacked);
    the survey's own 64-bit arrays double a and b under x64.

    Calibration (peak RSS by `resource.getrusage` of a fresh process running a
    jit-compiled `simulate_xod`, CPU, float32, 2-core x86 machine; 4 deg², 12
    boxes, 4 PM steps, sep detection, Ω_m = 0.3):

    ======================  ===========  ==========  ===========  ==========
    cell [h⁻¹ Mpc], pixel    voxels/box   map pixels   peak RSS     estimate
    ======================  ===========  ==========  ===========  ==========
    4, 3′                       3 168       19 200     0.87 GB      1.00 GB
    2, 3′                      24 768       19 200     0.93 GB      1.01 GB
    1, 3′                     189 974       19 200     1.02 GB      1.10 GB
    0.7, 3′                   535 788       19 200     1.12 GB      1.27 GB
    0.5, 3′                 1 487 628       19 200     1.52 GB      1.74 GB
    4, 0.25′                    3 168    2 764 800     0.94 GB      1.09 GB
    ======================  ===========  ==========  ===========  ==========

    The peak grows by ~420 B per voxel of the largest box (PM arrays, FFTs,
    the eLDL's painted fields and XLA's temporaries) and ~23 B per kept map
    pixel over a fixed ~0.9 GB (JAX, compiled programs, eLDL, tables); the
    constants, base 1.0 GB, a = 500 B/voxel, b = 32 B/pixel, bound every
    measurement by 10–40 %. Larger boxes, float64 or a GPU allocator may differ
    by up to a factor of ~2; hence ``--no-memory-check``.

    Args:
        config: `survey.SurveyConfig`.
        keep_maps: count the stacked maps of all boxes (True for `simulate_survey` and the CLI).
        mesh_factor: force-mesh factor (default `config.mesh_factor`).
    """
    import jax.numpy as jnp

    g = config.geometry
    f = int(config.mesh_factor if mesh_factor is None else mesh_factor)
    voxels = g.n_perp * g.n_perp * g.n_par
    width = 2 if jnp.result_type(float) == jnp.float64 else 1
    pixels = config.n_lightcones * g.n_boxes * g.n_pix**2 if keep_maps else g.n_pix**2
    return int(_SURVEY_BASE_BYTES + width * (_SURVEY_BYTES_PER_VOXEL * voxels * f**3
                                              + _SURVEY_BYTES_PER_PIXEL * pixels))


def estimate_dataset_chunk_bytes(chunk_size: int, batch_size: int, xod_shape: Sequence[int], dim: int, *,
                                 per_sample_bytes: int | float, base_bytes: int | float = 0.0) -> int:
    """Peak memory [bytes] of one dataset chunk (`inference.dataset_campaign`).

    ``base + batch_size · per_sample + chunk_size · (XOD float32 + θ float64) · 3``
    (the chunk's XODs exist on the device, on the host and in the HDF5 write buffer).

    Args:
        chunk_size: samples per chunk.
        batch_size: samples simulated at once (one `vmap`).
        xod_shape: (n_cr, n_hr, n_z).
        dim: parameters per sample.
        per_sample_bytes: memory of one simulation beyond `base_bytes` (the survey:
            `estimate_survey_bytes` minus its fixed part).
        base_bytes: fixed part (runtime, compiled programs, the simulator's tables).
    """
    row = 4 * math.prod(xod_shape) + 8 * dim
    return int(base_bytes + batch_size * per_sample_bytes + 3 * chunk_size * row)


def estimate_training_bytes(n: int, xod_shape: Sequence[int], dim: int, *, copies: int | float = 4.0,
                            base_bytes: int | float = 5e8) -> int:
    """Peak memory [bytes] of training on n (θ, XOD) pairs held in memory (``npe train``).

    The set is read (float32 XODs, float64 θ) and then held as normalised
    float32 copies on the device and as training / validation splits: about
    `copies` times its size, plus a fixed `base_bytes` for the runtime and the
    networks. ``load_dataset`` itself checks one copy (what reading needs).
    """
    row = 4 * math.prod(xod_shape) + 8 * dim
    return int(base_bytes + copies * n * row)
