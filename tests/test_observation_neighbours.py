"""Overlapping sources and confusion: the second measurement pass, the confusion term, the point-source limit.

Noise-free images (the expected counts measured as if observed) make the neighbour tests exact
and fast; the confusion integral is checked against quadrature of the analytic dN/dS and
against Monte Carlo draws of the AGN it describes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.observation.agn import draw_agn, n_above, paint_point_sources, second_moment_below
from jaxcluster.observation.confusion import Confusion
from jaxcluster.observation.detection import filter_kernels, point_count_limit, significance_map
from jaxcluster.observation.measure import (
    FitSettings,
    SourceModel,
    _place_each,
    measure_catalogue,
    measure_two_pass,
    render_models,
)

PIX = 4.0  # arcsec
N = 96
EXPOSURE = 1e4  # s
BKG = 0.05  # counts per pixel per band (a test setting)


def _king(r):
    # a pn-like King profile (r_c = 5″, α = 1.5): ≈ 25 % of the light beyond 24″, as the measurement's wings
    return (1.0 + (r / 5.0) ** 2) ** -1.5


MODEL = SourceModel(_king, PIX, cutout=48, supersample=2)
SCENE = SourceModel(_king, PIX, cutout=N, supersample=2)


def test_second_moment_matches_quadrature_of_the_analytic_counts():
    """M₂(S) = ∫ S² (−dN/dS) dS with dN/dS from autodiff of N(>S), integrated on a fine grid."""
    grid, m2 = second_moment_below(1e-15, 1e-11)
    dn = jax.vmap(jax.grad(lambda s: -n_above(s * 1e-15) / 1e-15))  # −dN/dS [deg⁻² per (erg s⁻¹ cm⁻²)]
    for s_lim in (3e-15, 1e-14, 1e-13):
        u = np.geomspace(1.0, s_lim / 1e-15, 20001)  # S / 1e-15
        f = np.asarray(dn(jnp.asarray(u))) * (u * 1e-15) ** 2 * (u * 1e-15)  # S² (−dN/dS) S, per d ln S
        ref = np.trapezoid(f, np.log(u))
        got = np.interp(np.log(s_lim), np.log(grid), m2)
        assert abs(got / ref - 1.0) < 2e-3, (s_lim, got, ref)


def _confusion(ecf, pixel_arcsec, s_min=1e-15, s_max=1e-11, threshold=4.0, min_area=1):
    grid, m2 = second_moment_below(s_min, s_max)
    return Confusion(ln_flux=jnp.asarray(np.log(grid)), m2=jnp.asarray(m2), ecf=ecf,
                     pixel_deg2=(pixel_arcsec / 3600.0) ** 2, threshold=threshold, min_area=min_area)


def test_confusion_variance_matches_monte_carlo_draws():
    """Σ CR² per pixel of the AGN between S_min and S_lim: the formula against 16 drawn 1 deg² fields,
    both as the mean of Σ CR² per pixel and as the variance over pixels of the summed rate (Poisson sky)."""
    s_min, s_lim = 1e-15, 1e-14
    ecf = jnp.asarray([2.0e11, 4.0e11])  # counts s⁻¹ per erg s⁻¹ cm⁻² (a test setting)
    pix_arcmin = 1.0
    field = (60.0, 60.0)

    def one(key):
        agn = draw_agn(key, field, 2048, ecf, s_min=s_min, s_max=s_lim)
        img = paint_point_sources((60, 60), pix_arcmin, agn.position_arcmin, agn.count_rate)
        return img, jnp.sum(jnp.where(agn.valid[:, None], agn.count_rate, 0.0) ** 2, axis=0)

    imgs, sq = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), 16))
    conf = _confusion(ecf, 60.0 * pix_arcmin, s_min=s_min)
    expected = np.asarray(conf.rate_variance(jnp.asarray(s_lim)))  # (n_band,)
    mean_sq = np.asarray(sq).sum(0) / (16 * 3600)
    var_pix = np.asarray(imgs).transpose(1, 0, 2, 3).reshape(2, -1).var(axis=1)
    np.testing.assert_allclose(mean_sq, expected, rtol=0.05)
    np.testing.assert_allclose(var_pix, expected, rtol=0.08)
    # brighter limit, more confusion; at S_min, none
    assert float(conf.rate_variance(jnp.asarray(2e-14))[0]) > expected[0]
    assert float(conf.rate_variance(jnp.asarray(s_min))[0]) == 0.0


def test_point_count_limit_reaches_the_threshold():
    """A point source of the limiting counts on a flat background lifts exactly `min_area` pixels to the
    threshold of the PSF-filtered significance (the filter is its own template); more counts are needed on
    a brighter background, or for more pixels."""
    b = jnp.full((N, N), 0.3)
    k = filter_kernels(MODEL, (0.0,))
    t = SCENE.templates(jnp.asarray([N / 2, N / 2]), jnp.asarray([0.0]))[0]
    for area in (1, 3):
        c_lim = point_count_limit(b, MODEL, 4.0, min_area=area)
        assert np.ptp(np.asarray(c_lim)) < 1e-8 * float(c_lim[N // 2, N // 2])  # flat, edges included
        sig = np.sort(np.asarray(significance_map(b + float(c_lim[N // 2, N // 2]) * t, b, k)).ravel())[::-1]
        assert abs(sig[area - 1] - 4.0) < 0.02, (area, sig[:4])
    assert float(point_count_limit(b, MODEL, 4.0, min_area=3)[0, 0]) > float(point_count_limit(b, MODEL, 4.0)[0, 0])
    assert float(point_count_limit(2.0 * b, MODEL, 4.0)[0, 0]) > float(point_count_limit(b, MODEL, 4.0)[0, 0])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40), st.integers(0, 40))
def test_place_resamples_a_neighbours_cutout_onto_ours(ri, ci, rj, cj):
    c = 16
    img = jnp.asarray(np.random.default_rng(ri * 41 + cj).random((2, 72, 72)))
    cut_j = img[:, rj:rj + c, cj:cj + c]
    got = np.asarray(_place_each(cut_j[None], jnp.asarray([[rj - ri, cj - ci]]), c)[0])
    want = np.zeros((2, c, c))
    for a in range(c):
        for b in range(c):
            r, q = ri + a, ci + b
            if rj <= r < rj + c and cj <= q < cj + c:
                want[:, a, b] = img[:, r, q]
    np.testing.assert_allclose(got, want)


def _scene(sources):
    """Expected counts (2, N, N): flat background + point sources (row, col, CR [counts/s], equal bands)."""
    lam = jnp.full((2, N, N), BKG)
    for r, c, cr in sources:
        t = SCENE.templates(jnp.asarray([r, c]), jnp.asarray([0.0]))[0]
        lam = lam + jnp.stack([t, t]) * 0.5 * cr * EXPOSURE
    return lam


def _disk(seg, r, c, radius, label):
    yy, xx = np.mgrid[:N, :N]
    seg[(yy - r) ** 2 + (xx - c) ** 2 <= radius**2] = label


def test_second_pass_holds_the_brighter_neighbour_fixed():
    """A faint point source 40″ from a bright one, and a PSF-wing 'fragment' segment 32″ on the other side
    (no source there), on the noise-free image: one pass masks the bright source (24″) but leaves its
    wings in the faint source's cutout (CR biased high, the fragment a significant detection); the second
    pass models the bright source, recovers the faint CR and drops the fragment (DET_LH < 6)."""
    bright, faint = (48.0, 48.0, 0.3), (48.0, 58.0, 0.004)
    lam = _scene([bright, faint])
    exp = jnp.full((2, N, N), EXPOSURE)
    seg = np.zeros((N, N), np.int32)
    _disk(seg, 48, 48, 3, 1)
    _disk(seg, 48, 58, 2, 2)
    _disk(seg, 48, 40, 1, 3)  # a wing fragment
    fit = FitSettings(core_radii_arcsec=np.geomspace(2.0, 80.0, 17))
    args = (lam, exp, jnp.full((2, N, N), BKG), jnp.asarray(seg), MODEL, 4, fit)
    one = jax.jit(lambda: measure_catalogue(*args))()
    two = jax.jit(lambda: measure_two_pass(*args))()
    for cat in (one, two):  # the bright source is the same either way
        assert bool(cat.valid[0])
        assert abs(float(cat.count_rate_total[0]) / bright[2] - 1.0) < 0.02
    assert float(one.count_rate_total[1]) / faint[2] > 1.1  # the bright wings in the faint aperture
    assert abs(float(two.count_rate_total[1]) / faint[2] - 1.0) < 0.05  # 75× fainter, 40″ away
    assert bool(one.valid[2]) and float(one.det_lh[2]) > 6.0  # the fragment: a 'source' after one pass
    assert not bool(two.valid[2])
    assert two.model_counts.shape == (4, 2, MODEL.cutout, MODEL.cutout)


def test_confusion_term_follows_the_local_limit_and_the_aperture():
    """The confusion term of a point source's CR: σ² grows by Σ_i v_i (E (A ⊗ P))_i² / D², between the
    PSF-smoothed aperture's and the aperture's pixel count; a bright source hides brighter AGN (its own
    counts raise the local limit), so its confusion term is larger than a faint source's; CR is unchanged."""
    exp = jnp.full((2, N, N), EXPOSURE)
    seg = np.zeros((N, N), np.int32)
    _disk(seg, 48, 48, 3, 1)
    conf = _confusion(jnp.asarray([2.0e11, 4.0e11]), PIX)
    added = {}
    for cr in (0.01, 0.2):
        args = (_scene([(48.0, 48.0, cr)]), exp, jnp.full((2, N, N), BKG), jnp.asarray(seg), MODEL, 1, FitSettings())
        plain = measure_catalogue(*args)
        with_conf = measure_catalogue(*args, confusion=conf)
        np.testing.assert_allclose(with_conf.count_rate, plain.count_rate)
        d_b = np.asarray(plain.net_counts[0]) / np.asarray(plain.count_rate[0])  # counts per unit CR in the aperture
        var_conf = (np.asarray(with_conf.count_rate_err[0]) ** 2 - np.asarray(plain.count_rate_err[0]) ** 2) * d_b**2
        added[cr] = var_conf
        # the bounds: v at the limits found in the cutout, times the aperture's area (upper) or a third of it
        r = float(plain.aperture_arcsec[0]) / PIX
        lam = args[0].sum(0)[24:72, 24:72]
        lim = conf.flux_limit(lam, exp[:, 24:72, 24:72], MODEL)
        v = np.asarray(conf.rate_variance(lim)) * EXPOSURE**2  # counts² per pixel
        assert np.all(var_conf < 1.05 * v.max(axis=(1, 2)) * math.pi * r**2), (cr, var_conf)
        assert np.all(var_conf > 0.3 * v.min(axis=(1, 2)) * math.pi * r**2 / 3), (cr, var_conf)
    assert np.all(added[0.2] > 1.5 * added[0.01])


