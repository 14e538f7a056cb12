r"""Photon images from noiseless count-rate maps: `ObservationConfig`, `Observation`, `observe`.

Per band b and pixel, the expected counts are

$$ μ_b = \sum_k \mathrm{PSF}_{b,k} * \big[(τ_b\,\mathrm{CR}^{\rm cl}_b + \mathrm{CR}^{\rm AGN}_b)\,E_{b,k}\big]
        + Ω_{\rm pix}\big[(B^{\rm CXB}_b + B^{\rm fg}_b)\,E_b + B^{\rm part}_b\,T\big], $$

with CR^cl the clusters' count-rate map (`BoxMaps.count_rate`, summed over boxes,
unabsorbed), τ_b its Galactic transmission (`absorption.band_transmission` for a
reference thermal spectrum of observer-frame temperature `cluster_kT_keV`),
CR^AGN the drawn point sources (`agn`), E_{b,k} the vignetted exposure of
off-axis zone k and E_b = Σ_k E_{b,k} (`pointings`), PSF_{b,k} the King PSF at the
band's mean energy and the zone's off-axis angle (`psf`), B the backgrounds
[counts s⁻¹ arcmin⁻²] (`background`), T the unvignetted exposure and Ω_pix the
pixel solid angle [arcmin²]. Photon counts are a Poisson draw of μ.

`observe` is a pure function of arrays and keys: it jits (the configuration's
switches and the map shape are static), vmaps over keys and maps, and the expected
`model` is differentiable in the count-rate maps and in N_H.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ..xray.response import BandResponse
from .absorption import NH_XXL_NORTH_CM2, band_transmission, power_law_photon_spectrum, thermal_photon_spectrum
from .agn import AGNCatalogue, MORETTI03_SOFT, draw_agn, energy_conversion_factor, expected_number, flux_above, paint_point_sources
from .background import cxb_energy_intensity, cxb_rate, foreground_rate, particle_rate
from .pointings import XXL_EXPOSURE_S, XXL_SPACING_ARCMIN, exposure_maps, grid_pointings
from .psf import PSF_ZONE_EDGES_ARCMIN, PSF_ZONE_THETA_ARCMIN, convolve, king_parameters, psf_kernel
from .vignetting import FOV_RADIUS_ARCMIN

__all__ = ["AGN_MODES", "ObservationConfig", "Observation", "band_mean_energy_keV", "observe"]

AGN_MODES = ("random", "haloes", "off")
_REFERENCE_PHOTON_INDEX = 1.7  # spectrum weighting each band's mean energy (PSF, vignetting)


def _concrete(x):
    """float(x) for concrete values, None for tracers (checked in `observe` with error_if)."""
    try:
        return float(x)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _check(name: str, value, lo: float, hi: float, *, lo_open: bool = False) -> None:
    v = _concrete(value)
    if v is None:
        return
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name} = {value}: must be in {bracket}{lo:g}, {hi:g}]")


class ObservationConfig(eqx.Module):
    """Settings of the observation model, validated at construction.

    Attributes:
        exposure_s: exposure per pointing [s], in (0, 1e7] (XXL: 10 ks).
        nh_cm2: Galactic column [H cm⁻²], in [0, 1e24] (default XXL-N's,
            `absorption.NH_XXL_NORTH_CM2`); may be a traced array (differentiable).
        pointing_spacing_arcmin: grid step [arcmin], (0, 120] (XXL: 20′) (static).
        fov_radius_arcmin: field-of-view radius [arcmin], (0, 30] (EPIC: 15′) (static).
        cluster_kT_keV: observer-frame temperature [keV] of the thermal spectrum used for
            the clusters' band absorption, [0.1, 50].
        agn: ``"random"`` (uniform positions), ``"haloes"`` (at given halo positions)
            or ``"off"`` (static).
        agn_flux_min_cgs: lower end of the AGN flux range [erg s⁻¹ cm⁻²] (0.5–2 keV),
            1e-18 ≤ min < max ≤ 1e-9 (static).
        agn_flux_max_cgs: upper end of the AGN flux range [erg s⁻¹ cm⁻²] (0.5–2 keV),
            1e-18 ≤ min < max ≤ 1e-9 (static).
        agn_photon_index: AGN photon index Γ, (0, 4].
        agn_max_sources: slots for AGN (static); None: mean + 8σ + 16 of the field's
            expected number.
        psf: apply the PSF (static).
        particle_background: include the particle background (static).
        cosmic_background: include the CXB + Galactic foreground (static).
    """

    exposure_s: float | Array = XXL_EXPOSURE_S
    nh_cm2: float | Array = NH_XXL_NORTH_CM2
    pointing_spacing_arcmin: float = eqx.field(static=True, default=XXL_SPACING_ARCMIN)
    fov_radius_arcmin: float = eqx.field(static=True, default=FOV_RADIUS_ARCMIN)
    cluster_kT_keV: float | Array = 2.0
    agn: str = eqx.field(static=True, default="random")
    agn_flux_min_cgs: float = eqx.field(static=True, default=1e-15)
    agn_flux_max_cgs: float = eqx.field(static=True, default=1e-11)
    agn_photon_index: float | Array = 1.7
    agn_max_sources: int | None = eqx.field(static=True, default=None)
    psf: bool = eqx.field(static=True, default=True)
    particle_background: bool = eqx.field(static=True, default=True)
    cosmic_background: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        _check("exposure_s", self.exposure_s, 0.0, 1e7, lo_open=True)
        _check("nh_cm2", self.nh_cm2, 0.0, 1e24)
        _check("pointing_spacing_arcmin", self.pointing_spacing_arcmin, 0.0, 120.0, lo_open=True)
        _check("fov_radius_arcmin", self.fov_radius_arcmin, 0.0, 30.0, lo_open=True)
        _check("cluster_kT_keV", self.cluster_kT_keV, 0.1, 50.0)
        _check("agn_flux_min_cgs", self.agn_flux_min_cgs, 1e-18, 1e-9)
        _check("agn_flux_max_cgs", self.agn_flux_max_cgs, 1e-18, 1e-9)
        _check("agn_photon_index", self.agn_photon_index, 0.0, 4.0, lo_open=True)
        if self.agn not in AGN_MODES:
            raise ValueError(f"agn = {self.agn!r}: must be one of {AGN_MODES}")
        if not self.agn_flux_min_cgs < self.agn_flux_max_cgs:
            raise ValueError(
                f"agn_flux_min_cgs = {self.agn_flux_min_cgs} must be < agn_flux_max_cgs = {self.agn_flux_max_cgs}"
            )
        if self.agn_max_sources is not None and not (isinstance(self.agn_max_sources, int) and self.agn_max_sources >= 1):
            raise ValueError(f"agn_max_sources = {self.agn_max_sources!r}: must be None or an int >= 1")


class Observation(eqx.Module):
    """Photon images of a survey field and their truth (band order = `BoxMaps.count_rate[..., b]`).

    Attributes:
        counts: (n_band, n, m) Poisson photon counts per pixel (float array of integers):
            clusters + AGN (PSF-convolved) + backgrounds.
        exposure: (n_band, n, m) vignetted (on-axis-equivalent) exposure [s].
        background: (n_band, n, m) expected background counts per pixel (particle +
            CXB + Galactic foreground).
        model: (n_band, n, m) expected total counts per pixel (the Poisson mean of `counts`).
        agn: the drawn AGN (`agn.AGNCatalogue`; empty slots when AGN are off).
        pointing_centres_arcmin: (n_point, 2) pointing centres, field coordinates [arcmin]
            (origin at the field corner, x along image axis 1; `pointings` docstring).
        psf_off_axis_arcmin: (n, m) the off-axis angle of the PSF a source in each pixel was given: the
            zones' angles weighted by their exposure there [arcmin] (a King PSF at this angle has the
            encircled energy of the zones' mixture to ≈ 0.1 % at 30″); what the measurement fits with.
        pixel_arcmin: pixel side [arcmin] (static).
        bands_keV: the bands ((lo, hi), ...) [keV] (static).
    """

    counts: Float[Array, "n_band n m"]
    exposure: Float[Array, "n_band n m"]
    background: Float[Array, "n_band n m"]
    model: Float[Array, "n_band n m"]
    agn: AGNCatalogue
    pointing_centres_arcmin: Float[Array, "n_point 2"]
    psf_off_axis_arcmin: Float[Array, "n m"]
    pixel_arcmin: float = eqx.field(static=True)
    bands_keV: tuple[tuple[float, float], ...] = eqx.field(static=True)


def band_mean_energy_keV(response: BandResponse, photon_index: float = _REFERENCE_PHOTON_INDEX) -> Float[Array, " n_band"]:
    """Count-weighted mean photon energy of each band [keV] for an $E^{-Γ}$ spectrum."""
    lo, hi, area = response.energ_lo_keV, response.energ_hi_keV, response.area_cm2
    e = 0.5 * (lo + hi)
    w = area * (power_law_photon_spectrum(e, photon_index) * (hi - lo))[:, None]
    return jnp.sum(w * e[:, None], axis=0) / jnp.sum(w, axis=0)


def _max_sources(config: ObservationConfig, field_arcmin: tuple[float, float]) -> int:
    if config.agn_max_sources is not None:
        return config.agn_max_sources
    mean = expected_number(field_arcmin[0] * field_arcmin[1] / 3600.0, config.agn_flux_min_cgs, config.agn_flux_max_cgs)
    return int(math.ceil(mean + 8.0 * math.sqrt(mean) + 16))


def observe(
    key: PRNGKeyArray,
    count_rate_maps: Float[Array, "n m n_band"],
    pixel_arcmin: float,
    config: ObservationConfig = ObservationConfig(),
    response: BandResponse | None = None,
    *,
    halo_position_arcmin: Float[Array, "n_halo 2"] | None = None,
    halo_valid: Bool[Array, " n_halo"] | None = None,
) -> Observation:
    """Observe noiseless cluster count-rate maps with XMM-Newton EPIC-pn (module docstring).

    Args:
        key: PRNG key (AGN draw and Poisson counts).
        count_rate_maps: (n, m, n_band) unabsorbed on-axis count rate per pixel
            [counts s⁻¹], `BoxMaps.count_rate` layout (summed over boxes), ≥ 0.
        pixel_arcmin: pixel side [arcmin] (static).
        config: `ObservationConfig`.
        response: band response (default `jaxcluster.xray.default_band_response()`);
            its bands must be those of the maps.
        halo_position_arcmin: (n_halo, 2) halo positions (field coordinates [arcmin]),
            required when ``config.agn == "haloes"``.
        halo_valid: (n_halo,) mask of the valid haloes (``config.agn == "haloes"``).

    Returns:
        `Observation`.
    """
    if response is None:
        from ..xray.emissivity import default_band_response

        response = default_band_response()
    n, m, n_band = count_rate_maps.shape
    if n_band != len(response.bands_keV):
        raise ValueError(f"count_rate_maps has {n_band} bands; the response has {len(response.bands_keV)}")
    if not pixel_arcmin > 0:
        raise ValueError(f"pixel_arcmin = {pixel_arcmin}: must be > 0")
    if config.agn == "haloes" and halo_position_arcmin is None:
        raise ValueError("config.agn = 'haloes' needs halo_position_arcmin")
    dtype = response.area_cm2.dtype
    cr = count_rate_maps.astype(dtype)
    nh = jnp.asarray(config.nh_cm2).astype(dtype)
    t_exp = jnp.asarray(config.exposure_s).astype(dtype)
    nh = eqx.error_if(nh, ~(nh >= 0), "nh_cm2 must be >= 0")
    t_exp = eqx.error_if(t_exp, ~(t_exp > 0), "exposure_s must be > 0")
    cr = eqx.error_if(cr, jnp.any(~(cr >= 0)), "count_rate_maps must be finite and >= 0")

    field = (n * pixel_arcmin, m * pixel_arcmin)
    pointings = grid_pointings(field, config.pointing_spacing_arcmin, t_exp, config.fov_radius_arcmin)
    e_band = band_mean_energy_keV(response)
    zone_edges = PSF_ZONE_EDGES_ARCMIN if config.psf else ()
    zone_exp, plain_exp = exposure_maps(pointings, (n, m), pixel_arcmin, e_band, zone_edges)
    exposure = jnp.sum(zone_exp, axis=0)
    w_zone = jnp.sum(zone_exp, axis=1)  # (n_zone, n, m)
    theta = jnp.asarray(PSF_ZONE_THETA_ARCMIN[: w_zone.shape[0]], dtype)[:, None, None]
    w_sum = jnp.sum(w_zone, axis=0)
    psf_theta = jnp.where(w_sum > 0, jnp.sum(theta * w_zone, axis=0) / jnp.where(w_sum > 0, w_sum, 1.0), theta[0])

    # Sky count rates (n_band, n, m): absorbed clusters + AGN.
    e_mid = 0.5 * (response.energ_lo_keV + response.energ_hi_keV)
    tau = band_transmission(nh, thermal_photon_spectrum(e_mid, config.cluster_kT_keV), response)
    sky = jnp.moveaxis(cr, -1, 0) * tau[:, None, None]
    max_src = _max_sources(config, field) if config.agn != "off" else 1
    ecf = energy_conversion_factor(nh, response, config.agn_photon_index)
    k_agn, k_poisson = jax.random.split(key)
    agn = draw_agn(
        k_agn, field, max_src, ecf, s_min=config.agn_flux_min_cgs, s_max=config.agn_flux_max_cgs,
        halo_position_arcmin=halo_position_arcmin if config.agn == "haloes" else None,
        halo_valid=halo_valid if config.agn == "haloes" else None,
    )
    if config.agn == "off":
        agn = AGNCatalogue(agn.position_arcmin, agn.flux_cgs * 0.0, agn.count_rate * 0.0, agn.valid & False)
    else:
        sky = sky + paint_point_sources((n, m), pixel_arcmin, agn.position_arcmin, agn.count_rate)

    # Expected source counts: zone-wise PSF convolution (psf docstring).
    if config.psf:
        pad = (2 * n, 2 * m)
        source = jnp.zeros_like(sky)
        for k, theta in enumerate(PSF_ZONE_THETA_ARCMIN):
            rc, alpha = king_parameters(e_band, theta)
            kers = jnp.stack([psf_kernel(pad, pixel_arcmin, rc[b], alpha[b], dtype) for b in range(n_band)])
            source = source + convolve(sky * zone_exp[k], jnp.fft.rfft2(kers), pad)
        source = jnp.maximum(source, 0.0)  # FFT round-off (~1e-16) must not make a Poisson mean negative
    else:
        source = sky * exposure

    # Backgrounds [counts per pixel].
    omega = pixel_arcmin**2
    background = jnp.zeros_like(exposure)
    if config.particle_background:
        b_part = jnp.asarray(particle_rate(response.bands_keV), dtype)
        background = background + b_part[:, None, None] * omega * plain_exp[None]
    if config.cosmic_background:
        unresolved = 1.0
        if config.agn != "off":
            resolved = flux_above(config.agn_flux_min_cgs, config.agn_flux_max_cgs, MORETTI03_SOFT)
            unresolved = max(0.0, 1.0 - resolved / (cxb_energy_intensity() * 3600.0))
        b_sky = cxb_rate(nh, response, unresolved) + foreground_rate(nh, response)
        background = background + b_sky[:, None, None] * omega * exposure

    model = source + background
    counts = jax.random.poisson(k_poisson, model).astype(dtype)
    return Observation(
        counts=counts,
        exposure=exposure,
        background=background,
        model=model,
        agn=agn,
        pointing_centres_arcmin=pointings.centres_arcmin,
        psf_off_axis_arcmin=psf_theta,
        pixel_arcmin=float(pixel_arcmin),
        bands_keV=response.bands_keV,
    )
