r"""Survey pointings on a grid and their exposure maps (vignetted, per band).

**Field coordinates.** Positions are in arcmin in the survey's tangent plane with
the origin at the field's corner: pixel (i, j) of an (n, m) map with pixel side p
[arcmin] spans $[i p, (i+1) p] × [j p, (j+1) p]$ (i along the first image axis,
ξ_x of `jaxcluster.survey.maps.BoxMaps`; j along ξ_y). Over a few degrees the
tangent plane is flat to < 0.2 % (`survey.lightcone`), so distances are Euclidean.

**Layout.** XXL tiles its fields with 10 ks pointings (Pierre et al. 2016, A&A 592,
A1) on a square grid "separated both in RA and Dec by 20′" (Faccioli et al. 2018,
A&A 620, A9, §1), with a ≈ 30′-diameter field of view, so neighbours overlap.
`grid_pointings` puts ⌈side / spacing⌉ pointings per axis, spaced by `spacing`,
centred on the field.

**Exposure.** Pointing p of duration $t_p$ adds $t_p V(θ_p, E_b)$ to every pixel
within the field of view (θ_p < 15′) in band b, θ_p the pixel centre's distance to
the pointing centre; overlapping pointings add. This is the on-axis-equivalent
exposure [s]: counts = count rate (on-axis) × exposure. The particle background is
not focused by the mirrors and sees the unvignetted exposure $\sum_p t_p [θ_p < R]$.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .vignetting import FOV_RADIUS_ARCMIN, vignetting

__all__ = [
    "XXL_EXPOSURE_S",
    "XXL_SPACING_ARCMIN",
    "Pointings",
    "grid_pointings",
    "pixel_centres_arcmin",
    "off_axis_arcmin",
    "exposure_maps",
]

XXL_EXPOSURE_S = 1.0e4  # XXL nominal exposure per pointing [s] (Pierre et al. 2016, A&A 592, A1)
XXL_SPACING_ARCMIN = 20.0  # XXL grid step in RA and Dec [arcmin] (Faccioli et al. 2018, A&A 620, A9, §1)


class Pointings(eqx.Module):
    """A set of pointings.

    Attributes:
        centres_arcmin: (n_point, 2) pointing centres in field coordinates [arcmin].
        exposure_s: (n_point,) exposure time of each pointing [s].
        fov_radius_arcmin: radius of the field of view [arcmin] (static).
    """

    centres_arcmin: Float[Array, "n_point 2"]
    exposure_s: Float[Array, " n_point"]
    fov_radius_arcmin: float = eqx.field(static=True, default=FOV_RADIUS_ARCMIN)

    @property
    def n_point(self) -> int:
        return self.centres_arcmin.shape[0]


def grid_pointings(
    side_arcmin: tuple[float, float],
    spacing_arcmin: float = XXL_SPACING_ARCMIN,
    exposure_s: float | Array = XXL_EXPOSURE_S,
    fov_radius_arcmin: float = FOV_RADIUS_ARCMIN,
) -> Pointings:
    """Square grid of pointings covering a field of sides (x, y) [arcmin] (module docstring).

    Args:
        side_arcmin: field sides along x and y [arcmin] (static Python floats).
        spacing_arcmin: grid step [arcmin], > 0 (static).
        exposure_s: exposure per pointing [s] (may be traced).
        fov_radius_arcmin: field-of-view radius [arcmin] (static).
    """
    axes = []
    for side in side_arcmin:
        n = max(1, math.ceil(side / spacing_arcmin - 1e-9))
        axes.append([0.5 * side + (k - 0.5 * (n - 1)) * spacing_arcmin for k in range(n)])
    cx, cy = jnp.meshgrid(jnp.asarray(axes[0]), jnp.asarray(axes[1]), indexing="ij")
    centres = jnp.stack([cx.ravel(), cy.ravel()], axis=-1)
    t = jnp.asarray(exposure_s).astype(centres.dtype)
    return Pointings(centres, jnp.full(centres.shape[:1], 1.0, centres.dtype) * t, fov_radius_arcmin)


def pixel_centres_arcmin(shape: tuple[int, int], pixel_arcmin: float, dtype=None) -> tuple[Float[Array, "n m"], Float[Array, "n m"]]:
    """(x, y) field coordinates [arcmin] of the pixel centres of an (n, m) map."""
    dtype = dtype or jnp.result_type(float)
    x = (jnp.arange(shape[0], dtype=dtype) + 0.5) * pixel_arcmin
    y = (jnp.arange(shape[1], dtype=dtype) + 0.5) * pixel_arcmin
    xx, yy = jnp.meshgrid(x, y, indexing="ij")
    return xx, yy


def off_axis_arcmin(pointings: Pointings, shape: tuple[int, int], pixel_arcmin: float) -> Float[Array, "n_point n m"]:
    """Off-axis angle θ_p [arcmin] of every pixel centre for every pointing."""
    x, y = pixel_centres_arcmin(shape, pixel_arcmin, pointings.centres_arcmin.dtype)
    dx = x[None] - pointings.centres_arcmin[:, 0, None, None]
    dy = y[None] - pointings.centres_arcmin[:, 1, None, None]
    return jnp.sqrt(dx * dx + dy * dy)


def exposure_maps(
    pointings: Pointings,
    shape: tuple[int, int],
    pixel_arcmin: float,
    band_energy_keV: Float[Array, " n_band"],
    zone_edges_arcmin: tuple[float, ...] = (),
) -> tuple[Float[Array, "n_zone n_band n m"], Float[Array, "n m"]]:
    """Vignetted exposure per band, split by off-axis zone, and the unvignetted exposure.

    Args:
        pointings: the pointings.
        shape: (n, m) map shape (static).
        pixel_arcmin: pixel side [arcmin] (static).
        band_energy_keV: (n_band,) energy at which each band's vignetting is evaluated [keV].
        zone_edges_arcmin: inner edges (> 0, increasing) of off-axis zones; a pointing's
            contribution to a pixel goes to the zone of its θ_p (for the zone-wise PSF,
            `jaxcluster.observation.psf`). Empty: one zone.

    Returns:
        (vignetted, unvignetted): (n_zone, n_band, n, m) exposure [s] (on-axis
        equivalent; the sum over zones is the exposure map), and (n, m) the plain
        exposure [s] inside the field of view (for the particle background).
    """
    theta = off_axis_arcmin(pointings, shape, pixel_arcmin)  # (P, n, m)
    in_fov = (theta < pointings.fov_radius_arcmin).astype(theta.dtype)
    t = pointings.exposure_s[:, None, None] * in_fov  # (P, n, m)
    e_b = band_energy_keV.astype(theta.dtype)
    vig = vignetting(theta[:, None], e_b[None, :, None, None])  # (P, B, n, m)
    tv = t[:, None] * vig
    edges = (0.0, *zone_edges_arcmin, math.inf)
    zones = [
        jnp.sum(tv * ((theta >= lo) & (theta < hi)).astype(tv.dtype)[:, None], axis=0)
        for lo, hi in zip(edges[:-1], edges[1:])
    ]
    return jnp.stack(zones), jnp.sum(t, axis=0)
