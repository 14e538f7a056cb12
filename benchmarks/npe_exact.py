"""The exact check of the neural posteriors: NPE against exact posteriors on the analytic model.

    python benchmarks/npe_exact.py [--width 128 --members 4] [--estimators mdn,flow]
                                   [--stages simulate,nuts,train,nuts_shear,npe] [--sequential 5000]
                                   [--work out/npe_exact]
                                   [--out benchmarks/results/npe_exact.json]

**Problem.** The analytic XOD model (`jaxcluster.analytic`) of a 2000 deg²
survey with a coarse 4 × 3 × 2 (CR, HR, z) binning and the reduced quadrature
of the analytic NUTS benchmark; free parameters (Ω_m, σ_8, log10_M0): the two
cosmological ones with their flat Table 1 priors, and the M–T normalisation,
the best-constrained scaling-relation nuisance, with its Gaussian prior
(`NUISANCE_PRIOR_SIGMA`). Observations are Poisson mocks of λ(θ), θ from the
prior, so the exact posterior is `analytic.log_posterior`.

**Stages** (each cached under ``--work``, so a killed run resumes):

1. ``simulate``: 30 000 (θ, x) pairs for training, 300 for calibration and 5
   reference XODs with θ away from the prior edges (seed 001 Fig. 9 excludes
   the borders likewise);
2. ``nuts``: blackjax NUTS (2 chains, dense metric started from the Fisher
   covariance at the true θ) on the reference XODs, all in one vmapped call
   (superseded by ``nuts_shear``: slow mixing on the curved posteriors);
3. ``train``: the NPE on x' = √x (variance-stabilised counts);
   ``nuts_shear``: NUTS in a `ShearMap` fitted to the trained NPE's draws
   (`stage_nuts_shear`; 4 chains per XOD), the reference when its file exists;
4. ``npe``: exact moments of the reference posteriors by importance sampling
   (`stage_importance`, no gradients: cheap) and NUTS with its Monte-Carlo
   standard errors (`reference_moments`); NPE mean offsets in exact σ and width
   ratios with their Monte-Carlo uncertainty; SBC rank histograms
   (KS p), HPD expected coverage and TARP over the calibration set; seed 001
   Table 3 figures; figures into ``docs/validation/figures/``; with
   ``--sequential N``, one truncated sequential round per reference XOD
   (`stage_sequential`) and its comparison with NUTS.

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
        if len(d["theta_train"]) == n_train and len(d["theta_test"]) == n_test and len(d["theta_nuts"]) >= n_nuts:
            d["theta_nuts"], d["x_nuts"] = d["theta_nuts"][:n_nuts], d["x_nuts"][:n_nuts]
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


def stage_simulate_extra(work: Path, model, n: int, seed: int, chunk: int = 2048) -> dict:
    """n more training pairs (θ from the prior, independent of stage 1's: another key), in resumable chunks."""
    path = work / f"sims_extra_{n}.npz"
    if path.exists():
        return dict(np.load(path))
    part_dir = work / f"sims_extra_{n}"
    part_dir.mkdir(exist_ok=True)
    key = jax.random.fold_in(jax.random.key(seed), 7919)
    t0 = time.perf_counter()
    th_all, x_all = [], []
    for i, start in enumerate(range(0, n, chunk)):
        part = part_dir / f"chunk_{i}.npz"
        if not part.exists():
            kt, kx = jax.random.split(jax.random.fold_in(key, i))
            th = sample_prior(kt, model, min(chunk, n - start))
            np.savez(part, theta=np.asarray(th), x=simulate(kx, model, th))
            print(f"extra simulations: {start + th.shape[0]}/{n} ({time.perf_counter() - t0:.0f} s)", flush=True)
        q = np.load(part)
        th_all.append(q["theta"])
        x_all.append(q["x"])
    d = dict(theta=np.concatenate(th_all), x=np.concatenate(x_all), seconds=np.asarray(time.perf_counter() - t0))
    np.savez(path, **d)
    return d


def stage_nuts(work: Path, model, theta: np.ndarray, x: np.ndarray, n_warmup: int, n_samples: int) -> dict:
    """NUTS reference posteriors of all reference XODs in one vmapped call (cached)."""
    path = work / f"nuts_{len(theta)}x{n_samples}.npz"
    if path.exists():
        return dict(np.load(path))
    t0 = time.perf_counter()
    prior_sigma = jnp.array([jnp.inf, jnp.inf, NUISANCE_PRIOR_SIGMA["log10_M0"]])
    lo, hi = bounds()
    th = jnp.asarray(theta)

    def setup(t, i):
        F, _ = fisher_matrix(model, t)
        cov = fisher_covariance(F, prior_sigma)
        err = jnp.sqrt(jnp.diag(cov))
        # chains start near the truth, inside the flat priors
        init = t[None, :] + 0.3 * err[None, :] * jax.random.normal(jax.random.fold_in(jax.random.key(100), i),
                                                                   (2, 3), t.dtype)
        init = jnp.clip(init, jnp.asarray(lo) + 1e-3, jnp.asarray(hi) - 1e-3)
        return init, unconstrained_covariance(model, cov, t)

    idx = jnp.arange(len(theta))
    init, imm = jax.jit(jax.vmap(setup))(th, idx)

    # one vmapped call for all XODs: XLA batches the model evaluations across them
    @jax.jit
    def run_all(counts, init, imm, keys):
        return jax.vmap(lambda c, i, m, k: run_nuts(model, c, i, key=k, n_warmup=n_warmup, n_samples=n_samples,
                                                    inverse_mass_matrix=m, mass_matrix_pseudo_count=100.0))(
            counts, init, imm, keys)

    keys = jax.random.split(jax.random.key(200), len(theta))
    res = jax.block_until_ready(run_all(jnp.asarray(x), init, imm, keys))
    diags = [nuts_diagnostics(res["samples"][i]) for i in range(len(theta))]
    rec = dict(samples=np.asarray(res["samples"]), rhat=np.stack([np.asarray(d["rhat"]) for d in diags]),
               ess=np.stack([np.asarray(d["ess"]) for d in diags]),
               divergences=np.asarray(jnp.sum(res["is_divergent"], axis=(1, 2))),
               mean_integration_steps=np.asarray(jnp.mean(res["num_integration_steps"], axis=(1, 2))),
               seconds=np.asarray(time.perf_counter() - t0))
    np.savez(path, **rec)
    print(f"NUTS: {float(rec['seconds']):.0f} s, ESS {rec['ess'].min(1)}, R-hat max {rec['rhat'].max(1)}", flush=True)
    return rec


def stage_nuts_shear(work: Path, model, theta: np.ndarray, x: np.ndarray, post, n_chains: int, n_warmup: int,
                     n_samples: int, n_pilot: int = 4000, min_ess: float = 400.0) -> dict:
    """NUTS reference posteriors sampled in a `ShearMap` fitted to NPE draws (cached per XOD, so resumable).

    Why: the posterior is a curved (banana) ridge in the logit space; a dense
    metric cannot follow it (stage 2 needed 10–22 leapfrog steps per draw for
    an ESS of 62–464 from 1000 draws). The NPE's draws show the curve; the
    triangular quadratic shear fitted to them (`fit_shear_map`) makes the
    target roughly standard normal, with a constant Jacobian, so NUTS stays
    exact. Chains start from NPE draws; the metric starts from the identity
    and is adapted (window adaptation, dense, pseudo-count 100 toward it).
    One XOD at a time, its ``n_chains`` chains vmapped, one compiled function.
    An XOD whose minimum ESS stays below ``min_ess`` is run again with the
    map refitted to those (exact) draws, which replaces the first run.
    """
    from jaxcluster.analytic import fit_shear_map, to_unconstrained

    tag = f"nuts_shear_{len(theta)}x{n_chains}x{n_samples}"
    path = work / f"{tag}.npz"
    if path.exists():
        return dict(np.load(path))
    part_dir = work / tag
    part_dir.mkdir(exist_ok=True)

    @eqx.filter_jit
    def run_one(counts, init, shear, key):
        return run_nuts(model, counts, init, key=key, n_warmup=n_warmup, n_samples=n_samples,
                        target_acceptance_rate=0.9, mass_matrix_pseudo_count=100.0, reparametrisation=shear)

    def run_part(part, label, x_i, init, shear, key, t0):
        """One NUTS run from `init` through `shear`, saved to `part` (npz) with its diagnostics."""
        res = jax.block_until_ready(run_one(jnp.asarray(x_i, jnp.float64), jnp.asarray(init), shear, key))
        d = nuts_diagnostics(res["samples"])
        np.savez(part, samples=np.asarray(res["samples"]), rhat=np.asarray(d["rhat"]), ess=np.asarray(d["ess"]),
                 divergences=np.asarray(jnp.sum(res["is_divergent"])),
                 mean_integration_steps=np.asarray(jnp.mean(res["num_integration_steps"])),
                 step_size=np.asarray(res["step_size"]), shear_order=np.asarray(shear.order),
                 shear_scales=np.asarray(shear.scales), seconds=np.asarray(time.perf_counter() - t0))
        q = dict(np.load(part))
        print(f"{label}: {float(q['seconds']):.0f} s, ESS {np.round(q['ess'])}, R-hat {np.round(q['rhat'], 4)}, "
              f"divergences {int(q['divergences'])}, steps {float(q['mean_integration_steps']):.1f}", flush=True)

    parts = []
    for i in range(len(theta)):
        part = part_dir / f"xod_{i}.npz"
        if not part.exists():
            t0 = time.perf_counter()
            pilot = np.asarray(post.sample(jax.random.key(3000 + i), summary(x[i:i + 1])[0], n_pilot), np.float64)
            u = np.asarray(jax.vmap(lambda t: to_unconstrained(model, t))(jnp.asarray(pilot)))
            shear = fit_shear_map(u)
            init = jnp.asarray(pilot[:n_chains])
            run_part(part, f"NUTS (shear) XOD {i}", x[i], init, shear, jax.random.key(4000 + i), t0)
        parts.append(dict(np.load(part)))
    # second pass where the first fell short of min_ess: the shear refitted to the first pass's (exact) draws,
    # chains continued from their last states; the refined run replaces the first one
    first_min_ess = np.array([float(q["ess"].min()) for q in parts])
    for i in np.flatnonzero(first_min_ess < min_ess):
        part = part_dir / f"xod_{i}_refined.npz"
        if not part.exists():
            t0 = time.perf_counter()
            prev = parts[i]["samples"]
            u = np.asarray(jax.vmap(lambda t: to_unconstrained(model, t))(jnp.asarray(prev.reshape(-1, prev.shape[-1]))))
            shear = fit_shear_map(u)
            run_part(part, f"NUTS (shear refitted) XOD {i}", x[i], prev[:, -1], shear, jax.random.key(5000 + i), t0)
        q = dict(np.load(part))
        q["seconds"] = q["seconds"] + parts[i]["seconds"]  # the first pass counts towards the cost
        parts[i] = q
    rec = {k: np.stack([q[k] for q in parts]) for k in parts[0]}
    rec["seconds"] = np.asarray(float(np.sum(rec["seconds"])))
    rec["first_pass_min_ess"] = first_min_ess
    rec["refined"] = first_min_ess < min_ess
    np.savez(path, **rec)
    return rec


def reference_moments(samples: np.ndarray) -> dict:
    """Mean, standard deviation and their Monte-Carlo standard errors from chains (n_xod, n_chains, n_samples, d).

    MCSE(mean) = sd / √ESS(θ); MCSE(sd) = MCSE(variance) / (2 sd) with
    MCSE(variance) = sd((θ − mean)²) / √ESS((θ − mean)²) (blackjax ESS).
    """
    out = dict(mean=[], std=[], mcse_mean=[], mcse_std=[])
    for s in samples:
        flat = s.reshape(-1, s.shape[-1])
        m, sd = flat.mean(0), flat.std(0)
        ess_m = np.asarray(nuts_diagnostics(s)["ess"])
        sq = (s - m) ** 2
        ess_v = np.asarray(nuts_diagnostics(sq)["ess"])
        out["mean"].append(m)
        out["std"].append(sd)
        out["mcse_mean"].append(sd / np.sqrt(ess_m))
        out["mcse_std"].append(sq.reshape(-1, s.shape[-1]).std(0) / np.sqrt(ess_v) / (2 * sd))
    return {k: np.array(v) for k, v in out.items()}


def stage_importance(work: Path, model, post, x: np.ndarray, n: int, seed: int) -> dict:
    """Exact posterior moments by importance sampling (cached): a cross-check of NUTS that needs no gradients.

    Proposal: a multivariate Student t (ν = 5) with the NPE draws' mean and 1.5²×
    their covariance (heavier tails than the target, as importance sampling
    needs); weights $w ∝ p(x | θ) π(θ) / g(θ)$ with the exact `log_posterior`
    (Dax et al. 2023 correct NPE draws likewise). Returns weighted means, standard
    deviations and the effective sample size (Σw)²/Σw² per XOD.
    """
    from scipy import stats

    from jaxcluster.analytic import log_posterior

    path = work / f"importance_{len(x)}x{n}.npz"
    if path.exists():
        return dict(np.load(path))
    t0 = time.perf_counter()
    lp_fn = jax.jit(jax.vmap(lambda t, c: log_posterior(model, t, c), in_axes=(0, None)))
    rng = np.random.default_rng(seed)
    means, stds, ess, samples, weights = [], [], [], [], []
    for i in range(len(x)):
        d = np.asarray(post.sample(jax.random.key(1000 + i), summary(x[i:i + 1])[0], 20000), np.float64)
        mu, cov = d.mean(0), np.cov(d.T) * 1.5**2
        prop = stats.multivariate_t(loc=mu, shape=cov, df=5, seed=rng)
        th = prop.rvs(size=n)
        lo, hi = bounds()
        inside = np.all((th > lo) & (th < hi), axis=1)
        th_in = np.where(inside[:, None], th, mu[None, :])
        lt = np.concatenate([np.asarray(lp_fn(jnp.asarray(th_in[j:j + 512]), jnp.asarray(x[i])))
                             for j in range(0, n, 512)])
        lw = np.where(inside, lt - prop.logpdf(th), -np.inf)
        w = np.exp(lw - lw.max())
        w /= w.sum()
        m = w @ th
        means.append(m)
        stds.append(np.sqrt(w @ (th - m) ** 2))
        ess.append(1.0 / np.sum(w**2))
        samples.append(th)
        weights.append(w)
    rec = dict(mean=np.array(means), std=np.array(stds), ess=np.array(ess), samples=np.array(samples),
               weights=np.array(weights), seconds=np.asarray(time.perf_counter() - t0))
    np.savez(path, **rec)
    print(f"importance sampling: {float(rec['seconds']):.0f} s, ESS {np.round(rec['ess'])}", flush=True)
    return rec


def summary(x: np.ndarray) -> np.ndarray:
    """The NPE input: √counts of the flattened XOD (variance-stabilised Poisson counts)."""
    x = np.asarray(x, np.float64)
    return np.sqrt(x.reshape(x.shape[0], -1))


def stage_train(args, sims: dict, work: Path, kind: str):
    """Stage 3: train the NPE (cached as ``work/posterior_<kind>.eqx`` + ``.json`` and a history file)."""
    from jaxcluster.inference import TrainConfig, load_posterior, save_posterior, train_posterior

    tag = f"{kind}_m{args.members}_w{args.width}" + (f"_extra{args.n_extra}" if args.n_extra else "")
    path = work / f"posterior_{tag}"
    hist_path = work / f"history_{tag}.json"
    if path.with_suffix(".eqx").exists() and hist_path.exists():
        post, cfg = load_posterior(path)
        return post, json.loads(hist_path.read_text()), cfg
    lo, hi = bounds()
    cfg = TrainConfig(estimator=kind, n_members=args.members, width=args.width)
    theta, x = sims["theta_train"], sims["x_train"]
    if args.n_extra:
        extra = stage_simulate_extra(work, analytic_problem(), args.n_extra, args.seed)
        theta, x = np.concatenate([theta, extra["theta"]]), np.concatenate([x, extra["x"]])
    t0 = time.perf_counter()
    post, hist = train_posterior(theta, summary(x), lo, hi, cfg,
                                 key=jax.random.key(args.seed + 1), names=NAMES)
    hist["train_seconds"] = time.perf_counter() - t0
    print(f"{kind}: {hist['epochs']} epochs, {hist['train_seconds']:.0f} s, best val {hist['best_val_loss']}",
          flush=True)
    save_posterior(path, post, cfg)
    hist_path.write_text(json.dumps(hist))
    return post, hist, cfg


def _prior_in_box(key, model: AnalyticModel, n: int, box_lo: np.ndarray, box_hi: np.ndarray) -> np.ndarray:
    """θ from the prior restricted to a box (n, 3): uniform for Ω_m, σ_8; truncated Gaussian for log10 M0."""
    from scipy import stats

    k1, k2 = jax.random.split(key)
    u = np.asarray(jax.random.uniform(k1, (n, 2), jnp.float64))
    flat = box_lo[:2] + (box_hi[:2] - box_lo[:2]) * u
    m0, sd = float(model.theta0()[2]), NUISANCE_PRIOR_SIGMA["log10_M0"]
    a, b = (box_lo[2] - m0) / sd, (box_hi[2] - m0) / sd
    v = np.asarray(jax.random.uniform(k2, (n,), jnp.float64))
    nuis = m0 + sd * stats.truncnorm.ppf(stats.norm.cdf(a) + v * (stats.norm.cdf(b) - stats.norm.cdf(a)), -np.inf, np.inf)
    return np.column_stack([flat, nuis])


def stage_sequential(args, sims: dict, work: Path, post, cfg, tag: str) -> list:
    """One truncated sequential round (TSNPE, Deistler et al. 2022) per reference XOD; cached per XOD.

    The amortised q(θ | x_i) defines the truncation: its highest-density region
    holding all but ε = 10⁻⁴ of its mass (threshold: the ε quantile of ln q over
    20 000 of its own draws). `--sequential` pairs are drawn from the prior
    restricted to that region (prior draws inside the draws' bounding box, grown
    by half its size, kept where ln q ≥ threshold), simulated, pooled with the
    amortised training pairs that fall inside it, and the posterior is trained
    on them starting from the amortised weights (`train_posterior(init=...)`).
    Inside the region the truncated prior is proportional to the prior, so the
    NPE loss still targets p(θ | x) there, and at x_i the region holds all but
    ε of the posterior. Returns the refined posteriors.
    """
    from jaxcluster.inference import load_posterior, save_posterior, train_posterior

    lo, hi = bounds()
    model = analytic_problem()
    log_q = jax.jit(jax.vmap(post.log_prob, in_axes=(0, None)))
    out = []
    for i, x_i in enumerate(sims["x_nuts"]):
        path = work / f"tsnpe_{tag}_{args.sequential}_{i}"
        if path.with_suffix(".eqx").exists():
            out.append(load_posterior(path)[0])
            continue
        t0 = time.perf_counter()
        s_i = jnp.asarray(summary(x_i[None])[0], jnp.float32)
        key = jax.random.fold_in(jax.random.key(args.seed + 7), i)
        d = np.asarray(post.sample(jax.random.fold_in(key, 0), s_i, 20000), np.float64)
        threshold = np.quantile(np.asarray(log_q(jnp.asarray(d, jnp.float32), s_i)), 1e-4)
        span = d.max(0) - d.min(0)
        box_lo, box_hi = np.maximum(d.min(0) - 0.5 * span, lo), np.minimum(d.max(0) + 0.5 * span, hi)
        kept, tries, j = [], 0, 0
        while sum(len(k) for k in kept) < args.sequential:
            th = _prior_in_box(jax.random.fold_in(key, 10 + j), model, 4 * args.sequential, box_lo, box_hi)
            inside = np.asarray(log_q(jnp.asarray(th, jnp.float32), s_i)) >= threshold
            kept.append(th[inside])
            tries, j = tries + len(th), j + 1
        theta_new = np.concatenate(kept)[:args.sequential]
        x_new = simulate(jax.random.fold_in(key, 1), model, jnp.asarray(theta_new))
        old = sims["theta_train"]
        in_old = np.all((old >= box_lo) & (old <= box_hi), axis=1)
        in_old[in_old] = np.asarray(log_q(jnp.asarray(old[in_old], jnp.float32), s_i)) >= threshold
        theta = np.concatenate([theta_new, old[in_old]])
        x = np.concatenate([x_new, sims["x_train"][in_old]])
        refined, hist = train_posterior(theta, summary(x), lo, hi, cfg, key=jax.random.fold_in(key, 2),
                                        names=NAMES, init=post)
        save_posterior(path, refined, cfg)
        info = dict(n_new=int(len(theta_new)), n_old_inside=int(in_old.sum()), n_prior_draws_in_box=tries,
                    box_lo=box_lo.tolist(), box_hi=box_hi.tolist(), epochs=hist["epochs"],
                    best_val_loss=hist["best_val_loss"], seconds=time.perf_counter() - t0)
        path.with_suffix(".round.json").write_text(json.dumps(info))
        print(f"TSNPE XOD {i}: {info['n_new']} new + {info['n_old_inside']} old pairs, "
              f"{info['epochs']} epochs, {info['seconds']:.0f} s", flush=True)
        out.append(refined)
    return out


def _against_nuts(npe_ref: np.ndarray, mom: dict) -> dict:
    """NPE draws (n_xod, n, d) against NUTS moments: offsets in σ, width ratios, and their Monte-Carlo errors."""
    m_q, s_q, n_q = npe_ref.mean(1), npe_ref.std(1), npe_ref.shape[1]
    offset, ratio = (m_q - mom["mean"]) / mom["std"], s_q / mom["std"]
    off_err = np.sqrt(mom["mcse_mean"] ** 2 + s_q**2 / n_q) / mom["std"]
    ratio_err = ratio * np.sqrt((mom["mcse_std"] / mom["std"]) ** 2 + 1.0 / (2 * n_q))
    return dict(mean_offset_in_sigma=offset.tolist(), width_ratio_npe_over_reference=ratio.tolist(),
                mean_offset_uncertainty_in_sigma=off_err.tolist(), width_ratio_uncertainty=ratio_err.tolist(),
                means_within_0p2_sigma_count=f"{int(np.sum(np.abs(offset[:, :2]) < 0.2))}/{offset[:, :2].size}",
                widths_within_15pct_count=f"{int(np.sum(np.abs(ratio[:, :2] - 1) < 0.15))}/{ratio[:, :2].size}",
                max_abs_offset_cosmo=float(np.max(np.abs(offset[:, :2]))),
                max_abs_width_error_cosmo=float(np.max(np.abs(ratio[:, :2] - 1))))


def compare(args, sims: dict, nuts: dict, work: Path, nuts_file: Path | None = None) -> dict:
    """Stages 3-4: train the NPE, compare with NUTS, calibrate on the test set, figures, JSON."""
    from jaxcluster.inference import (
        corner_plot,
        expected_coverage,
        marginal_coverage,
        plot_coverage,
        plot_rank_histograms,
        rank_histogram,
        sbc_ranks,
        table3_summary,
        tarp,
    )

    lo, hi = bounds()
    results: dict = {}
    fig_dir = Path(args.figures)
    fig_dir.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed + 1)
    for kind in args.estimators.split(","):
        post, hist, cfg = stage_train(args, sims, work, kind)
        train_s = hist["train_seconds"]
        draw = jax.jit(jax.vmap(lambda k, x: post.sample(k, x, args.n_draws)))
        draw_ref = jax.jit(jax.vmap(lambda k, x: post.sample(k, x, args.n_ref_draws)))
        lp_fn = jax.jit(jax.vmap(jax.vmap(post.log_prob, in_axes=(0, None))))

        # NPE against NUTS on the reference XODs
        s_ref = summary(sims["x_nuts"])
        ks = jax.random.split(jax.random.fold_in(key, 1), len(s_ref))
        npe_ref = np.asarray(draw_ref(ks, jnp.asarray(s_ref, jnp.float32)), np.float64)
        m_q, s_q = npe_ref.mean(1), npe_ref.std(1)
        imp = stage_importance(work, analytic_problem(), post, sims["x_nuts"], args.n_importance, args.seed)
        refs = {"importance": (imp["mean"], imp["std"])}
        if nuts is not None:
            nuts_flat = nuts["samples"].reshape(len(s_ref), -1, len(NAMES))
            mom = reference_moments(nuts["samples"])
            refs = {"nuts": (mom["mean"], mom["std"]), **refs}
        comparisons = {}
        for name, (m_r, s_r) in refs.items():
            comparisons[name] = dict(mean_offset_in_sigma=((m_q - m_r) / s_r).tolist(),
                                     width_ratio_npe_over_reference=(s_q / s_r).tolist(),
                                     reference_mean=m_r.tolist(), reference_std=s_r.tolist())
        if nuts is not None:
            # Monte-Carlo errors: NUTS (MCSE from its ESS) and the NPE's own n_ref_draws independent draws
            errors = _against_nuts(npe_ref, mom)
            comparisons["nuts"].update(
                nuts_mcse_mean_in_sigma=(mom["mcse_mean"] / mom["std"]).tolist(),
                nuts_mcse_std_relative=(mom["mcse_std"] / mom["std"]).tolist(),
                npe_draws=int(npe_ref.shape[1]),
                **{k: errors[k] for k in ("mean_offset_uncertainty_in_sigma", "width_ratio_uncertainty")})
        ref_name = "nuts" if nuts is not None else "importance"
        m_n, s_n = refs[ref_name]
        offset = (m_q - m_n) / s_n
        ratio = s_q / s_n
        if nuts is not None:
            comparisons["nuts_vs_importance"] = dict(
                mean_offset_in_sigma=((refs["nuts"][0] - imp["mean"]) / imp["std"]).tolist(),
                width_ratio=(refs["nuts"][1] / imp["std"]).tolist())

        # calibration over the test set
        s_test = jnp.asarray(summary(sims["x_test"]), jnp.float32)
        ks = jax.random.split(jax.random.fold_in(key, 2), s_test.shape[0])
        th_test = sims["theta_test"]
        calib_path = work / (f"calibration_{kind}_m{args.members}_w{args.width}"
                             + (f"_extra{args.n_extra}" if args.n_extra else "") + f"_{args.n_draws}.npz")
        if calib_path.exists():
            c = np.load(calib_path)
            draws, lp_true, lp_draws = c["draws"], c["lp_true"], c["lp_draws"]
        else:
            draws = np.asarray(draw(ks, s_test), np.float64)
            lp_true = np.asarray(jax.vmap(post.log_prob)(jnp.asarray(th_test, jnp.float32), s_test))
            lp_draws = np.asarray(lp_fn(jnp.asarray(draws, jnp.float32), s_test))
            np.savez(calib_path, draws=draws, lp_true=lp_true, lp_draws=lp_draws)
        ranks = sbc_ranks(th_test, draws)
        rh = rank_histogram(ranks, args.n_draws, n_bins=20)
        cov = expected_coverage(lp_true, lp_draws)
        mcov = marginal_coverage(th_test, draws)
        box_lo = np.where(np.isfinite(lo), lo, th_test.min(0))
        box_hi = np.where(np.isfinite(hi), hi, th_test.max(0))
        tp = tarp(th_test, draws, lo=box_lo, hi=box_hi, n_bootstrap=100)
        # the reference's draws: NUTS, or the importance samples resampled by weight
        rng = np.random.default_rng(0)
        ref_draws = (nuts_flat if nuts is not None else
                     np.stack([imp["samples"][i][rng.choice(imp["weights"].shape[1], 20000, p=imp["weights"][i])]
                               for i in range(len(s_ref))]))
        t3 = dict(npe=[table3_summary(npe_ref[i], NAMES) for i in range(len(s_ref))],
                  reference=[table3_summary(ref_draws[i], NAMES) for i in range(len(s_ref))])

        plot_rank_histograms(ranks, args.n_draws, LABELS, path=fig_dir / f"npe_{kind}_ranks.png")
        plot_coverage({"HPD (expected coverage)": (cov["levels"], cov["coverage"]),
                       "TARP": (tp["alpha"], tp["ecp"]),
                       **{f"marginal {lab}": (mcov["levels"], mcov["coverage"][:, j]) for j, lab in enumerate(LABELS)}},
                      path=fig_dir / f"npe_{kind}_coverage.png")
        for i in range(min(2, len(s_ref))):
            ref = {"NUTS" if nuts is not None else "exact (importance)": ref_draws[i]}
            corner_plot({**ref, f"NPE ({kind})": npe_ref[i]}, LABELS, truth=sims["theta_nuts"][i],
                        path=fig_dir / f"npe_{kind}_vs_exact_{i}.png")
        import matplotlib.pyplot as plt

        plt.close("all")
        results[kind] = dict(
            config=cfg.to_dict(), epochs=hist["epochs"], train_seconds=train_s, epoch_seconds=hist["epoch_seconds"],
            best_val_loss=hist["best_val_loss"],
            reference_xods=dict(theta_true=sims["theta_nuts"].tolist(), targets_against=ref_name,
                                npe_mean=m_q.tolist(), npe_std=s_q.tolist(), comparisons=comparisons,
                                importance_ess=imp["ess"].tolist(),
                                max_abs_offset_cosmo=float(np.max(np.abs(offset[:, :2]))),
                                max_abs_width_error_cosmo=float(np.max(np.abs(ratio[:, :2] - 1)))),
            calibration=dict(n_test=int(th_test.shape[0]), n_draws=args.n_draws, ks_pvalue=rh["ks_pvalue"].tolist(),
                             hpd_coverage_ks_pvalue=float(cov["ks_pvalue"]),
                             hpd_coverage_max_deviation=float(np.max(np.abs(cov["coverage"] - cov["levels"]))),
                             tarp_ks_pvalue=float(tp["ks_pvalue"]),
                             tarp_max_deviation=float(tp["max_abs_deviation"])),
            table3=t3,
        )
        if args.sequential and nuts is not None:
            tag = f"{kind}_m{args.members}_w{args.width}" + (f"_extra{args.n_extra}" if args.n_extra else "")
            refined = stage_sequential(args, sims, work, post, cfg, tag)
            seq_draws = np.stack([np.asarray(q.sample(jax.random.fold_in(key, 3), jnp.asarray(s, jnp.float32),
                                                      args.n_ref_draws), np.float64)
                                  for q, s in zip(refined, s_ref)])
            rounds = [json.loads((work / f"tsnpe_{tag}_{args.sequential}_{i}.round.json").read_text())
                      for i in range(len(s_ref))]
            results[kind]["sequential"] = dict(
                method="TSNPE: one round per reference XOD, prior truncated to the amortised posterior's "
                       "1 - 1e-4 HPD region, fine-tuned from the amortised weights",
                pairs_per_round=args.sequential, rounds=rounds, against_nuts=_against_nuts(seq_draws, mom))
            for i in range(min(2, len(s_ref))):
                corner_plot({"NUTS": nuts_flat[i], f"NPE ({kind})": npe_ref[i], f"TSNPE ({kind})": seq_draws[i]},
                            LABELS, truth=sims["theta_nuts"][i], path=fig_dir / f"npe_{kind}_tsnpe_vs_exact_{i}.png")
            plt.close("all")
            print("TSNPE", json.dumps(results[kind]["sequential"]["against_nuts"]), flush=True)
        targets = dict(mean_within_0p2_sigma=bool(np.all(np.abs(offset[:, :2]) < 0.2)),
                       width_within_15pct=bool(np.all(np.abs(ratio[:, :2] - 1) < 0.15)),
                       ks_p_above_0p01=bool(np.all(rh["ks_pvalue"] > 0.01)),
                       means_within_0p2_sigma_count=f"{int(np.sum(np.abs(offset[:, :2]) < 0.2))}/{offset[:, :2].size}",
                       widths_within_15pct_count=f"{int(np.sum(np.abs(ratio[:, :2] - 1) < 0.15))}/{ratio[:, :2].size}")
        results[kind]["targets_met"] = targets
        print(kind, json.dumps(targets), "offsets", np.round(offset, 3).tolist(), "ratios",
              np.round(ratio, 3).tolist(), "KS", np.round(rh["ks_pvalue"], 3).tolist(), flush=True)
    out = dict(
        benchmark="NPE vs NUTS on the analytic XOD model (exact check, issue 8)",
        parameters=list(NAMES), prior=dict(Omega_m=PRIOR_BOUNDS["Omega_m"], sigma_8=PRIOR_BOUNDS["sigma_8"],
                                           log10_M0=f"Gaussian, sigma {NUISANCE_PRIOR_SIGMA['log10_M0']}"),
        survey="2000 deg2, CR > 0.02 c/s, 4 x 3 x 2 (CR, HR, z) bins; reduced quadrature",
        summary="sqrt of the 24 XOD counts", n_train=int(len(sims["theta_train"])), n_extra_train=args.n_extra, n_test=int(len(sims["theta_test"])),
        simulate_seconds=float(sims["simulate_seconds"]),
        nuts=None if nuts is None else dict(
            file=str(nuts_file), n_xods=int(len(sims["theta_nuts"])), chains=int(nuts["samples"].shape[1]),
            warmup=args.nuts_warmup, samples=int(nuts["samples"].shape[2]),
            sampling_space=("ShearMap fitted to 4000 NPE draws (fit_shear_map), target acceptance 0.9"
                            if "shear_scales" in nuts else "logit u, Fisher metric"),
            seconds=float(nuts["seconds"]), min_ess=nuts["ess"].min(1).tolist(), max_rhat=nuts["rhat"].max(1).tolist(),
            divergences=np.asarray(nuts["divergences"]).tolist(),
            refined_with_refitted_shear=np.asarray(nuts.get("refined", np.zeros(0, bool))).tolist(),
            first_pass_min_ess=np.asarray(nuts.get("first_pass_min_ess", np.zeros(0))).tolist(),
            mean_integration_steps=np.asarray(nuts["mean_integration_steps"]).tolist()),
        importance=dict(n=args.n_importance, proposal="multivariate t, nu = 5, NPE mean, 1.5^2 x NPE covariance"),
        estimators=results, jax_version=jax.__version__, platform=platform.platform(), cpu_count=os.cpu_count(),
        note="shared 2-core CPU (other jobs ran concurrently: timings are upper bounds)",
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=30000)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--n-nuts", type=int, default=5)
    p.add_argument("--n-extra", type=int, default=0, help="more training pairs simulated on top of --n-train")
    p.add_argument("--nuts-warmup", type=int, default=200)
    p.add_argument("--nuts-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--estimators", default="mdn", help="comma-separated: mdn, flow")
    p.add_argument("--members", type=int, default=1, help="ensemble size")
    p.add_argument("--width", type=int, default=50, help="hidden width of the networks (sbi: 50)")
    p.add_argument("--n-draws", type=int, default=1000, help="posterior draws per test XOD")
    p.add_argument("--n-ref-draws", type=int, default=20000, help="NPE draws per reference XOD")
    p.add_argument("--nuts-chains", type=int, default=4, help="chains per XOD of the sheared NUTS reference")
    p.add_argument("--nuts-shear-samples", type=int, default=500, help="draws per chain, sheared NUTS reference")
    p.add_argument("--n-importance", type=int, default=4096, help="importance samples per reference XOD")
    p.add_argument("--sequential", type=int, default=0,
                   help="pairs of one truncated sequential round (TSNPE) per reference XOD; 0: none")
    p.add_argument("--stages", default="simulate,nuts,train,npe")
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
    if "train" in stages:
        for kind in args.estimators.split(","):
            stage_train(args, sims, work, kind)
    n_ref = len(sims["theta_nuts"])
    shear_file = work / f"nuts_shear_{n_ref}x{args.nuts_chains}x{args.nuts_shear_samples}.npz"
    if "nuts_shear" in stages:
        post, _, _ = stage_train(args, sims, work, args.estimators.split(",")[0])
        stage_nuts_shear(work, model, sims["theta_nuts"], sims["x_nuts"], post, args.nuts_chains,
                         args.nuts_warmup, args.nuts_shear_samples)
    if "npe" in stages:
        nuts_file = shear_file if shear_file.exists() else work / f"nuts_{n_ref}x{args.nuts_samples}.npz"
        nuts = dict(np.load(nuts_file)) if nuts_file.exists() else None
        return compare(args, sims, nuts, work, nuts_file)
    return {}


if __name__ == "__main__":
    main()
