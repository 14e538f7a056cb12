"""The exact check of the neural posteriors: NPE against blackjax NUTS on the analytic model.

    python benchmarks/npe_exact.py [--n-train 30000] [--n-test 300] [--n-nuts 6]
                                   [--work out/npe_exact] [--out benchmarks/results/npe_exact.json]

**Problem.** The analytic XOD model (`jaxcluster.analytic`) of a 2000 deg²
survey with a coarse 4 × 3 × 2 (CR, HR, z) binning and the reduced quadrature
of the analytic NUTS benchmark; free parameters (Ω_m, σ_8, log10_M0): the two
cosmological ones with their flat Table 1 priors, and the M–T normalisation,
the best-constrained scaling-relation nuisance, with its Gaussian prior
(`NUISANCE_PRIOR_SIGMA`). Observations are Poisson mocks of λ(θ), θ from the
prior, so the exact posterior is the one NUTS samples with `log_posterior`.

**Stages** (each cached under ``--work``, so a killed run resumes):

1. simulate ``n_train`` (θ, x) pairs for training, ``n_test`` for calibration,
   and ``n_nuts`` reference XODs with θ away from the prior edges (seed 001
   Fig. 9 excludes the borders likewise);
2. NUTS (2 chains, dense metric started from the Fisher covariance at the
   true θ) on each reference XOD, one file per XOD;
3. train the MDN (sbi defaults) on x' = √x (variance-stabilised counts);
4. compare: posterior mean offsets in NUTS σ and width ratios on the
   reference XODs; SBC rank histograms (KS p), expected coverage and TARP on
   the calibration set; figures into ``docs/validation/figures/``.

Targets (issue 8): |Δmean| < 0.2 σ and width ratio within 15 % for Ω_m and
σ_8; rank-histogram KS p > 0.01 for every parameter over ≥ 200 test XODs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # entry point: the analytic model and NUTS run in float64

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcluster.analytic import (  # noqa: E402
    NUISANCE_PRIOR_SIGMA,
    AnalyticModel,
    SurveySpec,
    XODBinning,
    fisher_covariance,
    fisher_matrix,
    nuts_diagnostics,
    poisson_mock,
    run_nuts,
    unconstrained_covariance,
)
from jaxcluster.params import PRIOR_BOUNDS  # noqa: E402

NAMES = ("Omega_m", "sigma_8", "log10_M0")
LABELS = (r"$\Omega_m$", r"$\sigma_8$", r"$\log_{10} M_0$")


def analytic_problem() -> AnalyticModel:
    """The analytic model of the exact check (module docstring)."""
    return AnalyticModel(
        NAMES,
        survey=SurveySpec(area_deg2=2000.0, n_mass=24, n_z_per_bin=3, n_gh=3, n_sigma_knots=8),
        binning=XODBinning(np.geomspace(0.02, 3.0, 5), np.geomspace(0.1, 2.0, 4), np.linspace(0.1, 0.5, 3)),
    )


def bounds() -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of each parameter for the NPE's logit map: the flat priors' box, ±inf for the Gaussian one."""
    lo = np.array([PRIOR_BOUNDS["Omega_m"][0], PRIOR_BOUNDS["sigma_8"][0], -np.inf])
    hi = np.array([PRIOR_BOUNDS["Omega_m"][1], PRIOR_BOUNDS["sigma_8"][1], np.inf])
    return lo, hi


def sample_prior(key, model: AnalyticModel, n: int, interior: bool = False) -> jax.Array:
    """θ from the prior (n, 3); ``interior`` keeps the flat parameters in the middle half of their box."""
    k1, k2, k3 = jax.random.split(key, 3)
    frac = (0.25, 0.75) if interior else (0.0, 1.0)
    cols = []
    for k, name in zip((k1, k2), ("Omega_m", "sigma_8")):
        lo, hi = PRIOR_BOUNDS[name]
        cols.append(lo + (hi - lo) * jax.random.uniform(k, (n,), jnp.float64, *frac))
    m0 = model.theta0()[2]
    cols.append(m0 + NUISANCE_PRIOR_SIGMA["log10_M0"] * jax.random.normal(k3, (n,), jnp.float64))
    return jnp.stack(cols, axis=1)


