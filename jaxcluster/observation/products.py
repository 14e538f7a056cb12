r"""The files of an observed survey: photon images, exposure and background maps, per mosaic and per pointing.

**Images.** ``observation.fits`` holds the whole field (the mosaic of the
pointings) as 2-D images, one HDU per quantity and band, ``EXTVER`` = lightcone
+ 1 (``CCDData.read(path, hdu=("COUNTS_0.5-1", 1))``):

====================  =========  ==================================================
EXTNAME               BUNIT      content
====================  =========  ==================================================
``COUNTS_<band>``     ``ct``     Poisson photon counts per pixel
``EXPOSURE_<band>``   ``s``      vignetted (on-axis equivalent) exposure
``BACKGROUND_<band>`` ``ct``     expected background counts per pixel (the model's)
``MODEL_<band>``      ``ct``     expected total counts per pixel (the Poisson mean)
``SEGMENTATION``      ``''``     detection labels (0: background; ℓ: catalogue label)
====================  =========  ==================================================

``pointings/lc<l>_p<kkk>.fits`` holds, for pointing k of lightcone l, the
``COUNTS_<band>``, ``EXPOSURE_<band>`` and ``BACKGROUND_<band>`` images of that
pointing alone, cut out around its field of view (a square of side 2 R_FOV).
The mosaic's photons are shared among the pointings that saw them by binomial
thinning in sequence (`split_counts_by_pointing`): in each pixel, pointing p
takes each photon with probability μ_p / Σ μ, μ_p its expected counts, so the
per-pointing images are independent Poisson images whose sum is the mosaic. μ_p
scales the focused part of the model (clusters, AGN, CXB, foreground) by the
pointing's share of the vignetted exposure and the particle part by its share of
the unvignetted exposure; the PSF's small change between overlapping pointings
(`psf` docstring, zones) is not tracked in this split.

**Sky coordinates.** The WCS is gnomonic around the field centre (α₀, δ₀),
with the conventions of `jaxcluster.survey.products`: FITS axis 1 is the
pipeline's ξ_x with x = −ξ_x (``CDELT1 < 0``, east to the left), axis 2 is ξ_y,
row i of an (n, m) observation image is FITS pixel i + 1 of axis 1, and the
field centre lies at ``CRPIX = (n/2 + ½, m/2 + ½)``. A pointing's cutout keeps
the same projection with ``CRPIX`` shifted by the cutout's origin.

**Provenance** (`jaxcluster.io.provenance` cards) in every HDU; the observation
settings as cards (``EXPOSURE`` per pointing [s], ``NH`` [cm⁻²], ``AGNMODE``,
``PSF``, ``PARTBKG``, ``COSMBKG``, ``OBSPIX`` [arcsec]). Every file is written
under a temporary name and renamed into place (`jaxcluster.io.atomic`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..io.atomic import atomic_path

if TYPE_CHECKING:
    import os

    from astropy.io import fits
    from astropy.table import Table
    from jaxtyping import ArrayLike

__all__ = ["IMAGE_UNITS", "band_name", "image_wcs_header", "observation_cards", "write_observation",
           "split_counts_by_pointing", "pointing_cutout", "write_pointing", "observed_catalogue_table"]

# quantity → (BUNIT, description); one HDU per band (`band_name`) except SEGMENTATION
IMAGE_UNITS: dict[str, tuple[str, str]] = {
    "COUNTS": ("ct", "EPIC-pn photon counts per pixel"),
    "EXPOSURE": ("s", "vignetted exposure (on-axis equivalent)"),
    "BACKGROUND": ("ct", "expected background counts per pixel"),
    "MODEL": ("ct", "expected total counts per pixel"),
}


def band_name(band_keV: tuple[float, float]) -> str:
    """``"0.5-1"`` for (0.5, 1.0) keV: the suffix of the per-band extension names."""
    return "-".join(f"{e:g}" for e in band_keV)


def image_wcs_header(shape: tuple[int, int], pixel_arcmin: float, centre_deg: tuple[float, float],
                     origin: tuple[int, int] = (0, 0)) -> fits.Header:
    """2-D RA/Dec TAN header of an (n, m) observation image, or of its cutout starting at `origin` (module docstring).

    Args:
        shape: (n, m) of the whole field's image (row i along ξ_x).
        pixel_arcmin: observation pixel [arcmin].
        centre_deg: field centre (RA, Dec) [deg].
        origin: (i0, j0) first row and column of a cutout in the field's image.

    Returns:
        `astropy.io.fits.Header` (celestial WCS only).
    """
    from astropy.io import fits

    if not (pixel_arcmin > 0 and math.isfinite(pixel_arcmin)):
        raise ValueError(f"pixel_arcmin = {pixel_arcmin!r} must be finite and > 0")
    h = fits.Header()
    pix_deg = pixel_arcmin / 60.0
    h["WCSAXES"] = 2
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = float(centre_deg[0]), float(centre_deg[1])
    h["CRPIX1"] = 0.5 * shape[0] + 0.5 - origin[0]
    h["CRPIX2"] = 0.5 * shape[1] + 0.5 - origin[1]
    h["CDELT1"], h["CDELT2"] = -pix_deg, pix_deg
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    h["RADESYS"] = "ICRS"
    return h


def observation_cards(config, pixel_arcsec: float) -> list[tuple[str, Any, str]]:
    """FITS cards of the observation settings (`ObservationConfig`) and the observation pixel."""
    return [
        ("EXPOSURE", float(config.exposure_s), "exposure per pointing [s]"),
        ("NH", float(config.nh_cm2), "Galactic column density [cm-2]"),
        ("AGNMODE", str(config.agn), "AGN: random, haloes or off"),
        ("PSF", bool(config.psf), "EPIC-pn King PSF applied"),
        ("PARTBKG", bool(config.particle_background), "particle background included"),
        ("COSMBKG", bool(config.cosmic_background), "CXB and Galactic foreground included"),
        ("OBSPIX", float(pixel_arcsec), "observation pixel [arcsec]"),
        ("INSTRUME", "EPIC-pn", "simulated instrument (XMM-Newton)"),
    ]


def _image(data, header, name: str, unit: str, what: str, cards, extver: int):
    from astropy.io import fits

    arr = np.asarray(data)
    dtype = np.int32 if name == "SEGMENTATION" else np.float32
    # (row i along ξ_x, column j along ξ_y) → FITS (y, x): FITS x is the first axis
    hdu = fits.ImageHDU(np.ascontiguousarray(arr.T).astype(dtype), header=header.copy(), name=name)
    hdu.header["EXTVER"] = extver
    hdu.header["BUNIT"] = (unit, what[:47])
    hdu.header.extend(cards)
    return hdu


def write_observation(path: str | os.PathLike, observations: Sequence[Mapping[str, Any]], *,
                      bands_keV: Sequence[tuple[float, float]], pixel_arcmin: float,
                      centre_deg: tuple[float, float], cards: Sequence[tuple[str, Any, str]]) -> None:
    """``observation.fits``: the mosaic images of every lightcone (module docstring).

    Args:
        path: output file.
        observations: one mapping per lightcone with (n_band, n, m) arrays ``counts``,
            ``exposure`` [s], ``background`` and ``model`` [counts], and (n, m) ``segmentation``.
        bands_keV: ((lo, hi), ...) [keV].
        pixel_arcmin: observation pixel [arcmin].
        centre_deg: field centre (RA, Dec) [deg].
        cards: provenance and settings cards, written in every HDU.
    """
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header.extend(cards)
    names = [f"{q}_{band_name(b)}" for q in IMAGE_UNITS for b in bands_keV] + ["SEGMENTATION"]
    primary.header["COMMENT"] = "2-D images (y, x), EXTVER = lightcone + 1: " + ", ".join(names)
    hdus = [primary]
    for lc, o in enumerate(observations):
        shape = np.asarray(o["counts"]).shape[1:]
        head = image_wcs_header(shape, pixel_arcmin, centre_deg)
        for q, (unit, what) in IMAGE_UNITS.items():
            for b, band in enumerate(bands_keV):
                hdus.append(_image(np.asarray(o[q.lower()])[b], head, f"{q}_{band_name(band)}", unit,
                                   f"{what}, {band_name(band)} keV", cards, lc + 1))
        hdus.append(_image(o["segmentation"], head, "SEGMENTATION", "", "detection labels (0: none)", cards, lc + 1))
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, output_verify="exception")


def split_counts_by_pointing(
    key: PRNGKeyArray,
    counts: Float[Array, "n_band n m"],
    model: Float[Array, "n_band n m"],
    particle: Float[Array, "n_band n m"],
    vignetted: Float[Array, "n_point n_band n m"],
    plain: Float[Array, "n_point n m"],
) -> tuple[Float[Array, "n_point n_band n m"], Float[Array, "n_point n_band n m"]]:
    """Share the mosaic's photons among the pointings by sequential binomial thinning (module docstring).

    Args:
        key: PRNG key.
        counts: (n_band, n, m) mosaic photon counts.
        model: (n_band, n, m) their expected counts.
        particle: (n_band, n, m) the particle-background part of `model` (unvignetted).
        vignetted: (n_point, n_band, n, m) each pointing's vignetted exposure [s].
        plain: (n_point, n, m) each pointing's unvignetted exposure [s].

    Returns:
        (counts, expected) per pointing, each (n_point, n_band, n, m); summed over the
        pointings they give `counts` and `model`.
    """
    e_tot = jnp.sum(vignetted, axis=0)
    t_tot = jnp.sum(plain, axis=0)
    focused = jnp.maximum(model - particle, 0.0)
    share_e = jnp.where(e_tot[None] > 0, vignetted / jnp.where(e_tot > 0, e_tot, 1.0)[None], 0.0)
    share_t = jnp.where(t_tot[None] > 0, plain / jnp.where(t_tot > 0, t_tot, 1.0)[None], 0.0)
    mu = focused[None] * share_e + particle[None] * share_t[:, None]  # (P, B, n, m)

    def step(carry, x):
        left, mu_left = carry
        k, mu_p = x
        p = jnp.clip(jnp.where(mu_left > 0, mu_p / jnp.where(mu_left > 0, mu_left, 1.0), 0.0), 0.0, 1.0)
        n_p = jax.random.binomial(k, left, p).astype(counts.dtype)
        n_p = jnp.minimum(n_p, left)
        return (left - n_p, jnp.maximum(mu_left - mu_p, 0.0)), n_p

    n_point = mu.shape[0]
    keys = jax.random.split(key, n_point)
    # the last pointing takes what is left (p = 1 up to round-off): force it so the sum is exact
    (left, _), parts = jax.lax.scan(step, (counts, jnp.sum(mu, axis=0)), (keys[:-1], mu[:-1]))
    parts = jnp.concatenate([parts, left[None]], axis=0)
    return parts, mu


def pointing_cutout(centre_arcmin, pixel_arcmin: float, fov_radius_arcmin: float, shape: tuple[int, int]
                    ) -> tuple[slice, slice, tuple[int, int]]:
    """Rows and columns of the square of side 2 R_FOV around a pointing, clipped to the image; and its origin."""
    half = fov_radius_arcmin / pixel_arcmin
    ci, cj = (float(c) / pixel_arcmin for c in centre_arcmin)
    i0, j0 = max(0, math.floor(ci - half)), max(0, math.floor(cj - half))
    i1, j1 = min(shape[0], math.ceil(ci + half)), min(shape[1], math.ceil(cj + half))
    return slice(i0, i1), slice(j0, j1), (i0, j0)


def write_pointing(path: str | os.PathLike, *, counts: Float[ArrayLike, "n_band a b"],
                   exposure: Float[ArrayLike, "n_band a b"], background: Float[ArrayLike, "n_band a b"],
                   bands_keV: Sequence[tuple[float, float]], shape: tuple[int, int], origin: tuple[int, int],
                   pixel_arcmin: float, centre_deg: tuple[float, float], pointing_deg: tuple[float, float],
                   pointing_id: int, cards: Sequence[tuple[str, Any, str]]) -> None:
    """One pointing's cutout images (module docstring): counts, exposure and background per band.

    Args:
        path: output file.
        counts: (n_band, a, b) cutout of the photon counts [counts].
        exposure: (n_band, a, b) cutout of the exposure [s].
        background: (n_band, a, b) cutout of the background [counts].
        bands_keV: the bands [keV].
        shape: (n, m) of the whole field's image.
        origin: the cutout's first (row, column) in the whole field's image.
        pixel_arcmin: observation pixel [arcmin].
        centre_deg: field centre (RA, Dec) [deg] (the projection's).
        pointing_deg: the pointing's (RA, Dec) [deg].
        pointing_id: index of the pointing in the grid.
        cards: provenance and settings cards.
    """
    from astropy.io import fits

    head = image_wcs_header(shape, pixel_arcmin, centre_deg, origin)
    extra = [("PNTID", int(pointing_id), "pointing index in the grid"),
             ("RA_PNT", float(pointing_deg[0]), "pointing RA [deg]"),
             ("DEC_PNT", float(pointing_deg[1]), "pointing Dec [deg]")]
    primary = fits.PrimaryHDU()
    primary.header.extend(list(cards) + extra)
    hdus = [primary]
    for q, arr in (("COUNTS", counts), ("EXPOSURE", exposure), ("BACKGROUND", background)):
        unit, what = IMAGE_UNITS[q]
        for b, band in enumerate(bands_keV):
            hdus.append(_image(np.asarray(arr)[b], head, f"{q}_{band_name(band)}", unit,
                               f"{what}, {band_name(band)} keV", list(cards) + extra, 1))
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, output_verify="exception")


def observed_catalogue_table(cats: Sequence, *, pixel_arcmin: float, shape: tuple[int, int],
                             centre_deg: tuple[float, float], bands_keV: Sequence[tuple[float, float]],
                             truth: Sequence[Mapping[str, np.ndarray]] | None = None,
                             record: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Table:
    """The measured catalogue of every lightcone's photon image, with units (astropy `Table`).

    Args:
        cats: one `MeasuredCatalogue` per lightcone (positions in observation pixels).
        pixel_arcmin: observation pixel [arcmin].
        shape: (n, m) of the observation images.
        centre_deg: field centre (RA, Dec) [deg].
        bands_keV: the bands [keV].
        truth: per lightcone, optional per-slot arrays to add as columns (``z_true``,
            ``cr_true`` [counts s⁻¹], ``agn_flux`` [erg s⁻¹ cm⁻²]; NaN: no match).
        record: provenance (meta["provenance"]).
        meta: more meta entries.

    Returns:
        `astropy.table.Table`.
    """
    import astropy.units as u
    from astropy.table import MaskedColumn, Table, vstack
    from astropy.wcs import WCS

    from .classes import C1, C2

    wcs = WCS(image_wcs_header(shape, pixel_arcmin, centre_deg))
    tables = []
    cps = u.ct / u.s
    for lc, cat in enumerate(cats):
        v = np.asarray(cat.valid)
        pos = np.asarray(cat.position, np.float64)[v]
        ra, dec = wcs.pixel_to_world_values(pos[:, 0], pos[:, 1])
        cr = np.asarray(cat.count_rate, np.float64)[v]
        err = np.asarray(cat.count_rate_err, np.float64)[v]
        cls = np.asarray(cat.source_class)[v]
        t = Table()

        def col(name, data, unit=None, description=""):
            t[name] = data
            if unit is not None:
                t[name].unit = unit
            t[name].description = description

        col("lightcone", np.full(int(v.sum()), lc), description="lightcone index (observation.fits EXTVER - 1)")
        col("label", np.nonzero(v)[0] + 1, description="label in the SEGMENTATION image")
        col("ra", np.mod(ra, 360.0), u.deg, "right ascension (ICRS) of the fitted position")
        col("dec", dec, u.deg, "declination (ICRS) of the fitted position")
        col("x_pix", pos[:, 0], u.pix, "fitted position, 0-based FITS x pixel coordinate in observation.fits")
        col("y_pix", pos[:, 1], u.pix, "fitted position, 0-based FITS y pixel coordinate in observation.fits")
        col("det_lh", np.asarray(cat.det_lh, np.float64)[v], description="detection likelihood -ln P(chi2_3 >= dC)")
        col("ext_lh", np.asarray(cat.ext_lh, np.float64)[v], description="extension likelihood -ln P(chi2_1 >= dC)")
        col("extent", np.asarray(cat.extent, np.float64)[v], u.arcsec, "fitted beta = 2/3 core radius")
        for b, band in enumerate(bands_keV):
            s = band_name(band).replace("-", "_")
            col(f"cr_{s}", cr[:, b], cps, f"count rate {band_name(band)} keV, vignetting and aperture corrected")
            col(f"cr_{s}_err", err[:, b], cps, f"1-sigma error of cr_{s}")
            col(f"net_counts_{s}", np.asarray(cat.net_counts, np.float64)[v][:, b], u.ct,
                f"background-subtracted counts in the aperture, {band_name(band)} keV")
            col(f"background_counts_{s}", np.asarray(cat.background_counts, np.float64)[v][:, b], u.ct,
                f"background counts in the aperture, {band_name(band)} keV")
        total = f"cr_{band_name((bands_keV[0][0], bands_keV[-1][1])).replace('-', '_')}"
        col(total, cr.sum(-1), cps, "count rate summed over the bands")
        col(total + "_err", np.sqrt(np.sum(err**2, -1)), cps, f"1-sigma error of {total}")
        col("hr", np.asarray(cat.hardness_ratio, np.float64)[v], description="hardness ratio CR[band 1] / CR[band 0]")
        col("hr_err", np.asarray(cat.hardness_ratio_err, np.float64)[v], description="1-sigma error of hr")
        col("aperture", np.asarray(cat.aperture_arcsec, np.float64)[v], u.arcsec, "photometry aperture radius")
        col("source_class", cls, description="1: C1, 2: C2, 0: neither (jaxcluster.observation.classes)")
        col("c1", cls == C1, description="XXL-like C1 class")
        col("c2", cls == C2, description="XXL-like C2 class")
        if cat.n_blended is not None:
            col("n_blended", np.asarray(cat.n_blended)[v], description="point sources fitted with this source in "
                "its blend fit and subtracted from its photometry (not catalogued; jaxcluster.observation.blends)")
        if truth is not None:
            for name, unit, what in (("z_true", None, "redshift of the box whose cluster light dominates at the "
                                      "position (noiseless maps)"),
                                     ("cr_true", cps, "noiseless cluster count rate summed in the matched segment "
                                      "of the ideal detection (unabsorbed)"),
                                     ("agn_flux", u.erg / u.s / u.cm**2, "0.5-2 keV flux of the brightest input "
                                      "AGN within 10 arcsec")):
                a = np.asarray(truth[lc][name], np.float64)[v]
                t[name] = MaskedColumn(a, mask=~np.isfinite(a), unit=unit, fill_value=np.nan, description=what)
        tables.append(t)
    out = vstack(tables) if len(tables) > 1 else tables[0]
    out.meta.update(dict(meta or {}), field_centre_deg=[float(c) for c in centre_deg], pixel_arcsec=pixel_arcmin * 60,
                    classes="1: C1, 2: C2, 0: neither (XXL-like cuts, jaxcluster.observation.classes)",
                    provenance=dict(record))
    return out
