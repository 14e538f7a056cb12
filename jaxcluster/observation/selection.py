r"""Selection function by injection–recovery: P(C1 | CR, r_c, z) and the point-source completeness.

**Injection.** A β-model cluster (β = 2/3, core radius r_c [arcsec], total
unabsorbed [0.5–2] keV count rate CR [counts s⁻¹], split between the bands
by the HR of a T = 2 keV APEC plasma at redshift z from the shipped EPIC-pn
tables) is placed near the centre of a small field (default 64 × 64 pixels
of 4″), with a random sub-pixel offset, and observed through
`jaxcluster.observation.observe` (10 ks, XXL-N N_H, backgrounds, AGN drawn
at random, King PSF). Point sources are injected the same way with r_c = 0.
The photon image goes through the same `detect` + `measure_catalogue` chain
as any survey image. A source is recovered if a detection lies within
`match_arcsec` (default max(20″, r_c)) of the injected position; it is C1 if
that detection is classified C1.

**Table** (`SelectionTable`): for every (CR, r_c, z) cell the number of
trials, detections and C1s; for every point-source CR the detections and the
C1 (false-extended) rate; the settings and provenance. The shipped table is
`jaxcluster/data/selection_xxl_c1.npz`, remade by

    python -m jaxcluster.observation.selection --out jaxcluster/data/selection_xxl_c1.npz

(the default coarse grid and 8 realisations per cell take a few minutes on 2 CPU cores).
Its scope is that of the injections: on axis (the field's single pointing
is centred on the source), 10 ks, no neighbouring cluster.

**Smooth selection** (`selection_probability`). For each (r_c, z) cell a
logistic in log10 CR with a plateau, $P = p_{\max}\,σ((\log_{10}\mathrm{CR} − μ)/w)$,
is fitted to the trials by binomial maximum likelihood; (μ, ln w, logit p_max)
are bilinear in (ln r_c, z) between cells (constant beyond the grid). P is
then smooth, in [0, 1], increasing in CR, and differentiable in CR, r_c and z.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

if TYPE_CHECKING:
    from .detection import DetectionSettings
    from .measure import FitSettings, SourceModel
    from .photons import ObservationConfig

__all__ = [
    "DEFAULT_TABLE",
    "SelectionTable",
    "beta_count_rate_map",
    "cluster_band_fractions",
    "inject_and_recover",
    "build_selection_table",
    "fit_logistic",
    "load_selection_table",
    "save_selection_table",
    "selection_probability",
    "selection_figure",
]

DEFAULT_TABLE = "selection_xxl_c1.npz"


def beta_count_rate_map(
    shape: tuple[int, int], pixel_arcsec: float, centre: Float[ArrayLike, " 2"], core_radius_arcsec: float,
    count_rate: Float[ArrayLike, " n_band"], supersample: int = 4,
) -> Float[Array, "n m n_band"]:
    """Count rate per pixel of a unit-normalised β = 2/3 model (r_c = 0: a point source in its pixel).

    $S(r) = (1 + r^2/r_c^2)^{-3/2} / (2π r_c^2)$ [arcsec⁻²] integrates to 1 over the
    plane; pixels are integrated on `supersample`² sub-pixels (flux beyond the map is lost).

    Args:
        shape: (n, m) map shape.
        pixel_arcsec: pixel side [arcsec].
        centre: (row, col) [pixels, centres at integers].
        core_radius_arcsec: r_c [arcsec], ≥ 0.
        count_rate: (n_band,) total count rate per band [counts s⁻¹], ≥ 0.
        supersample: sub-pixels per pixel side.

    Returns:
        (n, m, n_band) count rate per pixel [counts s⁻¹] (the `observe` layout).
    """
    if not core_radius_arcsec >= 0:
        raise ValueError(f"core_radius_arcsec = {core_radius_arcsec}: must be >= 0")
    cr = jnp.asarray(count_rate)
    centre = jnp.asarray(centre, cr.dtype)
    n, m = shape
    if core_radius_arcsec == 0:
        i, j = jnp.round(centre).astype(jnp.int32)
        unit = jnp.zeros((n, m), cr.dtype).at[i, j].set(1.0)
    else:
        s = supersample
        u = (jnp.arange(n * s, dtype=cr.dtype) + 0.5) / s - 0.5
        v = (jnp.arange(m * s, dtype=cr.dtype) + 0.5) / s - 0.5
        r2 = ((u[:, None] - centre[0]) ** 2 + (v[None, :] - centre[1]) ** 2) * pixel_arcsec**2
        rc2 = core_radius_arcsec**2
        sub = (1.0 + r2 / rc2) ** -1.5 / (2.0 * math.pi * rc2) * (pixel_arcsec / s) ** 2
        unit = sub.reshape(n, s, m, s).sum(axis=(1, 3))
    return unit[..., None] * cr[None, None, :]


def cluster_band_fractions(z: float, kT_keV: float = 2.0) -> np.ndarray:
    """(2,) fractions of the [0.5–2] keV count rate in [0.5–1] and [1–2] keV of a kT plasma at z (shipped tables)."""
    from ..analytic import XrayTables

    eps = np.asarray(XrayTables.default().photon(jnp.asarray(float(kT_keV)), jnp.asarray(float(z))))
    return eps / eps.sum()


class SelectionTable(eqx.Module):
    """Injection–recovery counts and the fitted smooth selection (module docstring).

    Attributes:
        cr: (n_cr,) injected unabsorbed 0.5–2 keV CR [counts s⁻¹].
        core_radius: (n_rc,) injected core radii [arcsec].
        z: (n_z,) redshifts (set the band split).
        trials: (n_cr, n_rc, n_z) injections per cell.
        detected: (n_cr, n_rc, n_z) injections recovered (any class).
        c1: (n_cr, n_rc, n_z) injections recovered as C1.
        mu: (n_rc, n_z) the logistic's centre μ (log10 CR units).
        log_width: (n_rc, n_z) the logistic's ln w (w in log10 CR units).
        logit_pmax: (n_rc, n_z) the logistic's logit p_max.
        point_cr: (n_pt,) injected point-source CR [counts s⁻¹].
        point_trials: (n_pt,) point-source trials.
        point_detected: (n_pt,) point-source detections.
        point_c1: (n_pt,) point-source (false) C1 classifications.
        meta: settings and provenance (static JSON string).
    """

    cr: Float[Array, " n_cr"]
    core_radius: Float[Array, " n_rc"]
    z: Float[Array, " n_z"]
    trials: Float[Array, "n_cr n_rc n_z"]
    detected: Float[Array, "n_cr n_rc n_z"]
    c1: Float[Array, "n_cr n_rc n_z"]
    mu: Float[Array, "n_rc n_z"]
    log_width: Float[Array, "n_rc n_z"]
    logit_pmax: Float[Array, "n_rc n_z"]
    point_cr: Float[Array, " n_pt"]
    point_trials: Float[Array, " n_pt"]
    point_detected: Float[Array, " n_pt"]
    point_c1: Float[Array, " n_pt"]
    meta: str = eqx.field(static=True, default="{}")

    @property
    def settings(self) -> dict:
        """The build settings and provenance (units in the keys)."""
        return json.loads(self.meta)

    @property
    def c1_fraction(self) -> Float[Array, "n_cr n_rc n_z"]:
        """Measured P(C1) per cell (C1 / trials)."""
        return self.c1 / jnp.maximum(self.trials, 1.0)

    @property
    def point_completeness(self) -> Float[Array, " n_pt"]:
        """Measured point-source detection fraction per CR."""
        return self.point_detected / jnp.maximum(self.point_trials, 1.0)


def _interp_axis(x, grid):
    """Index and weight of linear interpolation of x on an increasing grid (clamped)."""
    g = jnp.asarray(grid)
    if g.shape[0] == 1:
        return jnp.zeros(x.shape, jnp.int32), jnp.zeros_like(x)
    xc = jnp.clip(x, g[0], g[-1])
    i = jnp.clip(jnp.searchsorted(g, xc, side="right") - 1, 0, g.shape[0] - 2)
    w = (xc - g[i]) / (g[i + 1] - g[i])
    return i, w


def selection_probability(
    table: SelectionTable, count_rate: Float[ArrayLike, "*s"], core_radius_arcsec: Float[ArrayLike, "*s"],
    z: Float[ArrayLike, "*s"],
) -> Float[Array, "*s"]:
    """Smooth P(C1 | CR, r_c, z) (module docstring); differentiable, in [0, 1], increasing in CR.

    Args:
        table: a `SelectionTable` (e.g. `load_selection_table()`).
        count_rate: unabsorbed 0.5–2 keV CR [counts s⁻¹], > 0 (≤ 0 gives 0).
        core_radius_arcsec: β-model core radius [arcsec], > 0 (clamped to the table's range).
        z: redshift (clamped to the table's range).
    """
    cr, rc, z = jnp.broadcast_arrays(*(jnp.asarray(a, table.mu.dtype) for a in (count_rate, core_radius_arcsec, z)))
    ok = cr > 0
    u = jnp.log10(jnp.where(ok, cr, 1.0))
    ln_rc = jnp.log(jnp.maximum(rc, 1e-30))
    i, wi = _interp_axis(ln_rc, jnp.log(table.core_radius))
    j, wj = _interp_axis(z, table.z)
    nz = table.z.shape[0]
    jp = jnp.minimum(j + 1, nz - 1)
    ip = jnp.minimum(i + 1, table.core_radius.shape[0] - 1)

    def bilinear(p):
        return ((1 - wi) * (1 - wj) * p[i, j] + wi * (1 - wj) * p[ip, j]
                + (1 - wi) * wj * p[i, jp] + wi * wj * p[ip, jp])

    mu, width = bilinear(table.mu), jnp.exp(bilinear(table.log_width))
    pmax = jax.nn.sigmoid(bilinear(table.logit_pmax))
    return jnp.where(ok, pmax * jax.nn.sigmoid((u - mu) / width), 0.0)


def fit_logistic(log10_cr: np.ndarray, successes: np.ndarray, trials: np.ndarray) -> tuple[float, float, float]:
    """(μ, ln w, logit p_max) of P = p_max σ((u − μ)/w) by binomial maximum likelihood (scipy, host).

    A weak prior (w ≥ 0.03 dex, p_max not pinned at 0 or 1 by few trials) keeps
    the fit defined where every trial succeeds or fails.
    """
    from scipy.optimize import minimize

    u, k, n = (np.asarray(a, np.float64) for a in (log10_cr, successes, trials))

    def nll(p):
        mu, lw, lp = p
        w = 0.03 + np.exp(lw)
        pr = np.clip(1.0 / (1.0 + np.exp(-lp)) / (1.0 + np.exp(-(u - mu) / w)), 1e-9, 1 - 1e-9)
        # binomial deviance + Gaussian priors (σ = 3 on logit p_max, 1 dex on μ around the grid centre)
        return -np.sum(k * np.log(pr) + (n - k) * np.log1p(-pr)) + 0.5 * (lp / 3.0) ** 2 \
            + 0.5 * ((mu - u.mean()) / 1.0) ** 2

    frac = k / np.maximum(n, 1)
    above = np.nonzero(frac >= 0.5 * frac.max())[0]
    mu0 = u[above[0]] if frac.max() > 0 else u[-1] + 0.3
    best = None
    for lw0 in (np.log(0.1), np.log(0.3)):
        r = minimize(nll, np.array([mu0, lw0, 2.0]), method="Nelder-Mead",
                     options=dict(xatol=1e-6, fatol=1e-8, maxiter=4000))
        if best is None or r.fun < best.fun:
            best = r
    mu, lw, lp = best.x
    return float(mu), float(np.log(0.03 + np.exp(lw))), float(lp)


def inject_and_recover(
    key: PRNGKeyArray, count_rate: float, core_radius_arcsec: float, band_fractions: Sequence[float], *,
    shape: tuple[int, int] = (64, 64), pixel_arcsec: float = 4.0, config: ObservationConfig | None = None,
    detection: DetectionSettings | None = None, fit: FitSettings | None = None,
    source_model: SourceModel | None = None, match_arcsec: float | None = None,
) -> dict:
    """Observe one injected source and run the detection chain; what was recovered (host, one field).

    Args:
        key: PRNG key (offset, AGN, photons).
        count_rate: unabsorbed 0.5–2 keV CR [counts s⁻¹], > 0.
        core_radius_arcsec: r_c [arcsec] (0: point source).
        band_fractions: (2,) fractions of CR in [0.5–1], [1–2] keV.
        shape: (n, m) shape of the field [pixels].
        pixel_arcsec: pixel side of the field [arcsec].
        config: `ObservationConfig` (default: XXL's, `observe`'s defaults).
        detection: `DetectionSettings`.
        fit: `FitSettings`.
        source_model: `SourceModel` (default: on-axis King PSF at the bands' mean energy).
        match_arcsec: recovery radius [arcsec] (default max(20″, r_c)).

    Returns:
        dict(detected, c1, source_class (of the match: 0 point, 1 C1, 2 C2; −1 none), count_rate,
        count_rate_err, count_rate_true (absorbed, per band summed), extent, det_lh, ext_lh, hr, hr_err).
        The match is the nearest valid detection within `match_arcsec`, or for a cluster (r_c > 0)
        the most significant extended (C1/C2) one there, if any.
    """
    from .detection import DetectionSettings
    from .photons import ObservationConfig

    if not count_rate > 0:
        raise ValueError(f"count_rate = {count_rate}: must be > 0")
    config = ObservationConfig() if config is None else config
    detection = DetectionSettings(max_sources=16) if detection is None else detection
    if source_model is None:
        source_model = default_source_model(pixel_arcsec, psf_box_arcsec=(shape[0] * pixel_arcsec, shape[1] * pixel_arcsec))
    run = _chain(shape, pixel_arcsec, config, detection, fit, source_model)
    k_off, k_obs = jax.random.split(key)
    offset = jax.random.uniform(k_off, (2,), minval=-0.5, maxval=0.5)
    centre = jnp.asarray([shape[0] / 2.0, shape[1] / 2.0]) + offset
    crb = jnp.asarray(band_fractions, jnp.float64) * count_rate
    maps = beta_count_rate_map(shape, pixel_arcsec, centre, core_radius_arcsec, crb)
    if core_radius_arcsec == 0:
        centre = jnp.round(centre)
    cat, tau = run(k_obs, maps)
    d = np.hypot(*(np.asarray(cat.position) - np.asarray(centre)[None, :]).T) * pixel_arcsec
    d = np.where(np.asarray(cat.valid), d, np.inf)
    radius = max(20.0, core_radius_arcsec) if match_arcsec is None else match_arcsec
    k = int(np.argmin(d))
    found = bool(d[k] <= radius)
    extended = (np.asarray(cat.source_class) > 0) & (d <= radius)
    if core_radius_arcsec > 0 and extended.any():
        # a cluster is recovered by its extended detection, the most significant within the radius, even where
        # a point-like fragment or an AGN lies nearer its centre
        k = int(np.argmax(np.where(extended, np.asarray(cat.det_lh), -np.inf)))
    true = float(np.sum(np.asarray(crb) * np.asarray(tau)))
    out = dict(detected=found, c1=found and int(cat.source_class[k]) == 1,
               source_class=int(cat.source_class[k]) if found else -1, count_rate_true=true,
               count_rate=np.nan, count_rate_err=np.nan, extent=np.nan, det_lh=np.nan, ext_lh=np.nan,
               hr=np.nan, hr_err=np.nan, hr_true=float(crb[1] * tau[1] / (crb[0] * tau[0])))
    if found:
        out.update(count_rate=float(cat.count_rate_total[k]), count_rate_err=float(cat.count_rate_total_err[k]),
                   extent=float(cat.extent[k]), det_lh=float(cat.det_lh[k]), ext_lh=float(cat.ext_lh[k]),
                   hr=float(cat.hardness_ratio[k]), hr_err=float(cat.hardness_ratio_err[k]))
    return out


@functools.lru_cache(maxsize=8)
def default_source_model(pixel_arcsec: float, cutout: int = 48, supersample: int = 3,
                         psf_box_arcsec: tuple[float, float] | None = None):
    """`SourceModel` with the pn King PSF of `observe`'s innermost off-axis zone (θ = 2.5′, the PSF it
    applies to an on-axis injection, `psf.PSF_ZONE_THETA_ARCMIN`) at the count-weighted mean energy of [0.5–2] keV.

    `psf_box_arcsec`: the PSF's normalisation rectangle (`SourceModel`); for an (n, m) image of
    `observe`, (n × pixel, m × pixel) matches its kernel's normalisation.
    """
    from ..xray.emissivity import default_band_response
    from .measure import SourceModel
    from .photons import band_mean_energy_keV
    from .psf import PSF_ZONE_THETA_ARCMIN, king_parameters, king_profile

    e = float(jnp.mean(band_mean_energy_keV(default_band_response())))
    rc, alpha = (float(v) for v in king_parameters(e, PSF_ZONE_THETA_ARCMIN[0]))
    return SourceModel(lambda r: king_profile(r, rc, alpha), pixel_arcsec, cutout=cutout, supersample=supersample,
                       psf_box_arcsec=psf_box_arcsec)


_CHAINS: dict = {}


def _chain(shape, pixel_arcsec, config, detection, fit, source_model):
    """jit-compiled observe → detect → measure for one field (cached per settings)."""
    from ..xray.emissivity import default_band_response
    from .absorption import band_transmission, thermal_photon_spectrum
    from .detection import detect
    from .confusion import agn_confusion
    from .measure import FitSettings, measure_two_pass
    from .photons import observe

    cache_key = (shape, pixel_arcsec, config, detection, fit, source_model)
    if cache_key in _CHAINS:
        return _CHAINS[cache_key]
    response = default_band_response()
    confusion = agn_confusion(config, response, pixel_arcsec, detection.threshold, detection.min_area,
                              modelled_det_lh=(fit or FitSettings()).neighbour_min_det_lh)

    @jax.jit
    def run(key, maps):
        obs = observe(key, maps, pixel_arcsec / 60.0, config, response)
        det = detect(obs.counts, obs.exposure, source_model, detection, obs.background)
        cat = measure_two_pass(obs.counts, obs.exposure, det.background, det.segmentation, source_model,
                               detection.max_sources, fit, det.background_rel_var, confusion=confusion,
                               detection=detection, background_template=obs.background)
        e_mid = 0.5 * (response.energ_lo_keV + response.energ_hi_keV)
        tau = band_transmission(jnp.asarray(config.nh_cm2, e_mid.dtype),
                                thermal_photon_spectrum(e_mid, config.cluster_kT_keV), response)
        return cat, tau

    _CHAINS[cache_key] = run
    return run


def build_selection_table(
    key: PRNGKeyArray,
    cr_grid: Sequence[float] = tuple(np.geomspace(0.003, 0.1, 7)),
    core_radius_grid: Sequence[float] = (5.0, 10.0, 20.0, 40.0, 80.0),
    z_grid: Sequence[float] = (0.2, 0.6),
    point_cr_grid: Sequence[float] = tuple(np.geomspace(0.0005, 0.02, 7)),
    n_real: int = 8,
    *,
    shape: tuple[int, int] = (64, 64),
    pixel_arcsec: float = 4.0,
    config: ObservationConfig | None = None,
    detection: DetectionSettings | None = None,
    fit: FitSettings | None = None,
    progress: bool = False,
) -> SelectionTable:
    """Run the injection–recovery grid and fit the smooth selection (module docstring).

    Args:
        key: PRNG key (one fold per trial).
        cr_grid: injected unabsorbed 0.5–2 keV CR [counts s⁻¹], increasing, > 0.
        core_radius_grid: core radii [arcsec], increasing, > 0.
        z_grid: redshifts, increasing, > 0.
        point_cr_grid: point-source CRs [counts s⁻¹], increasing, > 0.
        n_real: realisations per cell, ≥ 1.
        shape: as in `inject_and_recover`.
        pixel_arcsec: as in `inject_and_recover`.
        config: as in `inject_and_recover`.
        detection: as in `inject_and_recover`.
        fit: as in `inject_and_recover`.
        progress: print one line per cell.

    Returns:
        A `SelectionTable` (its `meta` records every setting).
    """
    import datetime
    import subprocess

    from .detection import DetectionSettings
    from .measure import FitSettings
    from .photons import ObservationConfig

    grids = {}
    for name, g in (("cr_grid", cr_grid), ("core_radius_grid", core_radius_grid), ("z_grid", z_grid),
                    ("point_cr_grid", point_cr_grid)):
        a = np.asarray(g, np.float64)
        if a.ndim != 1 or a.size < 1 or not np.all(a > 0) or not np.all(np.isfinite(a)) or np.any(np.diff(a) <= 0):
            raise ValueError(f"{name} = {g!r}: must be increasing finite values > 0")
        grids[name] = a
    if not (isinstance(n_real, int) and n_real >= 1):
        raise ValueError(f"n_real = {n_real!r}: must be an int >= 1")
    config = ObservationConfig() if config is None else config
    detection = DetectionSettings(max_sources=16) if detection is None else detection
    fit = FitSettings() if fit is None else fit
    model = default_source_model(pixel_arcsec, psf_box_arcsec=(shape[0] * pixel_arcsec, shape[1] * pixel_arcsec))
    crs, rcs, zs, pcs = grids["cr_grid"], grids["core_radius_grid"], grids["z_grid"], grids["point_cr_grid"]
    shp = (crs.size, rcs.size, zs.size)
    trials, det, c1 = np.zeros(shp), np.zeros(shp), np.zeros(shp)
    t = 0
    for k, z in enumerate(zs):
        frac = cluster_band_fractions(z)
        for j, rc in enumerate(rcs):
            for i, cr in enumerate(crs):
                for r in range(n_real):
                    out = inject_and_recover(jax.random.fold_in(key, t), float(cr), float(rc), frac, shape=shape,
                                             pixel_arcsec=pixel_arcsec, config=config, detection=detection, fit=fit,
                                             source_model=model)
                    t += 1
                    trials[i, j, k] += 1
                    det[i, j, k] += out["detected"]
                    c1[i, j, k] += out["c1"]
                if progress:
                    print(f"z={z:.2f} rc={rc:5.1f}″ CR={cr:.4f}: P(C1)={c1[i, j, k] / n_real:.2f}"
                          f" P(det)={det[i, j, k] / n_real:.2f}", flush=True)
    frac_pt = cluster_band_fractions(float(zs[0]))  # the band split barely matters for detection
    pt_tr, pt_det, pt_c1 = np.zeros(pcs.size), np.zeros(pcs.size), np.zeros(pcs.size)
    for i, cr in enumerate(pcs):
        for r in range(n_real):
            out = inject_and_recover(jax.random.fold_in(key, t), float(cr), 0.0, frac_pt, shape=shape,
                                     pixel_arcsec=pixel_arcsec, config=config, detection=detection, fit=fit,
                                     source_model=model)
            t += 1
            pt_tr[i] += 1
            pt_det[i] += out["detected"]
            pt_c1[i] += out["c1"]
        if progress:
            print(f"point CR={cr:.4f}: completeness={pt_det[i] / n_real:.2f} C1={pt_c1[i] / n_real:.2f}", flush=True)
    params = np.array([[fit_logistic(np.log10(crs), c1[:, j, k], trials[:, j, k]) for k in range(zs.size)]
                       for j in range(rcs.size)])  # (n_rc, n_z, 3)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    meta = dict(
        description="P(C1 | CR, r_c, z) and point-source completeness by injection-recovery (jaxcluster #23)",
        units=dict(cr="counts/s, unabsorbed, [0.5-2] keV EPIC-pn", core_radius="arcsec", z="",
                   mu="log10(counts/s)", log_width="ln(dex)", logit_pmax=""),
        command="python -m jaxcluster.observation.selection --out jaxcluster/data/selection_xxl_c1.npz",
        n_real=n_real, shape=list(shape), pixel_arcsec=pixel_arcsec, exposure_s=float(config.exposure_s),
        nh_cm2=float(config.nh_cm2), agn=config.agn, psf=config.psf, cluster_kT_keV=float(config.cluster_kT_keV),
        detection=dict(background=detection.background, threshold_sigma=detection.threshold,
                       scales_arcsec=list(detection.scales_arcsec), min_area=detection.min_area),
        classes="XXL C1: EXT>5 arcsec, EXT_LH>33, DET_LH>32 (Pacaud et al. 2006; Pierre et al. 2016)",
        band_split="T = 2 keV plasma at each z (shipped EPIC-pn tables)", position="on axis (+- 0.5 pixel)",
        seed_key=str(jax.random.key_data(key).tolist()), git_commit=commit,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    f = jnp.asarray
    return SelectionTable(cr=f(crs), core_radius=f(rcs), z=f(zs), trials=f(trials), detected=f(det), c1=f(c1),
                          mu=f(params[..., 0]), log_width=f(params[..., 1]), logit_pmax=f(params[..., 2]),
                          point_cr=f(pcs), point_trials=f(pt_tr), point_detected=f(pt_det), point_c1=f(pt_c1),
                          meta=json.dumps(meta, sort_keys=True))


_ARRAYS = ("cr", "core_radius", "z", "trials", "detected", "c1", "mu", "log_width", "logit_pmax",
           "point_cr", "point_trials", "point_detected", "point_c1")


def save_selection_table(table: SelectionTable, path) -> None:
    """Write `table` as an npz (arrays + `meta` JSON with units and provenance), atomically."""
    import os
    import tempfile

    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, meta=np.asarray(table.meta), **{k: np.asarray(getattr(table, k)) for k in _ARRAYS})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_selection_table(path=None) -> SelectionTable:
    """Read a table written by `save_selection_table` (default: the shipped `jaxcluster/data/selection_xxl_c1.npz`).

    Raises:
        ValueError: a missing array, inconsistent shapes or non-finite values (the file is named).
    """
    from pathlib import Path

    if path is None:
        path = Path(__file__).resolve().parent.parent / "data" / DEFAULT_TABLE
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in _ARRAYS + ("meta",) if k not in f]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        arrs = {k: np.asarray(f[k], np.float64) for k in _ARRAYS}
        meta = str(f["meta"])
    n = (arrs["cr"].size, arrs["core_radius"].size, arrs["z"].size)
    for k in ("trials", "detected", "c1"):
        if arrs[k].shape != n:
            raise ValueError(f"{path}: {k} has shape {arrs[k].shape}, expected {n}")
    for k in ("mu", "log_width", "logit_pmax"):
        if arrs[k].shape != n[1:]:
            raise ValueError(f"{path}: {k} has shape {arrs[k].shape}, expected {n[1:]}")
    bad = [k for k, v in arrs.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ValueError(f"{path}: non-finite values in {bad}")
    return SelectionTable(**{k: jnp.asarray(v) for k, v in arrs.items()}, meta=meta)


def selection_figure(table: SelectionTable, path) -> None:
    """P(C1) vs CR for each core radius (first z; points: measured fractions with binomial errors;
    lines: the smooth fit) and the point-source completeness; written to `path` (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    cr = np.asarray(table.cr)
    fine = np.geomspace(cr[0] / 1.5, cr[-1] * 1.5, 200)
    z0 = float(table.z[0])
    for j, rc in enumerate(np.asarray(table.core_radius)):
        p = np.asarray(table.c1_fraction[:, j, 0])
        n = np.asarray(table.trials[:, j, 0])
        err = np.sqrt(np.maximum(p * (1 - p), 0.25 / n) / n)
        line = ax.plot(fine, np.asarray(selection_probability(table, fine, np.full_like(fine, rc), np.full_like(fine, z0))),
                       label=f"r_c = {rc:g}″")[0]
        ax.errorbar(cr, p, err, fmt="o", color=line.get_color(), ms=3)
    ax.set(xscale="log", xlabel="CR [0.5–2 keV] (unabsorbed) [counts s⁻¹]", ylabel="P(C1)",
           title=f"C1 selection, z = {z0:g}", ylim=(-0.05, 1.05))
    ax.legend(fontsize=8)
    pc = np.asarray(table.point_cr)
    bx.plot(pc, np.asarray(table.point_completeness), "o-", label="detected")
    bx.plot(pc, np.asarray(table.point_c1 / np.maximum(table.point_trials, 1)), "s--", label="classified C1")
    bx.set(xscale="log", xlabel="CR [0.5–2 keV] [counts s⁻¹]", ylabel="fraction", title="point sources",
           ylim=(-0.05, 1.05))
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    """`python -m jaxcluster.observation.selection`: build, save and plot the selection table."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="npz to write")
    ap.add_argument("--figure", default=None, help="png of the table (default: --out with .png)")
    ap.add_argument("--n-real", type=int, default=8, help="realisations per cell")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.n_real >= 1:
        raise SystemExit(f"--n-real = {args.n_real}: must be >= 1")
    jax.config.update("jax_enable_x64", True)
    table = build_selection_table(jax.random.key(args.seed), n_real=args.n_real, progress=True)
    save_selection_table(table, args.out)
    selection_figure(table, args.figure or str(args.out).rsplit(".", 1)[0] + ".png")


if __name__ == "__main__":
    main()
