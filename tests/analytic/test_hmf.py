"""Tinker08 mass function: colossus reference, Δ interpolation, errors, gradients."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

from jaxcluster.analytic import hmf
from jaxcluster.cosmology import Cosmology

colossus_cosmology = pytest.importorskip("colossus.cosmology.cosmology")
colossus_mf = pytest.importorskip("colossus.lss.mass_function")
colossus_peaks = pytest.importorskip("colossus.lss.peaks")

M_GRID = np.logspace(13.0, 15.5, 11)  # h⁻¹ M☉
Z_GRID = np.array([0.0, 0.25, 0.5, 1.0])


def _colossus_dndlnM(cosmo, M, z, mdef):
    """dn/dlnM from colossus's f(σ) and its exact σ (interpolation=False), slope by central differences."""
    f = colossus_mf.massFunction(M, z, mdef=mdef, model="tinker08", q_out="f")
    eps = 1e-3
    r_hi = colossus_peaks.lagrangianR(M * np.exp(eps))
    r_lo = colossus_peaks.lagrangianR(M * np.exp(-eps))
    slope = (np.log(cosmo.sigma(r_hi, z)) - np.log(cosmo.sigma(r_lo, z))) / (2 * eps)
    rho_m = cosmo.rho_m(0.0) * 1e9  # M☉ h² kpc⁻³ → M☉ h² Mpc⁻³
    return f * rho_m / M * np.abs(slope)


@pytest.mark.parametrize("Om,s8", [(0.3, 0.8), (0.16, 0.95)])
def test_against_colossus(Om, s8):
    # Same P(k) in both: Eisenstein & Hu 1998 with BAO; colossus without
    # radiation (our growth neglects it) and with exact σ integrals
    # (its interpolation tables carry ~1e-3 errors in σ, 4 % in f at 10^15.5).
    cc = colossus_cosmology.setCosmology(
        "jaxcluster_test",
        dict(flat=True, H0=67.11, Om0=Om, Ob0=0.049, sigma8=s8, ns=0.9624, relspecies=False,
             Tcmb0=2.7255, power_law=False, interpolation=False),
        persistence="",
    )
    cosmo = Cosmology(Omega_m=Om, sigma_8=s8)
    for mdef in ("200m", "500c"):
        # colossus interpolates the Tinker table linearly in Δ: compare like with like
        ours = np.asarray(hmf.mass_function(cosmo, M_GRID, Z_GRID, mdef, delta_interp="linear"))
        for i, z in enumerate(Z_GRID):
            ref = _colossus_dndlnM(cc, M_GRID, z, mdef)
            np.testing.assert_allclose(ours[i], ref, rtol=0.02, err_msg=f"{mdef} z={z}")


def test_spline_equals_linear_on_table_nodes_and_close_between():
    cosmo = Cosmology()
    z = jnp.array([0.0, 0.5])
    for mdef in ("200m", "400m", "1600m"):  # table nodes: both interpolations agree exactly
        a = hmf.mass_function(cosmo, M_GRID, z, mdef, delta_interp="spline")
        b = hmf.mass_function(cosmo, M_GRID, z, mdef, delta_interp="linear")
        np.testing.assert_allclose(a, b, rtol=1e-12)
    a = hmf.mass_function(cosmo, M_GRID, z, "500c", delta_interp="spline")
    b = hmf.mass_function(cosmo, M_GRID, z, "500c", delta_interp="linear")
    assert float(jnp.max(jnp.abs(a / b - 1))) < 0.1  # the fit's own interpolation systematic


def test_sigma_slope_matches_finite_difference():
    cosmo = Cosmology()
    M = jnp.asarray(M_GRID)
    sig, slope = hmf.sigma_and_slope(cosmo, M)
    h = 1e-4
    s_hi, _ = hmf.sigma_and_slope(cosmo, M * np.exp(h))
    s_lo, _ = hmf.sigma_and_slope(cosmo, M * np.exp(-h))
    np.testing.assert_allclose(slope, (jnp.log(s_hi) - jnp.log(s_lo)) / (2 * h), rtol=1e-6)
    # Hermite interpolation from 8 knots reproduces σ and its slope
    lnM = jnp.log(M)
    s2, d2 = hmf.sigma_and_slope_interpolated(cosmo, lnM, jnp.linspace(lnM[0], lnM[-1], 8))
    np.testing.assert_allclose(s2, sig, rtol=1e-5)
    np.testing.assert_allclose(d2, slope, rtol=1e-3)


