"""Neural posterior estimation on the analytic cluster-count model, end to end.

1. simulate (θ, XOD) pairs from a box prior with Poisson noise
   (`jaxcluster.inference.generate_dataset` with `AnalyticSimulator`: chunked
   HDF5 that a rerun resumes);
2. train a mixture density network on √counts (sbi's recipe, `train_posterior`);
3. the posterior of one mock XOD: 68 % intervals and FoM (seed 001 Table 3),
   a corner plot;
4. calibration over held-out mocks: SBC rank histograms (KS p-values),
   expected coverage and TARP, figures.

The defaults take a few minutes on one CPU core; ``--n-sim 1500 --n-test 60
--max-epochs 40`` runs in about a minute (a loose posterior, for a smoke test).
`benchmarks/npe_exact.py` is the full check against NUTS.

    python examples/npe_analytic.py [--n-sim 20000] [--n-test 200] [--estimator mdn|flow] [--out out/npe_analytic]
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcluster.analytic import AnalyticModel, SurveySpec, XODBinning
from jaxcluster.inference import (
    AnalyticSimulator,
    BoxPrior,
    TrainConfig,
    corner_plot,
    expected_coverage,
    generate_dataset,
    load_dataset,
    load_posterior,
    plot_coverage,
    plot_rank_histograms,
    rank_histogram,
    save_posterior,
    sbc_ranks,
    table3_summary,
    tarp,
    train_posterior,
)

NAMES = ("Omega_m", "sigma_8", "log10_M0")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-sim", type=int, default=20000, help="training pairs (10 %% held out for early stopping)")
    ap.add_argument("--n-test", type=int, default=200, help="held-out mocks for the calibration checks")
    ap.add_argument("--n-draws", type=int, default=500, help="posterior draws per test mock")
    ap.add_argument("--estimator", default="mdn", choices=("mdn", "flow"))
    ap.add_argument("--max-epochs", type=int, default=1000)
    ap.add_argument("--area", type=float, default=2000.0, help="survey area [deg²]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/npe_analytic", help="folder for the data set, posterior and figures")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # A coarse XOD and reduced quadrature keep the simulator cheap.
    model = AnalyticModel(NAMES, survey=SurveySpec(area_deg2=args.area, n_mass=24, n_z_per_bin=3, n_gh=3,
                                                   n_sigma_knots=8),
                          binning=XODBinning(np.geomspace(0.02, 3.0, 5), np.geomspace(0.1, 2.0, 4),
                                             np.linspace(0.1, 0.5, 3)))
    prior = BoxPrior.analytic(NAMES)
    n_total = args.n_sim + args.n_test
    path = generate_dataset(AnalyticSimulator(model), prior, n_total, out / f"analytic_{n_total}.h5", seed=args.seed,
                            chunk_size=500, progress=False)
    data = load_dataset(path)
    summaries = np.sqrt(data.xod.reshape(n_total, -1).astype(np.float64))   # variance-stabilised counts
    theta = data.theta
    print(f"{n_total} mocks, mean {summaries.__pow__(2).sum(1).mean():.0f} clusters per XOD")

    cfg = TrainConfig(estimator=args.estimator, max_epochs=args.max_epochs)
    post, hist = train_posterior(theta[: args.n_sim], summaries[: args.n_sim], np.array(prior.low),
                                 np.array(prior.high), cfg, key=jax.random.key(args.seed), names=NAMES)
    save_posterior(out / f"posterior_{args.estimator}", post, cfg)
    post, cfg = load_posterior(out / f"posterior_{args.estimator}")   # what a later session would do
    print(f"trained {hist['epochs']} epochs ({hist['epoch_seconds'] * 1e3:.0f} ms each), "
          f"best validation -ln q = {hist['best_val_loss'][0]:.3f}")

    # one mock: intervals, FoM, corner plot
    i0 = args.n_sim
    draws0 = np.asarray(post.sample(jax.random.key(1), summaries[i0], 5000))
    t3 = table3_summary(draws0, NAMES)
    print(f"mock 0, θ_true = {np.round(theta[i0], 3)}: FoM = {t3['fom']:.0f}; "
          + ", ".join(f"Δ{n} = {t3[n]['half_width']:.3f} ({100 * t3[n]['relative']:.0f} %)" for n in NAMES))
    corner_plot({f"NPE ({args.estimator})": draws0}, NAMES, truth=theta[i0], path=out / "corner.png")

    # calibration over the held-out mocks
    th_te = theta[i0:]
    s_te = jnp.asarray(summaries[i0:], jnp.float32)
    keys = jax.random.split(jax.random.key(2), args.n_test)
    draws = np.asarray(jax.jit(jax.vmap(lambda k, s: post.sample(k, s, args.n_draws)))(keys, s_te), np.float64)
    ranks = sbc_ranks(th_te, draws)
    ks = rank_histogram(ranks, args.n_draws, n_bins=10)["ks_pvalue"]
    lp = jax.jit(jax.vmap(jax.vmap(post.log_prob, in_axes=(0, None))))
    lp_draws = np.asarray(lp(jnp.asarray(draws, jnp.float32), s_te))
    lp_true = np.asarray(jax.vmap(post.log_prob)(jnp.asarray(th_te, jnp.float32), s_te))
    cov = expected_coverage(lp_true, lp_draws)
    tp = tarp(th_te, draws, lo=np.array(prior.low), hi=np.array(prior.high))
    print("SBC rank KS p-values: " + ", ".join(f"{n} {p:.2f}" for n, p in zip(NAMES, ks)))
    print(f"HPD coverage: max |coverage − level| = {np.max(np.abs(cov['coverage'] - cov['levels'])):.3f}; "
          f"TARP: max |ECP − α| = {float(tp['max_abs_deviation']):.3f}")
    plot_rank_histograms(ranks, args.n_draws, NAMES, n_bins=10, path=out / "ranks.png")
    plot_coverage({"HPD": (cov["levels"], cov["coverage"]), "TARP": (tp["alpha"], tp["ecp"])},
                  path=out / "coverage.png")
    print(f"figures and posterior in {out}/")


if __name__ == "__main__":
    main()
