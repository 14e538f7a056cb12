"""Detection and measurement on photon images: classes, likelihoods, pulls of CR and HR, refusals.

Synthetic images (64 × 64 pixels of 4″, Gaussian PSF of 6″ FWHM, flat 10 ks exposure and
flat background, Poisson-drawn from seeded keys) keep these fast; the integration with
`observe` and its King PSF is marked slow.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.observation.classes import C1, NOT_EXTENDED, ClassCuts, classify
from jaxcluster.observation.detection import DetectionSettings, detect, estimate_background, filter_kernels
from jaxcluster.observation.measure import (
    FitSettings,
    MeasuredCatalogue,
    SourceModel,
    fit_source,
    likelihood_from_delta_cash,
    measure_catalogue,
)

PIX = 4.0  # arcsec
SIGMA = 6.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))  # 6″ FWHM
EXPOSURE = 1e4  # s
BKG = 0.07  # counts per pixel per band (a test setting)
N = 64


def _psf(r):
    return jnp.exp(-0.5 * (r / SIGMA) ** 2)


MODEL = SourceModel(_psf, PIX, cutout=48, supersample=2)
SCENE = SourceModel(_psf, PIX, cutout=N, supersample=2)  # renders whole images
EXP = jnp.full((2, N, N), EXPOSURE)
BACK = jnp.full((2, N, N), BKG)


def _expected_counts(sources):
    """Expected counts (2, N, N) of (row, col, r_c [″], CR [counts/s], HR) sources + background."""
    lam = BACK
    for r, c, rc, cr, hr in sources:
        t = SCENE.templates(jnp.asarray([r, c]), jnp.asarray([rc]))[0]
        lam = lam + jnp.stack([t * cr / (1 + hr), t * cr * hr / (1 + hr)]) * EXPOSURE
    return lam


@eqx.filter_jit
def _chain(counts, settings, fit):
    det = detect(counts, EXP, MODEL, settings, BACK)
    return measure_catalogue(counts, EXP, det.background, det.segmentation, MODEL, settings.max_sources, fit,
                             det.background_rel_var)


def test_extended_cluster_is_c1_and_point_source_is_point(getkey):
    src = [(20.3, 22.7, 20.0, 0.05, 0.6), (45.0, 40.0, 0.0, 0.01, 0.8)]
    counts = jax.random.poisson(getkey(), _expected_counts(src)).astype(jnp.float64)
    cat = _chain(counts, DetectionSettings(max_sources=8), FitSettings())
    v = np.asarray(cat.valid)
    pos = np.asarray(cat.position)
    for r, c, rc, cr, hr in src:
        d = np.where(v, np.hypot(pos[:, 0] - r, pos[:, 1] - c), np.inf)
        k = int(np.argmin(d))
        assert d[k] < max(1.5, 0.5 * rc / PIX)  # an extended source is located by the point fit: ± r_c/2
        if rc > 0:
            assert int(cat.source_class[k]) == C1
            assert abs(float(cat.extent[k]) - rc) < 0.3 * rc
        else:
            assert int(cat.source_class[k]) == NOT_EXTENDED
            assert float(cat.extent[k]) < 5.0
            assert float(cat.det_lh[k]) > 32.0
    tab = cat.to_table(PIX)
    assert len(tab) == int(v.sum()) and str(tab["count_rate_total"].unit) == "ct / s"


def test_cr_pulls_of_injected_beta_models_are_standard_normal():
    """(measured − true)/error of CR[0.5–2] for β-models (r_c = 10″, ~450 counts): mean ≈ 0, std ≈ 1."""
    settings, fit = DetectionSettings(max_sources=4, background="model"), FitSettings()
    rng = np.random.default_rng(7)
    pulls = []
    for i in range(40):
        r, c = 32.0 + rng.uniform(-0.5, 0.5, 2)
        lam = _expected_counts([(r, c, 10.0, 0.05, 0.7)])
        counts = jax.random.poisson(jax.random.key(1000 + i), lam).astype(jnp.float64)
        cat = _chain(counts, settings, fit)
        k = int(np.argmin(np.where(np.asarray(cat.valid), np.hypot(*(np.asarray(cat.position) - [r, c]).T), np.inf)))
        pulls.append((float(cat.count_rate_total[k]) - 0.05) / float(cat.count_rate_total_err[k]))
    pulls = np.asarray(pulls)
    # 40 draws: σ(mean) = 0.16, σ(std) ≈ 0.11
    assert abs(pulls.mean()) < 0.5, pulls.mean()
    assert 0.75 < pulls.std() < 1.3, pulls.std()


def test_hardness_ratio_error_matches_monte_carlo():
    rng = np.random.default_rng(3)
    cr = np.array([[0.02, 0.015], [0.05, 0.02]])
    err = np.array([[0.001, 0.0008], [0.002, 0.0015]])
    draws = cr[None] + err[None] * rng.standard_normal((200_000, 2, 2))
    hr_mc = draws[..., 1] / draws[..., 0]
    s = cr.shape[0]
    cat = MeasuredCatalogue(
        position=jnp.zeros((s, 2)), det_lh=jnp.zeros(s), ext_lh=jnp.zeros(s), extent=jnp.zeros(s),
        count_rate=jnp.asarray(cr), count_rate_err=jnp.asarray(err), net_counts=jnp.zeros((s, 2)),
        background_counts=jnp.zeros((s, 2)), aperture_arcsec=jnp.zeros(s), source_class=jnp.zeros(s, jnp.int32),
        valid=jnp.ones(s, bool))
    np.testing.assert_allclose(np.asarray(cat.hardness_ratio), cr[:, 1] / cr[:, 0])
    np.testing.assert_allclose(np.asarray(cat.hardness_ratio_err), hr_mc.std(axis=0), rtol=0.03)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.0, 5000.0), st.floats(0.01, 100.0))
def test_likelihoods_increase_with_delta_cash(x, dx):
    for dof in (1, 3):
        a, b = (float(likelihood_from_delta_cash(jnp.asarray(v), dof)) for v in (x, x + dx))
        assert np.isfinite(b) and b > a >= 0.0


def test_detection_likelihood_increases_with_source_counts():
    c = MODEL.cutout
    centre = jnp.asarray([c / 2.0, c / 2.0])
    t = MODEL.templates(centre, jnp.asarray([0.0]))[0]
    back = jnp.full((c, c), BKG)
    fit = jax.jit(lambda n: fit_source(MODEL, FitSettings(), n, back, jnp.ones((c, c)), centre + 0.3))
    det = [float(fit(amp * t + back).det_lh) for amp in (5.0, 10.0, 20.0, 40.0, 80.0)]  # expected counts (Asimov)
    assert np.all(np.diff(det) > 0), det
    # for large ΔC the likelihood is ≈ ΔC/2 (module docstring)
    r = fit(80.0 * t + back)
    assert abs(float(r.det_lh) - 0.5 * float(r.c_background - r.c_point)) < 5.0


def test_image_background_is_unbiased_on_a_flat_field():
    s = DetectionSettings(background_box=32)
    kern = filter_kernels(MODEL, s.scales_arcsec)
    est = jax.jit(lambda n: estimate_background(n, EXP, s, kern)[0].mean())
    ratio = [float(est(jax.random.poisson(jax.random.key(i), BACK).astype(jnp.float64))) / BKG for i in range(8)]
    assert abs(np.mean(ratio) - 1.0) < 0.04, ratio


def test_classes_follow_the_published_cuts():
    extent = jnp.asarray([6.0, 6.0, 4.0, 6.0, 6.0])
    ext_lh = jnp.asarray([40.0, 20.0, 40.0, 10.0, 40.0])
    det_lh = jnp.asarray([40.0, 40.0, 40.0, 40.0, 20.0])
    np.testing.assert_array_equal(np.asarray(classify(extent, ext_lh, det_lh)), [1, 2, 0, 0, 2])


def test_bad_inputs_are_refused_naming_the_parameter():
    with pytest.raises(ValueError, match="pixel_arcsec"):
        SourceModel(_psf, -4.0)
    with pytest.raises(ValueError, match="cutout"):
        SourceModel(_psf, 4.0, cutout=47)
    with pytest.raises(ValueError, match="threshold"):
        DetectionSettings(threshold=0.0)
    with pytest.raises(ValueError, match="background"):
        DetectionSettings(background="median")
    with pytest.raises(ValueError, match="ext_lh_c2"):
        ClassCuts(ext_lh_c2=40.0)
    with pytest.raises(ValueError, match="core_radii_arcsec"):
        FitSettings(core_radii_arcsec=[5.0, 2.0, 10.0])
    with pytest.raises(ValueError, match="background_model"):
        detect(BACK, EXP, MODEL, DetectionSettings(background="model"))
    with pytest.raises(ValueError, match="background_box"):
        detect(BACK, EXP, MODEL, DetectionSettings(background_box=24))
    with pytest.raises(Exception, match="counts must be >= 0"):
        jax.jit(lambda n: detect(n, EXP, MODEL, DetectionSettings(background="model"), BACK).significance)(-BACK)


@pytest.mark.slow
def test_observe_chain_classifies_and_recovers_injections():
    """Through `observe` (King PSF, backgrounds, absorption; AGN off): C1 cluster, point source, CR pulls."""
    from jaxcluster.observation import ObservationConfig
    from jaxcluster.observation.selection import cluster_band_fractions, inject_and_recover

    frac = cluster_band_fractions(0.3)
    cfg = ObservationConfig(agn="off")
    det = DetectionSettings(max_sources=8, background="model")
    out = inject_and_recover(jax.random.key(0), 0.05, 20.0, frac, config=cfg, detection=det)
    assert out["detected"] and out["c1"]
    out = inject_and_recover(jax.random.key(1), 0.01, 0.0, frac, config=cfg, detection=det)
    assert out["detected"] and not out["c1"] and out["extent"] < 5.0
    pulls = []
    for i in range(40):
        o = inject_and_recover(jax.random.key(100 + i), 0.05, 15.0, frac, config=cfg, detection=det)
        pulls.append((o["count_rate"] - o["count_rate_true"]) / o["count_rate_err"])
    pulls = np.asarray(pulls)
    assert abs(pulls.mean()) < 0.7 and 0.75 < pulls.std() < 1.3, (pulls.mean(), pulls.std())