def test_grad_matches_finite_differences():
    M = jnp.logspace(13.5, 15.0, 4)

    def total(om, s8):
        c = Cosmology(Omega_m=om, sigma_8=s8)
        return jnp.sum(jnp.log(hmf.mass_function(c, M, jnp.array([0.2, 0.6]), "500c")))

    g = jax.jit(jax.grad(total, argnums=(0, 1)))(0.3, 0.8)
    h = 1e-5
    fd_om = (total(0.3 + h, 0.8) - total(0.3 - h, 0.8)) / (2 * h)
    fd_s8 = (total(0.3, 0.8 + h) - total(0.3, 0.8 - h)) / (2 * h)
    np.testing.assert_allclose(g[0], fd_om, rtol=1e-5)
    np.testing.assert_allclose(g[1], fd_s8, rtol=1e-5)


def test_delta_out_of_table():
    low = Cosmology(Omega_m=0.12, Omega_b=0.02)
    assert float(hmf.delta_mean(low, 0.0, "500c")) > hmf.TINKER08_DELTA[-1]
    clipped = hmf.mass_function(low, M_GRID, 0.0, "500c")  # documented default: clip
    assert bool(jnp.all(jnp.isfinite(clipped)))
    with pytest.raises(eqx.EquinoxRuntimeError, match="Tinker"):
        jax.block_until_ready(hmf.mass_function(low, M_GRID, 0.0, "500c", out_of_range="error"))


def test_bad_inputs_raise():
    cosmo = Cosmology()
    with pytest.raises(ValueError, match="mdef"):
        hmf.mass_function(cosmo, M_GRID, 0.0, "500x")
    with pytest.raises(ValueError, match="out_of_range"):
        hmf.mass_function(cosmo, M_GRID, 0.0, "500c", out_of_range="ignore")
    with pytest.raises(ValueError, match="delta_interp"):
        hmf.mass_function(cosmo, M_GRID, 0.0, "500c", delta_interp="cubic")
    # 2-D masses: jaxtyping's check (in tests) or our ValueError (without it)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):
        hmf.mass_function(cosmo, jnp.ones((2, 2)) * 1e14, 0.0)
    with pytest.raises(eqx.EquinoxRuntimeError, match="M must be > 0"):
        jax.block_until_ready(hmf.mass_function(cosmo, jnp.array([-1e14, 1e14]), 0.0))


def test_loglinear_is_ccls_interpolation_and_bad_choices_are_refused():
    """"loglinear" is CCL's scheme (pyccl/halos/hmfunc/tinker08.py: scipy interp1d, linear, on log10 Δ);
    an unknown delta_interp is an error, not the spline."""
    delta = np.array([250.0, 500.0, 1000.0, 2000.0, 3000.0])
    z = np.zeros_like(delta)
    A, a, b, c = (np.asarray(v) for v in hmf.tinker08_parameters(delta, z, delta_interp="loglinear"))
    ld = np.log10(np.asarray(hmf.TINKER08_DELTA))
    for got, key in ((A, "A"), (a, "a"), (b, "b"), (c, "c")):  # at z = 0 the (1 + z) factors are 1
        ref = np.interp(np.log10(delta), ld, np.asarray(hmf.TINKER08_TABLE[key]))
        np.testing.assert_allclose(got, ref, rtol=1e-12, err_msg=key)
    spline = np.asarray(hmf.tinker08_parameters(delta, z, delta_interp="spline")[3])
    assert not np.allclose(spline, c)  # the default is a different (smooth) interpolant
    with pytest.raises(ValueError, match="delta_interp"):
        hmf.tinker08_parameters(delta, z, delta_interp="cubic")
