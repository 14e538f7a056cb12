"""ShearMap: the triangular quadratic reparametrisation that straightens curved posteriors for NUTS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.analytic import ShearMap, fit_shear_map


def _banana(n, seed=0):
    """Exact draws of a 3-D banana: u1 = 0.8 u0² + 0.5 u0 + 0.3 ε1, u2 = 1 + u0 - 0.6 u0 u1 + 0.2 ε2 (u0 ~ N(0, 0.7²))."""
    e = np.random.default_rng(seed).standard_normal((n, 3))
    u0 = 0.7 * e[:, 0]
    u1 = 0.8 * u0**2 + 0.5 * u0 + 0.3 * e[:, 1]
    u2 = 1.0 + u0 - 0.6 * u0 * u1 + 0.2 * e[:, 2]
    return np.stack([u0, u1, u2], axis=1), e


def test_fit_recovers_the_generating_map():
    # stored in the order (u2, u0, u1) the best order is still (0, 1, 2) of the generating process
    u, e = _banana(20000)
    perm = [2, 0, 1]
    m = fit_shear_map(u[:, perm])
    assert m.order == (1, 2, 0)
    np.testing.assert_allclose(m.scales, [0.7, 0.3, 0.2], rtol=0.03)
    z = np.asarray(jax.jit(jax.vmap(m.inverse))(jnp.asarray(u[:, perm])))
    # z is the generating noise up to the fit's sampling error
    np.testing.assert_allclose(np.cov(z.T), np.eye(3), atol=0.03)
    assert np.corrcoef(z[:, 1], e[:, 1])[0, 1] > 0.99


def test_round_trip_and_constant_jacobian():
    u, _ = _banana(5000, seed=1)
    m = fit_shear_map(u)
    z = jax.random.normal(jax.random.key(0), (20, 3), jnp.float64) * 2.0
    np.testing.assert_allclose(jax.jit(jax.vmap(lambda q: m.inverse(m.forward(q))))(z), z, atol=1e-10)
    logdet = jax.jit(jax.vmap(lambda q: jnp.linalg.slogdet(jax.jacfwd(m.forward)(q))[1]))(z)
    np.testing.assert_allclose(logdet, m.log_abs_det_du_dz(), atol=1e-10)


def test_fixed_order_and_input_errors():
    u, _ = _banana(500)
    assert fit_shear_map(u, order=(2, 1, 0)).order == (2, 1, 0)
    with pytest.raises(ValueError, match="permutation"):
        fit_shear_map(u, order=(0, 0, 1))
    with pytest.raises(ValueError, match="need more than"):
        fit_shear_map(u[:5])
    assert isinstance(fit_shear_map(u), ShearMap)


def test_run_nuts_checks_the_reparametrisation_size(tables):
    from jaxcluster.analytic import AnalyticModel, run_nuts

    m = AnalyticModel(("Omega_m",), tables=tables)
    shear = fit_shear_map(_banana(100)[0])  # 3 coordinates for a 1-parameter model
    with pytest.raises(ValueError, match="reparametrisation has 3 coordinates"):
        run_nuts(m, jnp.ones((8, 6, 4)), jnp.full((1, 1), 0.3), key=jax.random.key(0), reparametrisation=shear)
