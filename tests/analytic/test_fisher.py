"""Fisher matrix, NUTS (blackjax) vs Fisher widths, plots, CLI."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.analytic import (
    NUISANCE_PRIOR_SIGMA,
    AnalyticModel,
    figure_of_merit,
    fisher_covariance,
    fisher_matrix,
    marginal_errors,
    nuts_diagnostics,
    plot_fisher_corner,
    run_nuts,
    unconstrained_covariance,
)


@pytest.fixture(scope="module")
def small_fisher(small_model):
    F, lam = eqx.filter_jit(fisher_matrix)(small_model)
    prior = jnp.array([jnp.inf, jnp.inf, NUISANCE_PRIOR_SIGMA["log10_M0"]])
    return F, lam, prior


def test_fisher_symmetric_positive_definite(small_fisher, small_model):
    F, lam, prior = small_fisher
    assert F.shape == (3, 3)
    np.testing.assert_allclose(F, F.T, rtol=1e-12)
    assert bool(jnp.all(jnp.linalg.eigvalsh(F) > 0))
    cov = fisher_covariance(F, prior)
    np.testing.assert_allclose(cov @ (F + jnp.diag(1 / prior**2)), jnp.eye(3), atol=1e-8)
    err = marginal_errors(F, prior)
    np.testing.assert_allclose(err, jnp.sqrt(jnp.diag(cov)))
    fom = figure_of_merit(F, prior_sigma=prior)
    np.testing.assert_allclose(fom, 1 / jnp.sqrt(jnp.linalg.det(cov[:2, :2])), rtol=1e-10)
    # F equals Σ J J / λ from an independent Jacobian (central differences)
    th0 = small_model.theta0()
    f = eqx.filter_jit(lambda m, t: m(t))
    h = 1e-6
    J = jnp.stack([(f(small_model, th0 + h * e) - f(small_model, th0 - h * e)).ravel() / (2 * h)
                   for e in jnp.eye(3)], axis=-1)
    keep = lam.ravel() > 1e-8
    F_fd = (J[keep] / lam.ravel()[keep][:, None]).T @ J[keep]
    np.testing.assert_allclose(F, F_fd, rtol=1e-4)


@pytest.mark.slow  # ~3-4 min on 2 shared cores (each NUTS step ~10 gradients of ~20 ms)
def test_nuts_widths_match_fisher(small_fisher, small_model, getkey):
    """Large survey (10⁴ deg², Asimov data): the posterior is Gaussian, NUTS std ≈ Fisher errors."""
    F, lam, prior = small_fisher
    cov = fisher_covariance(F, prior)
    err = jnp.sqrt(jnp.diag(cov))
    th0 = small_model.theta0()
    init = th0[None, :] + 0.5 * err[None, :] * jax.random.normal(getkey(), (2, 3), th0.dtype)
    run = eqx.filter_jit(lambda m, d, i, k, c: run_nuts(m, d, i, key=k, n_warmup=200, n_samples=300,
                                                         inverse_mass_matrix=c))
    out = run(small_model, lam, init, getkey(), unconstrained_covariance(small_model, cov))
    assert out["samples"].shape == (2, 300, 3)
    d = nuts_diagnostics(out["samples"])
    assert bool(jnp.all(d["rhat"] < 1.1)), d["rhat"]
    assert bool(jnp.all(d["ess"] > 50)), d["ess"]
    np.testing.assert_allclose(d["std"], err, rtol=0.15)
    # Asimov data: the posterior mean sits at θ₀ up to prior/non-Gaussian shifts (≪ σ) and MC noise
    assert bool(jnp.all(jnp.abs(d["mean"] - th0) < 0.5 * err)), (d["mean"], th0, err)


def test_corner_plot(tmp_path, small_fisher):
    F, _, prior = small_fisher
    cov = fisher_covariance(F, prior)
    samples = np.random.default_rng(0).multivariate_normal(np.zeros(3), np.asarray(cov), 200)
    fig = plot_fisher_corner(cov, np.zeros(3), ("Omega_m", "sigma_8", "log10_M0"), samples=samples,
                             path=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_model_bad_inputs(tables):
    with pytest.raises(ValueError, match="not allowed"):
        AnalyticModel(("Omega_m", "H0"), tables=tables)
    with pytest.raises(ValueError, match="unique"):
        AnalyticModel(("Omega_m", "Omega_m"), tables=tables)
    m = AnalyticModel(("Omega_m",), tables=tables)
    with pytest.raises(ValueError, match="shape"):
        m(jnp.ones(2))
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):  # jaxtyping first when active
        fisher_covariance(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="n_samples"):
        run_nuts(m, jnp.ones((8, 6, 4)), jnp.full((1, 1), 0.3), key=jax.random.key(0), n_samples=1)


@pytest.mark.slow
def test_cli_fisher_and_hmc(tmp_path):
    from jaxcluster.analytic.cli import fisher_main, hmc_main

    assert fisher_main(["--out", str(tmp_path), "--params", "Omega_m,sigma_8,log10_M0"]) == 0
    res = json.loads((tmp_path / "fisher.json").read_text())
    assert res["names"] == ["Omega_m", "sigma_8", "log10_M0"] and res["fom_Omega_m_sigma_8"] > 0
    assert (tmp_path / "fisher_corner.png").exists()
    assert hmc_main(["--out", str(tmp_path), "--params", "Omega_m,sigma_8", "--chains", "2",
                     "--warmup", "50", "--samples", "50", "--area", "1000"]) == 0
    res = json.loads((tmp_path / "hmc.json").read_text())
    assert len(res["rhat"]) == 2 and (tmp_path / "hmc_corner.png").exists()


def test_unphysical_excursions_have_zero_density(small_model):
    """A slope or scatter <= 0 is a rejected NUTS step (ln p = −inf), never an exception, also under jit."""
    from jaxcluster.analytic import AnalyticModel
    from jaxcluster.analytic.hmc import is_physical, log_posterior

    model = AnalyticModel(("Omega_m", "alpha_MT"), cosmo=small_model.cosmo, tables=small_model.tables,
                          survey=small_model.survey, binning=small_model.binning)
    # compiled, not op by op (the model's ops one at a time take ~20 s); and one compiled value-and-gradient
    # (what NUTS evaluates) for every point, not one program for ln p and the gradient op by op
    counts = eqx.filter_jit(lambda m: m(m.theta0()))(model)
    lp_and_grad = jax.jit(jax.value_and_grad(lambda t: log_posterior(model, t, counts)))
    lp0, g = lp_and_grad(model.theta0())
    assert np.isfinite(float(lp0))
    for bad in ([0.3, -1.0], [0.3, 0.0], [0.3, jnp.nan]):
        theta = jnp.asarray(bad, dtype=model.theta0().dtype)
        assert not bool(is_physical(model, theta)) and float(lp_and_grad(theta)[0]) == -np.inf
    assert np.all(np.isfinite(np.asarray(g)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.0, 20.0))
def test_initial_points_are_inside_the_priors_and_physical(small_fisher, small_model, seed, scale):
    from jaxcluster.analytic.hmc import initial_points, is_physical
    from jaxcluster.params import PRIOR_BOUNDS

    F, _, prior = small_fisher
    cov = fisher_covariance(F, prior)
    init = np.asarray(initial_points(small_model, jax.random.key(seed), 6, cov, scale=scale))
    assert init.shape == (6, small_model.n_param) and np.all(np.isfinite(init))
    for i, n in enumerate(small_model.names):
        if n in ("Omega_m", "sigma_8"):
            lo, hi = PRIOR_BOUNDS[n]
            assert np.all((init[:, i] > lo) & (init[:, i] < hi)), n
    assert all(bool(is_physical(small_model, jnp.asarray(t))) for t in init)


def test_cli_hmc_default_parameters_short_chains(tmp_path, capsys):
    """The README's `jaxcluster hmc --out DIR` on its default 8 parameters, with short chains (seed 0 used to
    start a chain at σ_8 = 1.043, outside the prior, and die)."""
    from jaxcluster.analytic.cli import hmc_main
    from jaxcluster.params import PRIOR_BOUNDS

    assert hmc_main(["--out", str(tmp_path), "--chains", "2", "--warmup", "5", "--samples", "3", "--seed", "0"]) == 0
    printed = capsys.readouterr()
    assert "jaxcluster hmc: Fisher matrix of 8 parameters" in printed.out and "NUTS done in" in printed.out
    res = json.loads((tmp_path / "hmc.json").read_text())
    assert len(res["names"]) == 8 and np.all(np.isfinite(res["mean"]))
    samples = np.load(tmp_path / "hmc_samples.npz")["samples"]
    assert samples.shape == (2, 3, 8) and np.all(np.isfinite(samples))
    for i, n in enumerate(("Omega_m", "sigma_8")):
        lo, hi = PRIOR_BOUNDS[n]
        assert np.all((samples[..., i] > lo) & (samples[..., i] < hi))
    assert (tmp_path / "hmc_corner.png").exists()
    with pytest.raises(SystemExit):  # a flag NUTS would ignore is refused (the Fisher command has it)
        hmc_main(["--out", str(tmp_path), "--no-prior"])
