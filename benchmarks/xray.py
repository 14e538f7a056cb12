"""X-ray count rates: emissivity table (JAX) vs pyatomdb called directly.

    python benchmarks/xray.py [--n-voxels 1000000] [--n-temperatures 40] [--out benchmarks/results/xray.json]

Table route: `count_rate(default_emissivity_table(), n_e, T, z, V, cosmo)` for
N voxels of one box (float32 fields, scalar z), jitted, timed after a warm-up
(median of repeats). Direct route: pyatomdb's spectrum for each voxel's own
temperature, redshifted and folded through the same pn band response
(`band_emissivity`); every voxel has a distinct T, so pyatomdb would be called
once per voxel. It is timed for a few distinct temperatures and the mean time
per temperature is multiplied by N (stated in the JSON). Accuracy: the table
against the direct evaluation at the benchmark's temperatures (float64 and
float32 evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # entry point: float64 for the accuracy check

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcluster.cosmology import Cosmology  # noqa: E402
from jaxcluster.xray import (  # noqa: E402
    count_rate,
    default_band_response,
    default_emissivity_table,
)
from jaxcluster.xray.emissivity import _photon_eps, _prepare  # noqa: E402
from jaxcluster.xray.spectrum import spectrum_model  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-voxels", type=int, default=1_000_000)
    p.add_argument("--n-temperatures", type=int, default=40, help="distinct T timed with pyatomdb")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--z", type=float, default=0.3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "xray.json"))
    args = p.parse_args(argv)

    table = default_emissivity_table()
    resp = default_band_response()
    cosmo = Cosmology(Omega_m=0.3, sigma_8=0.8)
    rng = np.random.default_rng(0)
    n = args.n_voxels
    # a cluster-like mix: log-normal n_e, T log-uniform over 0.2–15 keV
    n_e = jnp.asarray(1e-4 * np.exp(rng.normal(0.0, 1.5, n)), dtype=jnp.float32)
    T = jnp.asarray(10 ** rng.uniform(np.log10(0.2), np.log10(15.0), n), dtype=jnp.float32)
    z = jnp.float32(args.z)
    V = jnp.float32((25.0 / 128) ** 3)  # voxel of a 25 h⁻¹ Mpc, 128³ box [h⁻³ Mpc³]

    f = jax.jit(count_rate)
    t0 = time.perf_counter()
    jax.block_until_ready(f(table, n_e, T, z, V, cosmo))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(table, n_e, T, z, V, cosmo))
        times.append(time.perf_counter() - t0)
    table_s = statistics.median(times)

    # direct pyatomdb: spectrum at each T, redshifted, folded (what the table replaces)
    _, grids = _prepare(resp, None)
    method, spec = spectrum_model(table.method)
    T_direct = np.geomspace(0.2, 15.0, args.n_temperatures)  # off the table's knots
    direct = np.empty((T_direct.size, table.n_band))
    per_T = []
    for i, Ti in enumerate(T_direct):
        t0 = time.perf_counter()
        direct[i] = _photon_eps(spec, float(Ti), args.z, grids)
        per_T.append(time.perf_counter() - t0)
    direct_per_voxel_s = statistics.mean(per_T)
    direct_s = direct_per_voxel_s * n

    # accuracy at the benchmark's temperatures: count rates, table vs direct
    ev = jax.jit(lambda t, T, z: t(T, z))
    tab64 = np.asarray(ev(table, jnp.asarray(T_direct), jnp.asarray(args.z)))
    tab32 = np.asarray(ev(table, jnp.asarray(T_direct, dtype=jnp.float32), jnp.float32(args.z)))
    err64 = np.abs(tab64 / direct - 1.0)
    err32 = np.abs(tab32 / direct - 1.0)
    # count rates of both routes share EM/(4π D_L²): their relative error is that of ε

    result = {
        "benchmark": "xray count rates, 2 bands (0.5-1, 1-2 keV observer), EPIC-pn",
        "n_voxels": n,
        "table_method": table.method,
        "table_atomdb_version": table.atomdb_version,
        "table_grid": [int(table.log10_T_keV.size), int(table.z.size)],
        "table_time_s": table_s,
        "table_time_all_repeats_s": times,
        "table_compile_s": compile_s,
        "table_time_per_voxel_s": table_s / n,
        "field_dtype": "float32",
        "pyatomdb_n_temperatures_timed": int(T_direct.size),
        "pyatomdb_time_per_temperature_s": direct_per_voxel_s,
        "pyatomdb_time_s_estimated": direct_s,
        "pyatomdb_note": (
            "pyatomdb brems/APEC spectrum + redshift + fold per distinct T; every voxel has its own T, "
            "so the direct route costs n_voxels x time per temperature (timed on "
            f"{T_direct.size} temperatures, extrapolated)"
        ),
        "speedup_vs_pyatomdb": direct_s / table_s,
        "max_rel_err": float(err64.max()),
        "max_rel_err_float32": float(err32.max()),
        "median_rel_err": float(np.median(err64)),
        "err_temperatures_keV": [float(np.min(T_direct)), float(np.max(T_direct))],
        "z": args.z,
        "table_eval_path": "one box: scalar z (z-then-log T 1-D splines, evenly spaced knots)",
        "environment": {
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "platform": jax.devices()[0].platform,
            "cpu_count": os.cpu_count(),
            "load_average_1_5_15": list(os.getloadavg()),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("table_time_s", "pyatomdb_time_per_temperature_s",
                                              "speedup_vs_pyatomdb", "max_rel_err", "max_rel_err_float32")}))
    return result


if __name__ == "__main__":
    main()
