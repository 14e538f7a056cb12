"""Command-line entry points of the analytic baseline: ``jaxcluster fisher`` and ``jaxcluster hmc``.

Both write a JSON summary and a corner plot to ``--out``. They switch x64 on
(the analytic integrals and the Fisher inversion need float64), at the entry
point as ARCHITECTURE §2 asks, never at import.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from .scaling import SCALING_NAMES

__all__ = ["fisher_main", "hmc_main"]

_ALLOWED = ("Omega_m", "sigma_8") + SCALING_NAMES


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory (created)")
    parser.add_argument("--area", type=float, default=200.0, help="survey area [deg²] (default 200, seed 001)")
    parser.add_argument("--cr-cut", type=float, default=0.02, help="CR[0.5-2 keV] cut [counts/s] (default 0.02)")
    parser.add_argument("--params", default="Omega_m,sigma_8,log10_M0,alpha_MT,gamma_MT,log10_L0,alpha_LT,gamma_LT",
                        help=f"comma-separated free parameters among {','.join(_ALLOWED)}")
    parser.add_argument("--Omega-m", type=float, default=0.3, help="fiducial Ω_m")
    parser.add_argument("--sigma-8", type=float, default=0.8, help="fiducial σ_8")


def _names(args) -> tuple[str, ...]:
    names = tuple(n.strip() for n in args.params.split(",") if n.strip())
    bad = [n for n in names if n not in _ALLOWED]
    if bad or not names:
        raise SystemExit(f"--params: unknown or empty {bad or names}; allowed: {','.join(_ALLOWED)}")
    return names


def _model(args):
    import jax

    jax.config.update("jax_enable_x64", True)
    from ..cosmology import Cosmology
    from .counts import SurveySpec
    from .fisher import AnalyticModel

    try:
        survey = SurveySpec(area_deg2=args.area, cr_cut=args.cr_cut)
        cosmo = Cosmology(Omega_m=args.Omega_m, sigma_8=args.sigma_8)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return AnalyticModel(_names(args), cosmo=cosmo, survey=survey)


def _prior_sigma(names, use_prior: bool):
    import jax.numpy as jnp

    from .hmc import NUISANCE_PRIOR_SIGMA

    return jnp.array([NUISANCE_PRIOR_SIGMA[n] if (use_prior and n in NUISANCE_PRIOR_SIGMA) else jnp.inf
                      for n in names])


def fisher_main(argv: list[str] | None = None) -> int:
    """``jaxcluster fisher --out DIR [--area 200] [--cr-cut 0.02] [--params ...]``.

    Writes ``DIR/fisher.json`` (θ₀, F, covariance, marginal errors, FoM(Ω_m, σ_8),
    total counts, timing) and ``DIR/fisher_corner.png``.
    """
    parser = argparse.ArgumentParser(prog="jaxcluster fisher", description="Fisher forecast of the analytic XOD model")
    _common(parser)
    # NUTS always uses the nuisance priors (an improper flat prior could leave the posterior improper)
    parser.add_argument("--no-prior", action="store_true", help="no Gaussian nuisance priors")
    args = parser.parse_args(argv)
    model = _model(args)
    import equinox as eqx
    import jax
    import numpy as np

    from .fisher import figure_of_merit, fisher_covariance, fisher_matrix, marginal_errors, plot_fisher_corner

    f = eqx.filter_jit(fisher_matrix)
    t0 = time.perf_counter()
    F, lam = jax.block_until_ready(f(model))
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    F, lam = jax.block_until_ready(f(model))
    t_run = time.perf_counter() - t0
    prior = _prior_sigma(model.names, not args.no_prior)
    cov = fisher_covariance(F, prior)
    err = marginal_errors(F, prior)
    fom = figure_of_merit(F, model.names.index("Omega_m") if "Omega_m" in model.names else 0,
                          model.names.index("sigma_8") if "sigma_8" in model.names else 1, prior) \
        if model.n_param >= 2 else float("nan")
    args.out.mkdir(parents=True, exist_ok=True)
    res = dict(
        names=list(model.names), theta0=np.asarray(model.theta0()).tolist(), fisher=np.asarray(F).tolist(),
        prior_sigma=[None if not math.isfinite(v) else float(v) for v in np.asarray(prior)],
        covariance=np.asarray(cov).tolist(), marginal_errors=np.asarray(err).tolist(), fom_Omega_m_sigma_8=float(fom),
        total_counts=float(np.sum(np.asarray(lam))), area_deg2=args.area, cr_cut=args.cr_cut,
        seconds_first_call=t_first, seconds=t_run,
    )
    (args.out / "fisher.json").write_text(json.dumps(res, indent=2))
    plot_fisher_corner(cov, model.theta0(), model.names, path=args.out / "fisher_corner.png")
    return 0


def hmc_main(argv: list[str] | None = None) -> int:
    """``jaxcluster hmc --out DIR [--chains 4] [--warmup 500] [--samples 1000] [--mock] [--seed 0] ...``.

    Samples the posterior of an Asimov XOD (λ(θ₀), default) or of a Poisson
    mock (``--mock``) with NUTS; writes ``DIR/hmc.json`` (mean, std, R̂, ESS,
    divergences, step sizes, Fisher errors for comparison, timing),
    ``DIR/hmc_samples.npz`` and ``DIR/hmc_corner.png``.
    """
    parser = argparse.ArgumentParser(prog="jaxcluster hmc", description="NUTS on the analytic XOD posterior")
    _common(parser)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mock", action="store_true", help="fit a Poisson mock instead of the Asimov XOD")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar over the samples")
    args = parser.parse_args(argv)
    if args.chains < 1 or args.warmup < 1 or args.samples < 2:
        raise SystemExit("--chains >= 1, --warmup >= 1 and --samples >= 2 are required")
    model = _model(args)
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .counts import poisson_mock
    from .fisher import fisher_covariance, fisher_matrix, plot_fisher_corner
    from .hmc import initial_points, nuts_diagnostics, run_nuts, unconstrained_covariance

    def say(text: str) -> None:
        print(f"jaxcluster hmc: {text}", flush=True)

    key = jax.random.key(args.seed)
    k_data, k_init, k_run = jax.random.split(key, 3)
    t_start = time.perf_counter()
    say(f"Fisher matrix of {model.n_param} parameters ({', '.join(model.names)}) at the fiducial …")
    F, lam = eqx.filter_jit(fisher_matrix)(model)
    data = poisson_mock(k_data, lam) if args.mock else lam
    cov = fisher_covariance(F, _prior_sigma(model.names, True))
    err = jnp.sqrt(jnp.diag(cov))
    th0 = model.theta0()
    # starting points drawn in the sampling space: always inside the flat priors, and physical
    init = initial_points(model, k_init, args.chains, cov, scale=0.5)
    imm = unconstrained_covariance(model, cov)
    run = eqx.filter_jit(lambda m, d, i, k, c: run_nuts(m, d, i, key=k, n_warmup=args.warmup,
                                                         n_samples=args.samples, inverse_mass_matrix=c,
                                                         progress=not args.no_progress))
    say(f"done in {time.perf_counter() - t_start:.0f} s; NUTS: {args.chains} chains × ({args.warmup} warm-up + "
        f"{args.samples} samples): compiling, warming up, then a bar over the samples …")
    t0 = time.perf_counter()
    out = jax.block_until_ready(run(model, data, init, k_run, imm))
    seconds = time.perf_counter() - t0
    say(f"NUTS done in {seconds:.0f} s; writing {args.out}/hmc.json, hmc_samples.npz, hmc_corner.png")
    diag = nuts_diagnostics(out["samples"])
    args.out.mkdir(parents=True, exist_ok=True)
    res = dict(
        names=list(model.names), theta0=np.asarray(th0).tolist(), data="mock" if args.mock else "asimov",
        mean=np.asarray(diag["mean"]).tolist(), std=np.asarray(diag["std"]).tolist(),
        rhat=np.asarray(diag["rhat"]).tolist(), ess=np.asarray(diag["ess"]).tolist(),
        fisher_errors=np.asarray(err).tolist(), n_divergent=int(np.sum(np.asarray(out["is_divergent"]))),
        step_size=np.asarray(out["step_size"]).tolist(), chains=args.chains, warmup=args.warmup,
        samples=args.samples, seconds_including_compilation=seconds,
        ess_per_second=float(np.min(np.asarray(diag["ess"])) / seconds),
    )
    (args.out / "hmc.json").write_text(json.dumps(res, indent=2))
    np.savez(args.out / "hmc_samples.npz", samples=np.asarray(out["samples"]), names=np.array(model.names))
    flat = np.asarray(out["samples"]).reshape(-1, model.n_param)
    plot_fisher_corner(cov, th0, model.names, samples=flat, path=args.out / "hmc_corner.png")
    return 0
