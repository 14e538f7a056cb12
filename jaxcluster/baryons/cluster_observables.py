r"""X-ray observables of synthetic clusters from their continuous profiles, and observed relations.

`cluster_observables` integrates one halo's synthetic gas profile
(`halo_gas_profile`) over spheres, with the NFW relation between M_200c and
M_500c (Duffy et al. 2008 concentration), giving the quantities the observed
scaling relations are quoted in:

* $L_X$: rest-frame [0.5–2] keV luminosity within R_500c [erg s⁻¹],
  $L_X = \int n_e n_H\, ε(T)\, dV$ with the shipped APEC energy table at z = 0;
* $T_{sl}$: spectroscopic-like temperature (Mazzotta et al. 2004),
  $\int n^2 T^{1/4} dV / \int n^2 T^{-3/4} dV$ over 0.15–1 R_500c (core excised).

The observed relations (masses in M☉, our h converts h⁻¹ M☉):

* Vikhlinin et al. (2009, ApJ 692, 1033) eq. 22, [0.5–2] keV within R_500:
  $\ln L_X = 47.392 + 1.61 \ln M_{500} + 1.850 \ln E(z) - 0.39 \ln(h/0.72)$.
* Vikhlinin et al. (2009) T–M: $M_{500} = 3.02\times10^{14} h^{-1} M_☉ (T/5\,\mathrm{keV})^{1.53} / E(z)$,
  T in 0.15–1 R_500.
* Arnaud, Pointecouteau & Pratt (2005): $E(z) M_{500} = 3.84\times10^{14} h_{70}^{-1} M_☉ (T/5\,\mathrm{keV})^{1.71}$.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..cosmology import Cosmology, E
from ..halos.nfw import concentration_duffy08, nfw_radius_ratio
from ..halos.so import critical_density_comoving
from ..io.snapshots import MPC_CM
from ..params import ThetaSim
from ..xray.countrate import NE_OVER_NH
from ..xray.emissivity import EmissivityTable, default_energy_table
from .synthetic import SyntheticGasModel, halo_gas_profile

__all__ = ["cluster_observables", "vikhlinin09_luminosity", "vikhlinin09_temperature", "arnaud05_temperature"]

_X_GL, _W_GL = np.polynomial.legendre.leggauss(96)


def _radial_quadrature(lo, hi):
    """Gauss–Legendre nodes and weights in ln r over [lo, hi] (weights include r³ for dV = 4π r³ dln r)."""
    u = 0.5 * (np.log(hi) - np.log(lo))
    ln_r = np.log(lo) + u * (_X_GL + 1.0)
    r = np.exp(ln_r)
    return r, 4.0 * math.pi * r**3 * u * _W_GL


# One compiled profile (numbers passed as arrays, so no value recompiles it): eagerly, each call
# of `cluster_observables` dispatched its few hundred primitives one by one.
_gas_profile = eqx.filter_jit(halo_gas_profile)


def cluster_observables(
    model: SyntheticGasModel,
    M200c: float,
    z: float,
    cosmo: Cosmology,
    theta: ThetaSim,
    deviates: tuple[float, float, float] = (0.0, 0.0, 0.0),
    table: EmissivityTable | None = None,
) -> dict[str, float]:
    """L_X [erg s⁻¹], T_sl [keV], M_500c [h⁻¹ M☉] and the gas fraction of one synthetic halo.

    Args:
        model: synthetic gas model.
        M200c: halo mass [h⁻¹ M☉].
        z: redshift.
        cosmo: cosmology.
        theta: θ_sim.
        deviates: (core, fgas, T) ln-deviates.
        table: energy-emissivity table with a [0.5–2] keV band (default: shipped).
    """
    table = default_energy_table() if table is None else table
    a = 1.0 / (1.0 + z)
    h = float(cosmo.h)
    rho_c = float(critical_density_comoving(cosmo, a))  # h² M☉ Mpc⁻³ per comoving volume
    R200c = (3.0 * M200c / (4.0 * math.pi * 200.0 * rho_c)) ** (1.0 / 3.0)  # comoving h⁻¹ Mpc
    c = float(concentration_duffy08(M200c, z))
    x500 = float(nfw_radius_ratio(jnp.asarray(c), 2.5))
    M500c = 2.5 * x500**3 * M200c
    out = {"M500c": M500c, "R500c": x500 * R200c, "M200c": M200c, "R200c": R200c}
    # Physical volume element in cm³: (a R200c x / h Mpc)³.
    length_cm = a * R200c / h * MPC_CM
    for name, lo, hi in (("all", 1e-3 * x500, x500), ("exc", 0.15 * x500, x500)):
        x, w = _radial_quadrature(lo, hi)
        n_e, T = _gas_profile(model, jnp.asarray(x), jnp.asarray(M200c), jnp.asarray(R200c), cosmo, theta,
                              jnp.asarray(z), tuple(jnp.asarray(d, dtype=float) for d in deviates))
        n_phys = np.asarray(n_e) / a**3  # comoving → physical
        dv = w * length_cm**3
        em = n_phys**2 / NE_OVER_NH * dv
        if name == "all":
            eps = np.asarray(table(jnp.asarray(T), 0.0))[..., 0]  # erg cm³ s⁻¹, rest frame [0.5–2] keV
            out["L_X"] = float(np.sum(em * eps))
            out["f_gas_500"] = float(np.sum(n_phys * dv) * 1.136 * 1.67262192595e-24 / 1.988409870698051e33 / (M500c / h))
        else:
            Tn = np.asarray(T)
            out["T_sl"] = float(np.sum(em * Tn**0.25) / np.sum(em * Tn**-0.75))
    return out


def vikhlinin09_luminosity(M500c_Msun_h: Float[ArrayLike, "*M"], z: float, cosmo: Cosmology) -> Float[Array, "*M"]:
    """L_X [0.5–2 keV] within R_500 [erg s⁻¹] of Vikhlinin et al. (2009) eq. 22 for M_500c in h⁻¹ M☉."""
    h = cosmo.h
    M = jnp.asarray(M500c_Msun_h) / h
    Ez = E(cosmo, jnp.asarray(1.0 / (1.0 + z), dtype=cosmo.Omega_m.dtype))
    return jnp.exp(47.392 + 1.61 * jnp.log(M) + 1.850 * jnp.log(Ez) - 0.39 * jnp.log(h / 0.72))


def vikhlinin09_temperature(M500c_Msun_h: Float[ArrayLike, "*M"], z: float, cosmo: Cosmology) -> Float[Array, "*M"]:
    """T [keV] in 0.15–1 R_500 of Vikhlinin et al. (2009): M_500 = 3.02e14 h⁻¹ M☉ (T/5)^1.53 / E(z)."""
    Ez = E(cosmo, jnp.asarray(1.0 / (1.0 + z), dtype=cosmo.Omega_m.dtype))
    return 5.0 * (jnp.asarray(M500c_Msun_h) * Ez / 3.02e14) ** (1.0 / 1.53)


def arnaud05_temperature(M500c_Msun_h: Float[ArrayLike, "*M"], z: float, cosmo: Cosmology) -> Float[Array, "*M"]:
    """T [keV] of Arnaud, Pointecouteau & Pratt (2005): E(z) M_500 = 3.84e14 h70⁻¹ M☉ (T/5)^1.71."""
    h70 = cosmo.h / 0.7
    Ez = E(cosmo, jnp.asarray(1.0 / (1.0 + z), dtype=cosmo.Omega_m.dtype))
    M_h70 = jnp.asarray(M500c_Msun_h) / cosmo.h * h70  # M☉ h70
    return 5.0 * (Ez * M_h70 / 3.84e14) ** (1.0 / 1.71)
