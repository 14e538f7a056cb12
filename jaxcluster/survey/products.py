r"""The files `jaxcluster simulate` writes, in the units and headers astropy users expect.

**Units.** Every unit is a string `astropy.units.Unit` parses (FITS ``BUNIT``
in the FITS format: ``ct s-1``, ``solMass``, ``''`` for dimensionless maps;
ECSV columns in astropy's generic format). The simulation works in h⁻¹ M☉ and
h⁻¹ Mpc, but FITS has no unit for h (``astropy.cosmology.units.littleh`` is
not a FITS unit, and a reader that does not enable the cosmology units sees
``Msun/h`` as solar masses per hour), so **h-scaled quantities are converted to
physical units** (M☉, Mpc) with h = H₀/(100 km s⁻¹ Mpc⁻¹) of θ_sim's cosmology
written beside them: the ``HUBBLE`` card of every FITS HDU, ``meta["hubble_h"]``
of the catalogue and ``hubble_h`` in ``summary.json``. The maps and the
catalogue follow the same rule.

**Sky coordinates.** The maps are gnomonic (``RA---TAN``/``DEC--TAN``)
around a field centre (α₀, δ₀), by default XXL-N's centre (2ʰ23ᵐ, −4°30′
J2000 = 35.75°, −4.5°; the XXL survey, Pierre et al. 2016, A&A 592, A1 —
seed 001 mimics XXL, and there RA does not wrap through 0°). The tangent-plane
coordinate ξ of the pipeline (`survey.lightcone`) is the FITS intermediate
world coordinate in radians with x = −ξ_x (RA increases to the left, east, as
in every sky image: ``CDELT1 < 0``) and y = ξ_y. Pixel i of the pipeline's
ξ_x axis is FITS pixel i + 1 of axis 1 (``CRPIX = n_pix/2 + ½``). The
catalogue's RA/Dec are the WCS's world coordinates of the sources' centroids.

**The box axis** of the (box, y, x) cubes is FITS axis 3, a linear index
(``CTYPE3 = 'BOX'``, ``CRPIX3 = 1``, ``CRVAL3 = 0``, ``CDELT3 = 1``): plane k is
box k mod n_boxes of lightcone k // n_boxes, at redshift ``BOXZ{k mod n_boxes}``.

**Provenance.** `jaxcluster.io.provenance` cards in every HDU (θ_sim, seed,
version, date, the command line, the settings as JSON in ``PROVJSON``); the same
record in the catalogue's meta and in ``summary.json``.

Every file is written under a temporary name and renamed into place
(`jaxcluster.io.atomic.atomic_path`), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..io.atomic import atomic_path

__all__ = ["XXL_N_CENTRE_DEG", "MAP_UNITS", "wcs_header", "write_maps", "source_pixels",
           "catalogue_table", "edge_flags", "write_catalogue", "write_xod", "write_json"]

XXL_N_CENTRE_DEG = (35.75, -4.5)  # XXL-N (CFHTLS W1) centre, 2h23m −4°30′ J2000 [deg] (Pierre et al. 2016)

# extension name → (BUNIT, what the map is); h-scaled quantities converted to physical units (module docstring)
MAP_UNITS: dict[str, tuple[str, str]] = {
    "CR_0.5-1": ("ct s-1", "EPIC-pn count rate per pixel, 0.5-1 keV"),
    "CR_1-2": ("ct s-1", "EPIC-pn count rate per pixel, 1-2 keV"),
    "COMPTON_Y": ("", "thermal SZ Compton-y (pixel average)"),
    "RHO_OVER_RHO_C": ("", "line-of-sight mean of rho_m / rho_c(z) (pixel average)"),
    "MASS": ("solMass", "projected matter mass per pixel (physical Msun)"),
    "SEGMENTATION": ("", "detection labels: 0 background, s = catalogue label"),
}


def wcs_header(geometry, z_boxes: ArrayLike, n_lightcones: int, centre_deg: tuple[float, float]):
    """The 3-D WCS of the (box, y, x) cubes (module docstring) with the box redshifts.

    Args:
        geometry: `LightconeGeometry` (pixels and field).
        z_boxes: (n_boxes,) box redshifts.
        n_lightcones: lightcones stacked along the box axis.
        centre_deg: field centre (RA, Dec) [deg].

    Returns:
        `astropy.io.fits.Header`.
    """
    from astropy.io import fits

    h = fits.Header()
    pix_deg = math.degrees(geometry.pixel_rad)  # tangent-plane pixel
    h["WCSAXES"] = (3, "x (RA), y (Dec), box index")
    h["CTYPE1"], h["CTYPE2"], h["CTYPE3"] = "RA---TAN", "DEC--TAN", ("BOX", "lightcone * NBOXES + box (linear index)")
    h["CRVAL1"], h["CRVAL2"], h["CRVAL3"] = float(centre_deg[0]), float(centre_deg[1]), 0.0
    h["CRPIX1"] = h["CRPIX2"] = 0.5 * geometry.n_pix + 0.5
    h["CRPIX3"] = 1.0
    h["CDELT1"], h["CDELT2"], h["CDELT3"] = -pix_deg, pix_deg, 1.0
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    h["CUNIT3"] = ""
    h["RADESYS"] = "ICRS"
    h["NBOXES"] = (int(len(z_boxes)), "boxes per lightcone")
    h["NLIGHTC"] = (int(n_lightcones), "lightcones")
    for b, z in enumerate(z_boxes):
        h[f"BOXZ{b}"] = (float(z), f"redshift of box {b}")
    return h


def write_maps(path, maps, seg, geometry, z_boxes, *, n_lightcones: int, centre_deg, hubble_h: float,
               cards: Sequence[tuple[str, Any, str]]) -> None:
    """``maps.fits``: an empty primary HDU and one image cube (lightcone·box, y, x) per map.

    Args:
        path: output file.
        maps: `BoxMaps` with leading axes (n_lightcones, n_boxes); pixel (i, j) is (ξ_x, ξ_y).
        seg: (n_lightcones, n_boxes, n_pix, n_pix) int labels.
        geometry: `LightconeGeometry`.
        z_boxes: (n_boxes,) box redshifts.
        n_lightcones: lightcones.
        centre_deg: field centre (RA, Dec) [deg].
        hubble_h: h of θ_sim's cosmology (MASS is converted from h⁻¹ M☉ to M☉ with it).
        cards: provenance cards (`io.provenance.fits_cards`), written in every HDU.
    """
    from astropy.io import fits

    head = wcs_header(geometry, z_boxes, n_lightcones, centre_deg)
    head["HUBBLE"] = (float(hubble_h), "h = H0/(100 km/s/Mpc); masses in physical Msun")

    def cube(a):  # (lc, box, ξx, ξy) → (lc·box, y, x): FITS x is the first axis (ξ_x)
        a = np.asarray(a)
        return np.ascontiguousarray(np.swapaxes(a.reshape(-1, *a.shape[-2:]), -1, -2))

    primary = fits.PrimaryHDU()
    primary.header["HUBBLE"] = head["HUBBLE"], head.comments["HUBBLE"]
    primary.header.extend(cards)
    primary.header["COMMENT"] = "Image cubes (lightcone*NBOXES + box, y, x) in the extensions: " + ", ".join(MAP_UNITS)
    hdus = [primary]
    arrays = {"CR_0.5-1": maps.count_rate[..., 0], "CR_1-2": maps.count_rate[..., 1], "COMPTON_Y": maps.y,
              "RHO_OVER_RHO_C": maps.rho_over_rho_c, "MASS": np.asarray(maps.mass, np.float64) / hubble_h,
              "SEGMENTATION": seg}
    for name, (unit, what) in MAP_UNITS.items():
        data = cube(arrays[name]).astype(np.int32 if name == "SEGMENTATION" else np.float32)
        hdu = fits.ImageHDU(data, header=head.copy(), name=name)
        hdu.header["BUNIT"] = (unit, what[:47])
        hdu.header.extend(cards)
        hdus.append(hdu)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, output_verify="exception")


def source_pixels(xi: np.ndarray, geometry) -> np.ndarray:
    """0-based FITS pixel coordinates (x, y) of tangent-plane positions ξ [rad] (shape (..., 2) → (..., 2)).

    Pixel i of the pipeline's grid has its centre at ξ = (i + ½ − n_pix/2) δξ (`survey.detect.measure_sources`).
    """
    return np.asarray(xi, np.float64) / geometry.pixel_rad + 0.5 * geometry.n_pix - 0.5


def edge_flags(seg: np.ndarray, pixels: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Whether each source touches the map border: its segment has a border pixel, or its centroid is closer to the border than its radius.

    Args:
        seg: (n_pix, n_pix) labels of one map.
        pixels: (max_sources, 2) 0-based centroid pixel coordinates.
        area: (max_sources,) segment areas [pixels]; the radius is that of the disc of this area.

    Returns:
        (max_sources,) bool (slot s holds label s + 1).
    """
    seg = np.asarray(seg)
    n = seg.shape[0]
    border = np.concatenate([seg[0], seg[-1], seg[:, 0], seg[:, -1]])
    touches = np.zeros(area.shape[0], bool)
    labels = np.unique(border[border > 0])
    touches[labels - 1] = True
    radius = np.sqrt(np.asarray(area, np.float64) / np.pi)
    # the map spans [−½, n − ½] in 0-based pixel coordinates
    dist = np.minimum(pixels + 0.5, n - 0.5 - pixels).min(axis=-1)
    return touches | (dist < radius)


