"""XOD: the hard histogram against numpy, the soft XOD's limit and gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcluster.analytic import XODBinning
from jaxcluster.survey import hard_xod, soft_xod

BINS = XODBinning()  # the analytic baseline's bins: 8 log CR from 0.02, 6 log HR, 4 z in [0.1, 0.5]
CR_MIN = 0.02


def _catalogue(rng, n=400, margin=0.0):
    """Random sources; with `margin` > 0 none lies within `margin` (dex, or z units) of an edge."""
    def away(x, edges):
        if margin == 0:
            return np.ones(x.shape, bool)
        return np.min(np.abs(x[:, None] - np.asarray(edges)[None, :]), axis=1) > margin

    out = []
    while sum(len(o[0]) for o in out) < n:
        cr = 10 ** rng.uniform(-2.5, 0.7, n)
        hr = 10 ** rng.uniform(-1.3, 0.5, n)
        z = rng.uniform(0.05, 0.55, n)
        ok = (away(np.log10(cr), np.log10(BINS.cr_edges)) & away(np.log10(hr), np.log10(BINS.hr_edges))
              & away(z, BINS.z_edges) & away(np.log10(cr), [np.log10(CR_MIN)]))
        out.append((cr[ok], hr[ok], z[ok]))
    cr, hr, z = (np.concatenate(c)[:n] for c in zip(*out))
    valid = rng.uniform(size=n) < 0.9
    return cr, hr, z, valid


def test_hard_xod_is_the_histogram_of_selected_sources():
    cr, hr, z, valid = _catalogue(np.random.default_rng(0))
    xod = np.asarray(hard_xod(jnp.asarray(cr), jnp.asarray(hr), jnp.asarray(z), jnp.asarray(valid), BINS, CR_MIN))
    sel = valid & (cr > CR_MIN)
    ref, _ = np.histogramdd(np.stack([cr[sel], hr[sel], z[sel]], -1), bins=[BINS.cr_edges, BINS.hr_edges, BINS.z_edges])
    np.testing.assert_array_equal(xod, ref)
    inside = sel & (cr < BINS.cr_edges[-1]) & (hr >= BINS.hr_edges[0]) & (hr < BINS.hr_edges[-1]) & (z >= 0.1) & (z < 0.5)
    assert xod.sum() == inside.sum() > 100


def test_soft_xod_tends_to_the_hard_one():
    cr, hr, z, valid = (jnp.asarray(a) for a in _catalogue(np.random.default_rng(1), margin=0.01))
    hard = np.asarray(hard_xod(cr, hr, z, valid, BINS, CR_MIN))
    errs = []
    for s in (0.1, 0.01, 0.001):
        soft = np.asarray(soft_xod(cr, hr, z, valid, BINS, CR_MIN, softness=s, softness_z=s))
        errs.append(np.abs(soft - hard).max())
    # every source is ≥ 0.01 from an edge: at s = 0.001 its leak is σ(−10) ≈ 5e-5 per edge
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3, errs
    soft = np.asarray(soft_xod(cr, hr, z, valid, BINS, CR_MIN, softness=1e-4, softness_z=1e-4))
    np.testing.assert_allclose(soft, hard, atol=1e-12)


def test_soft_xod_gradient_matches_finite_differences():
    cr, hr, z, valid = (jnp.asarray(a) for a in _catalogue(np.random.default_rng(2), n=50))
    w = jnp.asarray(np.random.default_rng(3).uniform(0.5, 1.5, BINS.shape))

    def f(scale):  # all count rates scaled, the redshifts shifted: what θ_sim does
        x = soft_xod(cr * scale, hr * scale**0.3, z + 0.05 * (scale - 1), valid, BINS, CR_MIN, 0.05, 0.02)
        return jnp.sum(w * x)

    g = jax.grad(f)(1.0)
    eps = 1e-6
    fd = (f(1.0 + eps) - f(1.0 - eps)) / (2 * eps)
    assert float(g) != 0.0
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-6)  # float64 central differences
