"""Command-line entry points of the analytic baseline: ``jaxcluster fisher`` and ``jaxcluster hmc``.

Both write a JSON summary (with a ``provenance`` record) and a corner plot to
``--out``; ``hmc --xod FILE`` fits an observed XOD and also writes the
posterior products of ``npe infer`` (`jaxcluster.inference.posterior_files`).
They switch x64 on (the analytic integrals and the Fisher inversion need
float64), at the entry point as ARCHITECTURE §2 asks, never at import.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from ..clihelp import HelpFormatter, add_deprecated_alias, seed_type
from .scaling import SCALING_NAMES

__all__ = ["fisher_main", "hmc_main"]

_ALLOWED = ("Omega_m", "sigma_8") + SCALING_NAMES


_AREA_DEFAULT = 200.0  # deg², seed 001
_CR_CUT_DEFAULT = 0.02  # counts s⁻¹, seed 001
_JSON_DIGITS = 10  # float64 results (x64): keep more digits than clean_json's float32 default


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory (created)")
    parser.add_argument("--area", type=float, default=None,
                        help=f"survey area [deg²] (default: {_AREA_DEFAULT:g}, seed 001; with --xod the file's area)")
    parser.add_argument("--cr-cut", type=float, default=None,
                        help=f"selection cut on CR[0.5–2 keV] [counts s⁻¹] (default: {_CR_CUT_DEFAULT:g}; "
                        "with --xod the file's lowest CR edge)")
    parser.add_argument("--selection", choices=("cut", "xxl_c1"), default="cut",
                        help="cluster selection: 'cut' = CR > --cr-cut (seed 001); 'xxl_c1' = the shipped "
                        "injection-recovery P(C1 | CR, r_c, z) as a weight, no cut (SurveySpec.selection)")
    parser.add_argument("--params", default="Omega_m,sigma_8,log10_M0,alpha_MT,gamma_MT,log10_L0,alpha_LT,gamma_LT",
                        help=f"comma-separated free parameters among {','.join(_ALLOWED)}")
    parser.add_argument("--omega-m", type=float, default=0.3, help="fiducial Ω_m (Fisher point, prior range [0.1, 0.5])")
    parser.add_argument("--sigma-8", type=float, default=0.8, help="fiducial σ_8 (Fisher point, prior range [0.6, 1.0])")
    add_deprecated_alias(parser, "--Omega-m", dest="omega_m", type=float)  # the old spelling, hidden


def _names(args) -> tuple[str, ...]:
    names = tuple(n.strip() for n in args.params.split(",") if n.strip())
    bad = [n for n in names if n not in _ALLOWED]
    if bad or not names:
        raise SystemExit(f"--params: unknown or empty {bad or names}; allowed: {','.join(_ALLOWED)}")
    if len(set(names)) != len(names):
        raise SystemExit(f"--params: {','.join(names)} names a parameter twice")
    return names


def _model(args, observed=None):
    """The `AnalyticModel` of the options; with ``observed`` (an `ObservedXOD`), on its bins, area and cut."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from ..cosmology import Cosmology
    from .counts import SurveySpec, XODBinning
    from .fisher import AnalyticModel

    if args.selection != "cut" and args.cr_cut is not None:
        raise SystemExit(f"error: --cr-cut {args.cr_cut:g} has no effect with --selection {args.selection} "
                         "(the C1 probability replaces the cut): leave one out")
    area = args.area if args.area is not None else _AREA_DEFAULT
    cr_cut = args.cr_cut if args.cr_cut is not None else _CR_CUT_DEFAULT
    binning = None
    if observed is not None:
        if observed.edges is None:
            raise SystemExit(f"error: --xod {observed.source} has no bin edges: the analytic model cannot be put on "
                             "its bins (`jaxcluster simulate` and `dataset generate` write them)")
        lowest = float(observed.edges["cr"][0])
        if args.cr_cut is None:
            cr_cut = lowest  # the XOD's selection is its lowest CR edge
        elif not math.isclose(args.cr_cut, lowest, rel_tol=1e-6):
            raise SystemExit(f"error: --cr-cut {args.cr_cut:g} differs from the lowest CR edge {lowest:g} counts/s of "
                             f"{observed.source}: the model's selection must be the XOD's (leave --cr-cut out)")
        if args.area is None:
            if observed.area_deg2 is None:
                raise SystemExit(f"error: --xod {observed.source} does not record its area: give --area [deg²]")
            area = observed.area_deg2
        try:
            binning = XODBinning(*(np.asarray(observed.edges[a]) for a in ("cr", "hr", "z")))
        except ValueError as err:
            raise SystemExit(f"error: --xod {observed.source}: {err}") from None
    try:
        survey = SurveySpec(area_deg2=area, cr_cut=cr_cut, selection=args.selection)
        cosmo = Cosmology(Omega_m=args.omega_m, sigma_8=args.sigma_8)
        return AnalyticModel(_names(args), cosmo=cosmo, survey=survey, binning=binning)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def _selection_text(survey) -> str:
    """'CR > 0.02 counts/s' or the C1 selection, for the progress lines."""
    if survey.selection == "cut":
        return f"CR > {survey.cr_cut:g} counts/s"
    return f"C1 selection ({survey.selection}, r_c = {survey.core_radius_r500:g} R500)"


