"""Monte-Carlo error estimator on a known-variance case; the Poisson Fisher matrix on a toy λ(θ)."""

import jax
import jaxtyping
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.analytic import figure_of_merit, marginal_errors
from jaxcluster.sensitivity import mc_estimate, paired_sigma, poisson_fisher, simulation_fisher


def test_standard_error_matches_known_variance():
    """σ = 2, K = 8: E[SE²] = σ²/K exactly (unbiased s²), and the spread of the means is σ/√K."""
    rng = np.random.default_rng(0)
    sigma, K, reps = 2.0, 8, 4000
    x = rng.normal(1.0, sigma, size=(reps, K, 3))
    est = jax.vmap(lambda s: mc_estimate(s))(jnp.asarray(x))
    se2 = np.asarray(est.stderr) ** 2
    # mean of 12000 SE² values; their relative sd is √(2/(K−1)) = 0.53 → 0.5 % of the mean
    np.testing.assert_allclose(se2.mean(), sigma**2 / K, rtol=0.03)
    np.testing.assert_allclose(np.asarray(est.mean).std(), sigma / np.sqrt(K), rtol=0.03)
    # 68 % coverage of |mean − 1| < t_{K−1}·SE at 1σ-equivalent (t=1.077 for 7 dof)
    cover = np.mean(np.abs(np.asarray(est.mean) - 1.0) < 1.077 * np.asarray(est.stderr))
    assert abs(cover - 0.6827) < 0.02
    with pytest.raises(ValueError, match="realisation"):
        mc_estimate(jnp.ones((1, 3)))


def test_paired_sigma_uses_common_random_numbers():
    """Large common noise cancels in the per-key difference; a real offset of 5 SE is found."""
    rng = np.random.default_rng(1)
    K = 50
    common = rng.normal(0.0, 100.0, size=(K,))
    small = rng.normal(0.0, 1.0, size=(K,))
    offset = 5.0 / np.sqrt(K)  # 5 standard errors of the difference
    s = float(paired_sigma(jnp.asarray(common + small + offset), jnp.asarray(common)))
    assert 2.5 < s < 8.0
    s0 = float(paired_sigma(jnp.asarray(common + small), jnp.asarray(common)))
    assert s0 < 3.5
    # unpaired, the common noise would hide the offset completely
    assert offset / (100.0 * np.sqrt(2.0 / K)) < 0.1


def test_paired_sigma_counting_floor_calibrated_for_rare_crossings():
    """A histogram FD with rare bin-edge crossings: without the Poisson floor |t| > 2 far too often, with it ≲ 5 %."""
    rng = np.random.default_rng(3)
    n_rep, K, h, mu = 4000, 24, 0.1875, 0.1  # 24 keys, 2h·μ = 0.0375 net crossings expected per key
    a = mu + rng.normal(0.0, 0.4 * mu, size=(n_rep, K))  # the smooth estimator, mean μ
    up, down = rng.poisson(2 * h * (mu + 0.05), size=(n_rep, K)), rng.poisson(2 * h * 0.05, size=(n_rep, K))
    b = (up - down) / (2 * h)  # mean μ as well: the null holds
    a_t, b_t = jnp.asarray(np.moveaxis(a, 1, 0)), jnp.asarray(np.moveaxis(b, 1, 0))
    raw = np.asarray(paired_sigma(a_t, b_t))
    floored = np.asarray(paired_sigma(a_t, b_t, count_step=2 * h))
    assert np.mean(raw > 2) > 0.15  # the sample variance misses the counting noise (20 % of runs pass |t| = 2)
    assert np.mean(floored > 2) < 0.06
    # power is kept where crossings are frequent: a 40 % bias at μ = 50 (≈ 9 SE) is found
    a2 = 50.0 + rng.normal(0.0, 5.0, size=(K, 1))
    b2 = (rng.poisson(2 * h * 30.0, size=(K, 1))) / (2 * h)
    assert float(paired_sigma(jnp.asarray(a2), jnp.asarray(b2), count_step=2 * h)[0]) > 4.0
    with pytest.raises(ValueError, match="count_step"):
        paired_sigma(a_t, b_t, count_step=0.0)


