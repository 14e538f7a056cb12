"""Simulation-based inference on the survey pipeline at a toy scale: XODs → ResNet summaries → MDN posterior.

1. (θ_sim, XOD) pairs from the survey pipeline (`SurveySimulator`: PM boxes,
   shipped eLDL, EPIC-pn count rates, sep detection, hard XOD), θ_sim drawn on a
   Latin hypercube from seed 001 Table 1 with Ω_m and σ_8 narrowed, written to a
   resumable HDF5 file (`generate_dataset`; run it again after a kill and it
   continues);
2. the seed 001 ResNet compressor with the Gaussian-NLL head (`train_compressor`);
3. a 10-component MDN posterior on the summaries (`train_posterior`);
4. the posterior of Ω_m and σ_8 for one held-out mock, against its true θ.

The defaults are tiny (2 deg², 4 boxes of 2 h⁻¹ Mpc voxels, 6′ pixels, 2 PM
steps, a few hundred simulations) so that it runs in minutes on a laptop CPU;
the detection threshold and CR cut are scaled down accordingly
(`examples/survey_xod.py`). At this size the XODs hold few clusters and the
posterior is barely narrower than the prior: it shows the machinery, not
seed 001's constraints (200 deg², 48 000 simulations).

    python examples/npe_simulation.py [--n 256] [--area 2] [--out DIR] [--epochs 30]
"""

import argparse
import pathlib
import tempfile

import jax
import numpy as np

import jaxcluster as jc
from jaxcluster.inference import (
    BoxPrior,
    SurveySimulator,
    TrainConfig,
    generate_dataset,
    load_dataset,
    train_posterior,
)
from jaxcluster.inference.compressor import train_compressor


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="simulations (the last one is the 'observed' mock)")
    ap.add_argument("--area", type=float, default=2.0, help="survey area [deg²]")
    ap.add_argument("--n-boxes", type=int, default=4, help="boxes along the lightcone")
    ap.add_argument("--cell-size", type=float, default=2.0, help="voxel side [h⁻¹ Mpc]")
    ap.add_argument("--pixel", type=float, default=6.0, help="map pixel [arcmin]")
    ap.add_argument("--steps", type=int, default=2, help="PM steps per box")
    ap.add_argument("--epochs", type=int, default=30, help="maximum epochs of the compressor and of the MDN")
    ap.add_argument("--out", default=None, help="folder for the dataset (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    n_dev = jax.device_count()
    config = jc.SurveyConfig(area_deg2=args.area, n_boxes=args.n_boxes, cell_size=args.cell_size,
                             pixel_arcmin=args.pixel, n_steps=args.steps, threshold=1e-7, cr_min=1e-5,
                             cr_edges=np.geomspace(1e-5, 1e-2, 5), hr_edges=np.geomspace(0.1, 2.0, 4),
                             omega_m_min=0.2, omega_m_max=0.4)
    prior = BoxPrior.theta_sim(Omega_m=(0.2, 0.4), sigma_8=(0.7, 0.9))
    n = -(-args.n // n_dev) * n_dev
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(args.out or tmp) / "survey_xods.h5"
        generate_dataset(SurveySimulator(config), prior, n, out, seed=args.seed, design="latin_hypercube",
                         chunk_size=min(n, 8 * n_dev), batch_mode="map",
                         metadata=dict(example="npe_simulation", area_deg2=args.area), progress=False)
        theta, xod, _ = load_dataset(out)
    totals = xod.sum(axis=(1, 2, 3))
    print(f"{n} survey XODs of shape {xod.shape[1:]} ({args.area:g} deg², {args.n_boxes} boxes): "
          f"clusters per XOD median {np.median(totals):.0f}, range {totals.min():.0f}–{totals.max():.0f}")

    theta_tr, xod_tr, theta_obs, xod_obs = theta[:-1], xod[:-1], theta[-1], xod[-1]
    key = jax.random.key(args.seed)
    comp = train_compressor(xod_tr, theta_tr, key=jax.random.fold_in(key, 0), head="gaussian", width=8, hidden=32,
                            batch_size=min(32, len(theta_tr) // 2), max_epochs=args.epochs, patience=10,
                            progress=False).compressor
    summaries = np.asarray(jax.vmap(comp.summary)(xod_tr))
    print(f"compressor: summaries of {summaries.shape[1]} numbers (mean and ln σ of the 6 θ_sim)")

    cfg = TrainConfig(batch_size=min(200, len(theta_tr) // 2), max_epochs=args.epochs, patience=10)
    post, hist = train_posterior(theta_tr, summaries, prior.low, prior.high, cfg, key=jax.random.fold_in(key, 1),
                                 names=prior.names)
    print(f"MDN: {hist['epochs']} epochs, best validation −ln q = {min(hist['best_val_loss']):.3f}")

    draws = np.asarray(post.sample(jax.random.fold_in(key, 2), comp.summary(xod_obs), 4000))
    prior_sd = (np.asarray(prior.high) - np.asarray(prior.low)) / np.sqrt(12.0)
    for j, name in enumerate(prior.names[:2]):
        print(f"{name}: posterior {draws[:, j].mean():.3f} ± {draws[:, j].std():.3f} (prior σ {prior_sd[j]:.3f}), "
              f"true {theta_obs[j]:.3f}")


if __name__ == "__main__":
    main()