def catalogue_table(cat, seg, geometry, z_boxes, *, cr_min: float, centre_deg, wcs, hubble_h: float,
                    halo_m500c: np.ndarray | None, halo_offset_rad: np.ndarray | None, halo_note: str,
                    record: Mapping[str, Any]):
    """The source catalogue: every detection of every box, with sky positions, count rates and its halo.

    Args:
        cat: `Catalogue` with leading axes (n_lightcones, n_boxes).
        seg: (n_lightcones, n_boxes, n_pix, n_pix) labels.
        geometry: `LightconeGeometry`.
        z_boxes: (n_boxes,) box redshifts.
        cr_min: CR[0.5–2] cut [counts s⁻¹].
        centre_deg: field centre (RA, Dec) [deg].
        wcs: the maps' `astropy.wcs.WCS` (celestial part used).
        hubble_h: h (h⁻¹ M☉ → M☉).
        halo_m500c: (n_lightcones, n_boxes, max_sources) matched halo M_500c [h⁻¹ M☉], NaN where none; None: not available.
        halo_offset_rad: same shape, distance of that halo's projected centre from the centroid [rad].
        halo_note: how the halos were matched, or why they are missing (in the meta).
        record: provenance record (meta["provenance"]).

    Returns:
        `astropy.table.Table` (columns with astropy units and descriptions).
    """
    import astropy.units as u
    from astropy.table import MaskedColumn, Table

    v = np.asarray(cat.valid)
    n_lc, n_box, n_src = v.shape
    lc, box, slot = np.meshgrid(np.arange(n_lc), np.arange(n_box), np.arange(n_src), indexing="ij")
    cr = np.asarray(cat.count_rate, np.float64)
    xi = np.asarray(cat.xi, np.float64)
    pix = source_pixels(xi, geometry)
    area = np.asarray(cat.area, np.float64)
    edge = np.stack([np.stack([edge_flags(seg[i, b], pix[i, b], area[i, b]) for b in range(n_box)])
                     for i in range(n_lc)])
    ra, dec = wcs.celestial.pixel_to_world_values(pix[..., 0][v], pix[..., 1][v])
    pix_arcmin = math.degrees(geometry.pixel_rad) * 60.0
    tot = cr.sum(-1)
    t = Table()

    def col(name, data, unit=None, description=""):
        t[name] = data
        if unit is not None:
            t[name].unit = unit
        t[name].description = description

    col("lightcone", lc[v], description="lightcone index")
    col("box", box[v], description="box index in the lightcone (maps.fits plane lightcone * NBOXES + box)")
    col("label", slot[v] + 1, description="label of the source in the SEGMENTATION map of its box (1: brightest)")
    col("z", np.asarray(cat.z, np.float64)[v], description="redshift (of the box)")
    col("ra", np.mod(ra, 360.0), u.deg, "right ascension (ICRS) of the flux-weighted centroid")
    col("dec", dec, u.deg, "declination (ICRS) of the flux-weighted centroid")
    col("x_pix", pix[..., 0][v], u.pix, "centroid, 0-based FITS x pixel coordinate")
    col("y_pix", pix[..., 1][v], u.pix, "centroid, 0-based FITS y pixel coordinate")
    col("xi_x_deg", np.degrees(xi[..., 0][v]), u.deg, "tangent-plane xi_x of the centroid (= -intermediate x)")
    col("xi_y_deg", np.degrees(xi[..., 1][v]), u.deg, "tangent-plane xi_y of the centroid")
    col("cr_0.5_1", cr[..., 0][v], u.ct / u.s, "EPIC-pn count rate in the segment, 0.5-1 keV")
    col("cr_1_2", cr[..., 1][v], u.ct / u.s, "EPIC-pn count rate in the segment, 1-2 keV")
    col("cr_0.5_2", tot[v], u.ct / u.s, "EPIC-pn count rate in the segment, 0.5-2 keV")
    col("hr", np.asarray(cat.hardness_ratio, np.float64)[v], description="hardness ratio CR[1-2] / CR[0.5-1]")
    col("area_pix", area[v].astype(int), u.pix**2, "segment area")
    col("area_arcmin2", area[v] * pix_arcmin**2, u.arcmin**2, "segment area")
    col("edge", edge[v], description="segment touches the map border, or the centroid is within the radius "
        "sqrt(area/pi) of it")
    col("selected", tot[v] > cr_min, description=f"CR[0.5-2] > cr_min = {cr_min:g} ct/s (enters the XOD)")
    if halo_m500c is None:
        m500 = np.full(int(v.sum()), np.nan)
        off = np.full(int(v.sum()), np.nan)
    else:
        m500 = np.asarray(halo_m500c, np.float64)[v] / hubble_h
        off = np.degrees(np.asarray(halo_offset_rad, np.float64)[v]) * 60.0
    t["m500c"] = MaskedColumn(m500, mask=~np.isfinite(m500), unit=u.Msun, fill_value=np.nan,
                              description="M_500c of the most massive SO halo centred in the segment (physical Msun)")
    t["halo_offset_arcmin"] = MaskedColumn(off, mask=~np.isfinite(off), unit=u.arcmin, fill_value=np.nan,
                                           description="projected distance of that halo's centre from the centroid")
    t.meta.update(
        cr_min=float(cr_min), cr_min_unit="ct / s", hubble_h=float(hubble_h),
        units_note="masses in physical Msun (converted from h^-1 Msun with hubble_h); no h-scaled units",
        field_centre_deg=[float(centre_deg[0]), float(centre_deg[1])], pixel_arcmin=pix_arcmin,
        box_redshifts=[float(z) for z in z_boxes], halo_matching=halo_note, provenance=dict(record),
    )
    return t