def _toy_lambda(theta):
    """λ_i(θ) = exp(a_i + b_i·θ) on 5 bins, 3 parameters; Jacobian λ_i b_i analytically."""
    a = jnp.array([1.0, 2.0, 0.5, 3.0, 1.5])
    b = jnp.array([[0.3, -0.2, 0.1], [0.5, 0.1, -0.4], [-0.2, 0.6, 0.2], [0.1, 0.1, 0.1], [0.7, -0.5, 0.3]])
    return jnp.exp(a + b @ theta), b


def test_poisson_fisher_equals_explicit_sum_on_toy_model():
    theta = jnp.array([0.1, -0.2, 0.3])
    lam, b = _toy_lambda(theta)
    J_exact = np.asarray(lam)[:, None] * np.asarray(b)  # ∂λ_i/∂θ_a
    F_loop = np.zeros((3, 3))
    for i in range(5):
        F_loop += np.outer(J_exact[i], J_exact[i]) / float(lam[i])
    jac = jax.jacfwd(lambda t: _toy_lambda(t)[0])(theta)  # (5, 3)
    F = poisson_fisher(lam, jac.T)
    np.testing.assert_allclose(np.asarray(F), F_loop, rtol=1e-12)
    # reuse of the analytic baseline's helpers: errors from the inverse
    np.testing.assert_allclose(np.asarray(marginal_errors(F)), np.sqrt(np.diag(np.linalg.inv(F_loop))), rtol=1e-10)
    assert float(figure_of_merit(F)) > 0
    # a masked bin (λ below lam_min) drops out
    i = int(np.argmin(np.asarray(lam)))
    F_m = poisson_fisher(lam, jac.T, lam_min=float(lam[i]) * (1 + 1e-9))
    np.testing.assert_allclose(np.asarray(F_m), F_loop - np.outer(J_exact[i], J_exact[i]) / float(lam[i]), rtol=1e-10)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):  # jaxtyping checks shapes first under pytest
        poisson_fisher(lam, jac)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 6))
def test_fisher_symmetric_psd(seed, n_param):
    rng = np.random.default_rng(seed)
    lam = jnp.asarray(rng.uniform(0.0, 5.0, size=(3, 4, 2)))
    jac = jnp.asarray(rng.normal(size=(n_param, 3, 4, 2)) * 10.0 ** rng.uniform(-3, 3, size=(n_param, 1, 1, 1)))
    F = np.asarray(poisson_fisher(lam, jac))
    np.testing.assert_array_equal(F, F.T)
    ev = np.linalg.eigvalsh(F)
    assert ev.min() >= -1e-10 * max(ev.max(), 1e-300)


def test_simulation_fisher_noise_term_removes_mc_bias():
    """J_k = J + noise: E[F̂] = F + N; F̂ − N̂ is unbiased (mean over replicates within its error)."""
    theta = jnp.array([0.1, -0.2, 0.3])
    lam, b = _toy_lambda(theta)
    J = np.asarray(lam)[None, :] * np.asarray(b).T  # (3, 5)
    F_true = np.asarray(poisson_fisher(lam, jnp.asarray(J)))
    rng = np.random.default_rng(2)
    K, reps, noise = 4, 3000, 2.0
    jac_s = J[None, None] + noise * rng.normal(size=(reps, K, 3, 5))
    lam_s = np.broadcast_to(np.asarray(lam), (reps, K, 5))
    F, N = jax.vmap(simulation_fisher)(jnp.asarray(lam_s), jnp.asarray(jac_s))
    F, N = np.asarray(F), np.asarray(N)
    bias_expected = noise**2 / K * np.sum(1.0 / np.asarray(lam)) * np.eye(3)
    np.testing.assert_allclose(N.mean(axis=0), bias_expected, atol=0.05 * bias_expected.max())
    corr = (F - N).mean(axis=0)
    err = (F - N).std(axis=0) / np.sqrt(reps)
    assert np.all(np.abs(corr - F_true) < 4 * err + 1e-9)
    assert np.any(np.abs(F.mean(axis=0) - F_true) > 10 * err)  # uncorrected: biased
