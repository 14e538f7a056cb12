r"""EPIC-pn point-spread function: King profile, encircled energy, FFT convolution.

**Profile.** The azimuthally averaged PSF is a King function (XMM calibration, model
"EXTENDED" of SAS psfgen), normalised here to unit integral over the plane:

$$ \mathrm{PSF}(r) = \frac{α - 1}{π r_c^2}\left[1 + (r/r_c)^2\right]^{-α}, \qquad
   \mathrm{EEF}(r) = 1 - \left[1 + (r/r_c)^2\right]^{1-α}, $$

(α > 1), with EEF the fraction of the photons within radius r.

**Calibration.** Ghizzardi (2002, XMM-SOC-CAL-TN-0029; CCF XRT3_XPSF_0004, release
note XMM-CCF-REL-116, Saxton 2002) for the pn telescope (XRT3), E the photon energy
[keV], θ the off-axis angle [arcmin]:

$$ r_c = 6.636 - 0.305\,E - 0.175\,θ - 0.0067\,E\,θ \ \text{[arcsec]}, \qquad
   α = 1.525 - 0.015\,E - 0.012\,θ - 0.0010\,E\,θ. $$

(On axis at 1 keV: r_c = 6.33″, α = 1.51; half-energy diameter 21.5″ — the King
fit's HEW, larger than the 16.6″ core-dominated HEW of the UHB because the King
wings carry more of the light.)

**Convolution.** `convolve` applies the PSF to a map by FFT, zero-padded to twice
its size so nothing wraps around; the kernel covers the whole padded plane and is
normalised to 1 there (the King wings beyond twice the map are folded back in;
photons falling off the map are lost, as on a detector). The kernel's pixels near
the centre (|Δi|, |Δj| ≤ 2) are integrated on a 33 × 33 sub-grid, since r_c ≈ 6″
is well below a 1′ survey pixel; farther pixels take the central value × area.

**Off-axis dependence by zones.** The PSF depends on the off-axis angle of each
*pointing* that sees a source, and overlapping pointings see it at different θ.
`jaxcluster.observation.photons` splits the exposure by off-axis zone
(θ in [0, 5′), [5′, 10′), [10′, 15′), evaluated at 2.5′, 7.5′, 12.5′) and convolves
each zone's exposure-weighted image with its PSF: exact up to the zone width, and
three FFTs per band rather than one per pointing. The r_c and α change by ≲ 0.9″
and 0.03 across a zone, ≪ a 1′ pixel.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

__all__ = [
    "PN_KING_RC",
    "PN_KING_ALPHA",
    "PSF_ZONE_EDGES_ARCMIN",
    "PSF_ZONE_THETA_ARCMIN",
    "king_parameters",
    "king_profile",
    "encircled_energy",
    "half_energy_diameter_arcsec",
    "psf_kernel",
    "convolve",
]

# Ghizzardi (2002, XMM-SOC-CAL-TN-0029), pn (XRT3): coefficients of
# r_c [arcsec] and α in (1, E [keV], θ [arcmin], E·θ).
PN_KING_RC = (6.636, -0.305, -0.175, -0.0067)
PN_KING_ALPHA = (1.525, -0.015, -0.012, -0.0010)

PSF_ZONE_EDGES_ARCMIN = (5.0, 10.0)  # inner edges of the off-axis zones (module docstring)
PSF_ZONE_THETA_ARCMIN = (2.5, 7.5, 12.5)  # off-axis angle at which each zone's PSF is evaluated

_SUB = 33  # sub-samples per axis of the central kernel pixels
_CORE = 2  # half-width in pixels of the sub-sampled kernel core


def king_parameters(energy_keV: Float[ArrayLike, "..."], off_axis_arcmin: Float[ArrayLike, "..."]):
    """(r_c [arcsec], α) of the pn King PSF at energy [keV] and off-axis angle [arcmin]."""
    e = jnp.asarray(energy_keV)
    dtype = e.dtype if jnp.issubdtype(e.dtype, jnp.floating) else jnp.result_type(float)
    e = e.astype(dtype)
    t = jnp.asarray(off_axis_arcmin).astype(dtype)
    a, b, c, d = PN_KING_RC
    rc = a + b * e + c * t + d * e * t
    a, b, c, d = PN_KING_ALPHA
    alpha = a + b * e + c * t + d * e * t
    return rc, alpha


def king_profile(r_arcsec: Float[ArrayLike, "*r"], rc_arcsec, alpha) -> Float[Array, "*r"]:
    """Normalised King surface density [arcsec⁻²] at radius r [arcsec] (∫ 2πr PSF dr = 1)."""
    r = jnp.asarray(r_arcsec)
    return (alpha - 1.0) / (jnp.pi * rc_arcsec**2) * (1.0 + (r / rc_arcsec) ** 2) ** (-alpha)


def encircled_energy(r_arcsec: Float[ArrayLike, "*r"], rc_arcsec, alpha) -> Float[Array, "*r"]:
    """Fraction of a point source's photons within radius r [arcsec] (King EEF)."""
    r = jnp.asarray(r_arcsec)
    return 1.0 - (1.0 + (r / rc_arcsec) ** 2) ** (1.0 - alpha)


