r"""Published intracluster-medium profiles: Battaglia et al. gas density (2016) and thermal pressure (2012).

Both are generalised NFW fits to hydrodynamical simulations with AGN feedback,
in units of $x = r / R_{200c}$, with parameters that are power laws
$A = A_0\,(M_{200c} / 10^{14} M_☉)^{α_m} (1 + z)^{α_z}$ (masses in M☉, *not*
h⁻¹ M☉; the callers convert).

* Gas density, Battaglia (2016, JCAP 08, 058), AGN model, Δ = 200c:
  $ρ_{gas}(x) / (f_b ρ_c(z)) = ρ_0 (x/x_c)^γ [1 + (x/x_c)^α]^{-(β+γ)/α}$,
  $x_c = 0.5$, $γ = -0.2$; $ρ_0 = 4000\,M^{0.29}(1+z)^{-0.66}$,
  $α = 0.88\,M^{-0.03}(1+z)^{0.19}$, $β = 3.83\,M^{0.04}(1+z)^{-0.025}$.
  (The published table has typos; these are the corrected values used by the
  public codes that implement the fit, e.g. astropaint.)
* Thermal (total gas) pressure, Battaglia et al. (2012, ApJ 758, 75), AGN
  feedback, Table 1: $P / P_{200} = P_0 (x/x_c)^γ [1 + (x/x_c)^α]^{-β}$,
  $α = 1$, $γ = -0.3$; $P_0 = 18.1\,M^{0.154}(1+z)^{-0.758}$,
  $x_c = 0.497\,M^{-0.00865}(1+z)^{0.731}$, $β = 4.35\,M^{0.0393}(1+z)^{0.415}$,
  with $P_{200} = G M_{200c}\, 200 ρ_c(z)\, f_b / (2 R_{200c})$.

With $n = ρ_{gas} / (μ m_p)$ the temperature $k_B T = P / n$ needs only the
ratio of the two fits:
$k_B T(x) = 100\, μ m_p\, G M_{200c} / R_{200c} \cdot \tilde P(x) / \tilde ρ(x)$
(physical $R_{200c}$), which `gnfw_temperature_keV` evaluates.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..io.snapshots import KEV_ERG, MPC_CM, PROTON_MASS_G, SOLAR_MASS_G, X_H

__all__ = [
    "MU",
    "MU_E",
    "battaglia16_density",
    "battaglia12_pressure",
    "gnfw_temperature_keV",
]

MU = 4.0 / (3.0 + 5.0 * X_H)  # mean particle mass / m_p, fully ionised H + He (0.588)
MU_E = 2.0 / (1.0 + X_H)  # mass per free electron / m_p (1.136)
_G_CGS = 6.67430e-8  # cm³ g⁻¹ s⁻²


def _power_law(A0, alpha_m, alpha_z, M14, opz):
    return A0 * M14**alpha_m * opz**alpha_z


def battaglia16_density(
    x: Float[ArrayLike, "*x"], M200c_Msun: Float[ArrayLike, "*#x"], z: Float[ArrayLike, "*#x"]
) -> Float[Array, "*x"]:
    r"""$\tilde ρ(x) = ρ_{gas} / (f_b ρ_c(z))$ of Battaglia (2016), AGN feedback; x = r / R_200c, M in M☉."""
    x = jnp.asarray(x)
    M14, opz = jnp.asarray(M200c_Msun, dtype=x.dtype) / 1e14, 1.0 + jnp.asarray(z, dtype=x.dtype)
    rho0 = _power_law(4000.0, 0.29, -0.66, M14, opz)
    alpha = _power_law(0.88, -0.03, 0.19, M14, opz)
    beta = _power_law(3.83, 0.04, -0.025, M14, opz)
    xc, gamma = 0.5, -0.2
    u = x / xc
    return rho0 * u**gamma * (1.0 + u**alpha) ** (-(beta + gamma) / alpha)


def battaglia12_pressure(
    x: Float[ArrayLike, "*x"], M200c_Msun: Float[ArrayLike, "*#x"], z: Float[ArrayLike, "*#x"]
) -> Float[Array, "*x"]:
    r"""$\tilde P(x) = P_{th} / P_{200}$ of Battaglia et al. (2012), AGN feedback; x = r / R_200c, M in M☉."""
    x = jnp.asarray(x)
    M14, opz = jnp.asarray(M200c_Msun, dtype=x.dtype) / 1e14, 1.0 + jnp.asarray(z, dtype=x.dtype)
    P0 = _power_law(18.1, 0.154, -0.758, M14, opz)
    xc = _power_law(0.497, -0.00865, 0.731, M14, opz)
    beta = _power_law(4.35, 0.0393, 0.415, M14, opz)
    u = x / xc
    return P0 * u**-0.3 * (1.0 + u) ** -beta


def gnfw_temperature_keV(
    x: Float[ArrayLike, "*x"],
    M200c_Msun: Float[ArrayLike, "*#x"],
    R200c_Mpc: Float[ArrayLike, "*#x"],
    z: Float[ArrayLike, "*#x"],
) -> Float[Array, "*x"]:
    r"""$k_B T = 100\,μ m_p G M_{200c} / R_{200c}\;\tilde P / \tilde ρ$ [keV].

    Args:
        x: r / R_200c.
        M200c_Msun: M_200c [M☉].
        R200c_Mpc: *physical* R_200c [Mpc].
        z: redshift.
    """
    x = jnp.asarray(x)
    # G M☉ / Mpc folded first: M in grams overflows float32.
    gm_over_r = (_G_CGS * SOLAR_MASS_G / MPC_CM) * jnp.asarray(M200c_Msun, dtype=x.dtype) / jnp.asarray(
        R200c_Mpc, dtype=x.dtype
    )  # cm² s⁻²
    scale_keV = 100.0 * MU * PROTON_MASS_G * gm_over_r / KEV_ERG
    return scale_keV * battaglia12_pressure(x, M200c_Msun, z) / battaglia16_density(x, M200c_Msun, z)
