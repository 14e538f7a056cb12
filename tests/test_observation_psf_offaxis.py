"""The measurement fits each source with the PSF of its off-axis angle (`Observation.psf_off_axis_arcmin`).

`observe` convolves each off-axis zone with its own King PSF (`observation.psf`); a source far off axis has
more light in the wings, so a 30″ aperture corrected with the on-axis PSF's encircled energy under-measures it.
Noise-free images make the photometry exact to the fit's precision.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcluster.observation import ObservationConfig, observe
from jaxcluster.observation.measure import FitSettings, SourceModel, measure_catalogue
from jaxcluster.observation.psf import PSF_ZONE_THETA_ARCMIN, encircled_energy, king_parameters, king_profile
from jaxcluster.xray.emissivity import default_band_response

PIX = 4.0  # arcsec
N = 96
EXPOSURE = 1e4  # s
BKG = 0.05  # counts per pixel per band (a test setting)


def _psf(r, theta):
    rc, alpha = king_parameters(1.0, theta)  # pn King at 1 keV (Ghizzardi): broader wings off axis
    return king_profile(r, rc.astype(r.dtype), alpha.astype(r.dtype))


MODEL = SourceModel(_psf, PIX, cutout=48, supersample=2, psf_args=(2.5,))


def test_off_axis_point_sources_are_measured_with_their_own_psf():
    """Two bright points (0.2 counts s⁻¹), one where the map says θ = 2.5′ and one at 12.5′, each rendered with its
    zone's PSF: with the map both CRs are within 1 %; with the on-axis PSF everywhere the off-axis one comes out
    low by about the 30″ encircled-energy ratio (≈ 5 %)."""
    sources = [(30.0, 30.0, 2.5), (66.0, 66.0, 12.5)]  # row, col [pixels], θ [arcmin]
    lam = jnp.full((2, N, N), BKG)
    for r, c, theta in sources:
        scene = SourceModel(_psf, PIX, cutout=N, supersample=2, psf_args=(theta,))
        t = scene.templates(jnp.asarray([r, c]), jnp.asarray([0.0]))[0]
        lam = lam + jnp.stack([t, t]) * 0.1 * EXPOSURE
    theta_map = jnp.where(jnp.arange(N)[:, None] + jnp.arange(N)[None, :] < N, 2.5, 12.5)
    seg = np.zeros((N, N), np.int32)
    yy, xx = np.mgrid[:N, :N]
    for label, (r, c, _) in enumerate(sources, 1):
        seg[(yy - r) ** 2 + (xx - c) ** 2 <= 9] = label
    fit = FitSettings(core_radii_arcsec=np.geomspace(2.0, 80.0, 17))
    args = (lam, jnp.full((2, N, N), EXPOSURE), jnp.full((2, N, N), BKG), jnp.asarray(seg), MODEL, 2, fit)
    # isolated sources: the first pass (each alone) is the whole measurement
    own = jax.jit(lambda: measure_catalogue(*args, psf_maps=(theta_map,)))()
    on_axis = jax.jit(lambda: measure_catalogue(*args))()
    assert bool(own.valid.all()) and bool(on_axis.valid.all())
    np.testing.assert_allclose(np.asarray(own.count_rate_total), 0.2, rtol=0.01)
    assert abs(float(on_axis.count_rate_total[0]) / 0.2 - 1.0) < 0.01
    # the on-axis template's 30″ encircled energy over the off-axis PSF's: the bias the map removes
    ee = [float(encircled_energy(30.0, *king_parameters(1.0, t))) for t in PSF_ZONE_THETA_ARCMIN[::2]]
    assert ee[0] / ee[1] > 1.04
    np.testing.assert_allclose(float(on_axis.count_rate_total[1]) / 0.2, ee[1] / ee[0], rtol=0.015)


def test_observation_records_the_zones_off_axis_angle():
    """One pointing (30′ field): the map is the innermost zone's angle within 5′ of the centre, the middle zone's
    between 5′ and 10′, the outer zone's beyond, and the innermost angle where nothing was exposed."""
    cfg = ObservationConfig(agn="off", pointing_spacing_arcmin=30.0)
    obs = observe(jax.random.key(0), jnp.zeros((30, 30, 2)), 1.0, cfg, default_band_response())
    theta = np.asarray(obs.psf_off_axis_arcmin)
    assert theta.shape == (30, 30)
    c = np.asarray(obs.pointing_centres_arcmin[0])
    yy, xx = np.mgrid[:30, :30] + 0.5  # pixel centres [arcmin]; x along axis 1
    d = np.hypot(yy - c[1], xx - c[0])
    for lo, hi, want in ((0.0, 4.5, 2.5), (5.5, 9.5, 7.5), (10.5, 14.5, 12.5), (15.5, math.inf, 2.5)):
        ring = (d > lo) & (d < hi)
        assert ring.any()
        np.testing.assert_allclose(theta[ring], want, err_msg=f"{lo}′–{hi}′")
