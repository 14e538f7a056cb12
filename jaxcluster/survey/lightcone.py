r"""Lightcone geometry: N boxes of equal comoving size stacked along the line of sight.

Seed 001 §2.3 (its Fig. 4): a lightcone from $z_\min$ to $z_\max$ is made of
`n_boxes` adjacent periodic boxes of the same comoving size, each evolved
from its own initial conditions to its own redshift. The depth of a box is
$D = [χ(z_\max) − χ(z_\min)] / N$, and the transverse side is the width of
the survey cone at the far end, $L_⊥ = θ_{\rm side}\,χ(z_\max)$ with
$θ_{\rm side} = \sqrt{\rm area}$ (a square field). Both change with Ω_m.

**Static shapes while the depth varies (padding + masking).** Array shapes
must not depend on Ω_m under `jit`. The cell size is fixed (0.39 h⁻¹ Mpc by
default, seed 001's resolution), and the mesh is sized once, at
construction, for the *largest* box over the Ω_m range the configuration
admits (`omega_m_min`: χ(z) decreases with Ω_m, so the smallest Ω_m gives
the largest box). Every box is simulated in that padded periodic box. The
cells beyond the true depth D(Ω_m) along the line of sight are masked with
a weight that is the fraction of the cell inside the depth,
$w_k = \mathrm{clip}(D/Δ − k, 0, 1)$, so the sum of the weights is exactly
$D/Δ$ and the projected maps are continuous (and differentiable) in Ω_m.
Transversely, nothing needs masking: the angular resampling
(`jaxcluster.survey.maps`) takes from each box only the part of it inside
the cone, which is narrower than the padded box. The cost is the padding,
at most $[χ_{Ω_{m,\min}} / χ_{Ω_m}]^3 − 1$ extra volume (32 % at Ω_m = 0.5
for the prior's Ω_m ≥ 0.1); the periodicity scale of the padded box is a
little larger than seed 001's, which only adds large-scale modes.

**Coordinates.** The lightcone axis is the mesh's last axis (z). Box b
spans the axial comoving distance
$χ_∥ ∈ [χ(z_\min) + bD,\ χ(z_\min) + (b+1)D]$ and is assigned the redshift
$z_b = z(χ_b)$ at its centre $χ_b = χ(z_\min) + (b + ½)D$, to which it is
evolved and painted. Sky positions are gnomonic (tangent-plane)
coordinates ξ = tan(angle from the axis): the ray with tangent coordinate ξ
crosses the plane at axial distance $χ_∥$ at transverse distance $ξ\,χ_∥$
exactly. Each box is projected as a whole at its central distance χ_b
(seed 001 projects the boxes separately); the footprint inside a box
therefore widens by ±D/(2χ_b) across its depth, which is ignored, as is the
difference between the radial and the axial distance off the axis
(≤ 0.15 % at the corner of a 20 deg² field).

Comoving lengths in h⁻¹ Mpc throughout.
"""

from __future__ import annotations

from typing import SupportsFloat, SupportsInt

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..cosmology import C_OVER_H0_MPC_H, Cosmology, E, comoving_distance
from ..nbody import PMConfig
from ..params import PRIOR_BOUNDS, check_scalar as _check

__all__ = ["LightconeGeometry", "BoxLayout", "redshift_at_distance", "box_layout", "los_weights"]

ARCMIN_RAD = math.pi / (180.0 * 60.0)


