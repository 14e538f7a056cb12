"""Analytic baseline: expected-XOD evaluation, full Fisher matrix, NUTS ESS per second.

    python benchmarks/analytic.py [--repeats 7] [--out benchmarks/results/analytic.json]

* ``xod_eval_seconds``: `expected_xod` with the default `SurveySpec` and
  `XODBinning` (8 × 6 × 4 bins, 200 deg², CR > 0.02 c/s), jitted, after
  compilation, median of repeats. Target ≤ 0.05 s on the 2-core CPU.
* ``fisher_seconds``: `fisher_matrix` of the seed 001 model, 2 + 6 free
  parameters (jacfwd over Ω_m, σ_8 and the 6 scaling-relation coefficients),
  after compilation, median of repeats. Target ≤ 1 s.
* ``nuts_ess_per_second``: NUTS (blackjax window adaptation, dense metric
  started from the Fisher covariance) on the Asimov XOD of a 10⁴ deg² survey
  with (Ω_m, σ_8, log10_M0) free and the reduced quadrature of the tests;
  min-over-parameters ESS of 2 chains × 200 samples divided by the wall time
  of warm-up + sampling (second call, i.e. excluding compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # entry point: the analytic model runs in float64

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcluster.analytic import (  # noqa: E402
    NUISANCE_PRIOR_SIGMA,
    AnalyticModel,
    ScalingRelations,
    SurveySpec,
    XODBinning,
    XrayTables,
    expected_xod,
    fisher_covariance,
    fisher_matrix,
    marginal_errors,
    nuts_diagnostics,
    run_nuts,
    unconstrained_covariance,
)
from jaxcluster.cosmology import Cosmology  # noqa: E402


def _time(fn, *args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts, compile_s


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "analytic.json")
    p.add_argument("--skip-nuts", action="store_true")
    args = p.parse_args(argv)

    tables = XrayTables.default()
    cosmo, sr = Cosmology(), ScalingRelations()
    xod = jax.jit(lambda c, s: expected_xod(c, s, tables))
    xod_s, xod_all, xod_compile = _time(xod, cosmo, sr, repeats=args.repeats)
    lam = xod(cosmo, sr)

    model = AnalyticModel(tables=tables)
    fisher = eqx.filter_jit(fisher_matrix)
    fisher_s, fisher_all, fisher_compile = _time(fisher, model, repeats=args.repeats)
    F, _ = fisher(model)
    prior = jnp.array([jnp.inf, jnp.inf] + [NUISANCE_PRIOR_SIGMA[n] for n in model.names[2:]])
    res = dict(
        benchmark="analytic baseline: expected XOD, Fisher (2+6 parameters), NUTS",
        xod_eval_seconds=xod_s, xod_eval_all_repeats_s=xod_all, xod_compile_s=xod_compile,
        xod_shape=list(lam.shape), xod_total_counts_200deg2=float(lam.sum()),
        fisher_seconds=fisher_s, fisher_all_repeats_s=fisher_all, fisher_compile_s=fisher_compile,
        fisher_names=list(model.names),
        fisher_marginal_errors_no_prior=np.asarray(marginal_errors(F)).tolist(),
        fisher_marginal_errors_with_nuisance_prior=np.asarray(marginal_errors(F, prior)).tolist(),
    )

    if not args.skip_nuts:
        small = AnalyticModel(
            ("Omega_m", "sigma_8", "log10_M0"), tables=tables,
            survey=SurveySpec(area_deg2=1e4, n_mass=24, n_z_per_bin=3, n_gh=3, n_sigma_knots=8),
            binning=XODBinning(np.geomspace(0.02, 3.0, 5), np.geomspace(0.1, 2.0, 4), np.linspace(0.1, 0.5, 3)),
        )
        F2, lam2 = eqx.filter_jit(fisher_matrix)(small)
        prior2 = jnp.array([jnp.inf, jnp.inf, NUISANCE_PRIOR_SIGMA["log10_M0"]])
        cov = fisher_covariance(F2, prior2)
        err = jnp.sqrt(jnp.diag(cov))
        th0 = small.theta0()
        init = th0[None, :] + 0.5 * err[None, :] * jax.random.normal(jax.random.key(1), (2, 3), th0.dtype)
        imm = unconstrained_covariance(small, cov)
        run = eqx.filter_jit(lambda m, d, i, k, c: run_nuts(m, d, i, key=k, n_warmup=100, n_samples=200,
                                                             inverse_mass_matrix=c, mass_matrix_pseudo_count=100.0))
        t0 = time.perf_counter()
        jax.block_until_ready(run(small, lam2, init, jax.random.key(0), imm))
        nuts_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = jax.block_until_ready(run(small, lam2, init, jax.random.key(2), imm))
        nuts_s = time.perf_counter() - t0
        d = nuts_diagnostics(out["samples"])
        res.update(
            nuts_ess_per_second=float(jnp.min(d["ess"])) / nuts_s, nuts_seconds=nuts_s,
            nuts_first_call_seconds_including_compile=nuts_first,
            nuts_names=list(small.names), nuts_ess=np.asarray(d["ess"]).tolist(), nuts_rhat=np.asarray(d["rhat"]).tolist(),
            nuts_std=np.asarray(d["std"]).tolist(), fisher_errors_small=np.asarray(err).tolist(),
            nuts_std_over_fisher=np.asarray(d["std"] / err).tolist(),
            nuts_mean_integration_steps=float(np.mean(np.asarray(out["num_integration_steps"]))),
            nuts_chains=2, nuts_warmup=100, nuts_samples=200,
        )
    res.update(
        jax_version=jax.__version__, device=str(jax.devices()[0]), platform=platform.platform(),
        cpu_count=os.cpu_count(), note="shared 2-core CPU (other jobs may run concurrently)",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