def simulate(key, model: AnalyticModel, theta: jax.Array, chunk: int = 512) -> np.ndarray:
    """Poisson mock XODs (n, n_cr, n_hr, n_z) of the rows of θ, in chunks of ``chunk``."""
    lam_fn = jax.jit(jax.vmap(model))
    out = []
    for i, start in enumerate(range(0, theta.shape[0], chunk)):
        lam = lam_fn(theta[start:start + chunk])
        out.append(np.asarray(poisson_mock(jax.random.fold_in(key, i), lam)))
    return np.concatenate(out)


def stage_simulate(work: Path, model, n_train: int, n_test: int, n_nuts: int, seed: int) -> dict:
    path = work / "sims.npz"
    if path.exists():
        d = dict(np.load(path))
        if len(d["theta_train"]) == n_train and len(d["theta_test"]) == n_test and len(d["theta_nuts"]) == n_nuts:
            return d
    key = jax.random.key(seed)
    ks = jax.random.split(key, 6)
    t0 = time.perf_counter()
    d = {}
    for (kt, kx), name, n, interior in (((ks[0], ks[1]), "train", n_train, False),
                                        ((ks[2], ks[3]), "test", n_test, False),
                                        ((ks[4], ks[5]), "nuts", n_nuts, True)):
        th = sample_prior(kt, model, n, interior)
        d[f"theta_{name}"] = np.asarray(th)
        d[f"x_{name}"] = simulate(kx, model, th)
    d["simulate_seconds"] = np.asarray(time.perf_counter() - t0)
    np.savez(path, **d)
    return d


def stage_nuts(work: Path, model, theta: np.ndarray, x: np.ndarray, n_warmup: int, n_samples: int) -> list[dict]:
    """NUTS reference posteriors, one cached file per XOD."""
    prior_sigma = jnp.array([jnp.inf, jnp.inf, NUISANCE_PRIOR_SIGMA["log10_M0"]])
    run = eqx.filter_jit(lambda m, d, i, k, c: run_nuts(m, d, i, key=k, n_warmup=n_warmup, n_samples=n_samples,
                                                         inverse_mass_matrix=c, mass_matrix_pseudo_count=100.0))
    out = []
    for i in range(len(theta)):
        path = work / f"nuts_{i}.npz"
        if path.exists():
            out.append(dict(np.load(path)))
            continue
        t0 = time.perf_counter()
        th = jnp.asarray(theta[i])
        F, _ = fisher_matrix(model, th)
        cov = fisher_covariance(F, prior_sigma)
        err = jnp.sqrt(jnp.diag(cov))
        # start the chains near the truth, inside the flat priors
        init = th[None, :] + 0.3 * err[None, :] * jax.random.normal(jax.random.key(100 + i), (2, 3), th.dtype)
        lo, hi = bounds()
        init = jnp.clip(init, jnp.asarray(lo) + 1e-3, jnp.asarray(hi) - 1e-3)
        imm = unconstrained_covariance(model, cov, th)
        res = jax.block_until_ready(run(model, jnp.asarray(x[i]), init, jax.random.key(200 + i), imm))
        diag = nuts_diagnostics(res["samples"])
        rec = dict(samples=np.asarray(res["samples"]), rhat=np.asarray(diag["rhat"]), ess=np.asarray(diag["ess"]),
                   divergences=np.asarray(jnp.sum(res["is_divergent"])), seconds=np.asarray(time.perf_counter() - t0),
                   mean_integration_steps=np.asarray(jnp.mean(res["num_integration_steps"])))
        np.savez(path, **rec)
        print(f"NUTS {i}: {rec['seconds']:.0f} s, ESS {rec['ess']}, R-hat {rec['rhat']}", flush=True)
        out.append(rec)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=30000)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--n-nuts", type=int, default=6)
    p.add_argument("--nuts-warmup", type=int, default=300)
    p.add_argument("--nuts-samples", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default="simulate,nuts,npe")
    p.add_argument("--work", default="out/npe_exact")
    p.add_argument("--figures", default="docs/validation/figures")
    p.add_argument("--out", default="benchmarks/results/npe_exact.json")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stages = set(args.stages.split(","))
    model = analytic_problem()
    sims = stage_simulate(work, model, args.n_train, args.n_test, args.n_nuts, args.seed)
    print(f"simulated in {float(sims['simulate_seconds']):.0f} s", flush=True)
    if "nuts" in stages:
        stage_nuts(work, model, sims["theta_nuts"], sims["x_nuts"], args.nuts_warmup, args.nuts_samples)
    if "npe" in stages:
        from _npe_exact_compare import compare  # noqa: PLC0415  (stage 3-4, below)
        return compare(args, model, sims, work)
    return {}


if __name__ == "__main__":
    main()
