r"""Galactic photoelectric absorption: Morrison & McCammon (1983) cross-section, band transmission.

A photon of energy E crossing a Galactic column $N_H$ [H atoms cm⁻²] survives with
probability $e^{-N_H σ(E)}$, with σ(E) the photoelectric cross-section **per H atom** of
the interstellar medium at solar abundances (gas + grains). Morrison & McCammon
(1983, ApJ 270, 119; "M&M") give it as a piecewise quadratic in E over E³,

$$ σ(E) = (c_0 + c_1 E + c_2 E^2)\,E^{-3} \times 10^{-24}\ \mathrm{cm}^2 \quad (E\ \text{in keV}), $$

on 14 intervals between 0.03 and 10 keV whose boundaries are the K edges of C, N,
O, Ne, Mg, Si, S, Ar, Ca, Fe, Ni and the Fe L edge (their Table 2, `MM83_TABLE`).

**Band transmission.** An instrument band b counts photons of energy E with the
band-collapsed area $A_b(E)$ (`jaxcluster.xray.BandResponse`). For a source of photon
spectrum N(E), the absorbed count rate over the unabsorbed one is

$$ τ_b(N_H) = \frac{\sum_i A_b(E_i)\,N(E_i)\,e^{-N_H σ(E_i)}\,ΔE_i}{\sum_i A_b(E_i)\,N(E_i)\,ΔE_i}, $$

differentiable in $N_H$ (`band_transmission`). It depends on the spectrum only through
the shape of N(E) inside the band (≲ 1 % between kT = 1 and 8 keV plasmas in the
default bands at $N_H = 2.6\times10^{20}$; tests check it).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..xray.response import BandResponse

__all__ = [
    "MM83_TABLE",
    "NH_XXL_NORTH_CM2",
    "cross_section_cm2",
    "transmission",
    "band_transmission",
    "power_law_photon_spectrum",
    "thermal_photon_spectrum",
]

# Morrison & McCammon (1983, ApJ 270, 119), Table 2: lower edge E_lo [keV] of each
# interval (the interval runs to the next row's E_lo; the last to 10 keV) and the
# coefficients c0 [keV³], c1 [keV²], c2 [keV] of σ(E)E³ in units of 10⁻²⁴ cm².
MM83_TABLE: tuple[tuple[float, float, float, float], ...] = (
    (0.030, 17.3, 608.1, -2150.0),
    (0.100, 34.6, 267.9, -476.1),
    (0.284, 78.1, 18.8, 4.3),  # C K edge
    (0.400, 71.4, 66.8, -51.4),  # N K
    (0.532, 95.5, 145.8, -61.1),  # O K
    (0.707, 308.9, -380.6, 294.0),  # Fe L
    (0.867, 120.6, 169.3, -47.7),  # Ne K
    (1.303, 141.3, 146.8, -31.5),  # Mg K
    (1.840, 202.7, 104.7, -17.0),  # Si K
    (2.471, 342.7, 18.7, 0.0),  # S K
    (3.210, 352.2, 18.7, 0.0),  # Ar K
    (4.038, 433.9, -2.4, 0.75),  # Ca K
    (7.111, 629.0, 30.9, 0.0),  # Fe K
    (8.331, 701.2, 25.2, 0.0),  # Ni K
)
MM83_E_MAX_KEV = 10.0  # upper end of the fit's validity [keV]

# Galactic column towards XXL-N (centre 02h23m, −4°30′, Pierre et al. 2016, A&A 592, A1):
# ≈ 2.6 × 10²⁰ H cm⁻², the level of the HI surveys (Dickey & Lockman 1990; HI4PI 2016)
# over that field, which the XMM-LSS/XXL-N site was chosen for (N_H ≲ 3 × 10²⁰). An
# approximate field mean, not a lookup of either map at each pointing.
NH_XXL_NORTH_CM2 = 2.6e20

_E_LO = np.array([row[0] for row in MM83_TABLE])
_COEFFS = np.array([row[1:] for row in MM83_TABLE])  # (14, 3)


def cross_section_cm2(energy_keV: Float[ArrayLike, "*e"]) -> Float[Array, "*e"]:
    """M&M (1983) photoelectric cross-section per H atom [cm²] at energies [keV].

    Valid from 0.03 to 10 keV; outside, the first/last interval's polynomial is
    extrapolated (the bands here lie well inside).
    """
    e = jnp.asarray(energy_keV)
    dtype = e.dtype if jnp.issubdtype(e.dtype, jnp.floating) else jnp.result_type(float)
    e = e.astype(dtype)
    idx = jnp.clip(jnp.searchsorted(jnp.asarray(_E_LO, dtype), e, side="right") - 1, 0, len(MM83_TABLE) - 1)
    c = jnp.asarray(_COEFFS, dtype)[idx]  # (*e, 3)
    poly = c[..., 0] + c[..., 1] * e + c[..., 2] * e * e
    return poly / e**3 * 1e-24


def transmission(energy_keV: Float[ArrayLike, "*e"], nh_cm2: Float[ArrayLike, ""]) -> Float[Array, "*e"]:
    """Fraction $e^{-N_H σ(E)}$ of photons [keV] crossing a column nh_cm2 [H cm⁻²]."""
    sigma = cross_section_cm2(energy_keV)
    # N_H ~ 1e20 and σ ~ 1e-22 are both float32-safe; their product is O(0.1).
    return jnp.exp(-jnp.asarray(nh_cm2).astype(sigma.dtype) * sigma)


def power_law_photon_spectrum(energy_keV: Float[ArrayLike, "*e"], photon_index: Float[ArrayLike, ""]) -> Float[Array, "*e"]:
    """Photon spectrum shape $E^{-Γ}$ [photons cm⁻² s⁻¹ keV⁻¹, arbitrary normalisation]."""
    e = jnp.asarray(energy_keV)
    return e ** (-jnp.asarray(photon_index).astype(e.dtype))


def thermal_photon_spectrum(energy_keV: Float[ArrayLike, "*e"], kT_keV: Float[ArrayLike, ""]) -> Float[Array, "*e"]:
    """Bremsstrahlung photon spectrum shape $E^{-1} e^{-E/kT}$ (Gaunt factor ≈ 1; arbitrary norm).

    Used only for band *ratios* (the absorption of a cluster's count rate), which
    depend on the shape within a band; lines and the Gaunt factor change them by
    well under the 1 % at which the ratio depends on kT at all.
    """
    e = jnp.asarray(energy_keV)
    return jnp.exp(-e / jnp.asarray(kT_keV).astype(e.dtype)) / e


def band_transmission(
    nh_cm2: Float[ArrayLike, ""],
    photon_spectrum: Float[Array, " n_E"],
    response: BandResponse,
) -> Float[Array, " n_band"]:
    """Absorbed over unabsorbed count rate τ_b(N_H) in each band (module docstring).

    Args:
        nh_cm2: Galactic column [H atoms cm⁻²], ≥ 0 (differentiable).
        photon_spectrum: (n_E,) photon spectrum [any units per keV] at the response's
            bin centres, unabsorbed.
        response: the band-collapsed response (`jaxcluster.xray.default_band_response()`).

    Returns:
        (n_band,) transmission in (0, 1].
    """
    lo, hi, area = response.energ_lo_keV, response.energ_hi_keV, response.area_cm2
    e_mid = 0.5 * (lo + hi)
    w = area * (photon_spectrum.astype(area.dtype) * (hi - lo))[:, None]  # (n_E, n_band) counts per bin
    t = transmission(e_mid, nh_cm2).astype(area.dtype)
    return jnp.sum(w * t[:, None], axis=0) / jnp.sum(w, axis=0)
