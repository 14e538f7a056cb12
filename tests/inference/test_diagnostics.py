"""Calibration diagnostics on posteriors known in closed form (conjugate Gaussian model).

Model: θ ~ N(0, I₂) (prior), x = θ + N(0, σ² I₂) with σ = 0.5, so the exact
posterior is N(x/(1+σ²), σ²/(1+σ²) I₂). A biased posterior shifts the mean by
one posterior σ, an over-confident one halves the width.
"""

import numpy as np
import pytest
from scipy import stats

from jaxcluster.inference import (
    corner_plot,
    credible_intervals,
    expected_coverage,
    figure_of_merit,
    marginal_coverage,
    plot_coverage,
    plot_rank_histograms,
    rank_histogram,
    sbc_ranks,
    table3_summary,
    tarp,
)

SIGMA = 0.5
N_TEST, L = 400, 300


def _problem(kind: str, seed: int = 0):
    """(θ_true, draws, ln q(θ_true), ln q(draws)) for the exact / biased / over-confident posterior."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(N_TEST, 2))
    x = theta + SIGMA * rng.normal(size=(N_TEST, 2))
    mean = x / (1 + SIGMA**2)
    sd = np.sqrt(SIGMA**2 / (1 + SIGMA**2))
    if kind == "biased":
        mean = mean + sd
    elif kind == "overconfident":
        sd = sd / 2
    draws = mean[:, None, :] + sd * rng.normal(size=(N_TEST, L, 2))

    def logq(t):
        return np.sum(stats.norm.logpdf(t, mean[:, None, :] if t.ndim == 3 else mean, sd), axis=-1)

    return theta, draws, logq(theta), logq(draws)


def test_sbc_ranks_uniform_for_exact_posterior_only():
    for kind, uniform in (("exact", True), ("biased", False), ("overconfident", False)):
        theta, draws, _, _ = _problem(kind)
        ranks = sbc_ranks(theta, draws)
        assert ranks.shape == (N_TEST, 2) and ranks.min() >= 0 and ranks.max() <= L
        h = rank_histogram(ranks, L, n_bins=10)
        assert np.all(h["counts"].sum(0) == N_TEST)
        # binomial band of a uniform histogram brackets its expectation
        assert h["lower"] < h["expected"] < h["upper"]
        if uniform:
            assert np.all(h["ks_pvalue"] > 0.01), h["ks_pvalue"]
        else:
            assert np.all(h["ks_pvalue"] < 1e-4), h["ks_pvalue"]


def test_expected_coverage_and_marginals():
    # sampling tolerance: KS 99 % band 1.63/√n for the empirical CDF of n = 400 credibilities
    tol = 1.63 / np.sqrt(N_TEST)
    theta, draws, lt, ls = _problem("exact")
    c = expected_coverage(lt, ls)
    assert np.max(np.abs(c["coverage"] - c["levels"])) < tol
    m = marginal_coverage(theta, draws)
    assert np.max(np.abs(m["coverage"] - m["levels"][:, None])) < tol
    theta, draws, lt, ls = _problem("overconfident")
    c = expected_coverage(lt, ls)
    at68 = c["coverage"][np.argmin(np.abs(c["levels"] - 0.68))]
    # halving σ in 2-D: the 68 % HPD region of q holds 1 − exp(−χ²₀.₆₈ / 8) of the truth's mass ≈ 0.25
    assert abs(at68 - (1 - np.exp(-stats.chi2.ppf(0.68, 2) / 8))) < tol
    assert marginal_coverage(theta, draws)["coverage"][-10:-1].mean() < 0.8


def test_tarp_exact_vs_overconfident():
    theta, draws, _, _ = _problem("exact")
    box = dict(lo=np.full(2, -3.5), hi=np.full(2, 3.5))
    t = tarp(theta, draws, n_bootstrap=20, **box)
    assert t["ks_pvalue"] > 0.01 and t["max_abs_deviation"] < 1.63 / np.sqrt(N_TEST)
    assert np.all(t["ecp_lower"] <= t["ecp_upper"])
    theta, draws, _, _ = _problem("overconfident")
    t = tarp(theta, draws, **box)
    assert t["ks_pvalue"] < 1e-4 and t["max_abs_deviation"] > 0.15
    with pytest.raises(ValueError, match="lo and hi"):
        tarp(theta, draws, lo=np.zeros(2), hi=np.array([0.0, 1.0]))


def test_intervals_and_fom_of_a_gaussian():
    rng = np.random.default_rng(1)
    cov = np.array([[0.04, 0.018], [0.018, 0.0225]])
    s = rng.multivariate_normal([0.3, 0.8], cov, size=200_000)
    ci = credible_intervals(s, 0.68)
    # central 68 % of a Gaussian: ±0.9945σ; Monte Carlo error of a quantile ~ 1e-3 relative here
    np.testing.assert_allclose(ci["half_width"], stats.norm.ppf(0.84) * np.sqrt(np.diag(cov)), rtol=0.01)
    np.testing.assert_allclose(figure_of_merit(s), 1 / np.sqrt(np.linalg.det(cov)), rtol=0.01)
    t3 = table3_summary(s, ["Omega_m", "sigma_8"])
    assert abs(t3["Omega_m"]["relative"] - ci["half_width"][0] / 0.3) < 0.01
    with pytest.raises(ValueError, match="level"):
        credible_intervals(s, 1.5)


def test_plots(tmp_path):
    theta, draws, lt, ls = _problem("exact")
    fig = plot_rank_histograms(sbc_ranks(theta, draws), L, ["a", "b"], path=tmp_path / "r.png")
    assert len(fig.axes) == 2 and (tmp_path / "r.png").stat().st_size > 0
    c = expected_coverage(lt, ls)
    plot_coverage({"exact": (c["levels"], c["coverage"])}, path=tmp_path / "c.png")
    fig = corner_plot({"q": draws[0], "p": draws[1]}, ["a", "b"], truth=theta[0], path=tmp_path / "k.png")
    assert len(fig.axes) == 4 and (tmp_path / "k.png").exists()
    with pytest.raises(ValueError, match="ranks must lie"):
        rank_histogram(np.full((3, 2), L + 1), L)
