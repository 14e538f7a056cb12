r"""Blends: an extended source fitted again as a β-model beside point sources, all amplitudes together.

A cluster with an AGN in or near its core is one detection: the segment holds both, and the
single β-model fitted to it (`measure.fit_source`, centred on the brightest peak) takes the AGN's
counts into the cluster's count rate. Survey pipelines fit overlapping sources together: SAS
emldetect fits a few neighbouring sources simultaneously, and Xamin weighs the extended fit against
a pair of point sources (Pacaud et al. 2006, MNRAS 372, 578). Here, a β-model and up to three
point sources:

1. **Candidates.** The point sources tried are the single fit's own centre (where an AGN brighter
   than the cluster pulls it) and the `n_peaks` highest peaks of the residual's point-source
   significance (the residual counts filtered by the PSF over √(model ⊗ PSF²)) within
   `radius_arcsec`, each at least `separation_arcsec` from the others and from the centre, placed
   at the centroid of the significance's positive part around the peak.
2. **Simultaneous fit.** $m = A_β T_{r_c}(x_β) e + \sum_p A_p P(x_p) e + b$ with every amplitude
   ≥ 0 fitted together (`poisson_amplitudes`, projected Newton steps on the Cash statistic): the
   β-model's centre $x_β$ on every other whole-pixel offset within `radius_arcsec` of the single
   fit's, at every fourth core radius of the grid and the single fit's; then the whole grid at the
   best centre; then the centre again, on every offset, at the best core radius (templates cut from
   one grid twice the cutout, `measure.SourceModel.wide_templates`, so a shift costs a slice). The
   moved centre is kept only if it beats the β-model left at the single fit's centre (the points
   fitted with it, its core radius on the whole grid) by `min_offset_delta_c` (15): two more
   parameters, searched over a few hundred positions. Without this, a compact cluster came out as a
   point source at its core beside a broad β-model 40″ away.
3. **Choice.** The blend replaces the single source when its Cash statistic is lower by at least
   `min_delta_c` (40). Noise fitted by up to three point amplitudes, four peak coordinates and the
   β-model's centre gives ΔC of median 12, 99th percentile 27 and maximum 41 on 100 isolated
   β-models (the benchmark's AGN-off injections, `docs/validation/observations.md`); with random AGN,
   13 of 202 extended sources were adopted, ΔC up to 327.

`measure.refine_catalogue(deblend=True)` (the third pass) then measures the source again with the
significant point components' models held fixed like neighbours, their amplitude errors (from the
simultaneous fit's covariance, so including their degeneracy with the β-model) added to the
photometric variance. They are not added to the catalogue as sources of their own (the slots are
fixed); `MeasuredCatalogue.n_blended` counts them.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .measure import _TEMPLATE_DTYPE, SourceModel, cash, convolve_centred

__all__ = ["BlendSettings", "BlendFit", "poisson_amplitudes", "fit_blend"]


class BlendSettings(eqx.Module):
    """Settings of the blend fit (static; module docstring).

    Args:
        radius_arcsec: how far from the single fit's centre the β-model's centre and the point
            candidates are searched [arcsec], > 0.
        separation_arcsec: smallest separation of two point candidates, and of a candidate from the
            single fit's centre [arcsec], > 0 (two PSF FWHM of ≈ 6″).
        n_peaks: residual peaks tried as point sources beside the single fit's centre, ≥ 0.
        min_delta_c: Cash improvement over the single β-model from which the blend is adopted, ≥ 0.
        min_offset_delta_c: Cash improvement by which the β-model's best moved centre must beat its single fit's
            centre (both with the points, each at its best core radius) to be kept, ≥ 0.
        min_point_snr: a point component is held (and counted in `n_blended`) when its amplitude is
            at least this many σ, ≥ 0.
        n_newton_steps: projected Newton steps of the amplitudes, ≥ 1.
    """

    radius_arcsec: float = eqx.field(static=True)
    separation_arcsec: float = eqx.field(static=True)
    n_peaks: int = eqx.field(static=True)
    min_delta_c: float = eqx.field(static=True)
    min_offset_delta_c: float = eqx.field(static=True)
    min_point_snr: float = eqx.field(static=True)
    n_newton_steps: int = eqx.field(static=True)

    def __init__(self, radius_arcsec: float = 40.0, separation_arcsec: float = 12.0, n_peaks: int = 2,
                 min_delta_c: float = 40.0, min_offset_delta_c: float = 15.0, min_point_snr: float = 3.0,
                 n_newton_steps: int = 10):
        from ..params import check_scalar

        self.radius_arcsec = float(check_scalar("radius_arcsec", radius_arcsec, 0.0, 1e4, low_open=True))
        self.separation_arcsec = float(check_scalar("separation_arcsec", separation_arcsec, 0.0, 1e4, low_open=True))
        self.n_peaks = int(check_scalar("n_peaks", n_peaks, 0, 8, integer=True))
        self.min_delta_c = float(check_scalar("min_delta_c", min_delta_c, 0.0, 1e6))
        self.min_offset_delta_c = float(check_scalar("min_offset_delta_c", min_offset_delta_c, 0.0, 1e6))
        self.min_point_snr = float(check_scalar("min_point_snr", min_point_snr, 0.0, 1e3))
        self.n_newton_steps = int(check_scalar("n_newton_steps", n_newton_steps, 1, 1000, integer=True))


class BlendFit(eqx.Module):
    """Result of `fit_blend` for one cutout.

    Attributes:
        adopted: whether the blend fits better than the single β-model by `min_delta_c`.
        delta_c: C(single β-model) − C(blend).
        beta_centre: (2,) the β-model's centre (row, col) [cutout pixels].
        extent: its core radius [arcsec] (a node of the grid).
        beta_amplitude: its counts at the cutout's reference exposure, and `beta_snr` its A/σ.
        beta_snr: see `beta_amplitude`.
        point_centres: (k, 2) the point candidates (row, col) [cutout pixels]; k = 1 + `n_peaks`.
        point_amplitudes: (k,) their counts at the reference exposure (≥ 0).
        point_sigma: (k,) their 1σ errors (the simultaneous fit's covariance).
    """

    adopted: Bool[Array, ""]
    delta_c: Float[Array, ""]
    beta_centre: Float[Array, " 2"]
    extent: Float[Array, ""]
    beta_amplitude: Float[Array, ""]
    beta_snr: Float[Array, ""]
    point_centres: Float[Array, "k 2"]
    point_amplitudes: Float[Array, " k"]
    point_sigma: Float[Array, " k"]


def poisson_amplitudes(counts: Float[Array, "c c"], background: Float[Array, "c c"], templates: Float[Array, "k c c"],
                       a0: Float[Array, " k"], steps: int) -> tuple[Float[Array, " k"], Float[Array, "k k"], Float[Array, ""]]:
    r"""Amplitudes $a ≥ 0$ of $m = \sum_j a_j T_j + b$ maximising the Poisson likelihood (projected Newton).

    Args:
        counts: (c, c) observed counts.
        background: (c, c) expected background counts, fixed.
        templates: (k, c, c) the components' expected counts per unit amplitude.
        a0: (k,) starting amplitudes (> 0).
        steps: Newton steps.

    Returns:
        (amplitudes (k,), their covariance (k, k) (inverse Fisher matrix at the fit), Cash statistic).
    """
    k = templates.shape[0]
    T = templates.reshape(k, -1)
    n = counts.reshape(-1)
    b = background.reshape(-1)
    ridge = 1e-9 * jnp.eye(k, dtype=T.dtype)

    def step(a, _):
        m = a @ T + b
        ok = m > 0
        mp = jnp.where(ok, m, 1.0)
        g = T @ jnp.where(ok, n / mp - 1.0, 0.0)
        H = (T * jnp.where(ok, n / mp**2, 0.0)[None]) @ T.T + ridge * (1.0 + jnp.trace(T @ T.T))
        da = jnp.linalg.solve(H, g)
        da = jnp.where(jnp.all(jnp.isfinite(da)), da, 0.0)
        # a component pushed below zero stops at a small positive floor, whence it may come back
        return jnp.clip(a + da, 1e-6 * (1.0 + jnp.sum(a)), 10.0 * jnp.sum(a) + 10.0), None

    a, _ = jax.lax.scan(step, a0, None, length=steps)
    m = a @ T + b
    w = jnp.where(m > 0, 1.0 / jnp.where(m > 0, m, 1.0), 0.0)
    F = (T * w[None]) @ T.T + ridge * (1.0 + jnp.trace(T @ T.T))
    cov = jnp.linalg.inv(F)
    return a, cov, cash(counts, m.reshape(counts.shape))


def _offsets(radius_pix: float, step: int = 1) -> np.ndarray:
    """Whole-pixel offsets (n, 2) within `radius_pix`, every `step` pixels on each axis (0 included)."""
    r = int(math.floor(radius_pix)) // step * step
    d = np.arange(-r, r + 1, step)
    g = np.stack(np.meshgrid(d, d, indexing="ij"), axis=-1).reshape(-1, 2)
    return g[np.hypot(g[:, 0], g[:, 1]) <= radius_pix]


def _peaks(sig, centre, n_peaks, radius_pix, sep_pix):
    """Up to `n_peaks` peaks of `sig` within `radius_pix` of `centre`, `sep_pix` apart and from `centre` (their
    centroids over the positive 3 × 3 neighbourhood), and whether each is a real (positive) peak."""
    c = sig.shape[0]
    yy = jnp.arange(c, dtype=sig.dtype)
    d2c = (yy[:, None] - centre[0]) ** 2 + (yy[None, :] - centre[1]) ** 2
    allowed = (d2c <= radius_pix**2) & (d2c >= sep_pix**2)
    out, ok = [], []
    for _ in range(n_peaks):
        s = jnp.where(allowed, sig, -jnp.inf)
        i = jnp.argmax(s)
        r, q = i // c, i % c
        win = jax.lax.dynamic_slice(jnp.pad(jnp.maximum(sig, 0.0), 1), (r, q), (3, 3))
        wsum = jnp.maximum(jnp.sum(win), 1e-30)
        dr = jnp.sum(win * jnp.arange(-1.0, 2.0)[:, None]) / wsum
        dq = jnp.sum(win * jnp.arange(-1.0, 2.0)[None, :]) / wsum
        p = jnp.stack([r.astype(sig.dtype) + dr, q.astype(sig.dtype) + dq])
        out.append(p)
        ok.append(s[r, q] > 0)
        allowed = allowed & (((yy[:, None] - p[0]) ** 2 + (yy[None, :] - p[1]) ** 2) >= sep_pix**2)
    return jnp.stack(out), jnp.stack(ok)


def fit_blend(
    model: SourceModel,
    settings: BlendSettings,
    core_radii_arcsec: tuple[float, ...],
    counts: Float[Array, "c c"],
    background: Float[Array, "c c"],
    relative_exposure: Float[Array, "c c"],
    single_model: Float[Array, "c c"],
    single_cash: Float[Array, ""],
    centre: Float[Array, " 2"],
    extent: Float[Array, ""],
) -> BlendFit:
    """The simultaneous β-model + point-sources fit of one cutout (module docstring); jit-able.

    Args:
        model: templates' PSF and geometry.
        settings: `BlendSettings`.
        core_radii_arcsec: the core-radius grid [arcsec] (`FitSettings.core_radii_arcsec`).
        counts: (c, c) observed counts (band sum, masked pixels zero).
        background: (c, c) background and held models [counts] (masked pixels zero).
        relative_exposure: (c, c) exposure relative to the reference (masked pixels zero).
        single_model: (c, c) the single fit's expected source counts (without the background).
        single_cash: the single fit's Cash statistic (`SourceFit.c_extended`).
        centre: (2,) the single fit's centre [cutout pixels].
        extent: its core radius [arcsec].

    Returns:
        A `BlendFit`.
    """
    dtype = counts.dtype
    c = model.cutout
    half = c // 2
    pix = model.pixel_arcsec
    # the residual's point-source significance: (n − m) ⊗ P / √(m ⊗ P²)
    psf = model.point_template(jnp.full((2,), float(half), _TEMPLATE_DTYPE)).astype(dtype)
    m1 = single_model + background
    num = convolve_centred(counts - m1, psf)
    den = jnp.sqrt(jnp.maximum(convolve_centred(m1, psf**2), 1e-12))
    sig = jnp.where(relative_exposure > 0, num / den, -jnp.inf)
    peaks, real = _peaks(sig, centre, settings.n_peaks, settings.radius_arcsec / pix, settings.separation_arcsec / pix)
    pts = jnp.concatenate([centre[None], peaks]) if settings.n_peaks else centre[None]
    real = jnp.concatenate([jnp.ones((1,), bool), real]) if settings.n_peaks else jnp.ones((1,), bool)
    P = jax.vmap(lambda p: model.point_template(p.astype(_TEMPLATE_DTYPE)).astype(dtype))(pts)
    P = P * relative_exposure[None] * real.astype(dtype)[:, None, None]
    total = jnp.maximum(jnp.sum(single_model), 3.0)
    a0 = jnp.concatenate([jnp.full((1,), 0.7 * total), jnp.full((pts.shape[0],), 0.1 * total)]).astype(dtype)

    def fit_at(beta):
        T = jnp.concatenate([(beta * relative_exposure)[None], P])
        return poisson_amplitudes(counts, background, T, a0, settings.n_newton_steps)

    def window(wide, d):
        return jax.lax.dynamic_slice(wide, (half - d[0], half - d[1]), (c, c))

    offs = jnp.asarray(_offsets(settings.radius_arcsec / pix), jnp.int32)
    offs2 = jnp.asarray(_offsets(settings.radius_arcsec / pix, step=2), jnp.int32)  # the first search's
    grid = np.asarray(core_radii_arcsec)
    coarse = np.unique(np.concatenate([grid[::4], grid[-1:]]))

    def search(wides, offs):
        """C at every offset for each wide template: (n_rc, n_off)."""
        return jax.lax.map(lambda w: jax.vmap(lambda d: fit_at(window(w, d))[2])(offs), wides)

    # 1. the β-model's centre on every other offset, at the coarse core radii and the single fit's
    rc1 = jnp.concatenate([jnp.asarray(coarse, _TEMPLATE_DTYPE), extent.astype(_TEMPLATE_DTYPE)[None]])
    c1 = search(model.wide_templates(centre.astype(_TEMPLATE_DTYPE), rc1).astype(dtype), offs2)
    best = offs2[jnp.argmin(jnp.min(c1, axis=0))]
    # 2. the core radius at that centre, on the whole grid
    rc = jnp.asarray(core_radii_arcsec, _TEMPLATE_DTYPE)
    wides = model.wide_templates((centre + best.astype(dtype)).astype(_TEMPLATE_DTYPE), rc).astype(dtype)
    j = jnp.argmin(jax.vmap(lambda w: fit_at(w[half: half + c, half: half + c])[2])(wides))
    # 3. the centre again at that core radius
    wide = model.wide_templates(centre.astype(_TEMPLATE_DTYPE), rc[j][None])[0].astype(dtype)
    best = offs[jnp.argmin(search(wide[None], offs)[0])]
    fit_off = fit_at(window(wide, best))
    # 4. the β-model kept at the single fit's centre, on the whole grid: the moved centre must earn its two parameters
    # and the search over every offset (e.g. a compact cluster otherwise becomes a point at its core beside a broad
    # β-model tens of arcsec away, which fits its wings and the noise around)
    at0 = jax.vmap(lambda w: fit_at(w[half: half + c, half: half + c]))(
        model.wide_templates(centre.astype(_TEMPLATE_DTYPE), rc).astype(dtype))
    j0 = jnp.argmin(at0[2])
    moved = fit_off[2] <= at0[2][j0] - settings.min_offset_delta_c
    amps, cov, c_blend = jax.tree.map(lambda a, b: jnp.where(moved, a, b[j0]), fit_off, at0)
    beta_centre = centre + jnp.where(moved, best, 0).astype(dtype)
    sigma = jnp.sqrt(jnp.maximum(jnp.diagonal(cov), 0.0))
    delta_c = single_cash - c_blend
    return BlendFit(adopted=delta_c >= settings.min_delta_c, delta_c=delta_c, beta_centre=beta_centre,
                    extent=jnp.where(moved, rc[j], rc[j0]).astype(dtype), beta_amplitude=amps[0],
                    beta_snr=amps[0] / jnp.maximum(sigma[0], 1e-30), point_centres=pts,
                    point_amplitudes=amps[1:] * real.astype(dtype), point_sigma=sigma[1:])
