"""Expected XOD: quadrature vs scipy, count-rate conversion, smoothness, likelihood, bad inputs."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest
from scipy import integrate

from jaxcluster.analytic import (
    ScalingRelations,
    SurveySpec,
    XODBinning,
    count_rates,
    expected_xod,
    halo_counts,
    mass_function,
    poisson_log_likelihood,
    poisson_mock,
)
from jaxcluster.cosmology import C_OVER_H0_MPC_H, Cosmology
from jaxcluster.xray import count_rate


def test_mass_limited_counts_against_scipy():
    cosmo = Cosmology()
    z_edges = (0.1, 0.3, 0.5)
    ours = np.asarray(jax.jit(lambda c: halo_counts(c, z_edges, 14.0, 15.5, 100.0, "500c"))(cosmo))
    # Simpson on 201 masses (h = 0.017 in ln M): its error ≪ 1e-6 here; each of the ~84 redshifts quad asks
    # for costs one evaluation of the mass function on the whole grid
    mf = jax.jit(lambda z: mass_function(cosmo, jnp.logspace(14.0, 15.5, 201), z, "500c"))
    lnM = np.log(np.logspace(14.0, 15.5, 201))
    omega = 100.0 * (math.pi / 180) ** 2

    def e_of_z(z):
        return math.sqrt(0.3 * (1 + z) ** 3 + 0.7)

    def integrand(z):
        chi = C_OVER_H0_MPC_H * integrate.quad(lambda x: 1.0 / e_of_z(x), 0.0, z, epsabs=0, epsrel=1e-10)[0]
        dvdz = C_OVER_H0_MPC_H * chi**2 / e_of_z(z)
        return dvdz * integrate.simpson(np.asarray(mf(z)), x=lnM)

    ref = [omega * integrate.quad(integrand, lo, hi, epsrel=1e-7)[0] for lo, hi in zip(z_edges[:-1], z_edges[1:])]
    # quadrature error of 6 GL nodes per bin and 64 in ln M: ≪ 1e-4
    np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_count_rate_conversion_matches_xray_stage(tables):
    """CR of a cluster of given (L, T, z) equals the X-ray stage's count rate of the same emission measure."""
    cosmo = Cosmology()
    L, T, z = 1e44, 5.0, 0.3
    cr = np.asarray(count_rates(tables, cosmo, jnp.array([L]), jnp.array([T]), jnp.array([z])))[0]
    em = L / float(tables.energy(jnp.array([T]), 0.0)[0, 0])  # cm⁻³
    # one comoving voxel of 1 h⁻³ Mpc³ whose EM = n_e² (1+z)³ V (Mpc/h)³ / 1.2 equals em
    mpc_cm = 3.0856775814913673e24
    h = float(cosmo.h)
    n_e = math.sqrt(em * 1.2 / ((1 + z) ** 3 * (mpc_cm / h) ** 3))
    ref = np.asarray(count_rate(tables.photon, jnp.array([n_e]), jnp.array([T]), z, 1.0, cosmo))[0]
    np.testing.assert_allclose(cr, ref, rtol=1e-10)
    # order of magnitude: 1e44 erg/s at z = 0.3 gives ~0.5 c/s in pn [0.5-2] keV
    assert 0.05 < cr.sum() < 5


def test_xod_shape_convergence_and_positivity(tables):
    cosmo, sr = Cosmology(), ScalingRelations()
    xod = eqx.filter_jit(expected_xod)  # eagerly, each of ~600 primitives would compile on its own
    lam = xod(cosmo, sr, tables)
    assert lam.shape == XODBinning().shape == (8, 6, 4)
    assert bool(jnp.all(lam >= 0)) and 50 < float(lam.sum()) < 500  # 200 deg², CR > 0.02
    fine = xod(cosmo, sr, tables, SurveySpec(n_mass=96, n_z_per_bin=10, n_gh=11, n_sigma_knots=0))
    big = fine > 1.0
    np.testing.assert_allclose(lam[big], fine[big], rtol=2e-3)


def test_cut_and_area_scaling(tables):
    cosmo, sr = Cosmology(), ScalingRelations()
    xod = eqx.filter_jit(expected_xod)  # one compile per spec instead of hundreds of eager ones
    a = xod(cosmo, sr, tables, SurveySpec(area_deg2=100.0))
    b = xod(cosmo, sr, tables, SurveySpec(area_deg2=50.0))
    np.testing.assert_allclose(a, 2 * b, rtol=1e-12)
    c = xod(cosmo, sr, tables, SurveySpec(area_deg2=100.0, cr_cut=0.05))
    assert float(c.sum()) < float(a.sum())
    # bins entirely below the cut are (nearly) empty
    assert float(c[0].sum()) < 1e-3 * float(a[0].sum()) + 1e-9 or XODBinning().cr_edges[1] > 0.05


def test_xod_gradient_matches_finite_differences(small_model):
    th0 = small_model.theta0()
    f = eqx.filter_jit(lambda m, t: jnp.sum(jnp.log(m(t) + 1.0)))
    g = eqx.filter_jit(lambda m, t: jax.grad(lambda x: jnp.sum(jnp.log(m(x) + 1.0)))(t))(small_model, th0)
    for i, h in enumerate((1e-5, 1e-5, 1e-5)):
        e = jnp.zeros_like(th0).at[i].set(h)
        fd = (f(small_model, th0 + e) - f(small_model, th0 - e)) / (2 * h)
        np.testing.assert_allclose(g[i], fd, rtol=1e-4, err_msg=small_model.names[i])


def test_poisson_mock_and_likelihood(getkey):
    lam = jnp.array([[0.0, 2.5], [10.0, 100.0]])
    n = poisson_mock(getkey(), lam)
    assert n.shape == lam.shape and n.dtype == lam.dtype and float(n[0, 0]) == 0.0
    ll = poisson_log_likelihood(n, lam)
    assert bool(jnp.isfinite(ll))
    # the likelihood of an Asimov data set peaks at λ (d lnL/dλ = n/λ − 1 = 0), gradient finite at λ = 0
    g = jax.grad(lambda s: poisson_log_likelihood(lam, s * lam))(1.0)
    assert abs(float(g)) < 1e-10
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):  # jaxtyping first when active
        poisson_log_likelihood(jnp.ones(3), jnp.ones(4))
    assert float(poisson_log_likelihood(jnp.array([1.0]), jnp.array([0.0]))) == -math.inf


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="cr_edges"):
        XODBinning(cr_edges=(0.1, 0.05, 1.0))
    with pytest.raises(ValueError, match="hr_edges"):
        XODBinning(hr_edges=(0.0, 1.0))
    with pytest.raises(ValueError, match="area_deg2"):
        SurveySpec(area_deg2=-1.0)
    with pytest.raises(ValueError, match="sigma_log10_hr"):
        SurveySpec(sigma_log10_hr=0.0)
    with pytest.raises(ValueError, match="n_mass"):
        SurveySpec(n_mass=0)
    with pytest.raises(ValueError, match="alpha_MT"):
        ScalingRelations(alpha_MT=-1.0)
    with pytest.raises(ValueError, match="sigma_lnL"):
        ScalingRelations(sigma_lnL=0.0)
