r"""Cluster profiles: GNFW pressure (Battaglia et al. 2012, Arnaud et al. 2010), NFW density, measured radial profiles.

**GNFW** (Nagai et al. 2007): $p(x) = P_0 / [(c x)^γ (1 + (c x)^α)^{(β-γ)/α}]$.

* **Battaglia et al. (2012, ApJ 758, 75)**, AGN feedback, Δ = 200c, thermal
  (total gas) pressure $P_{th} = P_{200}\,P_0 (x/x_c)^{γ}[1 + (x/x_c)^{α}]^{-β}$,
  $x = r/R_{200c}$, α = 1, γ = −0.3, and the published mass and redshift
  dependence $A = A_0 (M_{200c}/10^{14} M_☉)^{α_m} (1+z)^{α_z}$ of
  $P_0$ (18.1, 0.154, −0.758), $x_c$ (0.497, −0.00865, 0.731), β (4.35, 0.0393, 0.415)
  (their Table 1; the shape is `baryons.icm.battaglia12_pressure`, which the
  synthetic gas model paints); $P_{200} = G M_{200c}\,200 ρ_c(z) f_b / (2 R_{200c})$,
  $f_b = Ω_b/Ω_m$. In the GNFW form: $c = 1/x_c$, $γ_{\rm GNFW} = 0.3$,
  $β_{\rm GNFW} = β + 0.3$. Electron pressure $P_e = P_{th}\,(2 + 2X_H)/(3 + 5X_H)$
  (fully ionised H + He, $X_H = 0.76$: 0.518).
* **Arnaud et al. (2010, A&A 517, A92)**, the universal *electron* pressure
  profile (their eq. 11–13): $P_0 = 8.403\,h_{70}^{-3/2}$, $c_{500} = 1.177$,
  γ = 0.3081, α = 1.0510, β = 5.4905, $x = r/R_{500c}$,
  $P(r) = P_{500}\,p(x)\,[M_{500}/(3\times10^{14} h_{70}^{-1} M_☉)]^{α_P + α'_P(x)}$ with
  $P_{500} = 1.65\times10^{-3} E(z)^{8/3} [M_{500}/(3\times10^{14} h_{70}^{-1}M_☉)]^{2/3} h_{70}^2$ keV cm⁻³,
  $α_P = 0.12$, $α'_P(x) = 0.10 - (α_P + 0.10)\,(x/0.5)^3/(1 + (x/0.5)^3)$.
  Their Y–M relation for the spherical $Y(R_{500})$ (eq. 22):
  $E(z)^{-2/3} Y_{500} = 10^{-4.739} (M_{500}/3\times10^{14} h_{70}^{-1}M_☉)^{1.787} h_{70}^{-5/2}$ Mpc²
  is what integrating this profile gives (tested).

**Units**: masses in h⁻¹ M☉ (converted to M☉ for the fits), SO radii
comoving h⁻¹ Mpc (as `halos.HaloCatalogue`), pressures physical keV cm⁻³,
integrated Y in physical Mpc².

**Radial profiles** (`radial_profile`): the mean of a 2-D or 3-D periodic
mesh field in annuli / shells around a centre (cell i centred at $iΔ$,
distances by the minimum image).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..baryons.icm import battaglia12_pressure as _battaglia12_shape
from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, E
from ..halos.nfw import nfw_mu
from ..io.snapshots import KEV_ERG, MPC_CM, SOLAR_MASS_G, X_H
from ..survey.maps import ME_C2_KEV, SIGMA_T_CM2

__all__ = [
    "ELECTRON_PRESSURE_FRACTION",
    "gnfw",
    "overdensity_radius",
    "pressure_200c",
    "battaglia12_pressure",
    "battaglia12_gnfw_parameters",
    "arnaud10_pressure",
    "ARNAUD10",
    "spherical_Y",
    "compton_y_profile",
    "nfw_density",
    "radial_profile",
]

ELECTRON_PRESSURE_FRACTION = (2.0 + 2.0 * X_H) / (3.0 + 5.0 * X_H)  # P_e / P_th, fully ionised H + He (0.518)
ARNAUD10 = {"P0_h70": 8.403, "c500": 1.177, "gamma": 0.3081, "alpha": 1.0510, "beta": 5.4905, "alpha_P": 0.12}
_G_CGS = 6.67430e-8  # cm³ g⁻¹ s⁻²
# G M☉ (M☉/Mpc³) / Mpc in keV cm⁻³: P200 = this · (M/M☉)(ρ/(M☉ Mpc⁻³)) / (R/Mpc) · 200 f_b / 2.
_G_PRESSURE_KEV_CM3 = _G_CGS * SOLAR_MASS_G**2 / MPC_CM**4 / KEV_ERG
_Y_CONST_MPC2 = SIGMA_T_CM2 / ME_C2_KEV * MPC_CM  # σ_T/(m_e c²) [cm²/keV] × Mpc/cm: ∫P dV [keV cm⁻³ Mpc³] → Mpc²


def gnfw(x: Float[ArrayLike, "*x"], P0, c, alpha, beta, gamma) -> Float[Array, "..."]:
    r"""Generalised NFW shape $P_0 / [(c x)^γ (1 + (c x)^α)^{(β-γ)/α}]$ (parameters broadcast with x)."""
    u = jnp.asarray(c) * jnp.asarray(x)
    return P0 / (u**gamma * (1.0 + u**alpha) ** ((beta - gamma) / alpha))


def _rho_crit_Msun_Mpc3(z, cosmo: Cosmology, dtype):
    """Physical ρ_c(z) [M☉ Mpc⁻³]."""
    a = 1.0 / (1.0 + jnp.asarray(z, dtype=cosmo.Omega_m.dtype))
    return (RHO_CRIT0_MSUN_H2_MPC3 * cosmo.h**2 * E(cosmo, a) ** 2).astype(dtype)


def overdensity_radius(M: Float[ArrayLike, "..."], delta: float, z: Float[ArrayLike, ""], cosmo: Cosmology) -> Float[Array, "..."]:
    r"""Comoving $R_Δ$ [h⁻¹ Mpc] of mass $M_Δ$ [h⁻¹ M☉]: $M_Δ = \frac43 π R_Δ^3 Δ ρ_c(z)$ (R physical)."""
    M = jnp.asarray(M)
    dtype = M.dtype if jnp.issubdtype(M.dtype, jnp.floating) else jnp.result_type(float)
    h = cosmo.h.astype(dtype)
    R_phys = (3.0 * (M / h) / (4.0 * math.pi * delta * _rho_crit_Msun_Mpc3(z, cosmo, dtype))) ** (1.0 / 3.0)  # Mpc
    return R_phys * (1.0 + jnp.asarray(z, dtype=dtype)) * h


def pressure_200c(M200c: Float[ArrayLike, "..."], z: Float[ArrayLike, ""], cosmo: Cosmology) -> Float[Array, "..."]:
    r"""$P_{200} = G M_{200c}\,200 ρ_c(z)\,f_b / (2 R_{200c})$ [keV cm⁻³, physical] for $M_{200c}$ in h⁻¹ M☉."""
    M = jnp.asarray(M200c)
    dtype = M.dtype
    h = cosmo.h.astype(dtype)
    rho_c = _rho_crit_Msun_Mpc3(z, cosmo, dtype)
    R_phys = overdensity_radius(M, 200.0, z, cosmo) / h / (1.0 + jnp.asarray(z, dtype=dtype))
    f_b = (cosmo.Omega_b / cosmo.Omega_m).astype(dtype)
    return _G_PRESSURE_KEV_CM3 * (M / h) * rho_c * 100.0 * f_b / R_phys


def battaglia12_gnfw_parameters(M200c: Float[ArrayLike, "..."], z: Float[ArrayLike, ""], cosmo: Cosmology) -> dict[str, Array]:
    """Battaglia et al. (2012) AGN-model P₀, x_c, β at M_200c [h⁻¹ M☉] and z (Table 1 mass and z scaling)."""
    M = jnp.asarray(M200c)
    M14 = M / cosmo.h.astype(M.dtype) / 1e14
    opz = 1.0 + jnp.asarray(z, dtype=M.dtype)
    return {"P0": 18.1 * M14**0.154 * opz**-0.758, "xc": 0.497 * M14**-0.00865 * opz**0.731,
            "beta": 4.35 * M14**0.0393 * opz**0.415}


def battaglia12_pressure(
    x: Float[ArrayLike, "*x"], M200c: Float[ArrayLike, "..."], z: Float[ArrayLike, ""], cosmo: Cosmology,
    electron: bool = True,
) -> Float[Array, "..."]:
    r"""Battaglia et al. (2012) pressure at $x = r/R_{200c}$ [keV cm⁻³, physical].

    Args:
        x: r / R_200c (> 0).
        M200c: halo mass [h⁻¹ M☉].
        z: redshift.
        cosmo: cosmology (h, f_b, ρ_c(z)).
        electron: electron pressure $P_e$ (default) or the thermal pressure $P_{th}$ of the fit.
    """
    x = jnp.asarray(x)
    M = jnp.asarray(M200c, dtype=x.dtype)
    shape = jnp.broadcast_shapes(x.shape, M.shape)
    x, M = jnp.broadcast_to(x, shape), jnp.broadcast_to(M, shape)
    shape = _battaglia12_shape(x, M / cosmo.h.astype(x.dtype), jnp.asarray(z, dtype=x.dtype))
    P = pressure_200c(M, z, cosmo) * shape
    return P * ELECTRON_PRESSURE_FRACTION if electron else P


def arnaud10_pressure(
    x: Float[ArrayLike, "*x"], M500c: Float[ArrayLike, "..."], z: Float[ArrayLike, ""], cosmo: Cosmology,
    mass_running: bool = True,
) -> Float[Array, "..."]:
    r"""Arnaud et al. (2010) universal electron pressure at $x = r/R_{500c}$ [keV cm⁻³, physical].

    Args:
        x: r / R_500c (> 0).
        M500c: mass [h⁻¹ M☉].
        z: redshift.
        cosmo: cosmology ($h_{70} = h/0.7$, E(z)).
        mass_running: include the $[M/3\times10^{14}]^{α_P + α'_P(x)}$ factor (their eq. 13);
            False gives the standard self-similar $P_{500}\,p(x)$ (their eq. 11 with eq. 12).
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    h70 = (cosmo.h / 0.7).astype(dtype)
    a = 1.0 / (1.0 + jnp.asarray(z, dtype=cosmo.Omega_m.dtype))
    Ez = E(cosmo, a).astype(dtype)
    m = jnp.asarray(M500c, dtype=dtype) / cosmo.h.astype(dtype) / (3e14 / h70)  # M500 / (3e14 h70⁻¹ M☉)
    P500 = 1.65e-3 * Ez ** (8.0 / 3.0) * m ** (2.0 / 3.0) * h70**2
    A = ARNAUD10
    p = gnfw(x, A["P0_h70"] * h70**-1.5, A["c500"], A["alpha"], A["beta"], A["gamma"])
    if mass_running:
        s = (x / 0.5) ** 3
        p = p * m ** (A["alpha_P"] + 0.10 - (A["alpha_P"] + 0.10) * s / (1.0 + s))
    return P500 * p


def _gauss_legendre(n: int, lo, hi):
    t, w = np.polynomial.legendre.leggauss(n)
    mid, half = 0.5 * (hi + lo), 0.5 * (hi - lo)
    return mid + half * jnp.asarray(t, dtype=jnp.result_type(lo, hi)), half * jnp.asarray(w, dtype=jnp.result_type(lo, hi))


def spherical_Y(
    pressure: Callable[[Array], Array], R: Float[ArrayLike, ""], r_min: float = 1e-4, n: int = 256
) -> Float[Array, ""]:
    r"""$Y_{\rm sph}(<R) = \frac{σ_T}{m_e c^2}\int_0^R 4π r^2 P_e(r)\,dr$ [Mpc²], Gauss–Legendre in ln r.

    Args:
        pressure: $P_e(r)$ [keV cm⁻³] as a function of *physical* r [Mpc].
        R: outer physical radius [Mpc].
        r_min: inner cut as a fraction of R (the GNFW integrand $r^{3-γ}$ vanishes there).
        n: quadrature nodes.
    """
    R = jnp.asarray(R)
    lnr, w = _gauss_legendre(n, jnp.log(R * r_min), jnp.log(R))
    r = jnp.exp(lnr)
    return _Y_CONST_MPC2 * 4.0 * math.pi * jnp.sum(w * r**3 * pressure(r))


def compton_y_profile(
    pressure: Callable[[Array], Array], R_perp: Float[ArrayLike, " n"], r_max: Float[ArrayLike, ""], n: int = 256
) -> Float[Array, " n"]:
    r"""Projected $y(R_⊥) = \frac{σ_T}{m_e c^2}\,2\int_0^{l_{\max}} P_e(\sqrt{R_⊥^2 + l^2})\,dl$, truncated at r_max.

    Substituting $l = R_⊥ \sinh t$ makes the integrand smooth at small $R_⊥$.

    Args:
        pressure: $P_e(r)$ [keV cm⁻³] of physical r [Mpc].
        R_perp: (n,) projected physical radii [Mpc], 0 < R_⊥ < r_max.
        r_max: physical truncation radius [Mpc].
        n: quadrature nodes.

    Returns:
        (n,) Compton-y (dimensionless).
    """
    R_perp = jnp.asarray(R_perp)

    def one(Rp):
        t, w = _gauss_legendre(n, jnp.zeros((), Rp.dtype), jnp.arcsinh(jnp.sqrt(jnp.maximum(r_max**2 - Rp**2, 0.0)) / Rp))
        r = Rp * jnp.cosh(t)  # √(R² + R² sinh² t)
        return 2.0 * jnp.sum(w * pressure(r) * Rp * jnp.cosh(t))

    return (SIGMA_T_CM2 / ME_C2_KEV * MPC_CM) * jax.vmap(one)(R_perp)


def nfw_density(r: Float[ArrayLike, "*r"], M200c: Float[ArrayLike, "..."], R200c: Float[ArrayLike, "..."], c200c: Float[ArrayLike, "..."]) -> Float[Array, "*r"]:
    r"""NFW density $ρ(r) = \frac{M_{200c}}{4π r_s^3 μ(c)} \frac{1}{(r/r_s)(1 + r/r_s)^2}$, $r_s = R_{200c}/c$.

    Units follow the inputs: M in h⁻¹ M☉ and r, R in comoving h⁻¹ Mpc give
    h² M☉ Mpc⁻³ comoving. Its integral to R_200c is M_200c
    (`halos.nfw.nfw_enclosed_fraction`, μ = `halos.nfw.nfw_mu`).
    """
    r = jnp.asarray(r)
    rs = jnp.asarray(R200c, dtype=r.dtype) / c200c
    y = r / rs
    return jnp.asarray(M200c, dtype=r.dtype) / (4.0 * math.pi * rs**3 * nfw_mu(c200c)) / (y * (1.0 + y) ** 2)


@eqx.filter_jit
def radial_profile(
    field: Float[Array, "*mesh"],
    centre: Float[ArrayLike, " d"],
    cell_size: float,
    edges: Float[ArrayLike, " nb1"],
    periodic: bool = True,
) -> tuple[Float[Array, " nb"], Float[Array, " nb"]]:
    """Mean of a 2-D or 3-D mesh field in annuli / spherical shells around `centre`.

    Cell i of each axis is centred at i · cell_size; a cell belongs to the bin
    holding its centre's distance (minimum image where `periodic`).

    Args:
        field: (n₁, n₂) or (n₁, n₂, n₃) mesh values.
        centre: (d,) centre, same length unit as `cell_size`.
        cell_size: cell side.
        edges: (n_bins + 1,) increasing bin edges in distance.
        periodic: wrap distances across the mesh (a periodic box) or not (a map).

    Returns:
        (mean, count): (n_bins,) the mean of the cells in each bin (0 where empty)
        and the number of cells in it.
    """
    field = jnp.asarray(field)
    d = field.ndim
    centre = jnp.asarray(centre, dtype=field.dtype)
    if d not in (2, 3) or centre.shape != (d,):
        raise ValueError(f"field must be 2-D or 3-D and centre of length field.ndim; got {field.shape}, {centre.shape}")
    edges = jnp.asarray(edges, dtype=field.dtype)
    r2 = jnp.zeros(field.shape, field.dtype)
    for a, n in enumerate(field.shape):
        dx = jnp.arange(n, dtype=field.dtype) * cell_size - centre[a]
        if periodic:
            L = n * cell_size
            dx = dx - L * jnp.round(dx / L)
        r2 = r2 + jnp.expand_dims(dx**2, [b for b in range(d) if b != a])
    r = jnp.sqrt(r2).ravel()
    idx = jnp.searchsorted(edges, r, side="right") - 1
    inside = (idx >= 0) & (idx < edges.size - 1)
    idx = jnp.where(inside, idx, edges.size - 1)  # overflow bin, dropped
    nb = edges.size - 1
    total = jax.ops.segment_sum(jnp.where(inside, field.ravel(), 0.0), idx, num_segments=nb + 1)[:nb]
    count = jax.ops.segment_sum(inside.astype(field.dtype), idx, num_segments=nb + 1)[:nb]
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0), count
