r"""Confusion noise: the AGN too faint to be detected, scattering the counts in a source's aperture.

AGN below the detection limit are part of the background on average (the image
estimate follows them) but not pixel by pixel. Poisson-distributed on the sky
with the counts of `agn` (Moretti et al. 2003), those with $S_{min} < S < S_{lim}$
put a count rate in a pixel of solid angle Ω whose variance is

$$ v_b = Ω\,\mathrm{ECF}_b^2\,M_2(S_{lim}), \qquad M_2(S) = \int_{S_{min}}^{S} S'^2 \Big(-\frac{dN}{dS'}\Big) dS' $$

(`agn.second_moment_below`): the confusion term of P(D) analyses (Scheuer 1957;
Condon 1974, ApJ 188, 279). Fainter than $S_{min}$ the model holds no AGN (their
light is in the smooth CXB, `background`); brighter than $S_{lim}$ they are detected,
and modelled or masked by `measure`.

**The limit is local.** $S_{lim}$ is the flux a point source needs to be detected at
that pixel (`Confusion.flux_limit`): its expected counts must lift the PSF-filtered
Poisson significance above the detection threshold over at least `min_area` pixels
(`detection.point_count_limit`), against the background **plus the source being
measured**: an AGN on a cluster's core stands on the cluster's counts, so a bright
cluster hides brighter AGN than the empty sky does. Counts per unit flux are
$\sum_b \mathrm{ECF}_b E_b$ (vignetted exposure E).

`measure` spreads each pixel's variance over the aperture through the PSF: a source
at pixel i puts a fraction $(A ⊗ P)_i$ of its counts in the aperture A, so
$σ^2_{\rm conf} = \sum_i v_i (E_i (A ⊗ P)_i)^2$ counts².
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..xray.response import BandResponse
from .agn import MORETTI03_SOFT, energy_conversion_factor, second_moment_below

if TYPE_CHECKING:
    from .measure import SourceModel
    from .photons import ObservationConfig

__all__ = ["Confusion", "agn_confusion"]


class Confusion(eqx.Module):
    """The unresolved AGN's count-rate variance, as a function of the local detection limit (module docstring).

    Attributes:
        ln_flux: (g,) ln S grid [S in erg s⁻¹ cm⁻²], S_min … S_max.
        m2: (g,) M₂(S) on it [erg² s⁻² cm⁻⁴ deg⁻²].
        ecf: (n_band,) count rate per unit flux [counts s⁻¹ per erg s⁻¹ cm⁻²] (absorbed AGN spectrum).
        pixel_deg2: pixel solid angle [deg²] (static).
        threshold: detection threshold [Gaussian σ] (static).
        min_area: pixels above the threshold a detection needs (static).
    """

    ln_flux: Float[Array, " g"]
    m2: Float[Array, " g"]
    ecf: Float[Array, " n_band"]
    pixel_deg2: float = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    min_area: int = eqx.field(static=True)

    def rate_variance(self, flux_limit_cgs: Float[Array, "*p"]) -> Float[Array, "n_band *p"]:
        """Σ CR_b² per pixel of the AGN between S_min and `flux_limit_cgs` [counts² s⁻²] (clipped to the grid)."""
        lim = jnp.clip(jnp.log(jnp.maximum(flux_limit_cgs, 1e-300)), self.ln_flux[0], self.ln_flux[-1])
        m2 = jnp.interp(lim, self.ln_flux, self.m2)
        return (self.ecf**2).reshape((-1,) + (1,) * lim.ndim) * (self.pixel_deg2 * m2)[None]

    def flux_limit(self, counts_without_agn: Float[Array, "n m"], exposure: Float[Array, "n_band n m"],
                   model: SourceModel) -> Float[Array, "n m"]:
        """Detection limit of a point source at each pixel [erg s⁻¹ cm⁻²] (module docstring).

        Args:
            counts_without_agn: (n, m) expected counts per pixel (band sum) a faint AGN would stand on:
                background and the source being measured.
            exposure: (n_band, n, m) vignetted exposure [s].
            model: `measure.SourceModel` (the PSF filter).
        """
        from .detection import point_count_limit

        c_lim = point_count_limit(counts_without_agn, model, self.threshold, min_area=self.min_area)
        per_flux = jnp.sum(self.ecf[:, None, None] * exposure, axis=0)  # counts per (erg s⁻¹ cm⁻²)
        big = jnp.exp(self.ln_flux[-1])
        return jnp.where(per_flux > 0, c_lim / jnp.where(per_flux > 0, per_flux, 1.0), big)


def agn_confusion(
    config: ObservationConfig,
    response: BandResponse,
    pixel_arcsec: float,
    threshold: float,
    min_area: int = 1,
    params: tuple[float, float, float, float] = MORETTI03_SOFT,
    modelled_det_lh: float | None = None,
) -> Confusion | None:
    """The `Confusion` of an observation's AGN (None when ``config.agn == "off"``).

    Args:
        config: `ObservationConfig` (AGN flux range, N_H, photon index).
        response: band response.
        pixel_arcsec: observation pixel [arcsec], > 0.
        threshold: detection threshold [Gaussian σ], > 0 (`DetectionSettings.threshold`).
        min_area: connected pixels above it (`DetectionSettings.min_area`), ≥ 1.
        params: logN–logS parameters (α1, α2, S0, N_S) (`agn.MORETTI03_SOFT`).
        modelled_det_lh: DET_LH from which detected neighbours are masked or modelled
            (`FitSettings.neighbour_min_det_lh`); the AGN detected below it are left in the apertures
            too, so the limit is raised to the point-source significance √ΔC that gives this DET_LH
            (ΔC the χ²₃ value of `measure.likelihood_from_delta_cash`; 5.75σ at DET_LH 15) when that
            exceeds `threshold`. None: the detection limit.
    """
    if config.agn == "off":
        return None
    if not (pixel_arcsec > 0 and threshold > 0 and min_area >= 1):
        raise ValueError(f"pixel_arcsec = {pixel_arcsec}, threshold = {threshold} must be > 0 and "
                         f"min_area = {min_area} >= 1")
    if modelled_det_lh is not None:
        sigma = math.sqrt(_delta_cash_of_likelihood(float(modelled_det_lh), 3))
        if sigma > threshold:
            threshold, min_area = sigma, 1
    grid, m2 = second_moment_below(config.agn_flux_min_cgs, config.agn_flux_max_cgs, params)
    dtype = response.area_cm2.dtype
    ecf = energy_conversion_factor(jnp.asarray(config.nh_cm2, dtype), response, config.agn_photon_index)
    return Confusion(ln_flux=jnp.asarray(np.log(grid), dtype), m2=jnp.asarray(m2, dtype), ecf=ecf,
                     pixel_deg2=float((pixel_arcsec / 3600.0) ** 2), threshold=float(threshold),
                     min_area=int(min_area))



def _delta_cash_of_likelihood(likelihood: float, dof: int) -> float:
    """ΔC whose `measure.likelihood_from_delta_cash` is `likelihood` (bisection; host floats)."""
    from .measure import likelihood_from_delta_cash

    lo, hi = 0.0, 10.0 * likelihood + 50.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if float(likelihood_from_delta_cash(jnp.asarray(mid), dof)) < likelihood:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
