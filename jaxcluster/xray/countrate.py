r"""Per-voxel X-ray count rates and energy fluxes from comoving (n_e, T) meshes.

Inputs follow ARCHITECTURE §2: the electron density is **comoving**,
$n_{e,\rm phys} = n_{e,\rm com}(1+z)^3$ [cm⁻³]; voxel volumes are comoving
[h⁻³ Mpc³], $V_{\rm phys} = V_{\rm com}\,(\mathrm{Mpc}/h)^3/(1+z)^3$; T in keV.

Emission measure (physical): $\mathrm{EM} = n_e n_H V$ with
$n_H = n_e / 1.2$ (fully ionised H + He + 0.3-solar metals with AG89
abundances: `electron_to_hydrogen_ratio(0.3)` = 1.199), hence

$$ \mathrm{EM} = \frac{n_{e,\rm com}^2\,(1+z)^3\,V_{\rm com}}{1.2}\,\left(\frac{\mathrm{Mpc}}{h}\right)^3
\quad [\mathrm{cm}^{-3}], $$

($(1+z)^6$ from the two densities, $(1+z)^{-3}$ from the volume). The count
rate in band b is

$$ \mathrm{CR}_b = \frac{\mathrm{EM}\; ε_b(T, z)}{4π D_L^2} \quad [\text{counts s}^{-1}], $$

with $D_L$ from `jaxcluster.cosmology.luminosity_distance` (h⁻¹ Mpc,
converted with h to cm). The table ε_b (`EmissivityTable`, quantity
"photon") already holds the energy redshift $E_r = (1+z)E$ and the factor
$(1+z)$ of ARCHITECTURE §2's
$\mathrm{CR} = \mathrm{EM}\sum_E ε(E(1+z),T)A(E)(1+z)/(4πD_L^2)$ — the
time dilation $(1+z)^{-1}$ times the $(1+z)^2$ by which $4πD_L^2$ exceeds the
photon-collecting sphere $4πD_M^2$. This function adds only EM and $D_L$.

The energy flux uses the same $\mathrm{EM}/(4πD_L^2)$ with an energy table
(erg cm³ s⁻¹): $F_b = \mathrm{EM}\,ε^E_b/(4πD_L^2)$ [erg s⁻¹ cm⁻²].

Numerics: EM in cm⁻³ overflows float32 (~10⁶⁵ for a cluster voxel), so
$\mathrm{EM}/(4πD_L^2)$ is formed as
$n_{e,\rm com}^2(1+z)^3 V_{\rm com}\,\mathrm{Mpc}_{\rm cm}/(1.2\,·4π\,h\,D_{L,h}^2)$
(cm³/cm² leaves one Mpc in cm, 3.1 × 10²⁴), which float32 holds.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..cosmology import Cosmology, luminosity_distance
from .emissivity import EmissivityTable

__all__ = ["MPC_CM", "NE_OVER_NH", "flux_factor", "count_rate", "energy_flux", "hardness_ratio"]

MPC_CM = 3.0856775814913673e24  # 1 Mpc [cm] (IAU 2015)
NE_OVER_NH = 1.2  # n_e / n_H, fully ionised plasma (1.199 for AG89 H, He + 0.3 Z_sun)


def _dtype(x):
    x = jnp.asarray(x)
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)


def flux_factor(
    n_e_cm3: Float[ArrayLike, "*v"],
    z: Float[ArrayLike, "*#v"],
    voxel_volume_Mpc3_h3: Float[ArrayLike, "*#v"],
    cosmo: Cosmology,
    *,
    ne_over_nH: float = NE_OVER_NH,
) -> Float[Array, "*v"]:
    """Emission measure over 4π D_L², EM / (4π D_L²) [cm⁻⁵].

    Args:
        n_e_cm3: comoving electron density $n_{e,\\rm com}$ [cm⁻³], ≥ 0, shape (*v).
        z: redshift (of the box, or per voxel), broadcastable to (*v).
        voxel_volume_Mpc3_h3: comoving voxel volume [h⁻³ Mpc³], > 0, broadcastable.
        cosmo: cosmology for $D_L(z)$ and h.
        ne_over_nH: $n_e/n_H$ (1.2 by default, module docstring).

    Returns:
        (*v) EM / (4π D_L²) [cm⁻⁵], in n_e_cm3's float dtype.
    """
    if not ne_over_nH > 0:
        raise ValueError(f"ne_over_nH = {ne_over_nH}: must be > 0")
    dtype = _dtype(n_e_cm3)
    n_e = jnp.asarray(n_e_cm3).astype(dtype)
    z = jnp.asarray(z).astype(dtype)
    vol = jnp.asarray(voxel_volume_Mpc3_h3).astype(dtype)
    n_e = eqx.error_if(n_e, ~(n_e >= 0), "n_e_cm3 must be >= 0 (and not NaN)")
    vol = eqx.error_if(vol, ~(vol > 0), "voxel_volume_Mpc3_h3 must be > 0")
    z = eqx.error_if(z, ~(z > 0), "z must be > 0 (D_L = 0 at z = 0)")
    # distances in the cosmology's own precision, then cast to the fields' dtype
    d_l = luminosity_distance(cosmo, z.astype(cosmo.h.dtype)).astype(dtype)  # [h⁻¹ Mpc]
    h = cosmo.h.astype(dtype)
    opz = 1.0 + z
    # n_e,phys n_H V_phys / (4π D_L²) with everything in cm, rearranged to stay in float32 range
    return n_e**2 * opz**3 * vol * (MPC_CM / (ne_over_nH * 4.0 * math.pi)) / (h * d_l**2)


def _apply(table, quantity, n_e_cm3, T_keV, z, voxel_volume_Mpc3_h3, cosmo, ne_over_nH):
    if table.quantity != quantity:
        raise ValueError(f"table.quantity = {table.quantity!r}: this function needs a {quantity!r} table")
    dtype = _dtype(n_e_cm3)
    n_e = jnp.asarray(n_e_cm3).astype(dtype)
    T = jnp.asarray(T_keV).astype(dtype)
    if T.shape != n_e.shape:
        raise ValueError(f"T_keV shape {T.shape} != n_e_cm3 shape {n_e.shape}")
    ff = flux_factor(n_e, z, voxel_volume_Mpc3_h3, cosmo, ne_over_nH=ne_over_nH)
    # a scalar z (one box) takes the table's faster single-redshift path
    return ff[..., None] * table(T, jnp.asarray(z).astype(dtype))


def count_rate(
    table: EmissivityTable,
    n_e_cm3: Float[ArrayLike, "*v"],
    T_keV: Float[ArrayLike, "*v"],
    z: Float[ArrayLike, "*#v"],
    voxel_volume_Mpc3_h3: Float[ArrayLike, "*#v"],
    cosmo: Cosmology,
    *,
    ne_over_nH: float = NE_OVER_NH,
) -> Float[Array, "*v n_band"]:
    """Count rate of each voxel in each band of the table [counts s⁻¹].

    $\\mathrm{CR}_b = \\mathrm{EM}\\,ε_b(T, z)/(4πD_L^2)$ (module docstring for
    the (1+z) bookkeeping). jit/vmap/grad-able in n_e, T, z and the cosmology.

    Args:
        table: a count-rate `EmissivityTable` (quantity "photon"), e.g.
            `default_emissivity_table()` (EPIC-pn, [0.5–1] and [1–2] keV).
        n_e_cm3: comoving electron density [cm⁻³], shape (*v).
        T_keV: gas temperature kT [keV], shape (*v).
        z: redshift of the box (scalar) or per voxel, > 0.
        voxel_volume_Mpc3_h3: comoving voxel volume [h⁻³ Mpc³].
        cosmo: cosmology (luminosity distance).
        ne_over_nH: n_e / n_H (default 1.2).

    Returns:
        (*v, n_band) count rates [counts s⁻¹] in n_e_cm3's float dtype.
    """
    return _apply(table, "photon", n_e_cm3, T_keV, z, voxel_volume_Mpc3_h3, cosmo, ne_over_nH)


def energy_flux(
    table: EmissivityTable,
    n_e_cm3: Float[ArrayLike, "*v"],
    T_keV: Float[ArrayLike, "*v"],
    z: Float[ArrayLike, "*#v"],
    voxel_volume_Mpc3_h3: Float[ArrayLike, "*#v"],
    cosmo: Cosmology,
    *,
    ne_over_nH: float = NE_OVER_NH,
) -> Float[Array, "*v n_band"]:
    """Energy flux of each voxel in each observer-frame band [erg s⁻¹ cm⁻²].

    Args:
        table: an energy `EmissivityTable` (quantity "energy"), e.g.
            `default_energy_table()` (observer-frame 0.5–2 keV).
        n_e_cm3: comoving electron density [cm⁻³], shape (*v).
        T_keV: gas temperature kT [keV], shape (*v).
        z: redshift of the box (scalar) or per voxel, > 0.
        voxel_volume_Mpc3_h3: comoving voxel volume [h⁻³ Mpc³].
        cosmo: cosmology (luminosity distance).
        ne_over_nH: n_e / n_H (default 1.2).

    Returns:
        (*v, n_band) $F_b = \\mathrm{EM}\\,ε^E_b/(4πD_L^2)$ [erg s⁻¹ cm⁻²].
    """
    return _apply(table, "energy", n_e_cm3, T_keV, z, voxel_volume_Mpc3_h3, cosmo, ne_over_nH)


def hardness_ratio(
    count_rates: Float[Array, "*v n_band"], *, soft: int = 0, hard: int = 1
) -> Float[Array, "*v"]:
    """HR = CR[hard] / CR[soft]; for the default table CR[1–2 keV] / CR[0.5–1 keV]."""
    return count_rates[..., hard] / count_rates[..., soft]
