r"""Mock maps of one lightcone box: X-ray count rates (2 bands), projected DM density, Compton-y.

For each box the voxel fields (n_e, T from the eLDL; the CIC dark-matter
density) are **projected** along the line of sight (the mesh's last axis),
each cell weighted by the fraction of it inside the true box depth
(`lightcone.los_weights`), and **resampled** onto the survey's angular
pixels at the box's distance χ_b (`lightcone` module docstring: tangent-plane
coordinates ξ; a transverse comoving position x is seen at ξ = x / χ_b).

**Resampling conserves flux exactly.** Pixels and projected cells are both
axis-aligned regular grids, so the overlap of pixel p with cell c is a
product of 1-D interval overlaps $O_{pc}$ [h⁻¹ Mpc] (pixel edges at
$ξ_p χ_b$, cell edges at $(c ∓ ½ − n_⊥/2)Δ$: the CIC mesh holds cell c's
contents around its node cΔ, and the box's transverse centre is on the line of sight). Extensive quantities (count rates,
mass) use the fraction of the cell inside the pixel, $F_{pc} = O_{pc}/Δ$:
$M_{pq} = Σ_{ij} F_{pi} F_{qj} m_{ij}$, so the map's total is the total of the
cells inside the footprint (all of a cell for a cell wholly inside), to
round-off. Intensive quantities (Compton-y, ρ/ρ_c) use the pixel average,
$O_{pc}/(δξ\,χ_b)$. Near boxes have cells larger than a pixel (a 0.39
h⁻¹ Mpc cell is 4.5′ at z = 0.1), far boxes about one pixel per cell.

**X-ray.** Count rates per voxel are `jaxcluster.xray.count_rate` on the
comoving $n_e = (n_e/\bar n_e)\,\bar n_e$ (`baryons.train.mean_electron_density`)
at the box redshift, with voxel volume Δ³ (comoving).

**Compton-y.** $y = \frac{σ_T}{m_e c^2}\int P_e\,dl$ with $P_e = n_e k T$
(physical): per cell $n_{e,\rm phys} = n_{e,\rm com}(1+z)^3$ and
$dl = Δ\,(\mathrm{Mpc}/h)/(1+z)$, hence
$y_{\rm column} = \frac{σ_T}{m_e c^2}(1+z)^2 \frac{\mathrm{Mpc}}{h} Σ_k w_k n_{e,\rm com} kT\,Δ$
(σ_T = 6.6524587321 × 10⁻²⁵ cm², m_e c² = 510.99895 keV, CODATA 2018).

**Dark matter.** The particles are all matter (a DMO run carries Ω_m);
mass per cell $(1+δ)\,Ω_m ρ_{c,0} Δ^3$ [h⁻¹ M☉] and the line-of-sight mean
of $ρ_m/ρ_c(z) = (1+δ)\,Ω_m(1+z)^3/E(z)^2$ (seed 001 §4.2 detects on such
ρ_DM/ρ_c maps for its mass estimates).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..baryons.eldl import ExtendedLDL
from ..baryons.ldl import paint_one_plus_delta
from ..baryons.train import mean_electron_density
from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, E
from ..nbody.mesh import MeshOps
from ..params import ThetaSim
from ..xray.countrate import MPC_CM, count_rate
from ..xray.emissivity import EmissivityTable
from .lightcone import LightconeGeometry, los_weights

__all__ = [
    "SIGMA_T_CM2",
    "ME_C2_KEV",
    "BoxMaps",
    "overlap_lengths",
    "resampling_weights",
    "resample",
    "voxel_count_rates",
    "compton_y_columns",
    "BoxColumns",
    "box_columns",
    "project_columns",
    "box_maps",
]

SIGMA_T_CM2 = 6.6524587321e-25  # Thomson cross-section [cm²] (CODATA 2018)
ME_C2_KEV = 510.99895000  # electron rest energy [keV] (CODATA 2018)


class BoxMaps(eqx.Module):
    """The maps of one box on the survey's angular pixels (pixel (i, j): ξ_x index i, ξ_y index j).

    Attributes:
        count_rate: (n_pix, n_pix, n_band) count rate per pixel [counts s⁻¹]
            (bands of the emissivity table: [0.5–1], [1–2] keV by default).
        mass: (n_pix, n_pix) projected matter mass per pixel [h⁻¹ M☉].
        rho_over_rho_c: (n_pix, n_pix) line-of-sight mean of ρ_m/ρ_c(z_b), pixel average.
        y: (n_pix, n_pix) Compton-y of the box, pixel average (dimensionless).
    """

    count_rate: Float[Array, "n_pix n_pix n_band"]
    mass: Float[Array, "n_pix n_pix"]
    rho_over_rho_c: Float[Array, "n_pix n_pix"]
    y: Float[Array, "n_pix n_pix"]


def overlap_lengths(a_edges: Float[Array, " na1"], b_edges: Float[Array, " nb1"]) -> Float[Array, "na nb"]:
    """Length of the overlap of every interval [a_i, a_{i+1}] with every [b_j, b_{j+1}] (≥ 0)."""
    lo = jnp.maximum(a_edges[:-1, None], b_edges[None, :-1])
    hi = jnp.minimum(a_edges[1:, None], b_edges[None, 1:])
    return jnp.maximum(hi - lo, 0.0)


def resampling_weights(
    chi: Float[ArrayLike, ""], geometry: LightconeGeometry, dtype=None
) -> tuple[Float[Array, "n_pix n_perp"], Float[Array, "n_pix n_perp"]]:
    """1-D cell → pixel weights at axial distance χ [h⁻¹ Mpc] (module docstring).

    Returns:
        (F, A): F[p, c] = fraction of cell c inside pixel p (flux-conserving);
        A[p, c] = fraction of pixel p covered by cell c (pixel average).
    """
    dtype = dtype or jnp.result_type(float)
    chi = jnp.asarray(chi).astype(dtype)
    n_pix, n_perp, cell = geometry.n_pix, geometry.n_perp, geometry.cell_size
    xi_edges = (jnp.arange(n_pix + 1, dtype=dtype) - 0.5 * n_pix) * geometry.pixel_rad
    pix_edges = xi_edges * chi  # comoving transverse [h⁻¹ Mpc]
    # CIC puts cell c's contents around its node cΔ, so the cell spans
    # (c ± ½)Δ; the box's transverse centre L/2 is on the line of sight.
    cell_edges = (jnp.arange(n_perp + 1, dtype=dtype) - 0.5 * (n_perp + 1)) * cell
    overlap = overlap_lengths(pix_edges, cell_edges)
    return overlap / cell, overlap / (geometry.pixel_rad * chi)


def resample(columns: Float[Array, "n_perp n_perp *c"], weights: Float[Array, "n_pix n_perp"]) -> Float[Array, "n_pix n_pix *c"]:
    """Apply 1-D weights along both transverse axes: out[p, q] = Σ_ij W[p, i] W[q, j] columns[i, j]."""
    return jnp.einsum("pi,qj,ij...->pq...", weights, weights, columns)


def voxel_count_rates(
    table: EmissivityTable,
    n_e_cm3: Float[Array, "*v"],
    T_keV: Float[Array, "*v"],
    z: Float[ArrayLike, ""],
    voxel_volume_Mpc3_h3: float,
    cosmo: Cosmology,
) -> Float[Array, "*v n_band"]:
    """Count rate of each voxel [counts s⁻¹], with no emission from gas colder than the table.

    The emissivity table clips T below its first knot (0.1 keV for the
    default) *up* to that knot, so cold diffuse gas (the IGM at 10⁴ K, or
    the eLDL's T = 0 where its ReLU is off) would emit like 0.1 keV plasma
    over the whole volume, a spurious background that swamps faint
    clusters. Such gas emits essentially nothing in the 0.5–2 keV bands, so
    its count rate is set to zero here — the one place where voxel emission
    is computed for the survey. The table is evaluated at a safe T there
    (count_rate requires T > 0).

    Args:
        table: count-rate `EmissivityTable` (quantity "photon").
        n_e_cm3: comoving electron density [cm⁻³], ≥ 0.
        T_keV: temperature [keV], ≥ 0.
        z: box redshift.
        voxel_volume_Mpc3_h3: comoving voxel volume [h⁻³ Mpc³].
        cosmo: cosmology.

    Returns:
        (*v, n_band) count rates [counts s⁻¹].
    """
    T_min = 10.0 ** table.log10_T_keV[0].astype(T_keV.dtype)
    emits = T_keV >= T_min
    T_safe = jnp.where(emits, T_keV, T_min)
    cr = count_rate(table, n_e_cm3, T_safe, z, voxel_volume_Mpc3_h3, cosmo)
    return jnp.where(emits[..., None], cr, 0.0)


def compton_y_columns(
    n_e_cm3: Float[Array, "nx ny nz"],
    T_keV: Float[Array, "nx ny nz"],
    weights: Float[Array, " nz"],
    z: Float[ArrayLike, ""],
    cell_size: float,
    h: Float[ArrayLike, ""],
) -> Float[Array, "nx ny"]:
    r"""Compton-y of each line-of-sight column, $\frac{σ_T}{m_e c^2}\int n_e kT\,dl$ (module docstring).

    Args:
        n_e_cm3: comoving electron density [cm⁻³].
        T_keV: electron temperature [keV].
        weights: (nz,) fraction of each cell inside the box depth.
        z: box redshift.
        cell_size: comoving cell Δ [h⁻¹ Mpc].
        h: H₀ / (100 km s⁻¹ Mpc⁻¹).

    Returns:
        (nx, ny) y per column (dimensionless).
    """
    dtype = n_e_cm3.dtype
    opz = 1.0 + jnp.asarray(z).astype(dtype)
    const = SIGMA_T_CM2 * MPC_CM / ME_C2_KEV  # [cm² · cm / keV] ~ 4e-3, float32-safe
    pe_dl = jnp.sum(n_e_cm3 * T_keV * weights.astype(dtype)[None, None, :], axis=-1)  # [cm⁻³ keV] × cells
    return const * opz**2 * pe_dl * (cell_size / jnp.asarray(h).astype(dtype))


class BoxColumns(eqx.Module):
    """The line-of-sight columns of one box, per transverse cell (before resampling onto pixels).

    Attributes:
        count_rate: (n_⊥, n_⊥, n_band) count rate of each column [counts s⁻¹].
        mass: (n_⊥, n_⊥) matter mass of each column [h⁻¹ M☉].
        rho_over_rho_c: (n_⊥, n_⊥) line-of-sight mean of ρ_m/ρ_c(z).
        y: (n_⊥, n_⊥) Compton-y of each column.
    """

    count_rate: Float[Array, "nx ny n_band"]
    mass: Float[Array, "nx ny"]
    rho_over_rho_c: Float[Array, "nx ny"]
    y: Float[Array, "nx ny"]


def box_columns(
    pos: Float[Array, "n_ptcl 3"],
    theta: ThetaSim,
    z: Float[ArrayLike, ""],
    depth: Float[ArrayLike, ""],
    geometry: LightconeGeometry,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    cosmo: Cosmology,
    mesh_ops: MeshOps | None = None,
) -> BoxColumns:
    """The projected columns of one box from its particles (arguments as `box_maps`).

    `mesh_ops`: None (the whole box on this device) or, inside `shard_map`, one
    device's `nbody.domain.SlabMesh`: the particles are then this device's
    and the columns its x-slab (the line of sight, the mesh's last axis, is
    never decomposed, so the projection needs no communication).
    """
    dtype = pos.dtype
    shape, box = geometry.mesh_shape, geometry.box_size
    cell = geometry.cell_size
    z = jnp.asarray(z).astype(dtype)
    w = los_weights(jnp.asarray(depth), geometry).astype(dtype)
    # n̄_e = Ω_b ρ_c0 h² / (μ_e m_p) depends on Ω_b and h only, which θ_sim never varies
    # (Cosmology.from_theta keeps the CAMELS values), so the fiducial value is exact here
    # and a Python float under jit (evaluated eagerly).
    with jax.ensure_compile_time_eval():
        n_e_mean = mean_electron_density()
    n_e_rel, T = eldl(pos, theta, z, box, shape, mesh_ops)
    n_e = n_e_rel.astype(dtype) * jnp.asarray(n_e_mean, dtype)
    T = T.astype(dtype)
    cr_vox = voxel_count_rates(table, n_e, T, z, cell**3, cosmo)
    cr_cols = jnp.sum(cr_vox * w[None, None, :, None], axis=2)  # (n⊥, n⊥, n_band)
    y_cols = compton_y_columns(n_e, T, w, z, cell, cosmo.h)
    one_plus_delta = paint_one_plus_delta(pos, box, shape, mesh_ops)
    om = cosmo.Omega_m.astype(dtype)
    column_density = jnp.sum(one_plus_delta * w[None, None, :], axis=-1)  # Σ_k w_k (1 + δ_k)
    mass_cols = column_density * (om * RHO_CRIT0_MSUN_H2_MPC3 * cell**3)
    a = 1.0 / (1.0 + z)
    om_z = om * a**-3 / E(cosmo, a.astype(cosmo.Omega_m.dtype)).astype(dtype) ** 2
    rho_cols = column_density / jnp.sum(w) * om_z
    return BoxColumns(count_rate=cr_cols, mass=mass_cols, rho_over_rho_c=rho_cols, y=y_cols)


def project_columns(columns: BoxColumns, chi: Float[ArrayLike, ""], geometry: LightconeGeometry) -> BoxMaps:
    """Resample a box's columns onto the survey pixels at axial distance χ [h⁻¹ Mpc] (module docstring).

    Works on columns laid out in x-slabs over devices too: the contraction over
    the transverse cells becomes per-device partial sums and one reduction.
    """
    flux_w, mean_w = resampling_weights(chi, geometry, columns.mass.dtype)
    return BoxMaps(
        count_rate=resample(columns.count_rate, flux_w),
        mass=resample(columns.mass, flux_w),
        rho_over_rho_c=resample(columns.rho_over_rho_c, mean_w),
        y=resample(columns.y, mean_w),
    )


def box_maps(
    pos: Float[Array, "n_ptcl 3"],
    theta: ThetaSim,
    z: Float[ArrayLike, ""],
    chi: Float[ArrayLike, ""],
    depth: Float[ArrayLike, ""],
    geometry: LightconeGeometry,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    cosmo: Cosmology,
) -> BoxMaps:
    """All maps of one box from its particles: `box_columns`, then `project_columns`.

    Args:
        pos: (n_ptcl, 3) comoving particle positions [h⁻¹ Mpc] in the padded box (any periodic image).
        theta: θ_sim (the eLDL's conditioning).
        z: box redshift.
        chi: axial comoving distance of the box centre [h⁻¹ Mpc].
        depth: true box depth [h⁻¹ Mpc].
        geometry: lightcone geometry (mesh and pixels).
        eldl: an `ExtendedLDL` (`baryons.default_eldl()`).
        table: count-rate emissivity table (`xray.default_emissivity_table()`).
        cosmo: the cosmology of θ_sim.

    Returns:
        `BoxMaps`.
    """
    columns = box_columns(pos, theta, z, depth, geometry, eldl, table, cosmo)
    return project_columns(columns, chi, geometry)