def _prior_sigma(names, use_prior: bool):
    import jax.numpy as jnp

    from .hmc import NUISANCE_PRIOR_SIGMA

    return jnp.array([NUISANCE_PRIOR_SIGMA[n] if (use_prior and n in NUISANCE_PRIOR_SIGMA) else jnp.inf
                      for n in names])


def _settings(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)}


def _write_json(path: Path, res: dict, command: str, model, args, seed: int | None = None) -> None:
    """``res`` with its floats cleaned and a ``provenance`` record, written to ``path``."""
    import numpy as np

    from ..io.provenance import clean_json, provenance

    theta = dict(zip(model.names, np.asarray(model.theta0()).tolist()))
    settings = _settings(args) | dict(area_deg2=model.survey.area_deg2, cr_cut=model.survey.cr_cut,
                                      selection=model.survey.selection, xod_shape=list(model.binning.shape))
    res = dict(res, provenance=provenance(command, seed=seed, theta=theta, settings=settings))
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean_json(res, _JSON_DIGITS), indent=2))


def _fisher_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcluster fisher", description="Fisher forecast of the analytic XOD model",
                                     formatter_class=HelpFormatter)
    _common(parser)
    # NUTS always uses the nuisance priors (an improper flat prior could leave the posterior improper)
    parser.add_argument("--no-prior", action="store_true",
                        help="no Gaussian priors on the scaling-relation parameters (pure Poisson Fisher)")
    return parser