def half_energy_diameter_arcsec(rc_arcsec, alpha):
    """Diameter [arcsec] enclosing half of the photons, 2 r_c √(2^{1/(α−1)} − 1)."""
    return 2.0 * rc_arcsec * jnp.sqrt(2.0 ** (1.0 / (alpha - 1.0)) - 1.0)


def psf_kernel(
    shape: tuple[int, int],
    pixel_arcmin: float,
    rc_arcsec: Float[ArrayLike, ""],
    alpha: Float[ArrayLike, ""],
    dtype=None,
) -> Float[Array, "N M"]:
    """PSF kernel on the (N, M) FFT grid, origin at [0, 0] with wrapped offsets, summing to 1.

    Args:
        shape: (N, M) grid (the zero-padded FFT size; static).
        pixel_arcmin: pixel side [arcmin] (static).
        rc_arcsec: King core radius r_c [arcsec] (`king_parameters`).
        alpha: King slope α (`king_parameters`).

    Returns:
        (N, M) fraction of a point source's photons landing in each pixel offset.
    """
    dtype = dtype or jnp.result_type(float)
    n, m = shape
    p = pixel_arcmin * 60.0  # [arcsec]
    di = jnp.fft.fftfreq(n, 1.0 / n).astype(dtype)  # wrapped integer offsets
    dj = jnp.fft.fftfreq(m, 1.0 / m).astype(dtype)
    r = p * jnp.sqrt(di[:, None] ** 2 + dj[None, :] ** 2)
    ker = king_profile(r, rc_arcsec, alpha) * p * p
    # Central pixels: integrate on a sub-grid (the core is much smaller than a pixel).
    u = (jnp.arange(_SUB, dtype=dtype) + 0.5) / _SUB - 0.5  # sub-pixel centres in pixel units
    offs = jnp.arange(-_CORE, _CORE + 1, dtype=dtype)
    x = (offs[:, None] + u[None, :]).reshape(-1) * p  # (ncore·SUB,)
    rr = jnp.sqrt(x[:, None] ** 2 + x[None, :] ** 2)
    sub = king_profile(rr, rc_arcsec, alpha) * (p / _SUB) ** 2
    k = 2 * _CORE + 1
    core = sub.reshape(k, _SUB, k, _SUB).sum(axis=(1, 3))  # (k, k), offsets −CORE..CORE
    ii = jnp.arange(-_CORE, _CORE + 1) % n
    jj = jnp.arange(-_CORE, _CORE + 1) % m
    if n > 2 * _CORE and m > 2 * _CORE:
        ker = ker.at[ii[:, None], jj[None, :]].set(core)
    return ker / jnp.sum(ker)


def convolve(image: Float[Array, "*b n m"], kernel_fft: Array, shape: tuple[int, int]) -> Float[Array, "*b n m"]:
    """Linear (non-periodic) convolution of images with a kernel given by its rfft2 on the padded grid.

    Args:
        image: (*b, n, m) images (counts or rates per pixel).
        kernel_fft: `jnp.fft.rfft2(psf_kernel((2n, 2m), ...))`.
        shape: (2n, 2m) padded grid.

    Returns:
        (*b, n, m) convolved images (flux conserved up to what falls off the map).
    """
    n, m = image.shape[-2:]
    f = jnp.fft.rfft2(image, s=shape)
    out = jnp.fft.irfft2(f * kernel_fft, s=shape)
    return out[..., :n, :m]