def test_image_background_follows_the_expected_map_across_a_field_of_view_edge(getkey):
    """Two background components, one following the vignetted exposure (sky) and one not (particles), with a
    field-of-view edge through the image: the boxes measuring the normalisation of the expected map follow
    the step to a few per cent; the count rate per vignetted exposure smooths it over a box (a ridge)."""
    from jaxcluster.observation.detection import DetectionSettings, estimate_background

    n = 128
    cols = np.arange(n)[None, :] * np.ones((n, 1))
    plain = np.where(cols < 70, 2.0e4, 1.0e4)  # a second pointing's field of view ends at column 70 [s]
    vign = np.where(cols < 70, 1.4e4, 1.0e4)  # its vignetted exposure there is 0.4 of 10 ks [s]
    expected = jnp.asarray(np.stack([2.0e-5 * plain + 3.0e-5 * vign] * 2))  # counts per pixel
    exposure = jnp.asarray(np.stack([vign] * 2))
    counts = jax.random.poisson(getkey(), jnp.broadcast_to(expected, (2, n, n)) * 30.0).astype(jnp.float64) / 30.0
    settings = DetectionSettings(background_box=32, max_sources=4)
    with_map, _ = estimate_background(counts, exposure, settings, None, template=expected)
    per_exposure, _ = estimate_background(counts, exposure, settings, None)
    err_map = np.abs(np.asarray(with_map / expected) - 1.0)
    err_exp = np.abs(np.asarray(per_exposure / expected) - 1.0)
    assert err_map.max() < 0.03, err_map.max()
    assert err_exp[:, :, 55:85].max() > 0.08  # the ridge of the per-exposure estimate near the edge


