r"""EPIC-pn backgrounds per band [counts s⁻¹ arcmin⁻²]: particles, cosmic X-ray background, Galactic foreground.

Three components (the standard split of Lumb et al. 2002, A&A 389, 93; Read &
Ponman 2003, A&A 409, 395):

**Particle (quiescent, non-X-ray) background — not vignetted.** The SAS epchain
documentation quotes typical low-background pn rates of 3–5 counts ks⁻¹ arcmin⁻²
in 7–15 keV (SAS epchain, "Creation of background spectrum"). The quiescent pn
particle spectrum is roughly flat in counts keV⁻¹ outside its fluorescence lines,
so we take its 7–15 keV midpoint, 4 × 10⁻³ counts s⁻¹ arcmin⁻² over 8 keV, i.e.
**5 × 10⁻⁴ counts s⁻¹ arcmin⁻² keV⁻¹**, times the band width: 2.5 × 10⁻⁴ in
[0.5–1] and 5 × 10⁻⁴ in [1–2] keV (flat-spectrum extrapolation: an approximation
of ours, `PARTICLE_RATE_PER_KEV`). It counts with the unvignetted exposure.

**Cosmic X-ray background (extragalactic) — vignetted.** A power law of photon
index Γ = 1.41 and 11.6 photons cm⁻² s⁻¹ sr⁻¹ keV⁻¹ at 1 keV (De Luca & Molendi
2004, A&A 419, 837; Lumb et al. 2002 find 11.1 at Γ = 1.42), absorbed by the
Galactic column and folded through the band response. Its 0.5–2 keV energy
intensity is 8.1 × 10⁻¹² erg s⁻¹ cm⁻² deg⁻² (Moretti et al. 2003 adopt 7.53 ×
10⁻¹²). When AGN are drawn explicitly (`jaxcluster.observation.agn`), the CXB
carries only the **unresolved** remainder: its intensity is reduced by the energy
flux of the drawn population (the integral of the logN–logS between its flux
limits), keeping the total sky brightness fixed.

**Galactic foreground — vignetted.** Thermal emission of the local hot bubble and
the halo (kT ≈ 0.1–0.2 keV), which dominates the sky below ≈ 1 keV: Lumb et al.
(2002) see the transition from this soft thermal spectrum to the CXB power law
"around ≈ 1 keV". Without an APEC line spectrum in the package we set its count
rate as a fraction of the (total, absorbed) CXB count rate: **1.0 in [0.5–1] keV and
0.1 in [1–2] keV** (`FOREGROUND_TO_CXB`, an approximation of ours following that
crossing; it varies by ± 50 % over the high-latitude sky).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..xray.response import BandResponse
from .absorption import power_law_photon_spectrum, transmission

__all__ = [
    "PARTICLE_RATE_PER_KEV",
    "CXB_PHOTON_INDEX",
    "CXB_NORM_1KEV",
    "FOREGROUND_TO_CXB",
    "KEV_ERG",
    "ARCMIN2_SR",
    "particle_rate",
    "cxb_rate",
    "cxb_energy_intensity",
    "foreground_rate",
]

PARTICLE_RATE_PER_KEV = 5.0e-4  # pn quiescent particle background [counts s⁻¹ arcmin⁻² keV⁻¹] (module docstring)
CXB_PHOTON_INDEX = 1.41  # CXB photon index (De Luca & Molendi 2004, A&A 419, 837)
CXB_NORM_1KEV = 11.6  # CXB at 1 keV [photons cm⁻² s⁻¹ sr⁻¹ keV⁻¹] (De Luca & Molendi 2004)
FOREGROUND_TO_CXB = (1.0, 0.1)  # Galactic foreground / CXB count rate in [0.5–1], [1–2] keV (approximation)
KEV_ERG = 1.602176634e-9  # 1 keV [erg] (CODATA 2018)
ARCMIN2_SR = (math.pi / (180.0 * 60.0)) ** 2  # 1 arcmin² [sr]


def particle_rate(bands_keV: tuple[tuple[float, float], ...]) -> tuple[float, ...]:
    """Particle background per band [counts s⁻¹ arcmin⁻²] (flat spectrum, module docstring)."""
    return tuple(PARTICLE_RATE_PER_KEV * (hi - lo) for lo, hi in bands_keV)


def cxb_energy_intensity(e_lo_keV: float = 0.5, e_hi_keV: float = 2.0) -> float:
    """Unabsorbed CXB energy intensity in [e_lo, e_hi] keV [erg s⁻¹ cm⁻² arcmin⁻²]."""
    g = 2.0 - CXB_PHOTON_INDEX
    kev = CXB_NORM_1KEV * (e_hi_keV**g - e_lo_keV**g) / g  # keV cm⁻² s⁻¹ sr⁻¹
    return kev * KEV_ERG * ARCMIN2_SR


def cxb_rate(nh_cm2: Float[ArrayLike, ""], response: BandResponse, unresolved_fraction: Float[ArrayLike, ""] = 1.0) -> Float[Array, " n_band"]:
    """On-axis CXB count rate per band [counts s⁻¹ arcmin⁻²], Galactic-absorbed.

    Args:
        nh_cm2: Galactic column [H cm⁻²] (differentiable).
        response: band response.
        unresolved_fraction: fraction of the CXB intensity left diffuse (1 when no
            AGN are drawn; module docstring).
    """
    lo, hi, area = response.energ_lo_keV, response.energ_hi_keV, response.area_cm2
    e = 0.5 * (lo + hi)
    photons = CXB_NORM_1KEV * ARCMIN2_SR * power_law_photon_spectrum(e, CXB_PHOTON_INDEX) * (hi - lo)
    absorbed = photons * transmission(e, nh_cm2).astype(area.dtype)
    return jnp.sum(area * absorbed[:, None], axis=0) * jnp.asarray(unresolved_fraction).astype(area.dtype)


def foreground_rate(nh_cm2: Float[ArrayLike, ""], response: BandResponse) -> Float[Array, " n_band"]:
    """Galactic foreground per band [counts s⁻¹ arcmin⁻²] (fraction of the total CXB rate, module docstring)."""
    if len(response.bands_keV) != len(FOREGROUND_TO_CXB):
        raise ValueError(
            f"the Galactic foreground is defined for {len(FOREGROUND_TO_CXB)} bands "
            f"([0.5–1], [1–2] keV); the response has {len(response.bands_keV)}"
        )
    ratio = jnp.asarray(FOREGROUND_TO_CXB, response.area_cm2.dtype)
    return ratio * cxb_rate(nh_cm2, response)