class LightconeGeometry(eqx.Module):
    """Static geometry of one lightcone: field, redshift range, boxes, cells, pixels.

    All fields are static (they fix array shapes). The padded box is sized in
    `__init__` for `omega_m_min` (module docstring).

    Args:
        area_deg2: survey area of one lightcone [deg²], a square field of side √area; (0, 400].
        z_min: redshift of the near face of the first box, [0.01, z_max).
        z_max: redshift of the far face of the last box, (z_min, 3].
        n_boxes: number of boxes along the line of sight, [1, 64].
        cell_size: comoving voxel side Δ [h⁻¹ Mpc], (0, 50]; 0.39 is seed 001's.
        pixel_arcmin: target angular pixel [arcmin], (0, 60]; the field side is
            divided into round(side / pixel) pixels, so the actual pixel
            (`pixel_rad`) is within half a pixel per field of this.
        omega_m_min: the smallest Ω_m the padded mesh must hold, [0.01, 1);
            default the prior's lower bound, 0.1. A run with a smaller Ω_m
            raises under `jit` (`eqx.error_if`).
        omega_m_max: the largest Ω_m allowed ((omega_m_min, 1], default the
            prior's 0.5); used only for the validity checks.
        perp_multiple: round the transverse cells n_⊥ up to a multiple of this,
            [1, 4096] (default 1): a box decomposed in x-slabs over P devices
            needs n_⊥ a multiple of P (`nbody.domain.SlabDecomposition`). The
            box only grows: the pixels see the same sky.

    Raises:
        ValueError: a value outside its range (the message names it).
    """

    area_deg2: float = eqx.field(static=True)
    z_min: float = eqx.field(static=True)
    z_max: float = eqx.field(static=True)
    n_boxes: int = eqx.field(static=True)
    cell_size: float = eqx.field(static=True)
    pixel_arcmin: float = eqx.field(static=True)
    omega_m_min: float = eqx.field(static=True)
    omega_m_max: float = eqx.field(static=True)
    n_perp: int = eqx.field(static=True)
    n_par: int = eqx.field(static=True)
    n_pix: int = eqx.field(static=True)
    perp_multiple: int = eqx.field(static=True)

    def __init__(
        self,
        area_deg2: SupportsFloat = 20.0,
        z_min: SupportsFloat = 0.1,
        z_max: SupportsFloat = 0.5,
        n_boxes: SupportsInt = 12,
        cell_size: SupportsFloat = 0.39,
        pixel_arcmin: SupportsFloat = 1.0,
        omega_m_min: SupportsFloat = PRIOR_BOUNDS["Omega_m"][0],
        omega_m_max: SupportsFloat = PRIOR_BOUNDS["Omega_m"][1],
        perp_multiple: SupportsInt = 1,
    ):
        self.area_deg2 = _check("area_deg2", area_deg2, 0.0, 400.0, low_open=True)
        self.z_max = _check("z_max", z_max, 0.01, 3.0, low_open=True)
        self.z_min = _check("z_min", z_min, 0.01, self.z_max)
        if not self.z_min < self.z_max:
            raise ValueError(f"z_min = {z_min!r} is outside its allowed range [0.01, z_max = {z_max}) (must be < z_max)")
        self.n_boxes = _check("n_boxes", n_boxes, 1, 64, integer=True)
        self.cell_size = _check("cell_size", cell_size, 0.0, 50.0, low_open=True)
        self.pixel_arcmin = _check("pixel_arcmin", pixel_arcmin, 0.0, 60.0, low_open=True)
        self.omega_m_min = _check("omega_m_min", omega_m_min, 0.01, 0.999)
        self.omega_m_max = _check("omega_m_max", omega_m_max, self.omega_m_min, 1.0)
        # Sizes from the largest box over the admitted Ω_m range (χ decreases with Ω_m).
        # The background is evaluated in numpy float64 so that the sizes do not
        # depend on whether x64 is enabled.
        chi_lo, chi_hi = _chi_numpy(self.omega_m_min, (self.z_min, self.z_max))
        depth = (chi_hi - chi_lo) / self.n_boxes
        width = self.side_rad * chi_hi
        # 1e-9 slack: a size that is an exact multiple of the cell does not gain a cell from round-off
        self.n_par = max(2, math.ceil(depth / self.cell_size - 1e-9))
        self.perp_multiple = _check("perp_multiple", perp_multiple, 1, 4096, integer=True)
        n_perp = max(2, math.ceil(width / self.cell_size - 1e-9))
        self.n_perp = self.perp_multiple * math.ceil(n_perp / self.perp_multiple)
        self.n_pix = max(1, round(self.side_rad / (self.pixel_arcmin * ARCMIN_RAD)))

    @property
    def side_rad(self) -> float:
        """Side of the square field [rad] (tangent-plane coordinate ξ)."""
        return math.radians(math.sqrt(self.area_deg2))

    @property
    def pixel_rad(self) -> float:
        """Actual angular pixel [rad]: the field side over `n_pix`."""
        return self.side_rad / self.n_pix

    @property
    def box_size(self) -> tuple[float, float, float]:
        """(L_⊥, L_⊥, L_∥) of the padded periodic box [h⁻¹ Mpc]."""
        return (self.n_perp * self.cell_size, self.n_perp * self.cell_size, self.n_par * self.cell_size)

    @property
    def mesh_shape(self) -> tuple[int, int, int]:
        """(n_⊥, n_⊥, n_∥) voxels (and particles) per box."""
        return (self.n_perp, self.n_perp, self.n_par)

    def pm_config(self, mesh_factor: int = 1) -> PMConfig:
        """The PM box: one particle per voxel, a force mesh `mesh_factor` times finer."""
        shape = self.mesh_shape
        return PMConfig(self.box_size, shape, tuple(mesh_factor * n for n in shape))