def write_catalogue(path, table) -> None:
    """``catalogue.ecsv`` (astropy ECSV, units and meta kept), written atomically."""
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv")


def write_xod(path, *, hard, soft, binning, cr_min: float, theta: Sequence[float], theta_names: Sequence[str],
              area_deg2: float, record: Mapping[str, Any]) -> None:
    """``xod.npz``: the XODs, their bin edges, the truth θ and the survey area (`inference.observed.read_xod` reads it).

    Keys: ``xod`` (n_cr, n_hr, n_z) hard counts, ``xod_soft``, ``cr_edges`` [counts s⁻¹], ``hr_edges``,
    ``z_edges``, ``cr_min`` [counts s⁻¹], ``theta`` (6,) float64, ``theta_names`` (6,) str,
    ``area_deg2`` (total area: lightcones × area of one) [deg²], ``provenance`` (JSON string).
    """
    from ..io.provenance import clean_json

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, xod=np.asarray(hard), xod_soft=np.asarray(soft), cr_edges=np.asarray(binning.cr_edges),
                     hr_edges=np.asarray(binning.hr_edges), z_edges=np.asarray(binning.z_edges),
                     cr_min=np.float64(cr_min), theta=np.asarray(theta, np.float64),
                     theta_names=np.asarray(list(theta_names), dtype=str), area_deg2=np.float64(area_deg2),
                     provenance=np.asarray(json.dumps(clean_json(dict(record)), sort_keys=True)))


def write_json(path, value: Mapping[str, Any]) -> None:
    """A JSON file (`io.provenance.clean_json`: no float32 noise, no NaN), written atomically (`io.atomic`)."""
    from ..io import atomic
    from ..io.provenance import clean_json

    atomic.write_json(path, clean_json(dict(value)), indent=2)