def fisher_main(argv: list[str] | None = None) -> int:
    """``jaxcluster fisher --out DIR [--area 200] [--cr-cut 0.02 | --selection xxl_c1] [--params ...] [--omega-m 0.3] [--sigma-8 0.8]``.

    Writes ``DIR/fisher.json`` (θ₀, F, covariance, marginal errors, FoM(Ω_m, σ_8),
    total counts, timing, provenance) and ``DIR/fisher_corner.png``.
    """
    args = _fisher_parser().parse_args(argv)
    model = _model(args)
    import equinox as eqx
    import jax
    import numpy as np

    from .fisher import figure_of_merit, fisher_covariance, fisher_matrix, marginal_errors, plot_fisher_corner

    def say(text: str) -> None:
        print(f"jaxcluster fisher: {text}", flush=True)

    say(f"Fisher matrix of {model.n_param} parameters ({', '.join(model.names)}), {model.survey.area_deg2:g} deg², "
        f"{_selection_text(model.survey)}: compiling λ(θ) and its Jacobian …")
    f = eqx.filter_jit(fisher_matrix)
    t0 = time.perf_counter()
    F, lam = jax.block_until_ready(f(model))
    t_first = time.perf_counter() - t0
    say(f"done in {t_first:.1f} s (with compilation); timing a second call …")
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
    say(f"{t_run:.2f} s per call; {float(np.sum(np.asarray(lam))):.1f} clusters expected; "
        f"writing {args.out}/fisher.json, fisher_corner.png")
    res = dict(
        names=list(model.names), theta0=np.asarray(model.theta0()), fisher=np.asarray(F),
        prior_sigma=[None if not math.isfinite(v) else float(v) for v in np.asarray(prior)],
        covariance=np.asarray(cov), marginal_errors=np.asarray(err), fom_Omega_m_sigma_8=float(fom),
        total_counts=float(np.sum(np.asarray(lam))), area_deg2=model.survey.area_deg2, cr_cut=model.survey.cr_cut,
        selection=model.survey.selection, seconds_first_call=t_first, seconds=t_run,
    )
    _write_json(args.out / "fisher.json", res, "fisher", model, args)
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_path

    fig = plot_fisher_corner(cov, model.theta0(), model.names,
                             title=f"Fisher forecast, analytic model, {model.survey.area_deg2:g} deg²")
    with atomic_path(args.out / "fisher_corner.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    for n, e in zip(model.names, np.asarray(err)):
        say(f"σ({n}) = {e:.4g}")
    return 0


def _hmc_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcluster hmc", description="NUTS on the analytic XOD posterior",
                                     formatter_class=HelpFormatter)
    _common(parser)
    parser.add_argument("--chains", type=int, default=4, help="independent NUTS chains (vectorised)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up (step-size adaptation) steps per chain")
    parser.add_argument("--samples", type=int, default=1000, help="kept samples per chain")
    parser.add_argument("--seed", type=seed_type, default=0, help="seed of the PRNG key (mock, starting points, NUTS)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--mock", action="store_true", help="fit a Poisson mock instead of the Asimov XOD")
    data.add_argument("--xod", type=Path, default=None,
                      help="fit this observed XOD: xod.npz of `jaxcluster simulate`, or one sample (the next "
                      "option) of a `dataset generate` HDF5 file")
    parser.add_argument("--index", type=int, default=None, help="which sample of a --xod dataset (0-based)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar over the samples")
    return parser