def _chi_numpy(omega_m: float, z) -> np.ndarray:
    """χ(z) [h⁻¹ Mpc] in numpy float64 for the flat ΛCDM background (static sizes only).

    The same Gauss–Legendre integral as `comoving_distance`, in numpy so that
    the mesh sizes do not depend on whether x64 is enabled.
    """
    x, w = np.polynomial.legendre.leggauss(64)
    a = 1.0 / (1.0 + np.asarray(z, dtype=np.float64))[..., None]
    half = 0.5 * (1.0 - a)
    ai = a + half * (x + 1.0)
    e = np.sqrt(omega_m * ai**-3 + (1.0 - omega_m))
    return C_OVER_H0_MPC_H * np.sum(w * half / (ai**2 * e), axis=-1)


def redshift_at_distance(cosmo: Cosmology, chi: Float[ArrayLike, "*c"], n_newton: int = 8) -> Float[Array, "*c"]:
    r"""Redshift at comoving distance χ [h⁻¹ Mpc], the inverse of `comoving_distance`.

    Newton's method on $χ(z) − χ_\star = 0$ with $dχ/dz = (c/H_0)/E(z)$,
    from the Hubble-law guess $z_0 = χ_\star H_0 / c$; 8 iterations reach
    float64 round-off for z ≲ 3. Differentiable (through the unrolled
    iterations) in χ and in the cosmology.

    Args:
        cosmo: cosmology.
        chi: comoving distance(s) [h⁻¹ Mpc], ≥ 0.
        n_newton: Newton iterations.

    Returns:
        z of the same shape.
    """
    chi = jnp.asarray(chi, dtype=jnp.result_type(cosmo.Omega_m))
    z = chi / C_OVER_H0_MPC_H
    for _ in range(n_newton):
        f = comoving_distance(cosmo, z) - chi
        z = jnp.maximum(z - f * E(cosmo, 1.0 / (1.0 + z)) / C_OVER_H0_MPC_H, 0.0)
    return z


class BoxLayout(eqx.Module):
    """Where the boxes of one lightcone lie for one cosmology (all arrays, float64 if enabled).

    Attributes:
        chi_edges: (n_boxes + 1,) axial comoving distances of the box faces [h⁻¹ Mpc].
        chi: (n_boxes,) axial comoving distance of each box centre [h⁻¹ Mpc].
        z: (n_boxes,) redshift of each box (at its centre), to which it is evolved.
        depth: true depth D of every box [h⁻¹ Mpc].
    """

    chi_edges: Float[Array, " n_edge"]
    chi: Float[Array, " n_box"]
    z: Float[Array, " n_box"]
    depth: Float[Array, ""]


def box_layout(cosmo: Cosmology, geometry: LightconeGeometry) -> BoxLayout:
    """Box faces, centres, redshifts and depth for `cosmo` (differentiable in Ω_m).

    Raises (under `jit` too, via `eqx.error_if`): Ω_m outside
    [omega_m_min, omega_m_max] of the geometry, whose padded mesh would not
    hold the box.
    """
    om = cosmo.Omega_m
    om = eqx.error_if(
        om, (om < geometry.omega_m_min * (1 - 1e-6)) | (om > geometry.omega_m_max * (1 + 1e-6)),  # float32 θ: 1e-6
        f"Omega_m is outside its allowed range [{geometry.omega_m_min}, {geometry.omega_m_max}] "
        "for this LightconeGeometry (its mesh is sized for omega_m_min)",
    )
    cosmo = eqx.tree_at(lambda c: c.Omega_m, cosmo, om)
    dtype = jnp.result_type(cosmo.Omega_m)
    ends = comoving_distance(cosmo, jnp.asarray([geometry.z_min, geometry.z_max], dtype=dtype))
    depth = (ends[1] - ends[0]) / geometry.n_boxes
    b = jnp.arange(geometry.n_boxes + 1, dtype=dtype)
    edges = ends[0] + b * depth
    centres = 0.5 * (edges[1:] + edges[:-1])
    return BoxLayout(chi_edges=edges, chi=centres, z=redshift_at_distance(cosmo, centres), depth=depth)


def los_weights(depth: Float[ArrayLike, ""], geometry: LightconeGeometry) -> Float[Array, " n_par"]:
    r"""Fraction of each line-of-sight cell inside the true depth, $w_k = \mathrm{clip}(D/Δ − k, 0, 1)$.

    Args:
        depth: true box depth D [h⁻¹ Mpc] (`box_layout(...).depth`).
        geometry: the lightcone geometry.

    Returns:
        (n_par,) weights in [0, 1]; $Σ_k w_k = D/Δ$ whenever D ≤ n_par Δ.
    """
    depth = jnp.asarray(depth)
    k = jnp.arange(geometry.n_par, dtype=depth.dtype)
    return jnp.clip(depth / geometry.cell_size - k, 0.0, 1.0)
