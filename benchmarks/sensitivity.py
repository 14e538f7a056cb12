"""Sensitivity studies: cost of a gradient of the mean soft XOD over a forward pass; autodiff vs finite differences.

    python benchmarks/sensitivity.py [--from DIR] [--repeats 3] [--out benchmarks/results/sensitivity.json]

One survey realisation of the small configuration of `jaxcluster
sensitivity` (defaults: 2 deg², 4 boxes, 2 h⁻¹ Mpc cells, 3′ pixels, 3 PM
steps; float64 as the CLI), segmentation held fixed. Timed after a warm-up
(median of `--repeats`):

* `forward_s`: the soft XOD (the function differentiated);
* `grad_s`: one reverse-mode gradient of a scalar functional Σ wᵢ λᵢ of it
  (`jax.grad`: forward + one pullback);
* `jacobian_jvp_s`: the full Jacobian with respect to the 6 parameters by
  forward mode through the catalogue (`catalogue_tangents`: forward, then 6
  transposed pullbacks, vmapped) — every bin, every softness;
* `jacobian_jacrev_s`: the full Jacobian by reverse mode (one pullback per
  XOD bin, vmapped).

`grad_over_forward_time` = grad_s / forward_s; `jacobian_over_forward_time`
= jacobian_jvp_s / forward_s. `jacfwd` itself is not possible: the CIC
paint/read and the PM adjoint are `custom_vjp`s.

`fd_agreement_sigma`: per parameter, the worst |mean(AD − FD)| / SE over the
soft dN/dz, CR and HR distributions and the total, FD = central differences
of the hard, re-detected pipeline with the same keys (`sensitivity.json` of a
`jaxcluster sensitivity` run: `--from DIR`, else one is run here with its
defaults). Results on SYNTHETIC baryons (the shipped eLDL).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path


def _time(fn, *args, repeats=3):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), first


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="from_dir", default=None, help="a `jaxcluster sensitivity` output directory")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-jacrev", action="store_true", help="do not time the reverse-mode Jacobian")
    ap.add_argument("--wait", type=float, default=0.0, help="seconds to wait for --from DIR/sensitivity.json (a run in progress)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sensitivity.json"))
    args = ap.parse_args(argv)

    from jaxcluster.baryons import default_eldl

    eldl = default_eldl()
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from jaxcluster.params import ThetaSim
    from jaxcluster.sensitivity import catalogue_tangents, default_steps, mc_jacobians, soft_xod_fixed
    from jaxcluster.sensitivity.cli import _parser
    from jaxcluster.survey import SurveyConfig, simulate_survey
    from jaxcluster.xray import default_emissivity_table

    d = _parser().parse_args(["--out", "unused"])
    theta = ThetaSim()
    h = np.asarray(default_steps(d.fd_fraction, theta))
    config = SurveyConfig(
        area_deg2=d.area, n_boxes=d.boxes, cell_size=d.cell_size, pixel_arcmin=d.pixel, n_steps=d.steps,
        threshold=d.threshold, cr_min=d.cr_min, max_sources=d.max_sources,
        cr_edges=np.geomspace(d.cr_min, 1e3 * d.cr_min, d.cr_bins + 1), hr_edges=np.geomspace(d.hr_min, d.hr_max, d.hr_bins + 1),
        z_edges=np.linspace(0.1, 0.5, d.z_bins + 1), softness=d.softness, softness_z=d.softness_z,
        omega_m_min=0.3 - 1.01 * h[0], omega_m_max=0.3 + 1.01 * h[0])
    table = default_emissivity_table()
    key = jax.random.key(d.seed)
    th = theta.to_array()
    seg = jax.jit(lambda k: simulate_survey(theta, k, config, eldl=eldl, table=table).segmentation)(key)
    w = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, config.binning.shape))

    fwd = jax.jit(lambda t: soft_xod_fixed(t, key, seg, config, eldl=eldl, table=table))
    grad = jax.jit(jax.grad(lambda t: jnp.sum(w * soft_xod_fixed(t, key, seg, config, eldl=eldl, table=table))))
    jvp = jax.jit(lambda t: catalogue_tangents(t, key, seg, config, eldl=eldl, table=table).soft_xod(config)[1])
    res = dict(benchmark="sensitivity: gradient cost of the soft XOD; autodiff vs finite differences",
               label="SYNTHETIC baryons (shipped eLDL)",
               problem=dict(area_deg2=d.area, n_boxes=d.boxes, cell_size=d.cell_size, pixel_arcmin=d.pixel,
                            n_steps=d.steps, mesh_per_box=list(config.geometry.mesh_shape),
                            xod_shape=list(config.binning.shape), dtype="float64"))
    t_f, c_f = _time(fwd, th, repeats=args.repeats)
    t_g, c_g = _time(grad, th, repeats=args.repeats)
    t_j, c_j = _time(jvp, th, repeats=args.repeats)
    res |= dict(forward_s=t_f, grad_s=t_g, jacobian_jvp_s=t_j, first_call_s=dict(forward=c_f, grad=c_g, jacobian_jvp=c_j),
                grad_over_forward_time=t_g / t_f, jacobian_over_forward_time=t_j / t_f)
    if not args.skip_jacrev:
        jrev = jax.jit(lambda t: mc_jacobians(lambda tt, k: soft_xod_fixed(tt, k, seg, config, eldl=eldl, table=table),
                                              t, key[None], "jacrev")[1])
        t_r, c_r = _time(jrev, th, repeats=args.repeats)
        res |= dict(jacobian_jacrev_s=t_r, jacobian_jacrev_over_forward_time=t_r / t_f)
        res["first_call_s"]["jacobian_jacrev"] = c_r
    src = Path(args.from_dir) if args.from_dir else Path(args.out).parent / "sensitivity_run"
    t_end = time.time() + args.wait
    while args.from_dir and not (src / "sensitivity.json").exists() and time.time() < t_end:
        time.sleep(10)
    if not (src / "sensitivity.json").exists():
        from jaxcluster.sensitivity.cli import main as cli_main

        cli_main(["--out", str(src), "--skip-scaling"])
    sj = json.loads((src / "sensitivity.json").read_text())
    res["fd_agreement_sigma"] = sj.get("fd_agreement_sigma")
    res["fd_agreement_sigma_soft_redetected"] = {n: v["soft_redetect_sigma_max"] for n, v in sj.get("finite_differences", {}).items()}
    res["fd_fixed_segmentation_max_rel_diff"] = {n: v["fixed_max_rel_diff"] for n, v in sj.get("finite_differences", {}).items()}
    res["fd_source"] = dict(n_keys=sj["n_keys"], fd_steps=sj["fd_steps"], config=sj["config"])
    res["environment"] = dict(platform=jax.devices()[0].platform, device=str(jax.devices()[0]), jax=jax.__version__,
                              cpu_count=os.cpu_count(), machine=platform.machine(),
                              note="shared 2-core machine with other jobs running: absolute times are inflated, ratios less so")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in ("grad_over_forward_time", "jacobian_over_forward_time", "fd_agreement_sigma")}, indent=2))
    return res


if __name__ == "__main__":
    main()
