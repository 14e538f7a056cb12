"""Observation model (issue #23): physics against independent references, shapes, errors."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from jaxcluster.observation import (
    ObservationConfig,
    band_transmission,
    cross_section_cm2,
    draw_agn,
    encircled_energy,
    energy_conversion_factor,
    exposure_maps,
    flux_above,
    grid_pointings,
    half_energy_diameter_arcsec,
    king_parameters,
    king_profile,
    n_above,
    observe,
    psf_kernel,
    thermal_photon_spectrum,
    vignetting,
)
from jaxcluster.observation.absorption import MM83_TABLE
from jaxcluster.xray.emissivity import default_band_response

N = 64  # map side [pixels] of 1′


@pytest.fixture(scope="module")
def response():
    return default_band_response()


@pytest.fixture(scope="module")
def observed(response):
    """One jitted observation of a 64×64 map with one bright point-like cluster; reused."""
    cr = jnp.zeros((N, N, 2)).at[32, 32].set(jnp.array([0.05, 0.04]))
    f = eqx.filter_jit(lambda k, c: observe(k, c, 1.0, ObservationConfig(), response))
    return cr, f(jax.random.key(1), cr)


# ------------------------------------------------------------------ PSF


def test_king_profile_integrates_to_one_and_matches_eef():
    rc, alpha = (float(v) for v in king_parameters(1.0, 0.0))
    f = lambda r: 2 * math.pi * r * float(king_profile(r, rc, alpha))  # noqa: E731
    total, _ = integrate.quad(f, 0, np.inf, limit=200)
    assert total == pytest.approx(1.0, rel=1e-6)
    for r in (5.0, 15.0, 60.0):
        num, _ = integrate.quad(f, 0, r)
        assert float(encircled_energy(r, rc, alpha)) == pytest.approx(num, rel=1e-8)
    hew = float(half_energy_diameter_arcsec(rc, alpha))
    assert float(encircled_energy(hew / 2, rc, alpha)) == pytest.approx(0.5, rel=1e-10)


def test_king_parameters_ghizzardi_values():
    # CAL-TN-0029 pn: on axis at 1 keV r_c = 6.636 − 0.305 = 6.331″, α = 1.525 − 0.015 = 1.510.
    rc, alpha = king_parameters(1.0, 0.0)
    assert float(rc) == pytest.approx(6.331) and float(alpha) == pytest.approx(1.510)
    rc, alpha = king_parameters(2.0, 10.0)
    assert float(rc) == pytest.approx(6.636 - 0.61 - 1.75 - 0.134)
    assert float(alpha) == pytest.approx(1.525 - 0.03 - 0.12 - 0.02)


def test_psf_kernel_sums_to_one_and_central_pixel_matches_eef():
    rc, alpha = king_parameters(1.0, 0.0)
    ker = psf_kernel((128, 128), 1.0, rc, alpha)
    assert float(ker.sum()) == pytest.approx(1.0, rel=1e-12)
    # Central 1′ square lies between the EEF of its inscribed and circumscribed circles.
    lo, hi = float(encircled_energy(30.0, rc, alpha)), float(encircled_energy(30.0 * math.sqrt(2), rc, alpha))
    assert lo < float(ker[0, 0]) < hi
    assert float(ker[0, 1]) == pytest.approx(float(ker[1, 0])) == pytest.approx(float(ker[-1, 0]))


# ------------------------------------------------------------------ absorption


def test_mm83_cross_section_values_and_edges():
    # M&M 1983 Table 2 at 1 keV: (120.6 + 169.3 − 47.7) × 1e-24 cm² = 2.422e-22 cm².
    assert float(cross_section_cm2(1.0)) == pytest.approx(2.422e-22, rel=1e-6)
    # Every interval boundary above 0.1 keV is an absorption edge: σ jumps up across it.
    for row in MM83_TABLE[2:]:
        e = row[0]
        assert float(cross_section_cm2(e * (1 + 1e-6))) > float(cross_section_cm2(e * (1 - 1e-6)))
    # Between edges σ falls roughly as E^{-8/3} (photoionisation): slope in (−3.2, −2.2).
    e = np.array([0.9, 1.2])
    s = np.asarray(cross_section_cm2(jnp.asarray(e)))
    slope = np.log(s[1] / s[0]) / np.log(e[1] / e[0])
    assert -3.2 < slope < -2.2


def test_band_transmission_gradient_and_spectrum_dependence(response):
    e = 0.5 * (response.energ_lo_keV + response.energ_hi_keV)
    spec = thermal_photon_spectrum(e, 2.0)
    f = lambda nh: band_transmission(nh * 1e20, spec, response)  # noqa: E731
    tau = f(2.6)
    assert np.all((tau > 0.8) & (tau < 1.0)) and tau[0] < tau[1]  # soft band absorbed more
    grad = jax.jacfwd(f)(2.6)
    h = 1e-3
    fd = (f(2.6 + h) - f(2.6 - h)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6)
    # The band transmission depends only weakly on the plasma temperature.
    tau8 = band_transmission(2.6e20, thermal_photon_spectrum(e, 8.0), response)
    np.testing.assert_allclose(tau8, tau, rtol=0.01)


# ------------------------------------------------------------------ pointings, vignetting


def test_vignetting_and_overlapping_exposure():
    assert float(vignetting(0.0, 1.0)) == 1.0
    assert 0.55 < float(vignetting(15.0, 1.0)) < 0.65
    assert float(vignetting(10.0, 1.5)) < float(vignetting(10.0, 0.75))
    p = grid_pointings((40.0, 20.0), spacing_arcmin=20.0, exposure_s=1e4)
    assert p.centres_arcmin.tolist() == [[10.0, 10.0], [30.0, 10.0]]
    zones, plain = exposure_maps(p, (40, 20), 1.0, jnp.array([1.0]))
    exp = zones.sum(0)[0]
    # Pixel centre (20.5, 10.5): 10.51′ from pointing 1, 9.51′ from pointing 2; both see it.
    d1, d2 = math.hypot(10.5, 0.5), math.hypot(9.5, 0.5)
    want = 1e4 * (float(vignetting(d1, 1.0)) + float(vignetting(d2, 1.0)))
    assert float(exp[20, 10]) == pytest.approx(want, rel=1e-12)
    assert float(plain[20, 10]) == 2e4
    # Corner (0.5, 19.5) is 13.46′ from pointing 1 only.
    assert float(plain[0, 19]) == 1e4
    assert float(exp[0, 0]) < float(exp[10, 10]) == pytest.approx(1e4 * float(vignetting(math.hypot(0.5, 0.5), 1.0)))


# ------------------------------------------------------------------ AGN


def test_logn_logs_reference_values_and_draw_counts(response, getkey):
    # Moretti et al. 2003 soft band: N(>1e-14) ≈ 126 deg⁻² (computed by hand from the published form).
    a1, a2, s0, ns = 1.82, 0.60, 1.48e-14, 6150.0
    s = 1e-14
    by_hand = ns * 2e-15**a1 / (s**a1 + s0 ** (a1 - a2) * s**a2)
    assert float(n_above(s)) == pytest.approx(by_hand, rel=1e-10)
    ecf = energy_conversion_factor(2.6e20, response)
    field = (120.0, 120.0)  # 4 deg²
    draws = jax.vmap(lambda k: draw_agn(k, field, 6000, ecf, s_min=2e-15, s_max=1e-12))(jax.random.split(getkey(), 20))
    n_tot = np.asarray(draws.valid.sum(axis=1))
    mean_expected = 4.0 * float(n_above(2e-15) - n_above(1e-12))
    assert abs(n_tot.mean() - mean_expected) < 5 * math.sqrt(mean_expected / 20)
    # Sources brighter than 1e-14 vs the integral of the law.
    bright = np.asarray(((draws.flux_cgs > 1e-14) & draws.valid).sum(axis=1))
    exp_bright = 4.0 * float(n_above(1e-14) - n_above(1e-12))
    assert abs(bright.mean() - exp_bright) < 5 * math.sqrt(exp_bright / 20)
    assert np.all(np.asarray(draws.position_arcmin) >= 0) and np.all(np.asarray(draws.position_arcmin) <= 120.0)
    # Count rates: S × ECF, zero in empty slots.
    cr = np.asarray(draws.count_rate[0])
    v = np.asarray(draws.valid[0])
    np.testing.assert_allclose(cr[v], np.asarray(draws.flux_cgs[0])[v][:, None] * np.asarray(ecf)[None, :], rtol=1e-12)
    assert np.all(cr[~v] == 0)


def test_agn_flux_integral_and_ecf(response):
    # ∫ S dN over [1e-15, 1e-11] by direct quadrature of −S dN/dS.
    dn = lambda s: -float(jax.grad(lambda x: n_above(x * 1e-15))(s / 1e-15)) / 1e-15  # noqa: E731
    num, _ = integrate.quad(lambda ls: math.exp(ls) * math.exp(ls) * dn(math.exp(ls)), math.log(1e-15), math.log(1e-11), limit=200)
    assert flux_above(1e-15, 1e-11) == pytest.approx(num, rel=1e-4)
    # ECF falls with N_H, more in the soft band.
    e0, e1 = energy_conversion_factor(0.0, response), energy_conversion_factor(1e21, response)
    assert np.all(e1 < e0) and e1[0] / e0[0] < e1[1] / e0[1]


def test_agn_at_haloes(response, getkey):
    ecf = energy_conversion_factor(2.6e20, response)
    halos = jnp.array([[5.0, 5.0], [10.0, 20.0], [99.0, 99.0]])
    cat = draw_agn(getkey(), (30.0, 30.0), 64, ecf, halo_position_arcmin=halos, halo_valid=jnp.array([True, True, False]))
    pos = np.asarray(cat.position_arcmin)
    assert set(map(tuple, pos.tolist())) <= {(5.0, 5.0), (10.0, 20.0)}


# ------------------------------------------------------------------ observe


def test_observation_shapes_and_model_parts(observed, response):
    cr, obs = observed
    assert obs.counts.shape == obs.model.shape == obs.exposure.shape == obs.background.shape == (2, N, N)
    assert obs.bands_keV == ((0.5, 1.0), (1.0, 2.0)) and obs.pixel_arcmin == 1.0
    assert np.all(np.asarray(obs.counts) == np.round(np.asarray(obs.counts)))
    assert np.all(np.asarray(obs.model) >= np.asarray(obs.background))
    # The cluster's expected counts near its pixel: CR × τ × exposure, spread by the PSF
    # (few-arcmin box holds > 93 % of a King PSF).
    e = 0.5 * (response.energ_lo_keV + response.energ_hi_keV)
    tau = band_transmission(2.6e20, thermal_photon_spectrum(e, 2.0), response)
    src = np.asarray(obs.model - obs.background)  # AGN in the box can only add
    box = src[:, 28:37, 28:37].sum((1, 2))
    want = np.asarray(cr[32, 32]) * np.asarray(tau) * np.asarray(obs.exposure[:, 32, 32])
    assert np.all(box >= 0.93 * want)


def test_poisson_counts_mean_and_variance(response):
    # Flat model: no sources, no AGN, no PSF; many pixels → mean and variance of counts/model.
    cfg = ObservationConfig(agn="off", psf=False)
    obs = observe(jax.random.key(3), jnp.zeros((N, N, 2)), 1.0, cfg, response)
    ratio = np.asarray(obs.counts - obs.model) / np.sqrt(np.asarray(obs.model))
    inside = np.asarray(obs.model) > 10
    assert inside.sum() > 5000
    assert abs(ratio[inside].mean()) < 4 / math.sqrt(inside.sum())
    assert abs(ratio[inside].var() - 1.0) < 0.06
    assert np.allclose(np.asarray(obs.model), np.asarray(obs.background))


def test_background_counts_per_pointing_vs_analytic(response):
    # One 10 ks pointing (30′ field, spacing 30′): particle counts = rate × πR² × t, sky counts
    # = rate × t × ∫V dΩ = rate × t × πR²(1 − c(E_b)/2) for V = 1 − c θ²/R² (vignetting docstring).
    from jaxcluster.observation import band_mean_energy_keV, cxb_rate, foreground_rate, particle_rate

    cfg = ObservationConfig(agn="off", psf=False, pointing_spacing_arcmin=30.0)
    obs = observe(jax.random.key(0), jnp.zeros((30, 30, 2)), 1.0, cfg, response)
    assert obs.pointing_centres_arcmin.shape == (1, 2)
    e_b = np.asarray(band_mean_energy_keV(response))
    c = 0.40 + 0.02 * (e_b - 1.0)
    area = math.pi * 15.0**2
    sky = np.asarray(cxb_rate(2.6e20, response) + foreground_rate(2.6e20, response))
    want = 1e4 * area * (np.asarray(particle_rate(response.bands_keV)) + sky * (1 - c / 2))
    np.testing.assert_allclose(np.asarray(obs.background.sum((1, 2))), want, rtol=0.02)


def test_model_flux_conservation_without_psf_and_with_psf(response):
    cr = jnp.zeros((N, N, 2)).at[20:40, 25:35].set(1e-3)
    base = dict(agn="off", particle_background=False, cosmic_background=False)
    o0 = observe(jax.random.key(0), cr, 1.0, ObservationConfig(psf=False, **base), response)
    o1 = observe(jax.random.key(0), cr, 1.0, ObservationConfig(psf=True, **base), response)
    tot0, tot1 = np.asarray(o0.model.sum((1, 2))), np.asarray(o1.model.sum((1, 2)))
    # The PSF only moves photons (a few ‰ leave the map through the King wings).
    np.testing.assert_allclose(tot1, tot0, rtol=5e-3)
    assert np.all(tot1 <= tot0 * (1 + 1e-12))


def test_model_gradients_in_maps_and_nh(response):
    cr = jnp.zeros((16, 16, 2)).at[8, 8].set(jnp.array([0.02, 0.02]))

    def total(nh):
        cfg = ObservationConfig(nh_cm2=nh * 1e20, agn="off")
        return observe(jax.random.key(0), cr, 1.0, cfg, response).model.sum()

    g = jax.grad(total)(2.6)
    h = 1e-3
    fd = (total(2.6 + h) - total(2.6 - h)) / (2 * h)
    assert float(g) < 0 and float(g) == pytest.approx(float(fd), rel=1e-5)
    gmap = jax.grad(lambda c: observe(jax.random.key(0), c, 1.0, ObservationConfig(agn="off"), response).model.sum())(cr)
    assert gmap.shape == cr.shape and float(gmap[8, 8, 0]) > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(exposure_s=-1.0), "exposure_s"),
        (dict(nh_cm2=-1e20), "nh_cm2"),
        (dict(agn_flux_min_cgs=-1e-15), "agn_flux_min_cgs"),
        (dict(agn_flux_min_cgs=1e-12, agn_flux_max_cgs=1e-13), "agn_flux_min_cgs"),
        (dict(agn="everywhere"), "agn"),
        (dict(agn_photon_index=0.0), "agn_photon_index"),
        (dict(fov_radius_arcmin=0.0), "fov_radius_arcmin"),
    ],
)
def test_bad_config_refused_with_parameter_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ObservationConfig(**kwargs)


def test_bad_maps_refused(response):
    with pytest.raises(ValueError, match="bands"):
        observe(jax.random.key(0), jnp.zeros((8, 8, 3)), 1.0, ObservationConfig(agn="off"), response)
    with pytest.raises(Exception, match="count_rate_maps"):
        observe(jax.random.key(0), -jnp.ones((8, 8, 2)), 1.0, ObservationConfig(agn="off"), response)
