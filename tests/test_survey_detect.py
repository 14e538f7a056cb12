"""Detection: injected β-model clusters recovered by sep; the JAX detector against sep and scipy.

Synthetic noiseless maps in 1′ pixels (the survey's default): β = 2/3
clusters, core radii 0.2–0.5′, truncated at 3′ (about R500 of a 10¹⁴ M☉ cluster at z = 0.3), each pixelised by
supersampling and normalised so that its pixels hold exactly the injected
count rate (the truth the measurement is compared with).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxcluster.survey import (
    DetectionConfig,
    LightconeGeometry,
    label_components,
    match_catalogues,
    measure_sources,
    segment,
    segment_components,
    segment_sep,
)

GEOM = LightconeGeometry(area_deg2=(200 / 60) ** 2, pixel_arcmin=1.0)  # 200 × 200 one-arcminute pixels
DET = DetectionConfig()  # threshold 1e-4 counts s⁻¹ arcmin⁻², min area 3, sep's deblending defaults
CR_MIN = 0.02


def _beta_map(n, sources, beta=2 / 3, r_trunc=3.0, sub=4):
    """(n, n, 2) map: each source (x, y [px], CR_soft, CR_hard, r_c [px]) as a pixelised, normalised β-model."""
    img = np.zeros((n, n, 2))
    f = (np.arange(n * sub) + 0.5) / sub
    for x, y, s, h, rc in sources:
        r2 = (f[:, None] - x) ** 2 + (f[None, :] - y) ** 2
        prof = (1 + r2 / rc**2) ** (0.5 - 3 * beta) * (r2 < r_trunc**2)
        prof = prof.reshape(n, sub, n, sub).sum(axis=(1, 3))
        prof /= prof.sum()
        img[..., 0] += s * prof
        img[..., 1] += h * prof
    return img


def _random_sources(rng, n_src, n=200, min_sep=8.0, pairs=0):
    out = []
    while len(out) < n_src:
        x, y = rng.uniform(8, n - 8, 2)
        if all(np.hypot(x - a, y - b) >= min_sep for a, b, *_ in out):
            cr = 10 ** rng.uniform(np.log10(0.015), np.log10(0.5))
            hr = rng.uniform(0.3, 1.2)
            out.append((x, y, cr / (1 + hr), cr * hr / (1 + hr), rng.uniform(0.2, 0.5)))
    for i in range(pairs):  # companions 3–5′ away: blends that sep deblends and connected components do not
        x, y, s, h, rc = out[i]
        ang, d = rng.uniform(0, 2 * np.pi), rng.uniform(3.0, 5.0)
        out.append((x + d * np.cos(ang), y + d * np.sin(ang), 0.5 * s, 0.5 * h, rc))
    return out


def _catalogue(seg, img):
    cat = measure_sources(jnp.asarray(seg), jnp.asarray(img), GEOM, 0.3, DET.max_sources)
    v = np.asarray(cat.valid)
    px = np.asarray(cat.xi)[v] / GEOM.pixel_rad + GEOM.n_pix / 2  # back to pixel units
    return px, np.asarray(cat.count_rate)[v], np.asarray(cat.count_rate_total)[v]


def test_injected_beta_clusters_are_recovered_by_sep():
    rng = np.random.default_rng(0)
    sources = _random_sources(rng, 60, min_sep=12.0)
    img = _beta_map(GEOM.n_pix, sources)
    seg = jax.jit(lambda m: segment(m, GEOM, DET))(jnp.asarray(img.sum(-1)))
    px, cr, crt = _catalogue(seg, img)
    truth = np.array([(x, y, s, h) for x, y, s, h, _ in sources])
    bright = truth[:, 2] + truth[:, 3] > CR_MIN
    found = 0
    for x, y, s, h in truth[bright]:
        d = np.hypot(px[:, 0] - x, px[:, 1] - y)
        i = int(np.argmin(d))
        assert d[i] < 0.25, (x, y, d[i])  # centroid within a quarter pixel (symmetric profile)
        np.testing.assert_allclose(cr[i], [s, h], rtol=0.05)  # both bands within 5 % (isophote loss)
        np.testing.assert_allclose(cr[i, 1] / cr[i, 0], h / s, rtol=0.01)  # HR: same profile in both bands
        found += 1
    assert found == bright.sum() >= 40
    # no spurious source: every measured source is an injected one
    d_all = np.hypot(px[:, None, 0] - truth[None, :, 0], px[:, None, 1] - truth[None, :, 1])
    assert np.all(d_all.min(axis=1) < 0.5) and len(px) == len(truth)


def test_jax_detector_matches_sep_for_95_percent_of_sources_above_the_cut():
    rng = np.random.default_rng(1)
    sources = _random_sources(rng, 80, min_sep=10.0, pairs=8)  # 10 % blended pairs
    img = _beta_map(GEOM.n_pix, sources)
    det = jnp.asarray(img.sum(-1))
    thr = DET.pixel_threshold(GEOM)
    seg_sep = segment_sep(det, thr, DET)
    seg_jax = jax.jit(lambda m: segment_components(m, thr, DET.min_area, DET.max_sources))(det)
    px_s, _, crt_s = _catalogue(seg_sep, img)
    px_j, _, crt_j = _catalogue(seg_jax, img)
    above = crt_s > CR_MIN
    ok = match_catalogues(px_s[above], crt_s[above], px_j, crt_j, max_offset=1.0, cr_rtol=0.05)
    frac = ok.mean()
    assert above.sum() >= 60 and frac >= 0.95, (frac, above.sum())
    # where they differ it is deblending: sep splits a blend that the components detector keeps whole
    assert int(seg_sep.max()) >= int(seg_jax.max())


def test_label_components_equals_scipy_8_connectivity():
    rng = np.random.default_rng(2)
    for p in (0.3, 0.5, 0.6):
        mask = rng.uniform(size=(64, 48)) < p
        ours = np.asarray(label_components(jnp.asarray(mask)))
        ref, n = ndimage.label(mask, structure=np.ones((3, 3)))
        assert np.all((ours >= 0) == mask)
        # the same partition: a one-to-one map between our labels and scipy's
        pairs = {(a, b) for a, b in zip(ours[mask], ref[mask])}
        assert len(pairs) == n == len({a for a, _ in pairs})


def test_sep_under_vmap_and_padding_keeps_the_brightest():
    rng = np.random.default_rng(3)
    imgs = np.stack([_beta_map(GEOM.n_pix, _random_sources(rng, 12)).sum(-1) for _ in range(2)])
    thr = DET.pixel_threshold(GEOM)
    batched = jax.jit(jax.vmap(lambda m: segment_sep(m, thr, DET)))(jnp.asarray(imgs))
    for k in range(2):
        np.testing.assert_array_equal(np.asarray(batched[k]), np.asarray(segment_sep(jnp.asarray(imgs[k]), thr, DET)))
    small = DetectionConfig(max_sources=5)
    seg5 = np.asarray(segment_sep(jnp.asarray(imgs[0]), thr, small))
    seg_all = np.asarray(batched[0])
    assert seg5.max() == 5 and seg_all.max() == 12
    np.testing.assert_array_equal(seg5, np.where(seg_all <= 5, seg_all, 0))  # labels ranked by flux, top 5 kept
    flux = ndimage.sum(imgs[0], seg_all, index=np.arange(1, 13))
    assert np.all(np.diff(flux) <= 0)


def test_detection_config_errors_name_the_parameter():
    for kwargs, name in [(dict(method="peaks"), "method"), (dict(threshold=0.0), "threshold"),
                         (dict(min_area=0), "min_area"), (dict(deblend_cont=2.0), "deblend_cont"),
                         (dict(max_sources=10**6), "max_sources")]:
        with pytest.raises(ValueError, match=name):
            DetectionConfig(**kwargs)


def test_soft_isophotes_give_the_rim_term_of_the_redetected_derivative():
    """d CR / d A of a source scaled by A: the re-detected hard measure's mean derivative (mask growing) is
    matched by the soft isophotes at the fixed mask, and missed by the fixed hard mask (rim term)."""
    from jaxcluster.survey import dilate_labels, isophote_weights

    rng = np.random.default_rng(0)
    n, n_src, thr, h = 21, 400, 1.0, 0.02
    f = np.arange(n) + 0.5
    structure = np.ones((3, 3))

    def hard(img):  # the isophote of the source: the 8-connected component above thr holding the peak
        lab, _ = ndimage.label(img > thr, structure=structure)
        seg = (lab == lab[np.unravel_index(np.argmax(img), img.shape)]).astype(np.int32)
        return seg, float(np.sum(img * seg))

    profs, amps, segs, fd = [], [], [], []
    for _ in range(n_src):
        x, y = rng.uniform(9.5, 11.5, 2)
        rc, amp = rng.uniform(1.0, 2.0), 10 ** rng.uniform(1.3, 1.8)  # peak 20–60 × thr: isophote radius ~ 3–6 px
        prof = (1 + ((f[:, None] - x) ** 2 + (f[None, :] - y) ** 2) / rc**2) ** -1.5
        seg, _ = hard(amp * prof)
        fd.append((hard(amp * (1 + h) * prof)[1] - hard(amp * (1 - h) * prof)[1]) / (2 * h * amp))
        profs.append(prof), amps.append(amp), segs.append(seg)
    profs, amps, segs, fd = jnp.asarray(np.array(profs)), jnp.asarray(amps), jnp.asarray(np.array(segs)), np.array(fd)

    def soft_cr(a, prof, seg, s):
        img = a * prof
        return jnp.sum(jnp.where(dilate_labels(seg) == 1, img * isophote_weights(img, thr, s), 0.0))

    fixed = np.sum(np.asarray(profs) * np.asarray(segs), axis=(1, 2))  # d/dA with the mask held: no rim term
    se = np.std(fd, ddof=1) / np.sqrt(n_src)
    assert np.mean(fd) - np.mean(fixed) > 5 * se  # the rim term is real and large here
    for s in (0.03, 0.06):
        soft = np.asarray(jax.vmap(jax.grad(soft_cr), in_axes=(0, 0, 0, None))(amps, profs, segs, s))
        d = soft - fd
        assert abs(np.mean(d)) < 2.5 * np.std(d, ddof=1) / np.sqrt(n_src), s
        assert abs(np.mean(soft) / np.mean(fd) - 1) < 0.05, s


def test_soft_isophote_count_rates_differentiate_exactly():
    """Forward mode of the soft-isophote measurement against central differences on a smooth random map (float64)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        img = np.exp(rng.normal(0.0, 1.0, (20, 20, 2)))
        lab, _ = ndimage.label(img.sum(-1) > 3.0, structure=np.ones((3, 3)))
        seg = jnp.asarray(np.minimum(lab, 8).astype(np.int32))
        f = lambda x: measure_sources(seg, x, GEOM, 0.3, 8, isophote=(3.0, 0.05)).count_rate_soft  # noqa: E731
        x, v = jnp.asarray(img), jnp.asarray(rng.normal(size=img.shape))
        jv = jax.jvp(f, (x,), (v,))[1]
        fd = (f(x + 1e-6 * v) - f(x - 1e-6 * v)) / 2e-6
        np.testing.assert_allclose(np.asarray(jv), np.asarray(fd), rtol=1e-6, atol=1e-6 * float(jnp.abs(fd).max()))
        assert float(jnp.abs(f(x) - measure_sources(seg, x, GEOM, 0.3, 8).count_rate).max()) > 0  # the rim counts


def test_dilate_labels_and_isophote_weights():
    from jaxcluster.survey import dilate_labels, isophote_weights

    seg = jnp.zeros((6, 7), jnp.int32).at[1, 1].set(1).at[4, 5].set(2).at[4, 4].set(2)
    out = np.asarray(dilate_labels(seg))
    ref = np.zeros((6, 7), np.int32)
    ref[0:3, 0:3] = 1
    ref[3:6, 3:7] = 2
    np.testing.assert_array_equal(out, ref)
    w = np.asarray(isophote_weights(jnp.array([[0.0, 1.0, 10.0, 0.1]]), 1.0, 0.05))
    np.testing.assert_allclose(w, [[0.0, 0.5, 1.0, 0.0]], atol=1e-8)