def test_render_models_puts_every_kept_model_in_place():
    """The rendered image holds each valid source's `model_counts` at its cutout corner (sum and peak)."""
    bright, faint = (48.0, 48.0, 0.3), (48.0, 58.0, 0.004)
    lam = _scene([bright, faint])
    seg = np.zeros((N, N), np.int32)
    _disk(seg, 48, 48, 3, 1)
    _disk(seg, 48, 58, 2, 2)
    fit = FitSettings(core_radii_arcsec=np.geomspace(2.0, 80.0, 17))
    cat = jax.jit(lambda: measure_two_pass(lam, jnp.full((2, N, N), EXPOSURE), jnp.full((2, N, N), BKG),
                                           jnp.asarray(seg), MODEL, 2, fit))()
    img = np.asarray(render_models(cat, (N, N)))
    inside = np.asarray(cat.model_counts).sum(axis=(0, 2, 3))  # all cutouts lie inside the image here
    np.testing.assert_allclose(img.sum(axis=(1, 2)), inside, rtol=1e-12)
    assert np.unravel_index(np.argmax(img.sum(0)), (N, N)) == (48, 48)
    # the bright source's model is its expected counts: the image minus the background, near its centre
    np.testing.assert_allclose(img.sum(0)[44:53, 44:53], (np.asarray(lam) - BKG).sum(0)[44:53, 44:53], rtol=0.02)


