"""Distributed-FFT options for the PM force, on fake CPU devices; writes results/sharding.json.

Run:  python benchmarks/sharding.py   (sets XLA_FLAGS for 4 host devices itself)

Measured per mesh size (64³, 128³), float64:

* the Poisson/gradient force on the mesh, δ → F (one rfftn, three irfftn):
  - `single`: `force_from_density(rfftn(δ))` on one device;
  - `xla_auto`: the same under `jit` with δ and F sharded in x-slabs
    (`NamedSharding`), leaving the partitioning to XLA;
  - `slab_shard_map`: `slab_force_from_density` (explicit slab decomposition);
  - `jaxdecomp`: jaxdecomp 0.3.1 `pfft3d` / `pifft3d` (complex, transposed layout);
* the full force at the particles (paint + force + read), 2× force mesh:
  `pm_force` on one device vs `pm_force_sharded` on 4.

For each: error vs `single`, median wall time per call, collectives in the
compiled HLO, and `compiled.memory_analysis()` (per device).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from jaxcluster.nbody import PMConfig, force_from_density, pm_force  # noqa: E402
from jaxcluster.nbody.mesh import gradient_kernel  # noqa: E402
from jaxcluster.nbody.sharding import device_mesh, pm_force_sharded, slab_force_from_density  # noqa: E402

N_DEV = 4
REPEATS = 5
OUT = pathlib.Path(__file__).parent / "results" / "sharding.json"


def _collectives(text: str) -> dict[str, int]:
    names = ("all-gather", "all-to-all", "reduce-scatter", "all-reduce", "collective-permute")
    return {n: text.count(f" {n}(") + text.count(f" {n}-start(") for n in names}


def _memory(compiled) -> dict[str, int] | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    return {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")}


def _measure(fn, *args, reference=None):
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = compiled(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    res = {
        "time_s_median": float(np.median(times)),
        "time_s_min": float(np.min(times)),
        "compile_s": compile_s,
        "collectives": _collectives(compiled.as_text()),
        "memory_per_device": _memory(compiled),
        "devices_holding_output": len({s.device for s in jax.tree.leaves(out)[0].addressable_shards}),
    }
    if reference is not None:
        err = np.max(np.abs(np.asarray(out) - np.asarray(reference))) / np.max(np.abs(np.asarray(reference)))
        res["max_rel_error_vs_single"] = float(err)
    return res, out


def _jaxdecomp_force(delta, config):
    """F via jaxdecomp pfft3d/pifft3d; its forward output is laid out (ky, kz, kx)."""
    import jaxdecomp

    nx, ny, nz = config.mesh_shape
    dtype = delta.dtype
    delta_k = jaxdecomp.fft.pfft3d(delta.astype(jnp.complex128))  # (ny, nz, nx) in k
    ky = jnp.asarray(2 * np.pi * np.fft.fftfreq(ny).reshape(-1, 1, 1), dtype)
    kz = jnp.asarray(2 * np.pi * np.fft.fftfreq(nz).reshape(1, -1, 1), dtype)
    kx = jnp.asarray(2 * np.pi * np.fft.fftfreq(nx).reshape(1, 1, -1), dtype)
    k2 = kx**2 + ky**2 + kz**2
    inv_k2 = jnp.where(k2 > 0, 1.0 / jnp.where(k2 > 0, k2, 1.0), 0.0)
    comps = []
    for ki in (kx, ky, kz):
        f_k = jnp.asarray(1j, delta_k.dtype) * (gradient_kernel(ki, config.gradient) * inv_k2).astype(delta_k.dtype) * delta_k
        comps.append(jnp.real(jaxdecomp.fft.pifft3d(f_k)).astype(dtype))
    return jnp.stack(comps, axis=-1)


def main() -> None:
    if len(jax.devices()) < N_DEV:
        raise SystemExit(f"needs {N_DEV} devices (XLA_FLAGS=--xla_force_host_platform_device_count={N_DEV})")
    dev_mesh = device_mesh("x", jax.devices()[:N_DEV])
    slabs = NamedSharding(dev_mesh, PartitionSpec("x"))
    one = jax.devices()[0]
    results = {
        "note": (
            "Fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4) share the same "
            f"{os.cpu_count()} CPU cores and memory, and the machine was shared with other jobs: the timings are "
            "only relative/structural (what the compiled program does, collectives, per-device memory). "
            "Real scaling needs GPUs/multiple hosts. memory_per_device is compiled.memory_analysis() of the "
            "whole program; for SPMD programs it is per device."
        ),
        "jax": jax.__version__,
        "platform": platform.platform(),
        "devices": N_DEV,
        "dtype": "float64",
        "repeats": REPEATS,
        "force_on_mesh": {},
        "force_at_particles": {},
    }
    for n in (64, 128):
        config = PMConfig(float(n), n // 2, mesh_shape=n)
        key = jax.random.key(n)
        delta_np = np.asarray(jax.random.normal(key, config.mesh_shape))
        d1 = jax.device_put(delta_np, one)
        ds = jax.device_put(delta_np, slabs)
        entry = {}
        entry["single"], ref = _measure(lambda d: force_from_density(jnp.fft.rfftn(d), config.mesh_shape, config.gradient), d1)
        ref = np.asarray(ref)
        out_slabs = NamedSharding(dev_mesh, PartitionSpec("x"))
        auto = lambda d: jax.lax.with_sharding_constraint(
            force_from_density(jnp.fft.rfftn(d), config.mesh_shape, config.gradient), out_slabs
        )
        entry["xla_auto"], _ = _measure(auto, ds, reference=ref)
        entry["slab_shard_map"], _ = _measure(lambda d: slab_force_from_density(d, config, dev_mesh), ds, reference=ref)
        try:
            jd_mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:N_DEV]).reshape(N_DEV, 1), ("x", "y"))
            dj = jax.device_put(delta_np, NamedSharding(jd_mesh, PartitionSpec("x", "y")))
            entry["jaxdecomp"], _ = _measure(lambda d: _jaxdecomp_force(d, config), dj, reference=ref)
        except Exception as e:  # record, do not hide, a backend that does not work
            entry["jaxdecomp"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        results["force_on_mesh"][f"{n}^3"] = entry

        pos_np = np.asarray(config.lattice() + 0.3 * config.particle_spacing * jax.random.normal(key, (config.n_particles, 3)))
        p1 = jax.device_put(pos_np, one)
        ps = jax.device_put(pos_np, slabs)
        part = {"n_particles": config.n_particles, "mesh": list(config.mesh_shape)}
        part["pm_force_single"], fref = _measure(lambda x: pm_force(x, config), p1)
        part["pm_force_sharded"], _ = _measure(lambda x: pm_force_sharded(x, config, dev_mesh), ps, reference=np.asarray(fref))
        results["force_at_particles"][f"{n}^3 mesh"] = part

    results["choice"] = (
        "slab_shard_map (jaxcluster.nbody.sharding). xla_auto is no decomposition: the compiled program "
        "all-gathers the full mesh on every device and runs a replicated FFT (collectives: all-gather; more temp "
        "memory per device than one device alone). jaxdecomp 0.3.1 works on fake CPU devices and is on par in time "
        "and memory with the slab scheme here, but it is a complex-to-complex transform in a transposed layout and a "
        "compiled extension. The explicit rfft slab decomposition is plain JAX, differentiable, matches the single-device "
        "force to round-off, and uses 2 all-to-alls per round trip instead of 4. Re-measure against jaxdecomp "
        "(cuDecomp) on GPUs."
    )
    results["particles_note"] = (
        "pm_force_sharded all-gathers particle positions and every device paints/reads all particles (only the CIC "
        "corners in its own slab), so paint/read work is not divided: on fake devices sharing 2 cores it is slower "
        "than one device. The mesh and FFT are distributed; a spatial particle decomposition is future work."
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
