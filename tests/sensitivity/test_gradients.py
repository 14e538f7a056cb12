"""Sensitivities of soft-XOD observables: autodiff vs finite differences (fixed and hard, common random numbers).

The survey pipeline itself compiles its reverse pass in minutes, so the fast
tests run the same machinery (`mc_jacobians`, `project`, the soft and hard
XODs of `jaxcluster.survey.xod`) on a toy catalogue whose sources move
smoothly with θ; the whole-pipeline check is `-m slow`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.analytic import XODBinning
from jaxcluster.params import PRIOR_BOUNDS, ThetaSim
from jaxcluster.sensitivity import default_steps, mc_jacobians, paired_sigma, project
from jaxcluster.survey import hard_xod, soft_xod

BINS = XODBinning(np.geomspace(0.02, 2.0, 5), np.geomspace(0.2, 2.0, 4), np.linspace(0.1, 0.5, 3))
N_SRC = 200


def _catalogue(theta, key):
    """Toy sources: log10 CR = −1.3 + 0.8 g + θ₀ + 0.5 θ₁ g, log10 HR = 0.3 g' − 0.2 + 0.3 θ₁, z uniform + 0.1 θ₂."""
    k1, k2, k3 = jax.random.split(key, 3)
    g = jax.random.normal(k1, (N_SRC,), dtype=theta.dtype)
    g2 = jax.random.normal(k2, (N_SRC,), dtype=theta.dtype)
    z = jax.random.uniform(k3, (N_SRC,), dtype=theta.dtype, minval=0.05, maxval=0.45) + 0.1 * theta[2]
    cr = 10.0 ** (-1.3 + 0.8 * g + theta[0] + 0.5 * theta[1] * g)
    hr = 10.0 ** (0.3 * g2 - 0.2 + 0.3 * theta[1])
    return cr, hr, z, jnp.ones(N_SRC, dtype=bool)


def _soft(theta, key, s=0.02, sz=0.005):
    cr, hr, z, v = _catalogue(theta, key)
    return soft_xod(cr, hr, z, v, BINS, 0.02, s, sz)


def _hard(theta, key):
    cr, hr, z, v = _catalogue(theta, key)
    return hard_xod(cr, hr, z, v, BINS, 0.02)


def _fd_raw(fn_hard, theta, e, keys):
    f = _hard if fn_hard else _soft
    return jax.vmap(lambda k: (f(theta + e, k) - f(theta - e, k)) / (2 * jnp.sum(e)))(keys)


_fd = jax.jit(_fd_raw, static_argnums=0)


def test_jacrev_matches_fixed_finite_differences_per_key():
    """Same function, same keys: autodiff and central differences agree to truncation error."""
    theta = jnp.array([0.0, 0.1, 0.0])
    keys = jax.random.split(jax.random.key(0), 3)
    val, jac = jax.jit(lambda t, k: mc_jacobians(_soft, t, k, "jacrev"))(theta, keys)
    assert val.shape == (3, *BINS.shape) and jac.shape == (3, 3, *BINS.shape)
    h = 1e-5
    for a in range(3):
        e = jnp.zeros(3).at[a].set(h)
        fd = _fd(False, theta, e, keys)
        # O(h²) truncation, sigmoid curvature ~1/s² (s = 0.005 in z): |Δ| ≲ 1e-4 of the scale
        np.testing.assert_allclose(np.asarray(jac[:, a]), np.asarray(fd), atol=2e-4 * float(jnp.abs(fd).max()) + 1e-8)
    # "grad" mode is the weighted sum of the Jacobian
    w = jnp.asarray(np.random.default_rng(0).uniform(size=BINS.shape))
    _, g = mc_jacobians(_soft, theta, keys, "grad", weights=w)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jnp.einsum("kaijl,ijl->ka", jac, w)), rtol=1e-10)


def test_soft_gradient_agrees_with_hard_finite_differences_within_mc_error():
    """Mean ∂(soft dN/dz, CR and HR distributions)/∂θ vs central differences of hard histograms, 200 keys.

    The hard FD is noisy (a source crossing an edge moves a bin by 1), with a
    large step h = 0.05 (dex for θ₀); both estimate the derivative of the
    expected counts, to O(s²) smoothing and O(h²) truncation, far below the
    Monte-Carlo error here.
    """
    theta = jnp.array([0.0, 0.1, 0.0])
    keys = jax.random.split(jax.random.key(1), 200)
    _, jac = jax.jit(lambda t, k: mc_jacobians(_soft, t, k, "jacrev"))(theta, keys)
    h = 0.05
    worst = 0.0
    for a in range(3):
        e = jnp.zeros(3).at[a].set(h)
        fd = _fd(True, theta, e, keys)
        for obs in ("dndz", "cr", "hr", "total"):
            s = np.asarray(paired_sigma(project(jac[:, a], obs), project(fd, obs)))
            worst = max(worst, float(s.max()))
        # the response is real: total counts grow with θ₀ by many standard errors
    assert worst < 3.5  # 3 params × 12 marginal bins: max of ~36 |N(0,1)| draws stays below 3.5 w.p. ~99 %
    d_total = project(jac[:, 0], "total")
    assert float(d_total.mean()) > 10 * float(d_total.std() / np.sqrt(200))


def test_project_marginals_and_errors():
    x = jnp.arange(2 * 4 * 3 * 2, dtype=float).reshape(2, 4, 3, 2)
    assert project(x, "dndz").shape == (2, 2) and project(x, "cr").shape == (2, 4) and project(x, "hr").shape == (2, 3)
    np.testing.assert_allclose(np.asarray(project(x, "total")), np.asarray(x.sum(axis=(1, 2, 3))))
    with pytest.raises(ValueError, match="observable"):
        project(x, "mass")
    with pytest.raises(ValueError, match="method"):
        mc_jacobians(_soft, jnp.zeros(3), jax.random.split(jax.random.key(0), 2), "jacfwd")


def test_default_steps_stay_inside_the_prior():
    h = np.asarray(default_steps(0.05, ThetaSim(Omega_m=0.49, A_SN1=0.26)))
    t = np.asarray(ThetaSim(Omega_m=0.49, A_SN1=0.26).to_array())
    lo = np.array([v[0] for v in PRIOR_BOUNDS.values()])
    hi = np.array([v[1] for v in PRIOR_BOUNDS.values()])
    assert np.all(t - h >= lo) and np.all(t + h <= hi) and np.all(h > 0)
    np.testing.assert_allclose(h[1], 0.05 * 0.4)  # σ_8 at its fiducial: the full 5 % of the width
    with pytest.raises(ValueError, match="fraction"):
        default_steps(0.0)