def test_held_neighbour_model_error_enters_the_faint_sources_error_only():
    """With `held_model_error`, the bright neighbour's relative error times its counts in the faint source's
    aperture adds to the faint source's variance (the CRs unchanged), and the faint model's to the bright one's."""
    bright, faint = (48.0, 48.0, 0.3), (48.0, 55.0, 0.01)  # 28″ apart: the bright wings fill the faint aperture
    lam = _scene([bright, faint])
    seg = np.zeros((N, N), np.int32)
    _disk(seg, 48, 48, 3, 1)
    _disk(seg, 48, 55, 2, 2)
    out = {}
    for held in (False, True):
        fit = FitSettings(core_radii_arcsec=np.geomspace(2.0, 80.0, 17), held_model_error=held)
        out[held] = jax.jit(lambda: measure_two_pass(lam, jnp.full((2, N, N), EXPOSURE), jnp.full((2, N, N), BKG),
                                                     jnp.asarray(seg), MODEL, 2, fit))()
    np.testing.assert_allclose(out[True].count_rate, out[False].count_rate, rtol=1e-12)
    e_off, e_on = np.asarray(out[False].total_err), np.asarray(out[True].total_err)
    assert e_on[1] > 1.02 * e_off[1], (e_on, e_off)
    # the size of the added term: (σ_bright / CR_bright) × the bright model's counts in the faint aperture
    added = (e_on[1] ** 2 - e_off[1] ** 2) * (float(out[True].count_rate_total[1]) / float(
        np.sum(np.asarray(out[True].net_counts[1])))) ** 2
    rel = float(out[True].total_err[0] / out[True].count_rate_total[0])
    assert 0.0 < math.sqrt(added) < rel * float(np.asarray(out[True].model_counts[0]).sum())
    # the bright source's third pass holds the faint one too, whose light lies in its 30″ aperture
    assert e_on[0] > e_off[0]


def test_confusion_limit_rises_to_the_modelled_neighbours_det_lh():
    """Detected AGN below the DET_LH from which neighbours are modelled stay in the apertures: the confusion
    limit becomes the significance √ΔC of that DET_LH (χ²₃: 5.75σ at 15), and its variance grows."""
    from jaxcluster.observation import ObservationConfig
    from jaxcluster.observation.confusion import agn_confusion
    from jaxcluster.observation.measure import likelihood_from_delta_cash
    from jaxcluster.xray.emissivity import default_band_response

    response = default_band_response()
    plain = agn_confusion(ObservationConfig(), response, PIX, 4.0, 3)
    raised = agn_confusion(ObservationConfig(), response, PIX, 4.0, 3, modelled_det_lh=15.0)
    assert raised.min_area == 1
    assert abs(float(likelihood_from_delta_cash(jnp.asarray(raised.threshold**2), 3)) - 15.0) < 1e-6
    assert 5.7 < raised.threshold < 5.8
    assert agn_confusion(ObservationConfig(), response, PIX, 7.0, 3, modelled_det_lh=15.0).threshold == 7.0
    b = jnp.full((48, 48), 0.2)
    e = jnp.full((2, 48, 48), EXPOSURE)
    lim_p, lim_r = plain.flux_limit(b, e, MODEL), raised.flux_limit(b, e, MODEL)
    assert float(jnp.min(lim_r / lim_p)) > 1.2
    assert float(jnp.min(raised.rate_variance(lim_r) / plain.rate_variance(lim_p))) > 1.05
