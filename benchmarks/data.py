r"""Cost of one synthetic LH-like training sample, with its breakdown, and the PM part against jaxpm 0.1.6.

The sample is `jaxcluster.baryons.training_sets.simulate_sample` on
`lh_spec()` (64³ particles and voxels, 25 h⁻¹ Mpc, 2LPT at z = 6, 20 FastPM
steps to z = 0.1 with the eight Table 1 redshifts inserted as step boundaries:
27 steps, 28 force evaluations), the θ_sim of sample LH_0, under `jax.jit`,
with x64 switched on as `jaxcluster data generate` does (the pipeline itself
runs in float32). Breakdown, each part its own jit-ed function on the same
inputs as inside the sample:

* `pm`: growth table + white noise + linear field + 2LPT + `nbody` with
  `spec.a_steps` and the eight snapshots (`pm_2lpt` and `pm_nbody` are its two
  halves timed separately; `pm_nbody` starts from the 2LPT particles);
* `halos`: `find_halos` on the eight (wrapped) snapshots (`lax.map`, as in the sample);
* `gas`: `synthetic_gas` (n_e, T) on the eight snapshots from those halos;
* `rho_dm`: the CIC dark-matter density of the eight snapshots;
* `write_hdf5`: the eight `save_run` files of one sample (not part of
  `lh_sample_seconds`; what `generate_training_set` adds per sample).

Peer (side by side for the PM part): jaxpm's `make_diffrax_ode` integrated by
`diffrax.LeapfrogMidpoint` on `StepTo` (one force per step, as in
benchmarks/pm.py), from the same 2LPT particles converted to jaxpm's cell
units (positions / Δ, momenta / Δ), the same mesh (64³, one particle per
cell), float32 (run with x64 off, jaxpm's default: with x64 on its numpy
k-space kernels would make its forces float64), saving the same eight snapshots. Our KDK does n + 1 forces for
n steps, so jaxpm's grid is ours with one extra boundary (the midpoint of the
first step): 28 steps, 28 forces for both. `pm_ratio_vs_jaxpm` is
pm_nbody / jaxpm (below 1: ours faster). As a check that both codes solve the
same problem, the P(k) of the two z = 0.1 densities are compared over
k ≤ k_Nyq/2.

Timings: one warm-up call per function (compile + run, `first_call_s`), then
three repetitions of every function interleaved in one process, each ended
with `jax.block_until_ready`; the median is reported.

Usage: `python benchmarks/data.py [--quick]`; writes benchmarks/results/data.json
(`--quick`: 32³ in 12.5 h⁻¹ Mpc, 2 repetitions, writes data_quick.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # as `jaxcluster data generate` does; the pipeline stays float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 30.0


def _functions(spec, model):
    """The sample and its parts, jit-ed, plus the jaxpm peer; all float32 inside."""
    import diffrax
    import jax_cosmo as jc
    import jaxpm.pm as jpm

    from jaxcluster.baryons.synthetic import synthetic_gas
    from jaxcluster.baryons.training_sets import simulate_sample
    from jaxcluster.cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, growth_table
    from jaxcluster.halos.so import find_halos
    from jaxcluster.nbody import linear_field, lpt, nbody, paint_cic, white_noise

    config, finder = spec.config, spec.finder
    shape, cell, box = config.mesh_shape, config.cell_size, spec.box_size
    a_steps = spec.a_steps
    snaps = 1.0 / (1.0 + np.asarray(spec.redshifts))
    zs = jnp.asarray(spec.redshifts, dtype=jnp.float32)

    def cosmology(theta):
        return Cosmology(Omega_m=theta.Omega_m, sigma_8=theta.sigma_8)

    @jax.jit
    def sample(theta, key):
        return simulate_sample(theta, key, spec, model)

    def _ic(theta, key):
        cosmo = cosmology(theta)
        growth = growth_table(cosmo)
        k_ic, _ = jax.random.split(key)
        noise = white_noise(k_ic, config.particle_shape, dtype=jnp.float32)
        pos, p = lpt(linear_field(noise, cosmo, config), cosmo, growth, config, float(a_steps[0]), order=2)
        return cosmo, growth, pos, p

    @jax.jit
    def pm(theta, key):
        cosmo, growth, pos, p = _ic(theta, key)
        run = nbody(pos, p, cosmo, config, a_steps, snaps, growth=growth)
        return run.pos, run.p

    @jax.jit
    def pm_2lpt(theta, key):
        return _ic(theta, key)[2:]

    @jax.jit
    def pm_nbody(theta, pos, p):
        cosmo = cosmology(theta)
        run = nbody(pos, p, cosmo, config, a_steps, snaps, growth=growth_table(cosmo))
        return run.pos, run.p

    @jax.jit
    def halos(theta, pos, p):
        cosmo = cosmology(theta)

        def one(args):
            x, mom, a = args
            return find_halos(jnp.mod(x, jnp.float32(box)), mom, a, cosmo, finder)

        return jax.lax.map(one, (pos, p, jnp.asarray(snaps)))

    @jax.jit
    def gas(theta, key, pos, cats):
        cosmo = cosmology(theta)
        _, k_gas = jax.random.split(key)
        keys = jax.random.split(k_gas, len(spec.redshifts))

        def one(args):
            x, cat, z, k = args
            g = synthetic_gas(jnp.mod(x, jnp.float32(box)), cat, theta, z, k, config.box_size, shape, model,
                              cosmo=cosmo)
            return g.n_e, g.T_keV

        return jax.lax.map(one, (pos, cats, zs, keys))

    @jax.jit
    def rho_dm(theta, pos):
        rho_mean = (theta.Omega_m * RHO_CRIT0_MSUN_H2_MPC3).astype(jnp.float32)

        def one(x):
            counts = paint_cic(jnp.mod(x, jnp.float32(box)) / cell, jnp.ones(x.shape[0], dtype=x.dtype), shape)
            return counts * (math.prod(shape) / x.shape[0]) * rho_mean

        return jax.lax.map(one, pos)

    # jaxpm: same particles (cell units), same mesh, float32 times, one extra boundary → same force count.
    ts_np = np.union1d(a_steps, [0.5 * (a_steps[0] + a_steps[1])])
    ts = jnp.asarray(ts_np, dtype=jnp.float32)
    n_steps_jaxpm = len(ts_np) - 1
    order = np.argsort(snaps)  # diffrax wants monotonic save times
    unorder = np.argsort(order)
    term = diffrax.ODETerm(jpm.make_diffrax_ode(shape))

    @jax.jit
    def jaxpm_nbody(y0, omega_m, sigma_8):
        jcc = jc.Cosmology(Omega_c=omega_m - 0.049, Omega_b=0.049, h=0.6711, n_s=0.9624, sigma8=sigma_8,
                           Omega_k=0.0, w0=-1.0, wa=0.0)
        sol = diffrax.diffeqsolve(term, diffrax.LeapfrogMidpoint(), t0=ts[0], t1=ts[-1], dt0=None, y0=y0,
                                  args=jcc, stepsize_controller=diffrax.StepTo(ts=ts), max_steps=n_steps_jaxpm,
                                  saveat=diffrax.SaveAt(ts=jnp.asarray(snaps[order], dtype=jnp.float32)))
        return sol.ys[unorder]  # back to the order of spec.redshifts, as ours

    return dict(sample=sample, pm=pm, pm_2lpt=pm_2lpt, pm_nbody=pm_nbody, halos=halos, gas=gas, rho_dm=rho_dm,
                jaxpm_nbody=jaxpm_nbody), dict(ours=len(a_steps), jaxpm=n_steps_jaxpm)


def _timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


def _timed_x32(fn, *args):
    """jaxpm as it runs by default: x64 off (its numpy k-kernels would otherwise make its forces float64)."""
    with jax.enable_x64(False):
        return _timed(fn, *args)


def _pk_check(spec, pos_ours, ys_jaxpm):
    """max and mean |P_jaxpm / P_ours − 1| over k ≤ k_Nyq/2 at the lowest output redshift."""
    from jaxcluster.nbody import paint_cic
    from jaxcluster.nbody.power import power_spectrum

    config = spec.config
    cell = config.cell_size
    i = int(np.argmin(spec.redshifts))

    def delta(x_cells):
        m = paint_cic(jnp.mod(x_cells, config.mesh_shape[0]), jnp.ones(x_cells.shape[:1], x_cells.dtype),
                      config.mesh_shape)
        return m / jnp.mean(m) - 1.0

    k, p_ours, _ = power_spectrum(delta(pos_ours[i] / cell), config.box_size)
    _, p_jaxpm, _ = power_spectrum(delta(ys_jaxpm[i, 0]), config.box_size)
    sel = np.asarray(k) <= 0.5 * np.pi / config.particle_spacing
    err = np.abs(np.asarray(p_jaxpm / p_ours)[sel] - 1.0)
    return dict(z=float(spec.redshifts[i]), max=float(err.max()), mean=float(err.mean()), n_bins=int(sel.sum()))


def _environment() -> dict:
    import diffrax
    import jaxpm

    dev = jax.devices()[0]
    return dict(jax=jax.__version__, diffrax=diffrax.__version__, jaxpm=getattr(jaxpm, "__version__", "0.1.6"),
                python=platform.python_version(), backend=jax.default_backend(), device=str(dev.device_kind),
                cpu_count=os.cpu_count(), affinity=len(os.sched_getaffinity(0)), x64=bool(jax.config.jax_enable_x64),
                dtype="float32", machine=platform.machine())


def main(quick: bool) -> dict:
    from jaxcluster.baryons.synthetic import SyntheticGasModel
    from jaxcluster.baryons.training_sets import _write_sample, lh_spec, training_set_parameters
    from jaxcluster.params import PARAM_NAMES, ThetaSim

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    spec = lh_spec(1, n_side=32, box_size=12.5) if quick else lh_spec(1)
    reps = 2 if quick else 3
    model = SyntheticGasModel()
    theta_b, seeds = training_set_parameters(spec)  # sample LH_0 of the set
    theta_np = np.asarray(theta_b.to_array(), dtype=np.float64)[0]
    theta = ThetaSim(*(jnp.asarray(v) for v in theta_np))  # float64 scalars, as generate_training_set passes them
    key = jax.random.key(int(seeds[0]))
    fns, forces = _functions(spec, model)

    # Inputs of the parts, from the parts themselves (warm-up calls, also timed as first_call_s).
    first = {}
    first["sample"], fields = _timed(fns["sample"], theta, key)
    first["pm"], (pos_s, p_s) = _timed(fns["pm"], theta, key)
    first["pm_2lpt"], (pos0, p0) = _timed(fns["pm_2lpt"], theta, key)
    first["pm_nbody"], _ = _timed(fns["pm_nbody"], theta, pos0, p0)
    first["halos"], cats = _timed(fns["halos"], theta, pos_s, p_s)
    first["gas"], _ = _timed(fns["gas"], theta, key, pos_s, cats)
    first["rho_dm"], _ = _timed(fns["rho_dm"], theta, pos_s)
    cell = spec.config.cell_size
    y0 = jnp.stack([pos0 / cell, p0 / cell])
    om, s8 = jnp.float32(theta.Omega_m), jnp.float32(theta.sigma_8)
    first["jaxpm_nbody"], ys = _timed_x32(fns["jaxpm_nbody"], y0, om, s8)
    assert ys.dtype == jnp.float32 and pos_s.dtype == jnp.float32, (ys.dtype, pos_s.dtype)

    def write_once():
        with tempfile.TemporaryDirectory() as tmp:
            one = jax.device_get(fields)
            t = time.perf_counter()
            _write_sample(Path(tmp), spec, 0, ThetaSim(*theta_np), one, {"synthetic": True, "benchmark": "data"})
            return time.perf_counter() - t, None

    first["write_hdf5"], _ = write_once()
    calls = dict(
        sample=lambda: _timed(fns["sample"], theta, key),
        pm=lambda: _timed(fns["pm"], theta, key),
        pm_2lpt=lambda: _timed(fns["pm_2lpt"], theta, key),
        pm_nbody=lambda: _timed(fns["pm_nbody"], theta, pos0, p0),
        jaxpm_nbody=lambda: _timed_x32(fns["jaxpm_nbody"], y0, om, s8),
        halos=lambda: _timed(fns["halos"], theta, pos_s, p_s),
        gas=lambda: _timed(fns["gas"], theta, key, pos_s, cats),
        rho_dm=lambda: _timed(fns["rho_dm"], theta, pos_s),
        write_hdf5=write_once,
    )
    times = {k: [] for k in calls}
    for r in range(reps):
        for k, call in calls.items():
            times[k].append(call()[0])
        print(f"[data] repetition {r + 1}/{reps}: sample {times['sample'][-1]:.2f} s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    breakdown = {k: med[k] for k in ("pm", "pm_2lpt", "pm_nbody", "halos", "gas", "rho_dm", "write_hdf5")}
    n_valid = np.asarray(cats.valid).sum(axis=1).tolist()
    out = dict(
        benchmark="data",
        lh_sample_seconds=med["sample"],
        target_lh_sample_seconds=TARGET_S,
        meets_target=bool(med["sample"] < TARGET_S),
        breakdown_seconds=breakdown,
        parts_sum_seconds=med["pm"] + med["halos"] + med["gas"] + med["rho_dm"],
        pm_ratio_vs_jaxpm=med["pm_nbody"] / med["jaxpm_nbody"],
        jaxpm_pm_seconds=med["jaxpm_nbody"],
        ratio_convention="ours / jaxpm (below 1: jaxcluster faster)",
        pk_check_vs_jaxpm=_pk_check(spec, np.asarray(pos_s), np.asarray(ys)),
        device=f"{jax.default_backend()}: {jax.devices()[0].device_kind}, {len(os.sched_getaffinity(0))} cores",
        jax_version=jax.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        environment=_environment(),
        problem=dict(spec="lh_spec(1)" + (" with n_side=32, box_size=12.5 (quick)" if quick else ""),
                     n_side=spec.n_side, box_size=spec.box_size, z_init=spec.z_init, n_steps=spec.n_steps,
                     redshifts=list(spec.redshifts), pm_steps=len(spec.a_steps) - 1,
                     force_evaluations=dict(ours=forces["ours"], jaxpm=forces["jaxpm"]),
                     max_halos=spec.max_halos, capacity=spec.capacity, r_max=spec.finder.r_max,
                     theta=dict(zip(PARAM_NAMES, theta_np.tolist())), ic_seed=int(seeds[0]),
                     halos_found_per_snapshot=n_valid,
                     jaxpm_solver="diffrax.LeapfrogMidpoint + StepTo (our grid + 1 boundary), "
                                  "SaveAt(ts=the 8 snapshots)"),
        first_call_s=first,
        times_s=times,
        median_s=med,
        load_average=dict(start=list(load_start), end=list(os.getloadavg())),
        peak_rss_MiB=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        total_runtime_s=time.perf_counter() - t_start,
    )
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32³ in 12.5 h⁻¹ Mpc, 2 repetitions")
    ns = ap.parse_args()
    result = main(ns.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("data_quick.json" if ns.quick else "data.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
    print(f"wrote {path}", file=sys.stderr)
