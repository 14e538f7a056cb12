"""Sensitivity of a small simulated survey to θ_sim: ∂(dN/dz)/∂θ, a simulation-based Fisher matrix, a CR–M fit.

For K realisations (keys) of a small lightcone the survey is simulated at
the fiducial θ_sim with the shipped eLDL (trained on SYNTHETIC baryons),
the segmentation of each is held fixed, and the Jacobian of the soft XOD
with respect to the six parameters is computed — by forward-mode autodiff
through the catalogue (`--method jvp`, default; the first call compiles for
a few minutes on a CPU) or by central finite differences of the same
fixed-segmentation function (`--method fd`, quick). It prints the mean
∂(total counts)/∂θ with its Monte-Carlo error and the Fisher errors
scaled to 200 deg²; then fits the CR–M relation of clusters detected on
projected ρ_m/ρ_c in a few small boxes at z = 0.21 (skipped with `--quick`).
`jaxcluster sensitivity --out DIR` runs the whole study with figures.

    python examples/sensitivity.py [--keys 3] [--area 2] [--method jvp|fd] [--quick]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jaxcluster as jc
from jaxcluster.analytic import figure_of_merit, marginal_errors
from jaxcluster.params import PARAM_NAMES
from jaxcluster.sensitivity import (
    ScalingBoxConfig,
    default_steps,
    finite_difference_jacobians,
    mc_estimate,
    project,
    reference_segmentations,
    simulation_fisher,
    xod_sensitivity,
)
from jaxcluster.sensitivity.scaling_study import boxes_at, fit_clusters
from jaxcluster.xray import default_emissivity_table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=3, help="realisations (≥ 2)")
    ap.add_argument("--area", type=float, default=2.0, help="lightcone area [deg²]")
    ap.add_argument("--boxes", type=int, default=4, help="boxes per lightcone")
    ap.add_argument("--method", choices=("jvp", "fd"), default="jvp", help="autodiff or finite differences")
    ap.add_argument("--quick", action="store_true", help="finite differences, 1 deg², 2 boxes, no CR–M boxes")
    args = ap.parse_args(argv)
    if args.quick:
        args.method, args.area, args.boxes = "fd", 1.0, 2
    eldl = jc.default_eldl()  # float32 weights, read before x64
    jax.config.update("jax_enable_x64", True)
    table = default_emissivity_table()
    theta = jc.ThetaSim()
    h = np.asarray(default_steps(0.05, theta))
    config = jc.SurveyConfig(area_deg2=args.area, n_boxes=args.boxes, cell_size=2.0, pixel_arcmin=3.0, n_steps=3,
                             threshold=2e-9, cr_min=2e-7, max_sources=16, softness=0.02, softness_z=0.005,
                             cr_edges=np.geomspace(2e-7, 2e-4, 5), hr_edges=np.geomspace(0.03, 1.0, 4),
                             z_edges=np.linspace(0.1, 0.5, 3), omega_m_min=0.3 - 1.01 * h[0], omega_m_max=0.3 + 1.01 * h[0])
    keys = jax.random.split(jax.random.key(0), args.keys)
    segs = reference_segmentations(theta, keys, config, eldl=eldl, table=table)
    if args.method == "jvp":
        sens, _ = xod_sensitivity(theta, keys, config, eldl=eldl, table=table, segmentations=segs)
        xods, jac = sens.xod, sens.jacobian
    else:
        run = jax.jit(lambda k, s: jc.simulate_survey(theta, k, config, eldl=eldl, table=table, segmentation=s).xod_soft)
        xods = jnp.stack([run(k, s) for k, s in zip(keys, segs)])
        jac = finite_difference_jacobians(theta, keys, config, 1e-2 * h, policy="fixed", soft=True, eldl=eldl,
                                          table=table, segmentations=segs)
    tot = mc_estimate(project(xods, "total"))
    print(f"{args.keys} keys of {args.area:g} deg² ({args.boxes} boxes): soft XOD total {float(tot.mean):.2f} ± "
          f"{float(tot.stderr):.2f} sources (SYNTHETIC baryons)")
    d = mc_estimate(project(jac, "total"))
    for a, name in enumerate(PARAM_NAMES):
        print(f"  ∂N/∂{name:8s} = {float(d.mean[a]):+9.3f} ± {float(d.stderr[a]):.3f}  ({args.method})")
    F, N = simulation_fisher(xods, jac, area_scale=200.0 / config.area_deg2)
    err = np.asarray(marginal_errors(F))
    print("Fisher errors at 200 deg²: " + ", ".join(f"{n} {e:.3g}" for n, e in zip(PARAM_NAMES, err))
          + f"; FoM(Ω_m, σ_8) = {float(figure_of_merit(F)):.3g}; MC-noise share of tr F = "
          f"{float(jnp.trace(N) / jnp.trace(F)):.2f}")
    if args.quick:
        return
    bcfg = ScalingBoxConfig(box_size=(48.0, 48.0, 24.0), cell_size=1.0)
    cl = jax.jit(lambda k: boxes_at(theta.to_array(), k, bcfg, eldl=eldl, table=table))(jax.random.split(jax.random.key(1), 2))
    fit = fit_clusters(cl, bcfg)
    e = np.asarray(fit.errors)
    print(f"CR–M at z = {bcfg.z}: {float(fit.n_eff):.1f} clusters, log10 CR(10¹⁴) = {float(fit.norm):.2f} ± {e[0]:.2f}, "
          f"slope {float(fit.slope):.2f} ± {e[1]:.2f}, scatter {float(fit.scatter):.2f} ± {e[2]:.2f} dex")


if __name__ == "__main__":
    main()
