"""Simulate a small X-ray survey and its XOD, and the XOD's derivative with respect to Ω_m.

One lightcone from z = 0.1 to 0.5 (12 boxes) with the shipped eLDL and the
EPIC-pn count-rate table, sep detection, the hard and soft XODs
(`jaxcluster.simulate_survey`); then d(soft XOD total)/dΩ_m with the
segmentation held fixed (`segmentation=`), against a central finite
difference. The defaults are coarse (2 h⁻¹ Mpc voxels, 3′ pixels, 4 PM
steps) so that it runs in a minute on a laptop CPU, and the detection
threshold and CR cut are scaled down accordingly; `--cell-size 0.39
--pixel 1 --threshold 1e-4 --cr-min 0.02` is seed 001's setting.

    python examples/survey_xod.py [--area 4] [--cell-size 2] [--omega-m 0.3] [--seed 0] [--no-grad]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jaxcluster as jc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--area", type=float, default=4.0, help="lightcone area [deg²]")
    ap.add_argument("--cell-size", type=float, default=2.0, help="voxel side [h⁻¹ Mpc]")
    ap.add_argument("--pixel", type=float, default=3.0, help="map pixel [arcmin]")
    ap.add_argument("--steps", type=int, default=4, help="PM steps per box")
    ap.add_argument("--threshold", type=float, default=1e-7, help="detection threshold [counts s⁻¹ arcmin⁻²]")
    ap.add_argument("--cr-min", type=float, default=1e-5, help="CR[0.5–2] cut [counts s⁻¹]")
    ap.add_argument("--omega-m", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-grad", action="store_true", help="skip the derivative (its compilation takes ~1 min)")
    args = ap.parse_args(argv)
    eldl = jc.default_eldl()  # the shipped (float32) weights, read before x64 is switched on
    jax.config.update("jax_enable_x64", True)  # float64 for the finite-difference check

    om = args.omega_m
    config = jc.SurveyConfig(area_deg2=args.area, cell_size=args.cell_size, pixel_arcmin=args.pixel,
                             n_steps=args.steps, threshold=args.threshold, cr_min=args.cr_min,
                             cr_edges=np.geomspace(args.cr_min, 1e3 * args.cr_min, 7),
                             omega_m_min=om - 0.01, omega_m_max=om + 0.01)
    key = jax.random.key(args.seed)
    res = jax.jit(lambda th: jc.simulate_survey(th, key, config, eldl=eldl))(jc.ThetaSim(Omega_m=om))
    g = config.geometry
    cat = res.catalogue
    n_det = int(cat.valid.sum())
    n_sel = int(cat.selected(config.cr_min).sum())
    print(f"{args.area:g} deg², {g.n_boxes} boxes of {g.mesh_shape} voxels, box redshifts "
          f"{np.round(np.asarray(res.layout.z), 3).tolist()}")
    print(f"detected {n_det} sources, {n_sel} with CR > {config.cr_min:g} c/s; XOD total {float(res.xod.sum()):.0f} "
          f"(soft {float(res.xod_soft.sum()):.2f}); counts per z bin {np.asarray(res.xod.sum(axis=(0, 1))).tolist()}")

    if args.no_grad:
        return
    seg = res.segmentation

    @jax.jit
    def total(om):
        r = jc.simulate_survey(jc.ThetaSim(Omega_m=om), key, config, segmentation=seg, eldl=eldl)
        return jnp.sum(r.xod_soft)

    value, grad = jax.value_and_grad(total)(jnp.asarray(om))
    eps = 1e-4
    fd = (total(jnp.asarray(om + eps)) - total(jnp.asarray(om - eps))) / (2 * eps)
    print(f"soft XOD total {float(value):.4f}: d/dΩ_m = {float(grad):+.4f} (autodiff), {float(fd):+.4f} (finite difference)")


if __name__ == "__main__":
    main()
