r"""AGN: point sources from the 0.5–2 keV logN–logS, absorbed power-law spectra, count rates per band.

**Number counts.** Moretti et al. (2003, ApJ 588, 696), soft band (0.5–2 keV), the
cumulative surface density [deg⁻²] above flux S [erg s⁻¹ cm⁻²]:

$$ N(>S) = N_S\,\frac{(2\times10^{-15})^{α_1}}{S^{α_1} + S_0^{α_1-α_2}\,S^{α_2}}, $$

with $α_1 = 1.82$, $α_2 = 0.60$, $S_0 = 1.48\times10^{-14}$ erg s⁻¹ cm⁻²,
$N_S = 6150$ deg⁻² (their soft-band best fit). It gives N(>10⁻¹⁴) = 126 deg⁻².
Fluxes are unabsorbed (Galactic-absorption-corrected) 0.5–2 keV energy fluxes.

**Drawing** (`draw_agn`, from an explicit key; fixed shapes so it jits and vmaps):
the number in the field is Poisson with mean $Ω\,[N(>S_{min}) - N(>S_{max})]$,
held in `max_sources` slots with a `valid` mask; fluxes by inverting N(>S)
(bisection in log S); positions uniform in the field, or at haloes chosen at random
among the valid ones of a given list ("haloes" mode).

**Count rates.** A power law of photon index Γ (1.7 by default, the soft-band slope
of unabsorbed AGN; an assumption within the Γ ≈ 1.7–1.9 of the literature) with
energy flux S in 0.5–2 keV, absorbed by the Galactic $N_H$, folded with the band
area: $\mathrm{CR}_b = S\,\mathrm{ECF}_b$ (`energy_conversion_factor`).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ..xray.response import BandResponse
from .absorption import power_law_photon_spectrum, transmission
from .background import KEV_ERG

__all__ = [
    "MORETTI03_SOFT",
    "AGNCatalogue",
    "n_above",
    "flux_above",
    "expected_number",
    "energy_conversion_factor",
    "second_moment_below",
    "draw_agn",
    "paint_point_sources",
]

# Moretti et al. (2003, ApJ 588, 696), 0.5–2 keV: α1, α2, S0 [erg s⁻¹ cm⁻²], N_S [deg⁻²].
MORETTI03_SOFT = (1.82, 0.60, 1.48e-14, 6150.0)
_S_REF = 2.0e-15  # pivot flux of the Moretti et al. form [erg s⁻¹ cm⁻²]
_BISECT = 64


class AGNCatalogue(eqx.Module):
    """The drawn AGN (truth), padded to `max_sources` with a validity mask.

    Attributes:
        position_arcmin: (n_max, 2) field coordinates [arcmin] (`pointings` docstring).
        flux_cgs: (n_max,) unabsorbed 0.5–2 keV flux [erg s⁻¹ cm⁻²].
        count_rate: (n_max, n_band) on-axis pn count rate per band [counts s⁻¹], absorbed.
        valid: (n_max,) which slots hold a source.
    """

    position_arcmin: Float[Array, "n_max 2"]
    flux_cgs: Float[Array, " n_max"]
    count_rate: Float[Array, "n_max n_band"]
    valid: Bool[Array, " n_max"]


def n_above(flux_cgs: Float[ArrayLike, "*s"], params=MORETTI03_SOFT) -> Float[Array, "*s"]:
    """Cumulative AGN surface density N(>S) [deg⁻²] at 0.5–2 keV flux S [erg s⁻¹ cm⁻²]."""
    a1, a2, s0, ns = params
    s = jnp.asarray(flux_cgs)
    # Work in units of S_REF: S^α in cgs underflows float32 (1e-15^1.82 ~ 1e-27).
    x, x0 = s / _S_REF, s0 / _S_REF
    return ns / (x**a1 + x0 ** (a1 - a2) * x**a2)


def _n_above_host(flux_cgs: float, params=MORETTI03_SOFT) -> float:
    """`n_above` in Python floats, for static sizes and limits computed outside traces."""
    a1, a2, s0, ns = params
    x, x0 = flux_cgs / _S_REF, s0 / _S_REF
    return ns / (x**a1 + x0 ** (a1 - a2) * x**a2)


def flux_above(s_min: float, s_max: float, params=MORETTI03_SOFT, n: int = 2048) -> float:
    """Energy flux density of the sources with S_min < S < S_max, ∫ S dN [erg s⁻¹ cm⁻² deg⁻²].

    Host-side quadrature (Python floats) in log S: −∫ S (dN/dS) dS = ∫ N(>S) dS + boundary terms.
    """
    # ∫_{a}^{b} S (−dN/dS) dS = a N(a) − b N(b) + ∫_a^b N(>S) dS  (integration by parts)
    la, lb = math.log(s_min), math.log(s_max)
    h = (lb - la) / n
    total = 0.0
    for k in range(n):
        s = math.exp(la + (k + 0.5) * h)
        total += _n_above_host(s, params) * s * h
    return s_min * _n_above_host(s_min, params) - s_max * _n_above_host(s_max, params) + total


def expected_number(area_deg2: float, s_min: float, s_max: float, params=MORETTI03_SOFT) -> float:
    """Mean number of AGN with S_min < S < S_max in a field of area_deg2 [deg²]."""
    return area_deg2 * (_n_above_host(s_min, params) - _n_above_host(s_max, params))


def energy_conversion_factor(
    nh_cm2: Float[ArrayLike, ""], response: BandResponse, photon_index: Float[ArrayLike, ""] = 1.7
) -> Float[Array, " n_band"]:
    """Count rate per band [counts s⁻¹] per unit unabsorbed 0.5–2 keV flux [erg s⁻¹ cm⁻²].

    Power law $K E^{-Γ}$ normalised to 1 erg s⁻¹ cm⁻² in 0.5–2 keV, absorbed by $N_H$,
    folded with the band area. Differentiable in N_H and Γ.
    """
    lo, hi, area = response.energ_lo_keV, response.energ_hi_keV, response.area_cm2
    dtype = area.dtype
    g = jnp.asarray(photon_index).astype(dtype)
    e = 0.5 * (lo + hi)
    # ∫_{0.5}^{2} E·E^{-Γ} dE [keV² per unit K]; the Γ = 2 limit is log(4).
    two_g = 2.0 - g
    safe = jnp.where(jnp.abs(two_g) < 1e-6, 1.0, two_g)
    energy_per_k = jnp.where(jnp.abs(two_g) < 1e-6, math.log(4.0), (2.0**safe - 0.5**safe) / safe)
    k = 1.0 / (energy_per_k * KEV_ERG)  # photons cm⁻² s⁻¹ keV⁻¹ at 1 keV per erg s⁻¹ cm⁻²
    photons = k * power_law_photon_spectrum(e, g) * (hi - lo) * transmission(e, nh_cm2).astype(dtype)
    return jnp.sum(area * photons[:, None], axis=0)


def second_moment_below(s_min: float, s_max: float, params=MORETTI03_SOFT, n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    r"""$M_2(S) = \int_{S_{min}}^{S} S'^2 (-dN/dS') dS'$ [erg² s⁻² cm⁻⁴ deg⁻²] on a log grid of S (host).

    By parts, $M_2(S) = S_{min}^2 N(S_{min}) - S^2 N(S) + 2\int_{S_{min}}^{S} S' N(>S') dS'$, the
    integral by the trapezoidal rule in ln S on `n` + 1 nodes (relative error ≲ 10⁻⁴ for these smooth N).

    Returns:
        (S grid (n + 1,) [erg s⁻¹ cm⁻²], M_2 on it).
    """
    s = np.geomspace(s_min, s_max, n + 1)
    nn = np.array([_n_above_host(float(x), params) for x in s])
    f = s * nn * s  # S N(>S) dS = S N(>S) · S d ln S
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(np.log(s)))])
    return s, s_min**2 * nn[0] - s**2 * nn + 2.0 * cum


def _invert_n_above(target: Float[Array, "*s"], s_min: float, s_max: float, params) -> Float[Array, "*s"]:
    """Flux S with N(>S) = target, by bisection in log S on [S_min, S_max] (N decreasing)."""
    lo = jnp.full_like(target, math.log(s_min))
    hi = jnp.full_like(target, math.log(s_max))

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = n_above(jnp.exp(mid), params) > target  # still too many sources: go brighter
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECT, step, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


def draw_agn(
    key: PRNGKeyArray,
    field_arcmin: tuple[float, float],
    max_sources: int,
    ecf: Float[Array, " n_band"],
    *,
    s_min: float = 1e-15,
    s_max: float = 1e-11,
    params: tuple[float, float, float, float] = MORETTI03_SOFT,
    halo_position_arcmin: Float[Array, "n_halo 2"] | None = None,
    halo_valid: Bool[Array, " n_halo"] | None = None,
) -> AGNCatalogue:
    """Draw AGN in a field from the logN–logS (module docstring).

    Args:
        key: PRNG key.
        field_arcmin: field sides (x, y) [arcmin] (static).
        max_sources: number of slots (static); draws beyond it are dropped — size it
            well above the mean (`expected_number`), as `observe` does.
        ecf: (n_band,) count rate per unit flux (`energy_conversion_factor`).
        s_min: lower flux limit [erg s⁻¹ cm⁻²] (static).
        s_max: upper flux limit [erg s⁻¹ cm⁻²] (static).
        params: logN–logS parameters (α1, α2, S0, N_S).
        halo_position_arcmin: (n_halo, 2) halo positions (field coordinates [arcmin]); when given,
            each AGN sits at a halo drawn uniformly among the valid ones ("haloes" mode); else
            positions are uniform.
        halo_valid: (n_halo,) which haloes may host an AGN ("haloes" mode; None: all of them).

    Returns:
        `AGNCatalogue`.
    """
    dtype = ecf.dtype
    k_n, k_s, k_pos = jax.random.split(key, 3)
    area_deg2 = field_arcmin[0] * field_arcmin[1] / 3600.0
    n_lo, n_hi = _n_above_host(s_min, params), _n_above_host(s_max, params)
    n = jax.random.poisson(k_n, area_deg2 * (n_lo - n_hi))
    valid = jnp.arange(max_sources) < n
    u = jax.random.uniform(k_s, (max_sources,), dtype)
    flux = _invert_n_above(n_lo - u * (n_lo - n_hi), s_min, s_max, params)
    if halo_position_arcmin is None:
        pos = jax.random.uniform(k_pos, (max_sources, 2), dtype) * jnp.asarray(field_arcmin, dtype)[None, :]
    else:
        if halo_valid is None:
            halo_valid = jnp.ones(halo_position_arcmin.shape[:1], bool)
        logits = jnp.where(halo_valid, 0.0, -jnp.inf)
        idx = jax.random.categorical(k_pos, logits, shape=(max_sources,))
        pos = halo_position_arcmin.astype(dtype)[idx]
    cr = flux[:, None] * ecf[None, :]
    return AGNCatalogue(pos, flux, jnp.where(valid[:, None], cr, 0.0), valid)


def paint_point_sources(
    shape: tuple[int, int], pixel_arcmin: float, position_arcmin: Float[Array, "s 2"], rate: Float[Array, "s n_band"]
) -> Float[Array, "n_band n m"]:
    """Add point sources' rates into the pixels that contain them (sources off the map are dropped)."""
    n, m = shape
    i = jnp.floor(position_arcmin[:, 0] / pixel_arcmin).astype(jnp.int32)
    j = jnp.floor(position_arcmin[:, 1] / pixel_arcmin).astype(jnp.int32)
    inside = (i >= 0) & (i < n) & (j >= 0) & (j < m)
    r = jnp.where(inside[:, None], rate, 0.0)
    img = jnp.zeros((rate.shape[1], n, m), rate.dtype)
    return img.at[:, jnp.clip(i, 0, n - 1), jnp.clip(j, 0, m - 1)].add(r.T)
