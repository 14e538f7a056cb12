"""Reversible vs checkpointed adjoint of the PM N-body: gradient time, memory, round-off.

For each case (particles per side, steps, adjoint) a fresh subprocess builds
2LPT initial conditions at a = 0.1, and times the jitted gradient of
L = Σ δ²(x_final) (the CIC density of the final positions, on the force mesh)
with respect to the initial positions and momenta, the cosmology and its
growth table. It records

* `compile_s` and `grad_s` (median of `--repeat` runs after compilation),
* `xla_temp_bytes` / `xla_argument_bytes` / `xla_output_bytes` from
  `jax.jit(f).lower(...).compile().memory_analysis()` (the compiled
  program's scratch memory: what grows with stored residuals),
* `maxrss_bytes`: the subprocess's peak resident set (`ru_maxrss`), which
  includes the JAX runtime and compilation, so differences are what count.

The reconstruction section runs the forward, rebuilds the initial state with
`kdk_reverse`, and reports how far it drifts from the true one, in float32
and float64, for 10 and 40 steps; and the relative difference between the
reversible and the full-storage gradients.

Usage: `python benchmarks/adjoint.py [--sizes 32 64] [--steps 10 40]`; writes
`benchmarks/results/adjoint.json`. CPU runs are sensitive to other load on
the machine: the JSON records `os.getloadavg()` at the start of each case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ADJOINTS = {"reversible": ("reversible", None), "checkpoint4": ("checkpoint", 4), "checkpoint_full": ("checkpoint", None)}
BOX_PER_PTCL = 4.0  # h⁻¹ Mpc per particle spacing
A_INIT = 0.1


def _setup(n, n_steps, dtype_name):
    import jax
    import jax.numpy as jnp

    from jaxcluster.cosmology import Cosmology, growth_table
    from jaxcluster.nbody import PMConfig, linear_field, lpt, step_grid, white_noise

    cfg = PMConfig(BOX_PER_PTCL * n, (n, n, n))
    cosmo = Cosmology()
    growth = jax.jit(growth_table)(cosmo)
    dtype = jnp.dtype(dtype_name)
    noise = white_noise(jax.random.key(0), cfg.particle_shape, dtype=dtype)
    x0, p0 = jax.jit(lambda nz: lpt(linear_field(nz, cosmo, cfg), cosmo, growth, cfg, A_INIT))(noise)
    a_steps = jnp.asarray(step_grid(A_INIT, 1.0, n_steps), dtype=dtype)
    return cfg, cosmo, growth, x0.astype(dtype), p0.astype(dtype), a_steps


def _loss_fn(cfg, a_steps, adjoint, checkpoints):
    import jax.numpy as jnp

    from jaxcluster.nbody import nbody, paint_cic

    def loss(inputs):
        x0, p0, cosmo, growth = inputs
        r = nbody(x0, p0, cosmo, cfg, a_steps, growth=growth, adjoint=adjoint, checkpoints=checkpoints)
        mass = jnp.ones((cfg.n_particles,), dtype=x0.dtype)
        rho = paint_cic(r.pos[-1] / cfg.cell_size, mass, cfg.mesh_shape)
        return jnp.sum((rho - 1.0) ** 2)

    return loss


def worker_timing(n, n_steps, name, repeat, dtype_name):
    import equinox as eqx
    import jax

    load = os.getloadavg()
    adjoint, checkpoints = ADJOINTS[name]
    cfg, cosmo, growth, x0, p0, a_steps = _setup(n, n_steps, dtype_name)
    inputs = (x0, p0, cosmo, growth)
    params, static = eqx.partition(inputs, eqx.is_inexact_array)
    loss = _loss_fn(cfg, a_steps, adjoint, checkpoints)

    def grad(params):
        return eqx.filter_grad(loss)(eqx.combine(params, static))

    t = time.perf_counter()
    compiled = jax.jit(grad).lower(params).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    jax.block_until_ready(compiled(params))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - t)
    times.sort()
    out = dict(
        n_per_side=n, n_steps=n_steps, adjoint=name, dtype=dtype_name, mesh_shape=list(cfg.mesh_shape),
        compile_s=compile_s, grad_s=times[len(times) // 2], grad_s_all=times,
        maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, loadavg_at_start=list(load),
        state_bytes=2 * x0.size * x0.dtype.itemsize,
    )
    if mem is not None:
        for k in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "generated_code_size_in_bytes"):
            out["xla_" + k.replace("_size_in", "")] = int(getattr(mem, k, -1))
    return out


def worker_reconstruction(n, n_steps, dtype_name):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from functools import partial

    from jaxcluster.nbody import pm_force
    from jaxcluster.nbody.adjoint import kdk_factors, kdk_reverse, kdk_reversible

    cfg, cosmo, growth, x0, p0, a_steps = _setup(n, n_steps, dtype_name)
    factors = kdk_factors(cosmo, growth, a_steps)
    force = partial(pm_force, config=cfg)

    @jax.jit
    def there_and_back(x0, p0):
        bx, bp = kdk_reversible(force, factors, x0, p0, jnp.array([n_steps], dtype=jnp.int32))
        xr, pr = kdk_reverse(force, factors, bx[0], bp[0])
        return bx[0], bp[0], xr, pr

    x1, p1, xr, pr = (np.asarray(v, dtype=np.float64) for v in there_and_back(x0, p0))
    x0n, p0n = np.asarray(x0, np.float64), np.asarray(p0, np.float64)
    dx, dp = np.abs(xr - x0n), np.abs(pr - p0n)
    disp_rms = float(np.sqrt(np.mean((x1 - x0n) ** 2)))
    out = dict(
        n_per_side=n, n_steps=n_steps, dtype=dtype_name,
        pos_err_max_Mpc_h=float(dx.max()), pos_err_rms_Mpc_h=float(np.sqrt(np.mean(dx**2))),
        pos_err_max_over_spacing=float(dx.max() / cfg.particle_spacing),
        p_err_max=float(dp.max()), p_err_rms_over_p_rms=float(np.sqrt(np.mean(dp**2)) / np.sqrt(np.mean(p0n**2))),
        displacement_rms_Mpc_h=disp_rms,
    )

    # Gradient difference reversible vs full storage, same loss as the timing.
    import equinox as eqx

    inputs = (x0, p0, cosmo, growth)
    grads = {}
    for name in ("reversible", "checkpoint_full"):
        adjoint, ck = ADJOINTS[name]
        grads[name] = eqx.filter_jit(eqx.filter_grad(_loss_fn(cfg, a_steps, adjoint, ck)))(inputs)
    for i, key in enumerate(("pos", "p")):
        a, b = np.asarray(grads["reversible"][i], np.float64), np.asarray(grads["checkpoint_full"][i], np.float64)
        out[f"grad_{key}_rel_l2_diff_vs_full"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    return out


def _spawn(args):
    cmd = [sys.executable, __file__, "--worker", json.dumps(args)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return dict(args=args, error=res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 40])
    ap.add_argument("--adjoints", nargs="+", default=list(ADJOINTS))
    ap.add_argument("--recon-sizes", type=int, nargs="+", default=[32])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "adjoint.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker is not None:
        w = json.loads(args.worker)
        if w["x64"]:
            import jax

            jax.config.update("jax_enable_x64", True)
        if w["kind"] == "timing":
            res = worker_timing(w["n"], w["steps"], w["adjoint"], w["repeat"], w["dtype"])
        else:
            res = worker_reconstruction(w["n"], w["steps"], w["dtype"])
        print(json.dumps(res))
        return

    import jax

    timing, recon = [], []
    for n in args.sizes:
        for steps in args.steps:
            for name in args.adjoints:
                r = _spawn(dict(kind="timing", n=n, steps=steps, adjoint=name, repeat=args.repeat,
                                dtype=args.dtype, x64=args.dtype == "float64"))
                print(json.dumps(r), flush=True)
                timing.append(r)
    for n in args.recon_sizes:
        for dtype in ("float32", "float64"):
            for steps in args.steps:
                r = _spawn(dict(kind="recon", n=n, steps=steps, dtype=dtype, x64=dtype == "float64"))
                print(json.dumps(r), flush=True)
                recon.append(r)

    # Ratios against the reversible adjoint, per (n, steps).
    ratios = []
    by = {(r.get("n_per_side"), r.get("n_steps"), r.get("adjoint")): r for r in timing if "error" not in r}
    for n in args.sizes:
        for steps in args.steps:
            rev = by.get((n, steps, "reversible"))
            if rev is None:
                continue
            for name in args.adjoints:
                o = by.get((n, steps, name))
                if o is None or name == "reversible":
                    continue
                ratios.append(dict(
                    n_per_side=n, n_steps=steps, other=name,
                    grad_time_other_over_reversible=o["grad_s"] / rev["grad_s"],
                    xla_temp_other_over_reversible=o.get("xla_temp_bytes", 0) / max(rev.get("xla_temp_bytes", 1), 1),
                    maxrss_other_minus_reversible_MiB=(o["maxrss_bytes"] - rev["maxrss_bytes"]) / 2**20,
                ))
    meta = dict(
        jax=jax.__version__, backend=jax.default_backend(), cpu_count=os.cpu_count(), platform=platform.platform(),
        box_per_particle_Mpc_h=BOX_PER_PTCL, a_init=A_INIT, a_final=1.0, mesh_factor=1,
        loss="sum over the force mesh of (CIC density of final positions - 1)^2",
        grad_wrt="initial pos, p, Cosmology and GrowthTable leaves",
        note="shared 2-core CPU: timings are noisy; loadavg recorded per case",
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(meta=meta, timing=timing, ratios=ratios, reconstruction=recon), indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