def hmc_main(argv: list[str] | None = None) -> int:
    """``jaxcluster hmc --out DIR [--chains 4] [--warmup 500] [--samples 1000] [--mock | --xod FILE [--index I]] ...``.

    Samples with NUTS the posterior of an Asimov XOD (λ(θ₀), default), of a
    Poisson mock (``--mock``) or of an observed XOD (``--xod``: ``xod.npz`` of
    ``jaxcluster simulate`` or sample I of a ``dataset generate`` file; the
    model is put on the file's bins, area and CR cut). Writes ``DIR/hmc.json``
    (mean, std, R̂, ESS, divergences, step sizes, Fisher errors for comparison,
    timing, provenance), ``DIR/hmc_samples.npz`` and ``DIR/hmc_corner.png``;
    with ``--xod`` also ``posterior.h5``, ``posterior_summary.ecsv`` and
    ``corner.png``, as ``npe infer`` writes them.
    """
    args = _hmc_parser().parse_args(argv)
    if args.chains < 1 or args.warmup < 1 or args.samples < 2:
        raise SystemExit("--chains >= 1, --warmup >= 1 and --samples >= 2 are required")
    if args.index is not None and args.xod is None:
        raise SystemExit("--index selects a sample of a --xod dataset: give --xod FILE")

    def say(text: str) -> None:
        print(f"jaxcluster hmc: {text}", flush=True)

    observed = None
    if args.xod is not None:
        from ..inference.observed import check_binning, read_xod

        try:
            observed = read_xod(args.xod, args.index)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
    model = _model(args, observed)
    if observed is not None:
        import numpy as np

        b = model.binning
        try:
            check_binning(observed, b.shape, {"cr": b.cr_edges, "hr": b.hr_edges, "z": b.z_edges},
                          what="the analytic model")
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        say(f"fitting {observed.source}: {float(np.sum(observed.xod)):.0f} clusters in {b.shape} (CR, HR, z) bins, "
            f"{model.survey.area_deg2:g} deg², {_selection_text(model.survey)}")
        if _is_simulated_survey(observed):
            say("note: the analytic model (scaling relations, Tinker08 mass function) is not the physics of the "
                "simulated survey (PM, eLDL gas, detection): this fit is a model comparison, not a consistency test")
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .counts import poisson_mock
    from .fisher import fisher_covariance, fisher_matrix, plot_fisher_corner
    from .hmc import initial_points, nuts_diagnostics, run_nuts, unconstrained_covariance

    key = jax.random.key(args.seed)
    k_data, k_init, k_run = jax.random.split(key, 3)
    t_start = time.perf_counter()
    say(f"Fisher matrix of {model.n_param} parameters ({', '.join(model.names)}) at the fiducial …")
    F, lam = eqx.filter_jit(fisher_matrix)(model)
    if observed is not None:
        data = jnp.asarray(observed.xod, dtype=lam.dtype)
    else:
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
    products = "hmc.json, hmc_samples.npz, hmc_corner.png" + (
        ", posterior.h5, posterior_summary.ecsv, corner.png" if observed is not None else "")
    say(f"NUTS done in {seconds:.0f} s; writing {args.out}/{{{products}}}")
    diag = nuts_diagnostics(out["samples"])
    args.out.mkdir(parents=True, exist_ok=True)
    truth = _truth(observed, model.names)
    res = dict(
        names=list(model.names), theta0=np.asarray(th0),
        data="xod" if observed is not None else ("mock" if args.mock else "asimov"),
        mean=np.asarray(diag["mean"]), std=np.asarray(diag["std"]),
        rhat=np.asarray(diag["rhat"]), ess=np.asarray(diag["ess"]),
        fisher_errors=np.asarray(err), n_divergent=int(np.sum(np.asarray(out["is_divergent"]))),
        step_size=np.asarray(out["step_size"]), chains=args.chains, warmup=args.warmup,
        samples=args.samples, seconds_including_compilation=seconds,
        ess_per_second=float(np.min(np.asarray(diag["ess"])) / seconds),
        area_deg2=model.survey.area_deg2, cr_cut=model.survey.cr_cut, selection=model.survey.selection,
    )
    if observed is not None:
        res |= dict(xod=observed.source, total_counts_observed=float(np.sum(observed.xod)),
                    truth=None if truth is None else np.asarray(truth))
    _write_json(args.out / "hmc.json", res, "hmc", model, args, seed=args.seed)
    from ..io.atomic import atomic_path

    with atomic_path(args.out / "hmc_samples.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, samples=np.asarray(out["samples"]), names=np.array(model.names))
    flat = np.asarray(out["samples"]).reshape(-1, model.n_param)
    import matplotlib.pyplot as plt

    what = observed.source if observed is not None else ("Poisson mock" if args.mock else "Asimov XOD")
    fig = plot_fisher_corner(cov, th0, model.names, samples=flat,
                             title=f"NUTS on {what} vs Fisher at the fiducial")
    with atomic_path(args.out / "hmc_corner.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    if observed is not None:
        from ..inference.posterior_files import write_posterior
        from ..io.provenance import provenance

        prov = provenance("hmc", seed=args.seed, theta=dict(zip(model.names, np.asarray(th0).tolist())),
                          settings=_settings(args) | dict(xod=observed.source, area_deg2=model.survey.area_deg2,
                                                          cr_cut=model.survey.cr_cut))
        write_posterior(args.out, flat, model.names, method="nuts (analytic)", provenance=prov, truth=truth,
                        extra=dict(xod=observed.source))
    if res["n_divergent"]:
        say(f"warning: {res['n_divergent']} divergent transitions")
    return 0


# θ_sim parameters the analytic model does not have: a file that carries them comes from the simulated survey
_SURVEY_ONLY = ("A_SN1", "A_SN2", "A_AGN1", "A_AGN2")


def _is_simulated_survey(observed) -> bool:
    """Whether ``observed`` was made by the simulated survey (``simulate``, or a ``--simulator survey`` dataset)."""
    return str(observed.source).endswith(".npz") or any(n in _SURVEY_ONLY for n in observed.names)


def _truth(observed, names):
    """The true value of every model parameter from the file, or None unless the file has all of them."""
    import numpy as np

    if observed is None or observed.truth is None or not observed.names:
        return None
    if len(observed.names) != np.size(observed.truth) or not all(n in observed.names for n in names):
        return None
    return np.asarray([observed.truth[observed.names.index(n)] for n in names], np.float64)
