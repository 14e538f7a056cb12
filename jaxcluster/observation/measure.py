r"""Source models and measurement on photon images: extent fit, likelihoods, aperture photometry.

**Source models.** A point source is the PSF; an extended source is a
β-model with β = 2/3 convolved with the PSF, the model of XMM-LSS/XXL's
Xamin (Pacaud et al. 2006, MNRAS 372, 578, §3.3: β fixed to 2/3, the
extent EXT being the core radius r_c [arcsec]). Its projected profile is
$S(r) ∝ (1 + r^2/r_c^2)^{-3/2}$, whose 2-D Fourier transform is exactly
$2π r_c^2 e^{-2π r_c q}$ (q in cycles per unit length): so the unit-flux
β-model is the kernel $e^{-2π r_c q}$ in Fourier space, and $r_c → 0$ is
the point source. Templates are built on a grid `supersample` times finer
than the pixels (the EPIC-pn PSF, ≈ 6″ FWHM on axis (Logan et al. 2018,
A&A 620, A18, §1), is undersampled by 4″ pixels): the PSF is evaluated at
the sub-pixel position of the source; the β-model is integrated exactly over
the sub-pixels in real space (`SourceModel.beta_subpixels`) on a grid twice
the cutout, convolved with the PSF by FFT there, and binned back to pixels.
(Multiplying by $e^{-2π r_c q}$ on a periodic grid instead folds the r⁻³ wings
back in: the templates of large r_c were a few per cent too bright.)

**Likelihoods.** With the Cash (1979, ApJ 228, 939) statistic
$C = 2\sum_i (m_i - n_i \ln m_i)$ of the counts $n_i$ and model $m_i$ in a
cutout around the source (the background map b held fixed),

* point fit: $m = A\,P(x_0) e + b$ (e: vignetting relative to the cutout
  centre), amplitude and position by Fisher scoring;
* extended fits: at the point fit's position, $m = A\,T_{r_c} e + b$ for
  every core radius of a grid, A by Newton steps; the extent is the minimum
  of C(r_c), refined by a parabola in ln r_c;
* ΔC_det = C_bkg − min(C_point, C_ext), ΔC_ext = C_point − C_ext ≥ 0.

Each is turned into a likelihood $L = -\ln P(χ^2_ν ≥ ΔC)$ (ν = 3 for the
detection: amplitude and position; ν = 1 for the extension: r_c), the
"−ln of the null-hypothesis probability" convention of XMM SAS emldetect
(Cruddace, Hasinger & Schmitt 1988) that Xamin's DET_LH and EXT_LH follow
(Pacaud et al. 2006, §3.3–3.4). For large ΔC, L ≈ ΔC/2. Our fit is not
Xamin's (one band summed, position fixed for the extended fit), so the
published class cuts (`classes.py`) applied to these numbers are "XXL-like".

**Photometry.** In each band, counts N and background B are summed in a
circular aperture of radius R = clip(`aperture_factor` × r_c, `aperture_min`,
`aperture_max`) around the fitted position (R = `aperture_min` and the point
template when the point model fits best or EXT_LH < `min_ext_lh`, 15 by default). The expected source counts in it are CR × D with
$D = \sum_{\rm ap} T_i E_i$ (T the best-fitting unit-flux template at the
refined extent, E the band's vignetted exposure [s]), which corrects for the
aperture — also a capped one — for the masked pixels and for the vignetting.
CR estimates the **total** count rate of the (β-model ⊗ PSF) source, the
quantity injected:

$$ \mathrm{CR} = \frac{N - B}{D}, \qquad
   σ_{\rm CR}^2 = \frac{\max(N,1) + σ_B^2}{D^2}
   + \Big(\mathrm{CR}\,\frac{∂\ln D}{∂\ln r_c}\,σ_{\ln r_c}\Big)^2, $$

σ_B² = B² × (relative variance of the background estimate), 0 for a
background model; the last term is the aperture correction's uncertainty
through the extent (σ_ln r_c from the curvature of C(ln r_c), ΔC = 1; ∂D/∂ ln r_c
from the template's derivative): it dominates when the aperture holds a small
part of a large cluster. HR = CR[1–2]/CR[0.5–1] and its error propagate these
($σ_{\rm HR}/{\rm HR} = \sqrt{(σ_1/\mathrm{CR}_1)^2 + (σ_0/\mathrm{CR}_0)^2}$).

**Duplicates.** A detection whose fitted position lies within the fitted core
radius (at least 2 pixels) of a more significant, clearly extended detection
(extent and EXT_LH above the C1 cuts) is dropped: a cluster's core broken into several PSF-scale
segments (`detection`, point sources first) is one source. So is any detection
whose point fit converged within 10″ of a more significant one (noise peaks in
a bright AGN's King wings, segmented at the PSF scale, are refitted onto it). An AGN that close to
a cluster's centre is lost with it, as any blend. The first pass applies this within its slots
(a chunk of a survey field); the later passes against every source already done.

**Neighbours: three passes.** A source's light reaches its neighbours' cutouts through the
King wings (≈ 25 % of a point source's counts lie beyond 24″). `measure_two_pass` (or
`observation.field.measure_field` over the chunks of a survey field) measures in three passes:

1. `measure_catalogue`, every source alone: the other detections (segment centroids) are
   masked from its fit and photometry, a disk of `mask_radius_arcsec` (24″ by default) or half
   the separation, whichever is smaller, so a source's own centre is never masked;
2. `refine_catalogue`, every source again in decreasing first-pass DET_LH (a `lax.scan` over the
   whole image): of its `n_neighbours` nearest other detections, the **brighter** ones, already
   done, have their second-pass models (`model_counts`: max(CR_b, 0) × template × exposure)
   added to the background and held fixed; the **fainter** ones are masked. A detection that
   falls below `min_det_lh` (6) once its brighter neighbours are modelled is dropped: fragments
   of a bright AGN's wings, or of a cluster, segmented at the PSF scale;
3. the image background is estimated again with the kept sources' models subtracted
   (`detection.estimate_background(sources=…)`: their wings no longer raise the boxes around
   them), and `refine_catalogue` runs again on it from the second pass, now with the fainter
   neighbours' second-pass models held fixed too (`model_fainter`), and the confusion term.

Neighbours below `neighbour_min_det_lh` (15) are neither masked nor modelled: at a few σ they are
as often the upward fluctuations a cluster's halo is segmented into as real sources. Masked
pixels are left out of the Cash sums and of D alike, so the correction stays exact for the
source itself. With one pass and PSF-scale segments, one AGN-only deg² held 77 false C1 (12 with
all-scales segments only); with the three passes, 3 (docs/validation/observations.md). This is
a sequential approximation of the simultaneous fit of overlapping sources (as SAS emldetect
does); an AGN within ≈ 15–40″ of a cluster's centre, in its segment, is separated from it only by the
blend fit below.

**Blends.** In the third pass (`refine_catalogue(deblend=True)`, `FitSettings.blends`), every source
fitted extended (C_ext < C_point, EXT_LH ≥ `min_ext_lh`) is fitted again as a β-model with its own
centre beside point sources at its single fit's centre and at the residual's peaks, all amplitudes
together (`blends.fit_blend`). Where that lowers C by `BlendSettings.min_delta_c` (40), the source is
measured again with the significant point components' models held fixed like neighbours' (their
amplitude errors, from the simultaneous fit's covariance, in the variance), starting from the β-model's
centre; or, where the β-model's amplitude is below `min_point_snr` σ, as the brightest point with the
others held (an AGN pair fitted as one extended source). `MeasuredCatalogue.n_blended` counts the points
held; they are not catalogued themselves.

**Confusion.** AGN below the detection limit are part of the background on average (the image
estimate follows them) but not pixel by pixel: the counts they put in an aperture scatter by
$σ^2_{\rm conf} = \sum_i v_i\,(E_i\,(A ⊗ P)_i)^2$, with $v_i$ the variance of their count rate in
pixel i (`confusion.Confusion`: the Moretti et al. 2003 counts below the local point-source
limit, which counts this source's own light and its modelled neighbours as background), $E_i$
the exposure and $A ⊗ P$ the aperture spread by the PSF (a source at i puts that fraction of its
counts in the aperture). It is added to the aperture's variance, coherently over the bands in
the total.

**Held models' errors.** The neighbours' models held fixed in the later passes are measurements, not
truths: with `held_model_error` (default), each one's relative error σ_CR/CR (from its own pass)
times the counts it puts in the aperture is added to the aperture's variance, the neighbours taken
as independent and each coherent over the bands. Without it, a cluster with a bright AGN in its
core had its error set by its own Poisson counts alone, though its flux rests on the AGN's
subtraction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, SupportsFloat, SupportsInt

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from jaxtyping import Array, ArrayLike, Bool, Float, Int

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .blends import BlendSettings
    from .classes import ClassCuts
    from .confusion import Confusion
    from .detection import DetectionSettings

__all__ = [
    "SourceModel",
    "FitSettings",
    "SourceFit",
    "MeasuredCatalogue",
    "cash",
    "likelihood_from_delta_cash",
    "fit_source",
    "measure_catalogue",
    "refine_catalogue",
    "render_models",
    "measure_two_pass",
    "later_passes",
]

_LN2 = math.log(2.0)
# Templates are evaluated in float32 (twice as fast on CPU; 2.5e-7 of their peak from float64, far below any
# Poisson error); the likelihoods and photometry sum them in the image's dtype.
_TEMPLATE_DTYPE = jnp.float32


def _check_positive(name: str, value, integer: bool = False, low: float | int = 0.0, high: float | int = math.inf):
    from ..params import check_scalar

    return check_scalar(name, value, low, high, integer=integer, low_open=not integer)


def convolve_centred(image: Float[Array, "n m"], kernel: Float[Array, "k l"]) -> Float[Array, "n m"]:
    """FFT convolution, output on the image's grid, with the kernel's origin at its pixel (k // 2, l // 2)
    (the centre of the cutout templates). `fftconvolve(mode="same")` puts the origin at ((k − 1) // 2, …):
    one pixel off for even sides, so even kernels are padded by a zero row and column first."""
    kernel = jnp.pad(kernel, ((0, 1 - kernel.shape[0] % 2), (0, 1 - kernel.shape[1] % 2)))
    return jax.scipy.signal.fftconvolve(image, kernel, mode="same")


class SourceModel(eqx.Module):
    """PSF, pixel scale and cutout geometry that the source templates are built from (static but `psf_args`).

    Args:
        psf: (r [arcsec], *psf_args) → PSF surface brightness (any normalisation; JAX-traceable, radial).
        pixel_arcsec: pixel side [arcsec], > 0.
        cutout: cutout side [pixels], even, ≥ 8.
        supersample: sub-pixels per pixel side for the templates, in [1, 8].
        psf_box_arcsec: (a, b) half-sides [arcsec] of the rectangle |Δrow| ≤ a, |Δcol| ≤ b over
            which the PSF is normalised to 1 (None: the whole plane). `observe` normalises its
            King kernel on its FFT grid, twice the image: pass (n × pixel, m × pixel) of the
            observed (n, m) image so the templates carry the same flux near the source (the
            King wings, α ≈ 1.5, hold ≈ 2.5 % of the light beyond 256″).
        psf_args: scalars passed to `psf` after r (leaves: `at` replaces them per source, e.g. the
            off-axis angle of the PSF at the source's pixel). The normalisation is computed for the
            values given here; a `psf` whose shape varies with its arguments should be normalised
            itself (as `psf.king_profile` is, over the whole plane).

    Raises:
        ValueError: a value outside its range (named).
    """

    psf: Callable = eqx.field(static=True)
    pixel_arcsec: float = eqx.field(static=True)
    cutout: int = eqx.field(static=True)
    supersample: int = eqx.field(static=True)
    psf_norm: float = eqx.field(static=True)
    psf_box_arcsec: tuple[float, float] | None = eqx.field(static=True)
    psf_args: tuple[Float[Array, ""], ...]

    def __init__(self, psf: Callable, pixel_arcsec: SupportsFloat, cutout: SupportsInt = 48,
                 supersample: SupportsInt = 2, psf_box_arcsec: tuple[SupportsFloat, SupportsFloat] | None = None,
                 psf_args: tuple[SupportsFloat, ...] = ()):
        if not callable(psf):
            raise ValueError(f"psf = {psf!r} must be a callable r [arcsec] -> surface brightness")
        self.pixel_arcsec = float(_check_positive("pixel_arcsec", pixel_arcsec))
        cutout = _check_positive("cutout", cutout, integer=True, low=8, high=4096)
        if cutout % 2:
            raise ValueError(f"cutout = {cutout} must be even")
        self.cutout = int(cutout)
        self.supersample = int(_check_positive("supersample", supersample, integer=True, low=1, high=8))
        self.psf = psf
        self.psf_args = tuple(jnp.asarray(a) for a in psf_args)
        if psf_box_arcsec is None:
            self.psf_box_arcsec = None
            r_max = 50.0 * self.cutout * self.pixel_arcsec
        else:
            box = tuple(float(_check_positive("psf_box_arcsec", v)) for v in psf_box_arcsec)
            if len(box) != 2:
                raise ValueError(f"psf_box_arcsec = {psf_box_arcsec!r} must be two half-sides [arcsec]")
            self.psf_box_arcsec = box
            r_max = math.hypot(*box)
        # ∫ PSF 2π r φ(r) dr [arcsec²] on a fine radial grid (the unit-flux normalisation), φ(r) the fraction of
        # the circle of radius r inside the normalisation rectangle (1 for the whole plane, out to 50 cutouts)
        r = np.linspace(0.0, r_max, 400_001)
        f = np.asarray(psf(jnp.asarray(r), *self.psf_args), dtype=np.float64)
        if not np.all(np.isfinite(f)) or np.any(f < 0) or not f[0] > 0:
            raise ValueError("psf must be finite, >= 0 and > 0 at r = 0")
        frac = np.ones_like(r)
        if self.psf_box_arcsec is not None:
            a, b = self.psf_box_arcsec
            rs = np.maximum(r, 1e-300)
            frac = np.clip(np.arcsin(np.minimum(b / rs, 1.0)) - np.arccos(np.minimum(a / rs, 1.0)), 0.0, None) / (0.5 * np.pi)
        self.psf_norm = float(np.trapezoid(2.0 * np.pi * r * f * frac, r))

    def at(self, *psf_args: Float[ArrayLike, ""]) -> SourceModel:
        """This model with other `psf_args` (traceable: one source's PSF)."""
        if len(psf_args) != len(self.psf_args):
            raise ValueError(f"{len(psf_args)} psf_args given, this model's psf takes {len(self.psf_args)}")
        if not psf_args:
            return self
        return eqx.tree_at(lambda m: m.psf_args, self, tuple(jnp.asarray(a, b.dtype) for a, b in zip(psf_args, self.psf_args)))

    def _psf(self, r):
        return self.psf(r, *(a.astype(r.dtype) for a in self.psf_args))

    @property
    def sub_arcsec(self) -> float:
        """Sub-pixel side [arcsec]."""
        return self.pixel_arcsec / self.supersample

    def point_subpixels(self, centre: Float[Array, " 2"]) -> Float[Array, "cs cs"]:
        """Unit-flux PSF on the sub-pixel grid of the cutout, centred at `centre` (row, col) [cutout pixels].

        Pixel (i, j) of the cutout spans [i − ½, i + ½]; sub-pixel centres lie inside it.
        """
        s, c = self.supersample, self.cutout
        u = (jnp.arange(c * s, dtype=centre.dtype) + 0.5) / s - 0.5  # sub-pixel centres [pixels]
        dr = (u[:, None] - centre[0]) * self.pixel_arcsec
        dc = (u[None, :] - centre[1]) * self.pixel_arcsec
        r2 = dr**2 + dc**2
        # at r = 0 (the centre on a sub-pixel centre: an odd `supersample` and an integer position, e.g. a one-pixel
        # segment's centroid) the gradient of √r² is NaN, the Fisher step was skipped and the position never moved;
        # the profile is smooth in r², so its gradient there is 0
        r = jnp.where(r2 > 0, jnp.sqrt(jnp.where(r2 > 0, r2, 1.0)), 0.0)
        return self._psf(r) * (self.sub_arcsec**2 / self.psf_norm)

    def bin(self, sub: Float[Array, "cs cs"]) -> Float[Array, "c c"]:
        """Sum sub-pixels into pixels."""
        s, c = self.supersample, self.cutout
        return sub.reshape(c, s, c, s).sum(axis=(1, 3))

    def beta_subpixels(self, centre: Float[Array, " 2"], core_radii_arcsec: Float[Array, " k"]) -> Float[Array, "k L L"]:
        r"""Unit-flux β = 2/3 models integrated exactly over the sub-pixels of a grid twice the cutout.

        The grid spans cutout pixels [−c/2, 3c/2) on each axis (the cutout in its middle), the
        model centred at `centre` (cutout pixels). With $S = \frac{r_c}{2π}(r_c^2 + r^2)^{-3/2}$, the
        flux in a rectangle follows from the corners of
        $G(x, y) = \frac{1}{2π}\arctan\frac{xy}{r_c\sqrt{r_c^2 + x^2 + y^2}}$ (the solid angle of a
        rectangle seen from height r_c): exact for any r_c > 0, and nothing wraps around.
        """
        s, c = self.supersample, self.cutout
        L = 2 * c * s
        edges = (jnp.arange(L + 1, dtype=centre.dtype) / s - 0.5 - c / 2.0)  # sub-pixel edges [cutout pixels]
        x = (edges - centre[0]) * self.pixel_arcsec
        y = (edges - centre[1]) * self.pixel_arcsec

        def one(rc):
            rc = jnp.maximum(rc, 1e-3)
            g = jnp.arctan(x[:, None] * y[None, :] / (rc * jnp.sqrt(rc**2 + x[:, None] ** 2 + y[None, :] ** 2)))
            # G[i+1, j+1] − G[i, j+1] − G[i+1, j] + G[i, j] as a 2 × 2 window sum of (−1)^(i+j) G: written as four
            # shifted slices, XLA fused the arctangent into each and evaluated it four times per corner
            # (a quarter of the whole measurement's time on CPU)
            sign = 1.0 - 2.0 * ((jnp.arange(L + 1)[:, None] + jnp.arange(L + 1)[None, :]) % 2).astype(g.dtype)
            w = jax.lax.reduce_window(sign * g, jnp.zeros((), g.dtype), jax.lax.add, (2, 2), (1, 1), "VALID")
            return sign[:-1, :-1] * w / (2.0 * math.pi)

        return jax.vmap(one)(core_radii_arcsec)

    def psf_wrapped(self, dtype=jnp.float64) -> Float[Array, "L L"]:
        """Unit-flux PSF sampled at sub-pixel offsets on the (2c·s)² grid, origin at [0, 0], wrapped offsets."""
        L = 2 * self.cutout * self.supersample
        d = np.fft.fftfreq(L, 1.0 / L) * self.sub_arcsec
        r = jnp.asarray(np.sqrt(d[:, None] ** 2 + d[None, :] ** 2), dtype)
        return self._psf(r) * (self.sub_arcsec**2 / self.psf_norm)

    def templates(self, centre: Float[Array, " 2"], core_radii_arcsec: Float[Array, " k"]) -> Float[Array, "k c c"]:
        """Unit-flux (β = 2/3) ⊗ PSF templates of the cutout for each core radius (0: the PSF itself).

        The β-models are integrated over sub-pixels in real space (`beta_subpixels`) on a grid
        twice the cutout, convolved with the PSF by FFT on that grid, and the cutout is cropped
        from its middle: the template holds the light scattered into the cutout from up to c/2
        pixels outside it. (A β kernel $e^{-2π r_c q}$ on a periodic grid would fold the
        r⁻³ wings back into the cutout: ≈ 6 % too much light at r_c = 40″ in a 192″ cutout.)
        """
        s, c = self.supersample, self.cutout
        cs = c * s
        ext = self._beta_psf_subpixels(centre, core_radii_arcsec)[:, cs // 2: cs // 2 + cs, cs // 2: cs // 2 + cs]
        ext = jax.vmap(self.bin)(ext)  # cropped first: binning the whole grid costs 4× as much
        point = self.point_template(centre)
        return jnp.where((core_radii_arcsec > 0)[:, None, None], ext, point[None])

    def _beta_psf_subpixels(self, centre, core_radii_arcsec):
        beta = self.beta_subpixels(centre, core_radii_arcsec)
        ft = jnp.fft.rfft2(beta) * jnp.fft.rfft2(self.psf_wrapped(centre.dtype))[None]
        return jnp.maximum(jnp.fft.irfft2(ft, s=beta.shape[-2:]), 0.0)  # FFT round-off below zero

    def wide_templates(self, centre: Float[Array, " 2"], core_radii_arcsec: Float[Array, " k"]) -> Float[Array, "k L L"]:
        """The β ⊗ PSF templates of `templates` on the whole grid twice the cutout (pixels; cutout pixel i at
        index i + c/2), before the cutout is cropped from its middle: a template shifted by whole pixels is
        a slice of it (`blends.fit_blend`). Its outer c/2 pixels hold the PSF's wrap-around."""
        s, c = self.supersample, self.cutout
        L = 2 * c
        return self._beta_psf_subpixels(centre, core_radii_arcsec).reshape(-1, L, s, L, s).sum(axis=(2, 4))

    def point_template(self, centre: Float[Array, " 2"]) -> Float[Array, "c c"]:
        """The unit-flux PSF template of the cutout (`templates` at r_c = 0, without its FFT)."""
        return self.bin(self.point_subpixels(centre))


class FitSettings(eqx.Module):
    """Settings of the extent fit and of the photometry (static).

    Args:
        core_radii_arcsec: grid of β-model core radii [arcsec], increasing, > 0 (the extent fit).
        n_point_steps: Fisher-scoring steps of the point fit.
        n_amplitude_steps: Newton steps of the amplitude at each core radius.
        aperture_factor: aperture radius in units of the fitted core radius.
        aperture_min_arcsec: smallest aperture radius [arcsec].
        aperture_max_arcsec: largest aperture radius [arcsec] (None: cutout/2 − 2 pixels).
        mask_radius_arcsec: radius [arcsec] of the disk masked around every *other* detection
            (its segment centroid) in the fit and the photometry of a source; the disk is shrunk
            to half the separation so that a source's own centre is never masked; 0: no masking.
        max_extent_ln_err: cap on the 1σ error of ln r_c (a flat C(r_c) profile).
        min_ext_lh: EXT_LH below which the photometry uses the point template (default 15, XXL's
            C2 cut): the extended fit always has C_ext ≤ C_point by noise, and a spurious large r_c
            extrapolated point sources' fluxes by factors of several.
        min_det_lh: DET_LH below which a detection is dropped from the catalogue (default 6: a
            null-hypothesis probability e⁻⁶ ≈ 0.25 %; our choice, not a published cut). After the
            brighter neighbours' models are held fixed (module docstring, "Neighbours"), fragments of
            their PSF wings fall below it.
        n_neighbours: how many nearest other detections the second pass considers per source
            (brighter ones modelled, fainter ones masked), ≥ 1.
        neighbour_min_det_lh: DET_LH from which a detection is masked or modelled in its neighbours'
            second and third passes (default 15, our choice: module docstring, "Neighbours").
        extended_min_ext_lh: the later passes fit the extended models only for sources whose
            previous pass gave EXT_LH above this (default 3, far below the C2 cut of 15); the others
            are point sources, fitted without the core-radius grid (most of the cost).
        held_model_error: add each held neighbour model's normalisation error (σ_CR/CR × its counts in the
            aperture) to the photometric variance in the later passes (default True; module docstring).
        n_refine_steps: Fisher-scoring steps of the point fit in the later passes, which start from the
            previous pass's position, its amplitude refitted there first (default 6).
        blends: `blends.BlendSettings` of the third pass's blend fit of extended sources (True: its
            defaults; module docstring, "Blends"); False or None: no blend fit. It runs only for the
            sources fitted extended (a `lax.cond`); under `vmap` (fields batched) the cond becomes a
            select and it runs for every source (15× the time in a test of 60 fields): map over fields
            with `lax.map` instead.
    """

    core_radii_arcsec: tuple[float, ...] = eqx.field(static=True)
    n_point_steps: int = eqx.field(static=True)
    n_amplitude_steps: int = eqx.field(static=True)
    aperture_factor: float = eqx.field(static=True)
    aperture_min_arcsec: float = eqx.field(static=True)
    aperture_max_arcsec: float | None = eqx.field(static=True)
    mask_radius_arcsec: float = eqx.field(static=True)
    max_extent_ln_err: float = eqx.field(static=True)
    min_ext_lh: float = eqx.field(static=True)
    min_det_lh: float = eqx.field(static=True)
    n_neighbours: int = eqx.field(static=True)
    neighbour_min_det_lh: float = eqx.field(static=True)
    extended_min_ext_lh: float = eqx.field(static=True)
    n_refine_steps: int = eqx.field(static=True)
    held_model_error: bool = eqx.field(static=True)
    blends: BlendSettings | None = eqx.field(static=True)

    def __init__(self, core_radii_arcsec: Sequence[SupportsFloat] | np.ndarray | None = None,
                 n_point_steps: SupportsInt = 12, n_amplitude_steps: SupportsInt = 12,
                 aperture_factor: SupportsFloat = 4.0, aperture_min_arcsec: SupportsFloat = 30.0,
                 aperture_max_arcsec: SupportsFloat | None = None, mask_radius_arcsec: SupportsFloat = 24.0,
                 max_extent_ln_err: SupportsFloat = 1.0, min_ext_lh: SupportsFloat = 15.0,
                 min_det_lh: SupportsFloat = 6.0, n_neighbours: SupportsInt = 12,
                 neighbour_min_det_lh: SupportsFloat = 15.0, extended_min_ext_lh: SupportsFloat = 3.0,
                 n_refine_steps: SupportsInt = 6, held_model_error: bool = True,
                 blends: BlendSettings | bool | None = True):
        if core_radii_arcsec is None:
            # log-spaced, 12 % apart: the parabola refines between nodes; 2″–80″ spans XXL's C1 extents
            core_radii_arcsec = np.geomspace(2.0, 80.0, 33)
        rc = np.asarray(core_radii_arcsec, dtype=np.float64)
        if rc.ndim != 1 or rc.size < 3 or not np.all(np.isfinite(rc)) or not np.all(rc > 0) or np.any(np.diff(rc) <= 0):
            raise ValueError(f"core_radii_arcsec must be >= 3 increasing finite values > 0, got {core_radii_arcsec!r}")
        self.core_radii_arcsec = tuple(float(x) for x in rc)
        self.n_point_steps = int(_check_positive("n_point_steps", n_point_steps, integer=True, low=1, high=1000))
        self.n_amplitude_steps = int(_check_positive("n_amplitude_steps", n_amplitude_steps, integer=True, low=1, high=1000))
        self.aperture_factor = float(_check_positive("aperture_factor", aperture_factor))
        self.aperture_min_arcsec = float(_check_positive("aperture_min_arcsec", aperture_min_arcsec))
        self.aperture_max_arcsec = None if aperture_max_arcsec is None else float(
            _check_positive("aperture_max_arcsec", aperture_max_arcsec))
        from ..params import check_scalar

        self.mask_radius_arcsec = float(check_scalar("mask_radius_arcsec", mask_radius_arcsec, 0.0, 1e5))
        self.max_extent_ln_err = float(_check_positive("max_extent_ln_err", max_extent_ln_err))
        self.min_ext_lh = float(check_scalar("min_ext_lh", min_ext_lh, 0.0, 1e6))
        self.min_det_lh = float(check_scalar("min_det_lh", min_det_lh, 0.0, 1e6))
        self.n_neighbours = int(_check_positive("n_neighbours", n_neighbours, integer=True, low=1, high=1024))
        self.neighbour_min_det_lh = float(check_scalar("neighbour_min_det_lh", neighbour_min_det_lh, 0.0, 1e6))
        self.extended_min_ext_lh = float(check_scalar("extended_min_ext_lh", extended_min_ext_lh, 0.0, 1e6))
        self.n_refine_steps = int(_check_positive("n_refine_steps", n_refine_steps, integer=True, low=1, high=1000))
        self.held_model_error = bool(held_model_error)
        from .blends import BlendSettings

        if blends is True:
            blends = BlendSettings()
        elif blends is False:
            blends = None
        if blends is not None and not isinstance(blends, BlendSettings):
            raise ValueError(f"blends = {blends!r} must be a BlendSettings, True (the defaults) or False/None")
        self.blends = blends

    def first_pass(self) -> FitSettings:
        """These settings with every fourth core radius (and the last): the first pass only orders the
        sources, picks those the later passes fit extended (EXT_LH above `extended_min_ext_lh`, far below
        the C2 cut) and gives the second pass its neighbours' models, which need no finer extents."""
        rc = self.core_radii_arcsec
        coarse = rc[::4] + ((rc[-1],) if (len(rc) - 1) % 4 else ())
        if len(coarse) < 3:
            coarse = rc
        return dataclasses.replace(self, core_radii_arcsec=coarse)


def cash(counts: Float[Array, "*p"], model: Float[Array, "*p"]) -> Float[Array, ""]:
    r"""Cash statistic $C = 2\sum (m - n \ln m)$ (pixels with m = 0 and n = 0 add 0)."""
    pos = model > 0
    return 2.0 * jnp.sum(jnp.where(pos, model - counts * jnp.log(jnp.where(pos, model, 1.0)), 0.0))


def likelihood_from_delta_cash(delta_c: Float[Array, "*s"], dof: int) -> Float[Array, "*s"]:
    r"""$L = -\ln P(χ^2_ν ≥ ΔC)$ for ν = 1 or 3, stable for large ΔC (module docstring).

    ν = 1: $P = 2Φ(-\sqrt{x})$; ν = 3: $P = 2Φ(-\sqrt{x}) + \sqrt{2x/π}\, e^{-x/2}$.
    """
    x = jnp.maximum(delta_c, 0.0)
    sx = jnp.sqrt(jnp.where(x > 0, x, 1.0))
    ln_p1 = _LN2 + log_ndtr(-sx)
    if dof == 1:
        ln_p = ln_p1
    elif dof == 3:
        ln_p = jnp.logaddexp(ln_p1, 0.5 * jnp.log(2.0 * jnp.where(x > 0, x, 1.0) / math.pi) - 0.5 * x)
    else:
        raise ValueError(f"dof = {dof}: must be 1 or 3")
    return jnp.where(x > 0, jnp.maximum(-ln_p, 0.0), 0.0)


class SourceFit(eqx.Module):
    """Result of `fit_source` for one cutout (leading axes when vmapped).

    Attributes:
        centre: (2,) fitted position (row, col) [cutout pixels].
        amplitude: total source counts of the best model at the cutout centre's exposure.
        extent: fitted core radius [arcsec] (the extended fit's, whatever the likelihoods).
        c_background: Cash statistic of the background-only model.
        c_point: Cash statistic of the point-source model.
        c_extended: Cash statistic of the extended (β-model) model.
        det_lh: detection likelihood (ν = 3), best model vs background.
        ext_lh: extension likelihood (ν = 1), extended vs point.
        template: (c, c) unit-flux template of the photometry (point if C_point ≤ C_ext or
            EXT_LH < `FitSettings.min_ext_lh`; the
            extended template is interpolated in ln r_c to the refined extent).
        template_dlnrc: (c, c) ∂template/∂ ln r_c at the extent (0 for the point template).
        extent_ln_err: 1σ error of ln(extent) (Fisher matrix of (A, ln r_c) at the best fit,
            position held), capped at `FitSettings.max_extent_ln_err`; 0 for the point template.
        extent_influence: (c, c) h_i = ∂ ln r̂_c/∂n_i, the fitted extent's response to the counts of
            each pixel (linearised ML), so that Cov(ln r̂_c, Σ_i a_i n_i) = Σ_i a_i h_i μ_i.
    """

    centre: Float[Array, "*s 2"]
    amplitude: Float[Array, "*s"]
    extent: Float[Array, "*s"]
    c_background: Float[Array, "*s"]
    c_point: Float[Array, "*s"]
    c_extended: Float[Array, "*s"]
    det_lh: Float[Array, "*s"]
    ext_lh: Float[Array, "*s"]
    template: Float[Array, "*s c c"]
    template_dlnrc: Float[Array, "*s c c"]
    extent_ln_err: Float[Array, "*s"]
    extent_influence: Float[Array, "*s c c"]


def _amplitude_newton(n, b, te, a0, steps):
    """ML amplitude A ≥ 0 of m = A·te + b by Newton steps (te: template × relative exposure)."""

    def step(a, _):
        m = a * te + b
        mp = jnp.where(m > 0, m, 1.0)
        g = jnp.sum(te * (n / mp - 1.0))
        h = jnp.sum(te**2 * n / mp**2) + 1e-12
        return jnp.clip(a + g / h, 1e-3 * a + 1e-9, 10.0 * a + 10.0), None

    a, _ = jax.lax.scan(step, a0, None, length=steps)
    return a


def fit_source(
    model: SourceModel,
    settings: FitSettings,
    counts: Float[Array, "c c"],
    background: Float[Array, "c c"],
    relative_exposure: Float[Array, "c c"],
    centre0: Float[Array, " 2"],
    extended: bool | Bool[Array, ""] = True,
    amplitude0: Float[Array, ""] | None = None,
) -> SourceFit:
    """Point and extended (β = 2/3) Poisson fits of one cutout (module docstring).

    Args:
        model: templates' PSF and geometry.
        settings: core-radius grid and step counts.
        counts: (c, c) observed counts (summed over bands).
        background: (c, c) expected background counts, held fixed.
        relative_exposure: (c, c) exposure / exposure at the start position (vignetting), ≥ 0.
        centre0: (2,) starting position (row, col) [cutout pixels].
        extended: whether to fit the extended models (may be traced: under `lax.scan` a False skips
            the core-radius grid, the cost of the fit; under `vmap` both branches run). When False,
            the source is a point source: extent 0, EXT_LH 0, C_ext = C_point.
        amplitude0: starting point-source amplitude [counts at the start position's exposure] (a
            previous pass's fit); None: the cutout's net counts.

    Returns:
        A `SourceFit`.
    """
    dtype = counts.dtype
    half = model.cutout / 2.0

    def point_template(c0):
        return model.point_template(c0.astype(_TEMPLATE_DTYPE)).astype(dtype)

    def point_model(p):
        return jnp.exp(p[0]) * point_template(p[1:]) * relative_exposure + background

    if amplitude0 is None:
        a0 = jnp.maximum(jnp.sum(counts - background), 3.0)
    else:
        # a later pass: the amplitude at the previous position first (its neighbours' models changed the
        # background), so that the few Fisher steps start near the optimum and the position does not wander
        te_start = point_template(centre0) * relative_exposure
        a0 = _amplitude_newton(counts, background, te_start, jnp.maximum(amplitude0, 3.0), settings.n_amplitude_steps)
    p0 = jnp.concatenate([jnp.log(a0)[None], centre0.astype(dtype)])

    def fisher_step(p, _):
        m = point_model(p)
        J = jax.jacfwd(point_model)(p).reshape(-1, 3)
        mf = m.reshape(-1)
        ok = mf > 0
        mp = jnp.where(ok, mf, 1.0)
        w = jnp.where(ok, 1.0 / mp, 0.0)
        g = J.T @ jnp.where(ok, counts.reshape(-1) / mp - 1.0, 0.0)
        F = (J * w[:, None]).T @ J + 1e-9 * jnp.eye(3, dtype=dtype)
        dp = jnp.linalg.solve(F, g)
        dp = jnp.where(jnp.all(jnp.isfinite(dp)), dp, 0.0)  # a singular step (a few-count segment) is skipped
        dp = jnp.clip(dp, jnp.asarray([-1.0, -1.0, -1.0], dtype), jnp.asarray([1.0, 1.0, 1.0], dtype))
        p = p + dp
        # the position stays within 4 pixels of the detection (a fit cannot wander to a neighbour)
        lo = centre0 - 4.0
        hi = centre0 + 4.0
        return jnp.concatenate([jnp.clip(p[:1], -10.0, 30.0), jnp.clip(p[1:], lo, hi)]), None

    p, _ = jax.lax.scan(fisher_step, p0, None, length=settings.n_point_steps)
    centre = p[1:]

    def with_extent():
        rc = jnp.asarray(settings.core_radii_arcsec, dtype=_TEMPLATE_DTYPE)
        T = model.templates(centre.astype(_TEMPLATE_DTYPE), rc).astype(dtype)
        T = jnp.concatenate([point_template(centre)[None], T])  # T[0]: the point source
        rc = jnp.concatenate([jnp.zeros((1,), dtype), rc.astype(dtype)])
        te = T * relative_exposure[None]
        a_start = jnp.full(rc.shape, jnp.exp(p[0]), dtype)
        amps = jax.vmap(lambda t, a: _amplitude_newton(counts, background, t, a, settings.n_amplitude_steps))(te, a_start)
        c_all = jax.vmap(lambda t, a: cash(counts, a * t + background))(te, amps)
        c_point = c_all[0]
        c_ext_grid = c_all[1:]
        k = jnp.argmin(c_ext_grid)
        u = jnp.log(jnp.asarray(settings.core_radii_arcsec, dtype))
        h = (u[-1] - u[0]) / (u.shape[0] - 1)  # log spacing (the grid need not be uniform; the mean step is used)
        km, kp = jnp.maximum(k - 1, 0), jnp.minimum(k + 1, u.shape[0] - 1)
        cm, c0, cp = c_ext_grid[km], c_ext_grid[k], c_ext_grid[kp]
        curv = cm - 2.0 * c0 + cp
        interior = (k > 0) & (k < u.shape[0] - 1) & (curv > 0)
        shift = jnp.where(interior, jnp.clip(0.5 * h * (cm - cp) / jnp.where(interior, curv, 1.0), -h, h), 0.0)
        c_ext = jnp.where(interior, c0 - (cm - cp) ** 2 / (8.0 * jnp.where(interior, curv, 1.0)), c0)
        c_ext = jnp.minimum(c_ext, c0)
        extent = jnp.exp(u[k] + shift)
        c_bkg = cash(counts, background)
        c_best = jnp.minimum(c_point, c_ext)
        det_lh = likelihood_from_delta_cash(c_bkg - c_best, 3)
        ext_lh = likelihood_from_delta_cash(c_point - c_ext, 1)
        # the extended template at the refined extent, linear in ln r_c between the nodes (T[1:] is the grid)
        t_ext = T[1:]
        du = jnp.maximum(u[kp] - u[km], 1e-12)
        slope = (t_ext[kp] - t_ext[km]) / du
        t_at = jnp.maximum(t_ext[k] + shift * slope, 0.0)
        point_best = (c_point <= c_ext) | (ext_lh < settings.min_ext_lh)  # photometry: extended only if significant
        template = jnp.where(point_best, T[0], t_at)
        template_dlnrc = jnp.where(point_best, 0.0, slope)
        amp = jnp.where(point_best, amps[0], amps[1 + k])
        # Fisher matrix of (A, u = ln r_c) for m = A T(u) e + b; the linearised ML response of û to the counts,
        # h_i = [F⁻¹ (∂m_i/∂θ)]_u / m_i, gives σ_u² = Σ h_i² m_i and the covariance of û with aperture counts.
        g_a = t_at * relative_exposure
        g_u = amp * slope * relative_exposure
        m_fit = amp * g_a + background
        w = jnp.where(m_fit > 0, 1.0 / jnp.where(m_fit > 0, m_fit, 1.0), 0.0)
        f_aa, f_au, f_uu = jnp.sum(g_a * g_a * w), jnp.sum(g_a * g_u * w), jnp.sum(g_u * g_u * w)
        det = f_aa * f_uu - f_au**2
        det = jnp.where(det > 1e-12 * (f_aa * f_uu + 1e-300), det, jnp.inf)
        h_map = (f_aa * g_u - f_au * g_a) / det * w  # row u of F⁻¹ times the gradient, over m
        sig_u = jnp.sqrt(jnp.sum(h_map**2 * m_fit))
        scale = jnp.where(sig_u > settings.max_extent_ln_err, settings.max_extent_ln_err / jnp.maximum(sig_u, 1e-300), 1.0)
        h_map = jnp.where(point_best, 0.0, h_map * scale)
        sig_u = jnp.where(point_best, 0.0, jnp.minimum(sig_u, settings.max_extent_ln_err))
        return SourceFit(centre=centre, amplitude=amp, extent=extent, c_background=c_bkg, c_point=c_point,
                         c_extended=c_ext, det_lh=det_lh, ext_lh=ext_lh, template=template, template_dlnrc=template_dlnrc,
                         extent_ln_err=sig_u, extent_influence=h_map)

    def point_only():
        t0 = point_template(centre)
        te0 = t0 * relative_exposure
        amp = _amplitude_newton(counts, background, te0, jnp.exp(p[0]), settings.n_amplitude_steps)
        c_pt = cash(counts, amp * te0 + background)
        c_bkg = cash(counts, background)
        zero = jnp.zeros((), dtype)
        return SourceFit(centre=centre, amplitude=amp, extent=zero, c_background=c_bkg, c_point=c_pt,
                         c_extended=c_pt, det_lh=likelihood_from_delta_cash(c_bkg - c_pt, 3), ext_lh=zero,
                         template=t0, template_dlnrc=jnp.zeros_like(t0), extent_ln_err=zero,
                         extent_influence=jnp.zeros_like(t0))

    if isinstance(extended, bool):
        return with_extent() if extended else point_only()
    return jax.lax.cond(extended, with_extent, point_only)


class MeasuredCatalogue(eqx.Module):
    """Sources detected and measured on one photon image, padded to `max_sources` slots.

    Attributes:
        position: (s, 2) fitted position (row, col) [image pixels; pixel centres at integers].
        det_lh: (s,) detection likelihood (module docstring).
        ext_lh: (s,) extension likelihood.
        extent: (s,) fitted β-model core radius [arcsec].
        count_rate: (s, n_band) vignetting- and aperture-corrected count rates [counts s⁻¹].
        count_rate_err: (s, n_band) their 1σ errors [counts s⁻¹] (Poisson, background estimate, extent).
        net_counts: (s, n_band) background-subtracted counts in the aperture.
        background_counts: (s, n_band) background counts in the aperture.
        aperture_arcsec: (s,) aperture radius [arcsec].
        source_class: (s,) 1: C1, 2: C2, 0: neither (point-like or insignificant); `classes.classify`.
        valid: (s,) whether the slot holds a detection.
        total_err: (s,) 1σ error of the band-summed CR [counts s⁻¹] with the bands' correlated
            extent terms (None: the bands' errors in quadrature).
        model_counts: (s, n_band, c, c) expected counts of each source's best model over its fit
            cutout, max(CR_b, 0) × template × exposure_b (zero for invalid slots); what a second
            pass holds fixed for the fainter neighbours (None when not kept).
        cutout_corner: (s, 2) image pixel (row, col) of each cutout's first pixel.
        hr_err: (s,) 1σ error of the hardness ratio without the extent term, which cancels in the ratio
            (None: from `count_rate_err`).
        n_blended: (s,) point sources fitted with the source in its blend fit and held fixed in its
            measurement (module docstring, "Blends"; not catalogued themselves); None: no blend fit.
    """

    position: Float[Array, "s 2"]
    det_lh: Float[Array, " s"]
    ext_lh: Float[Array, " s"]
    extent: Float[Array, " s"]
    count_rate: Float[Array, "s n_band"]
    count_rate_err: Float[Array, "s n_band"]
    net_counts: Float[Array, "s n_band"]
    background_counts: Float[Array, "s n_band"]
    aperture_arcsec: Float[Array, " s"]
    source_class: Int[Array, " s"]
    valid: Bool[Array, " s"]
    total_err: Float[Array, " s"] | None = None
    model_counts: Float[Array, "s n_band c c"] | None = None
    cutout_corner: Int[Array, "s 2"] | None = None
    hr_err: Float[Array, " s"] | None = None
    n_blended: Int[Array, " s"] | None = None

    @property
    def count_rate_total(self) -> Float[Array, " s"]:
        """CR summed over the bands ([0.5–2] keV for bands [0.5–1], [1–2]) [counts s⁻¹]."""
        return jnp.sum(self.count_rate, axis=-1)

    @property
    def count_rate_total_err(self) -> Float[Array, " s"]:
        """1σ error of `count_rate_total` [counts s⁻¹]: `total_err` when measured (the bands' extent terms are
        fully correlated), else the bands' errors in quadrature."""
        if self.total_err is not None:
            return self.total_err
        return jnp.sqrt(jnp.sum(self.count_rate_err**2, axis=-1))

    @property
    def hardness_ratio(self) -> Float[Array, " s"]:
        """HR = CR[1–2 keV] / CR[0.5–1 keV] (band 1 over band 0); NaN where CR[0.5–1] ≤ 0."""
        soft, hard = self.count_rate[..., 0], self.count_rate[..., 1]
        return jnp.where(soft > 0, hard / jnp.where(soft > 0, soft, 1.0), jnp.nan)

    @property
    def hardness_ratio_err(self) -> Float[Array, " s"]:
        """1σ error of HR by first-order propagation (module docstring): `hr_err` when measured (the
        extent term, common to both bands, cancels in the ratio), else from `count_rate_err`."""
        if self.hr_err is not None:
            return self.hr_err
        soft, hard = self.count_rate[..., 0], self.count_rate[..., 1]
        es, eh = self.count_rate_err[..., 0], self.count_rate_err[..., 1]
        ok = (soft > 0) & (hard != 0)
        rel = jnp.sqrt((es / jnp.where(ok, soft, 1.0)) ** 2 + (eh / jnp.where(ok, hard, 1.0)) ** 2)
        return jnp.where(ok, jnp.abs(self.hardness_ratio) * rel, jnp.nan)

    def to_table(self, pixel_arcsec: float | None = None):
        """The valid sources as an astropy `Table` with units (numpy, host)."""
        from astropy import units as u
        from astropy.table import Table

        v = np.asarray(self.valid)
        t = Table()
        pos = np.asarray(self.position)[v]
        t["row"] = pos[:, 0] * u.pix
        t["col"] = pos[:, 1] * u.pix
        t["det_lh"] = np.asarray(self.det_lh)[v]
        t["ext_lh"] = np.asarray(self.ext_lh)[v]
        t["extent"] = np.asarray(self.extent)[v] * u.arcsec
        cps = u.ct / u.s
        for b in range(self.count_rate.shape[-1]):
            t[f"count_rate_{b}"] = np.asarray(self.count_rate[:, b])[v] * cps
            t[f"count_rate_err_{b}"] = np.asarray(self.count_rate_err[:, b])[v] * cps
            t[f"net_counts_{b}"] = np.asarray(self.net_counts[:, b])[v] * u.ct
            t[f"background_counts_{b}"] = np.asarray(self.background_counts[:, b])[v] * u.ct
        t["count_rate_total"] = np.asarray(self.count_rate_total)[v] * cps
        t["count_rate_total_err"] = np.asarray(self.count_rate_total_err)[v] * cps
        t["hardness_ratio"] = np.asarray(self.hardness_ratio)[v]
        t["hardness_ratio_err"] = np.asarray(self.hardness_ratio_err)[v]
        t["aperture"] = np.asarray(self.aperture_arcsec)[v] * u.arcsec
        t["source_class"] = np.asarray(self.source_class)[v]
        if self.n_blended is not None:
            t["n_blended"] = np.asarray(self.n_blended)[v]
        t.meta["classes"] = "1: C1, 2: C2, 0: neither (jaxcluster.observation.classes)"
        if pixel_arcsec is not None:
            t.meta["pixel_arcsec"] = float(pixel_arcsec)
        return t


def _segment_centroids(seg, weight, max_sources):
    n, m = seg.shape
    ids = seg.reshape(-1)
    nseg = max_sources + 1
    w = weight.reshape(-1)
    rows = jnp.broadcast_to(jnp.arange(n, dtype=weight.dtype)[:, None], (n, m)).reshape(-1)
    cols = jnp.broadcast_to(jnp.arange(m, dtype=weight.dtype)[None, :], (n, m)).reshape(-1)
    ws = jax.ops.segment_sum(w, ids, num_segments=nseg)[1:]
    sr = jax.ops.segment_sum(w * rows, ids, num_segments=nseg)[1:]
    sc = jax.ops.segment_sum(w * cols, ids, num_segments=nseg)[1:]
    area = jax.ops.segment_sum(jnp.ones_like(w), ids, num_segments=nseg)[1:]
    safe = jnp.where(ws > 0, ws, 1.0)
    return jnp.stack([sr / safe, sc / safe], axis=-1), area


def _place_each(cutouts, offset, c):
    """Cutouts (k, nb, c, c) whose first pixel is at `offset` (k, 2) [pixels] from ours, each resampled onto
    our (nb, c, c) cutout grid (pixels outside a cutout contribute 0): (k, nb, c, c)."""
    yy = jnp.arange(c, dtype=offset.dtype)
    rr = yy[None, :] - offset[:, 0, None]  # (k, c): their row for each of our rows
    qq = yy[None, :] - offset[:, 1, None]
    okr = (rr >= 0) & (rr < c)
    okq = (qq >= 0) & (qq < c)
    rows = jnp.take_along_axis(cutouts, jnp.clip(rr, 0, c - 1)[:, None, :, None], axis=2)
    both = jnp.take_along_axis(rows, jnp.clip(qq, 0, c - 1)[:, None, None, :], axis=3)
    w = (okr[:, :, None] & okq[:, None, :]).astype(cutouts.dtype)
    return both * w[:, None]


class _Image(eqx.Module):
    """The images a measurement reads, zero-padded by one cutout on each side (internal)."""

    stack: Float[Array, "4 nb N M"]  # counts, background, exposure, background relative variance
    psf_maps: tuple[Float[Array, "N M"], ...]  # per-pixel `SourceModel.psf_args`
    cutout: int = eqx.field(static=True)

    def model_at(self, model: SourceModel, centre: Float[Array, " 2"]) -> SourceModel:
        """`model` with the PSF of the pixel at `centre` [image pixels] (itself without `psf_maps`)."""
        if not self.psf_maps:
            return model
        i = jnp.clip(jnp.round(centre).astype(jnp.int32) + self.cutout, 0, jnp.asarray(self.stack.shape[2:], jnp.int32) - 1)
        return model.at(*(a[i[0], i[1]] for a in self.psf_maps))

    def cut(self, centre: Float[Array, " 2"]):
        """(corner (2,) int32 [image pixels], counts, background, exposure, rel. variance (nb, c, c) each)."""
        c = self.cutout
        corner = jnp.round(centre).astype(jnp.int32) - c // 2
        zero = jnp.zeros((), jnp.int32)
        nb = self.stack.shape[1]
        cut = jax.lax.dynamic_slice(self.stack, (zero, zero, corner[0] + c, corner[1] + c), (4, nb, c, c))
        return corner, cut[0], cut[1], cut[2], cut[3]


def _image(counts, exposure, background, rel_var, c, psf_maps=None) -> _Image:
    pad = ((0, 0), (0, 0), (c, c), (c, c))
    maps = tuple(jnp.pad(jnp.asarray(a), c, mode="edge") for a in (psf_maps or ()))
    if any(a.shape != counts.shape[1:] for a in (psf_maps or ())):
        raise ValueError(f"psf_maps must each have the image shape {counts.shape[1:]}")
    return _Image(jnp.pad(jnp.stack([counts, background, exposure, rel_var]), pad), maps, c)


def _disks(centres, radii, origin, c, dtype):
    """(c, c) 1 outside every disk (centres (k, 2) image pixels, radii (k,) pixels), 0 inside."""
    yy = jnp.arange(c, dtype=dtype)
    rel = centres - origin[None, :]
    d2o = (yy[None, :, None] - rel[:, 0, None, None]) ** 2 + (yy[None, None, :] - rel[:, 1, None, None]) ** 2
    return (~jnp.any(d2o < radii[:, None, None] ** 2, axis=0)).astype(dtype)


class _Measured(eqx.Module):
    """One source's fit and photometry (internal; leading axes when vmapped)."""

    position: Float[Array, "*s 2"]
    fit: SourceFit
    count_rate: Float[Array, "*s nb"]
    err: Float[Array, "*s nb"]
    err_total: Float[Array, "*s"]
    net: Float[Array, "*s nb"]
    bkg: Float[Array, "*s nb"]
    aperture_arcsec: Float[Array, "*s"]
    model_counts: Float[Array, "*s nb c c"]
    corner: Int[Array, "*s 2"]
    hr_err: Float[Array, "*s"]
    n_blended: Int[Array, "*s"]


def _measure_one(model, settings, confusion, corner, cn, cb, ce, cv, keep, start, extended=True,
                 start_rate=None, held_sigma=None) -> _Measured:
    """Fit and photometry of one cutout (module docstring): `keep` masks pixels, `cb` holds every model held fixed;
    `start_rate` (n_band,) a previous pass's count rates [counts s⁻¹], the fit's starting amplitude;
    `held_sigma` (k, n_band, c, c) the 1σ uncertainty of each held model [counts per pixel]."""
    dtype = cn.dtype
    c = model.cutout
    half = c // 2
    origin = corner.astype(dtype)
    ap_max = settings.aperture_max_arcsec or (half - 2) * model.pixel_arcsec
    yy = jnp.arange(c, dtype=dtype)
    es = ce.sum(0)
    e_ref = jnp.maximum(es[half, half], 1e-30)
    amp0 = None if start_rate is None else jnp.sum(start_rate * ce[:, half, half])
    fit = fit_source(model, settings, cn.sum(0) * keep, cb.sum(0) * keep, es / e_ref * keep, start - origin, extended,
                     amp0)
    radius_pix = jnp.clip(settings.aperture_factor * fit.extent, settings.aperture_min_arcsec, ap_max) / model.pixel_arcsec
    radius_pix = jnp.where(fit.c_point <= fit.c_extended, settings.aperture_min_arcsec / model.pixel_arcsec, radius_pix)
    d2 = (yy[:, None] - fit.centre[0]) ** 2 + (yy[None, :] - fit.centre[1]) ** 2
    ap = (d2 <= radius_pix**2).astype(dtype) * keep
    N = jnp.sum(cn * ap[None], axis=(1, 2))
    B = jnp.sum(cb * ap[None], axis=(1, 2))
    # the background estimate's error is correlated over the aperture (one box value): σ_B = Σ b √v
    var_b = jnp.sum(cb * jnp.sqrt(cv) * ap[None], axis=(1, 2)) ** 2
    D = jnp.sum(fit.template[None] * ce * ap[None], axis=(1, 2))
    dD = jnp.sum(fit.template_dlnrc[None] * ce * ap[None], axis=(1, 2))  # ∂D/∂ ln r_c
    Dp = jnp.where(D > 0, D, 1.0)
    cr = jnp.where(D > 0, (N - B) / Dp, 0.0)
    model_counts = jnp.maximum(cr, 0.0)[:, None, None] * fit.template[None] * ce
    if confusion is None:
        var_conf = jnp.zeros_like(N)
    else:
        # AGN fainter than the local limit (against the background, the models held fixed and this source)
        # each put a fraction (aperture ⊗ PSF)(x) of their counts in the aperture
        v = confusion.rate_variance(confusion.flux_limit(cb.sum(0) + model_counts.sum(0), ce, model))
        psf_pix = model.bin(model.point_subpixels(jnp.full((2,), float(half), dtype)))
        spread = convolve_centred(ap, psf_pix)
        var_conf = jnp.sum(v * (ce * spread[None]) ** 2, axis=(1, 2))  # [counts²] per band
    # the neighbours' models held fixed are measurements too: each one's normalisation error, through the
    # counts it puts in this aperture (neighbours independent; coherent over the bands)
    if held_sigma is None:
        s_held = jnp.zeros((1,) + N.shape, dtype)
    else:
        s_held = jnp.sum(held_sigma * ap[None, None], axis=(2, 3))  # (k, n_band) [counts]
    var_held = jnp.sum(s_held**2, axis=0)
    # δCR_b = δN_b/D_b − CR_b s_b δû (s_b = ∂ln D_b/∂ln r_c), δû = Σ_i h_i δn_i (both bands): Poisson and
    # background terms, the extent's, and their covariance Cov(N_b, û) = Σ_ap h_i μ_b,i (μ ≈ n)
    k_b = cr * dD / Dp  # CR_b s_b
    cov_nu = jnp.sum(ap[None] * fit.extent_influence[None] * cn, axis=(1, 2))
    var_ap = (jnp.maximum(N, 1.0) + var_b + var_conf + var_held) / Dp**2
    var = var_ap + (k_b * fit.extent_ln_err) ** 2 - 2.0 * k_b * cov_nu / Dp
    err = jnp.where(D > 0, jnp.sqrt(jnp.maximum(var, var_ap)), jnp.inf)
    k_t = jnp.sum(k_b)
    # the same unresolved sources shine in both bands: their terms add coherently in the band sum
    var_ap_t = (jnp.sum((jnp.maximum(N, 1.0) + var_b) / Dp**2) + jnp.sum(jnp.sqrt(var_conf) / Dp) ** 2
                + jnp.sum(jnp.sum(s_held / Dp[None], axis=1) ** 2))
    var_t = var_ap_t + (k_t * fit.extent_ln_err) ** 2 - 2.0 * k_t * jnp.sum(cov_nu / Dp)
    err_t = jnp.where(jnp.all(D > 0), jnp.sqrt(jnp.maximum(var_t, var_ap_t)), jnp.inf)
    if cr.shape[0] == 2:
        # HR = CR_1/CR_0: δ ln HR = δN_1/(D_1 CR_1) − δN_0/(D_0 CR_0) − (s_1 − s_0) δû, and s_b = ∂ln D_b/∂ln r_c is
        # the same template's in both bands, so the extent term cancels; the aperture (co)variances remain
        ok = (cr[0] > 0) & (cr[1] != 0) & jnp.all(D > 0)
        safe = jnp.where(ok, cr, 1.0)
        # the unresolved AGN and the held models shine in both bands: their covariance cancels in the ratio too
        cov = (jnp.sqrt(var_conf[0] * var_conf[1]) + jnp.sum(s_held[:, 0] * s_held[:, 1])) / (Dp[0] * Dp[1])
        var_rel = var_ap[0] / safe[0] ** 2 + var_ap[1] / safe[1] ** 2 - 2.0 * cov / (safe[0] * safe[1])
        hr_err = jnp.where(ok, jnp.abs(cr[1] / safe[0]) * jnp.sqrt(jnp.maximum(var_rel, 0.0)), jnp.nan)
    else:
        hr_err = jnp.full((), jnp.nan, dtype)
    return _Measured(position=fit.centre + origin, fit=fit, count_rate=cr, err=err, err_total=err_t, net=N - B, bkg=B,
                     aperture_arcsec=radius_pix * model.pixel_arcsec, model_counts=model_counts, corner=corner,
                     hr_err=hr_err, n_blended=jnp.zeros((), jnp.int32))


def _deblend(model, settings, confusion, corner, cn, cb, ce, cv, keep, m: _Measured, held_sigma) -> _Measured:
    """The blend fit of an extended source (module docstring, "Blends"; `blends.fit_blend`) and, where it is
    adopted, the source measured again with its significant point components held fixed like neighbours."""
    from .blends import fit_blend, poisson_amplitudes

    blends = settings.blends
    fit = m.fit
    dtype = cn.dtype
    c = model.cutout
    half = c // 2
    origin = corner.astype(dtype)

    def rel_exposure(e):
        return e / jnp.maximum(e[half, half], 1e-30) * keep

    def adopt(bl):
        significant = (bl.point_amplitudes > 0) & (bl.point_amplitudes >= blends.min_point_snr * bl.point_sigma)
        # the source is the β-model while it stays significant, else the brightest point (an AGN pair or triple
        # fitted as one extended source), the other points held
        beta_ok = bl.beta_snr >= blends.min_point_snr
        brightest = jnp.argmax(bl.point_amplitudes)
        held = significant & (beta_ok | (jnp.arange(significant.shape[0]) != brightest))
        start = jnp.where(beta_ok, bl.beta_centre, bl.point_centres[brightest])
        P = jax.vmap(lambda p: model.point_template(p.astype(_TEMPLATE_DTYPE)).astype(dtype))(bl.point_centres)
        beta_t = model.templates(bl.beta_centre.astype(_TEMPLATE_DTYPE), bl.extent.astype(_TEMPLATE_DTYPE)[None])[0]

        def band(n_b, b_b, e_b):
            # the components' amplitudes in one band, at the blend's positions and core radius
            e_b = rel_exposure(e_b)
            T = jnp.concatenate([beta_t.astype(dtype)[None], P]) * e_b[None]
            frac = jnp.sum(n_b * keep) / jnp.maximum(jnp.sum(cn.sum(0) * keep), 1.0)
            a0 = jnp.maximum(jnp.concatenate([bl.beta_amplitude[None], bl.point_amplitudes]) * frac, 1.0)
            a, cov, _ = poisson_amplitudes(n_b * keep, b_b * keep, T, a0, blends.n_newton_steps)
            sig = jnp.sqrt(jnp.maximum(jnp.diagonal(cov)[1:], 0.0))
            return a[1:, None, None] * P * e_b[None], sig[:, None, None] * P * e_b[None]

        pm, ps = jax.vmap(band)(cn, cb, ce)  # (nb, k, c, c)
        w = held.astype(dtype)[None, :, None, None]
        cb2 = cb + jnp.sum(pm * w, axis=1)
        sig2 = jnp.moveaxis(ps * w, 1, 0)  # (k, nb, c, c)
        sig2 = sig2 if held_sigma is None else jnp.concatenate([held_sigma, sig2])
        m2 = _measure_one(model, settings, confusion, corner, cn, cb2, ce, cv, keep, start + origin, beta_ok,
                          None, sig2)
        return dataclasses.replace(m2, n_blended=jnp.sum(held).astype(jnp.int32))

    def run():
        e_rel = rel_exposure(ce.sum(0))
        bl = fit_blend(model, blends, settings.core_radii_arcsec, cn.sum(0) * keep, cb.sum(0) * keep, e_rel,
                       fit.amplitude * fit.template * e_rel, fit.c_extended, fit.centre, fit.extent)
        return jax.lax.cond(bl.adopted, lambda: adopt(bl), lambda: m)

    extended = (fit.c_extended < fit.c_point) & (fit.ext_lh >= settings.min_ext_lh)
    return jax.lax.cond(extended, run, lambda: m)


def _catalogue(m: _Measured, valid, cuts) -> MeasuredCatalogue:
    from .classes import classify

    fit = m.fit
    zero = jnp.zeros((), m.count_rate.dtype)
    cls = classify(fit.extent, fit.ext_lh, fit.det_lh, cuts)
    return MeasuredCatalogue(
        position=jnp.where(valid[:, None], m.position, zero), det_lh=jnp.where(valid, fit.det_lh, zero),
        ext_lh=jnp.where(valid, fit.ext_lh, zero), extent=jnp.where(valid, fit.extent, zero),
        count_rate=jnp.where(valid[:, None], m.count_rate, zero), count_rate_err=jnp.where(valid[:, None], m.err, jnp.inf),
        net_counts=jnp.where(valid[:, None], m.net, zero), background_counts=jnp.where(valid[:, None], m.bkg, zero),
        aperture_arcsec=jnp.where(valid, m.aperture_arcsec, zero), source_class=jnp.where(valid, cls, 0), valid=valid,
        total_err=jnp.where(valid, m.err_total, jnp.inf), hr_err=jnp.where(valid, m.hr_err, jnp.nan),
        model_counts=jnp.where(valid[:, None, None, None], m.model_counts, zero), cutout_corner=m.corner,
        n_blended=jnp.where(valid, m.n_blended, 0))


def _check_images(counts, exposure, background, segmentation=None):
    counts = jnp.asarray(counts)
    dtype = counts.dtype
    exposure = jnp.asarray(exposure, dtype)
    background = jnp.asarray(background, dtype)
    n_band, n, m = counts.shape
    seg_shape = (n, m) if segmentation is None else jnp.shape(segmentation)
    if exposure.shape != counts.shape or background.shape != counts.shape or seg_shape != (n, m):
        raise ValueError(f"counts {counts.shape}, exposure {exposure.shape}, background {background.shape} and "
                         f"segmentation {seg_shape} must share the image shape")
    exposure = eqx.error_if(exposure, ~jnp.all(exposure >= 0), "exposure must be >= 0")
    return counts, exposure, background


def _duplicates(pos, fit, valid, model, cuts, slot_order):
    """(i, j): j makes i a duplicate (module docstring, "Duplicates"), j more significant."""
    ext_pref = valid & (fit.c_extended < fit.c_point) & (fit.ext_lh > cuts.ext_lh_c1) & (fit.extent > cuts.extent_min)
    dij = jnp.hypot(pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1])  # (i, j) [pixels]
    reach = jnp.maximum(fit.extent / model.pixel_arcsec, 2.0)
    same = valid[None, :] & (dij < max(10.0 / model.pixel_arcsec, 1.0))
    return ((ext_pref[None, :] & (dij < reach[None, :])) | same) & slot_order


def measure_catalogue(
    counts: Float[ArrayLike, "n_band n m"],
    exposure: Float[ArrayLike, "n_band n m"],
    background: Float[ArrayLike, "n_band n m"],
    segmentation: Int[ArrayLike, "n m"],
    model: SourceModel,
    max_sources: int,
    settings: FitSettings | None = None,
    background_rel_var: Float[ArrayLike, "n_band n m"] | None = None,
    cuts: ClassCuts | None = None,
    *,
    confusion: Confusion | None = None,
    psf_maps: tuple[Float[ArrayLike, "n m"], ...] | None = None,
) -> MeasuredCatalogue:
    """Fit, photometer and classify every detected source, each alone (the first pass; module docstring); jit-able.

    Args:
        counts: (n_band, n, m) photon counts per pixel (bands [0.5–1], [1–2] keV for HR).
        exposure: (n_band, n, m) vignetted exposure [s], ≥ 0.
        background: (n_band, n, m) expected background counts per pixel (estimated or model).
        segmentation: (n, m) labels 0..max_sources from detection (0: background).
        model: PSF and cutout geometry.
        max_sources: number of slots (the detector's `max_sources`).
        settings: fit and aperture settings (default `FitSettings()`).
        background_rel_var: (n_band, n, m) relative variance of the background estimate
            per pixel (None: a known model, no error).
        cuts: `classes.ClassCuts` (default: XXL's C1/C2 cuts).
        confusion: `confusion.Confusion` of the undetected AGN, added to σ_CR through the
            aperture ⊗ PSF (module docstring, "Confusion"); None: no confusion term.
        psf_maps: one (n, m) map per `model.psf_args`: each source is fitted with the PSF of the
            pixel it starts from (e.g. the off-axis angle, `photons.Observation.psf_off_axis_arcmin`);
            None: `model`'s PSF everywhere.

    Returns:
        A `MeasuredCatalogue` with `max_sources` slots (slot s: label s + 1), with `model_counts`
        and `cutout_corner` for `refine_catalogue`.
    """
    from .classes import ClassCuts

    settings = FitSettings() if settings is None else settings
    cuts = ClassCuts() if cuts is None else cuts
    img, centroid, area = _sources(counts, exposure, background, segmentation, background_rel_var, model.cutout,
                                   max_sources, psf_maps)
    return _measure_sources(img, centroid, area > 0, model, settings, cuts, confusion)


def _sources(counts, exposure, background, segmentation, background_rel_var, cutout, max_sources, psf_maps=None):
    """The images padded for cutouts, and the centroids (max_sources, 2) [image pixels] and areas of the segments."""
    counts, exposure, background = _check_images(counts, exposure, background, segmentation)
    rel_var = jnp.zeros_like(counts) if background_rel_var is None else jnp.asarray(background_rel_var, counts.dtype)
    img = _image(counts, exposure, background, rel_var, cutout, psf_maps)
    weight = jnp.maximum(counts.sum(0) - background.sum(0), 0.0) + 1e-6
    centroid, area = _segment_centroids(jnp.asarray(segmentation), weight, max_sources)
    return img, centroid, area


def _measure_sources(img: _Image, centroid, valid, model, settings, cuts, confusion=None) -> MeasuredCatalogue:
    """`measure_catalogue` of the sources at `centroid` (s, 2) [image pixels] (`valid` (s,)) in the padded `img`."""
    dtype = img.stack.dtype
    c = model.cutout
    slot = jnp.arange(centroid.shape[0])
    r_mask = settings.mask_radius_arcsec / model.pixel_arcsec  # [pixels]

    def one(i, cen):
        corner, cn, cb, ce, cv = img.cut(cen)
        # the other detections' disks, shrunk to half their separation (never its own centre)
        sep = jnp.hypot(*(centroid - cen[None, :]).T)
        rad = jnp.where(valid & (slot != i), jnp.minimum(r_mask, 0.5 * sep), 0.0)
        keep = _disks(centroid, rad, corner.astype(dtype), c, dtype)
        return _measure_one(img.model_at(model, cen), settings, confusion, corner, cn, cb, ce, cv, keep, cen)

    m = jax.vmap(one)(slot, centroid)
    more = (m.fit.det_lh[None, :] > m.fit.det_lh[:, None]) & (slot[:, None] != slot[None, :])
    dup = jnp.any(_duplicates(m.position, m.fit, valid, model, cuts, more), axis=1)
    return _catalogue(m, valid & ~dup & (m.fit.det_lh >= settings.min_det_lh), cuts)


def refine_catalogue(
    counts: Float[ArrayLike, "n_band n m"],
    exposure: Float[ArrayLike, "n_band n m"],
    background: Float[ArrayLike, "n_band n m"],
    first: MeasuredCatalogue,
    model: SourceModel,
    settings: FitSettings | None = None,
    background_rel_var: Float[ArrayLike, "n_band n m"] | None = None,
    cuts: ClassCuts | None = None,
    *,
    confusion: Confusion | None = None,
    model_fainter: bool = False,
    deblend: bool = False,
    psf_maps: tuple[Float[ArrayLike, "n m"], ...] | None = None,
) -> MeasuredCatalogue:
    """The second pass (module docstring, "Neighbours"): every source again, brightest first; jit-able.

    Sources are taken in decreasing first-pass DET_LH (`lax.scan`). Each is refitted at its
    first-pass position with the **second-pass** models of the brighter sources already done
    added to its background (a dropped one adds nothing), and its fainter neighbours masked (or, with
    `model_fainter`, their models in `first` added too: for a `first` that is itself a refined
    catalogue, whose faint sources' models were fitted with their brighter neighbours removed). A
    source within 10″ of a brighter one kept, or within the extent of a clearly extended brighter
    one kept, is a duplicate; one whose DET_LH falls below `min_det_lh` is dropped.

    Args:
        counts: as in `measure_catalogue` (the whole image).
        exposure: as in `measure_catalogue` (the whole image).
        background: as in `measure_catalogue` (the whole image).
        first: `measure_catalogue`'s result for **every** source of the image (all chunks, with
            `model_counts`).
        model: as in `measure_catalogue`.
        settings: as in `measure_catalogue`.
        background_rel_var: as in `measure_catalogue` (the whole image).
        cuts: as in `measure_catalogue`.
        confusion: as in `measure_catalogue`.
        model_fainter: hold the fainter neighbours' models in `first` fixed instead of masking them.
        deblend: fit each extended source again as a blend (`settings.blends`; module docstring, "Blends").
        psf_maps: as in `measure_catalogue` (each source's PSF at its previous position).

    Returns:
        A `MeasuredCatalogue` with the slots of `first`.
    """
    from .classes import ClassCuts

    settings = FitSettings() if settings is None else settings
    cuts = ClassCuts() if cuts is None else cuts
    counts, exposure, background = _check_images(counts, exposure, background)
    dtype = counts.dtype
    c = model.cutout
    if first.model_counts is None or first.model_counts.shape[-2:] != (c, c):
        raise ValueError(f"first must be measure_catalogue's result with model_counts of cutout {c} (this model's)")
    rel_var = jnp.zeros_like(counts) if background_rel_var is None else jnp.asarray(background_rel_var, dtype)
    img = _image(counts, exposure, background, rel_var, c, psf_maps)
    n_slot = first.valid.shape[0]
    k = min(settings.n_neighbours, max(n_slot - 1, 1))
    r_mask = settings.mask_radius_arcsec / model.pixel_arcsec
    order = jnp.argsort(jnp.where(first.valid, -first.det_lh, jnp.inf)).astype(jnp.int32)  # brightest first
    rank = jnp.zeros((n_slot,), jnp.int32).at[order].set(jnp.arange(n_slot, dtype=jnp.int32))
    same_r = max(10.0 / model.pixel_arcsec, 1.0)
    later = dataclasses.replace(settings, n_point_steps=settings.n_refine_steps)  # from the previous fit

    def measure(g, done_models, done_valid, done_pos, done_reach, done_ext):
        cen = first.position[g]
        corner, cn, cb, ce, cv = img.cut(cen)
        d2 = jnp.sum((first.position - cen[None, :]) ** 2, axis=-1)
        # neighbours below `neighbour_min_det_lh` are left alone: at a few σ they are as often the upward
        # fluctuations a cluster's halo is segmented into as real sources, and masking or modelling them
        # biases the cluster low; their counts are scatter, like the unresolved AGN's
        others = first.valid & (first.det_lh >= settings.neighbour_min_det_lh) & (jnp.arange(n_slot, dtype=jnp.int32) != g)
        neg, idx = jax.lax.top_k(jnp.where(others, -d2, -jnp.inf), k)
        near = jnp.isfinite(neg)
        brighter = near & (rank[idx] < rank[g])
        # the brighter ones done: their second-pass models join the background; the fainter ones are masked
        offset = done_models.corner[idx] - corner[None, :]
        held = _place_each(done_models.counts[idx] * brighter[:, None, None, None].astype(dtype), offset, c)
        sigma = held * done_models.rel_err[idx][:, None, None, None]
        if model_fainter:
            fainter = _place_each(first.model_counts[idx] * (near & ~brighter)[:, None, None, None].astype(dtype),
                                  first.cutout_corner[idx] - corner[None, :], c)
            held = held + fainter
            sigma = sigma + fainter * first_rel[idx][:, None, None, None]
            rad = jnp.zeros_like(neg)
        else:
            rad = jnp.where(near & ~brighter, jnp.minimum(r_mask, 0.5 * jnp.sqrt(d2[idx])), 0.0)
        cb = cb + jnp.sum(held, axis=0)
        keep = _disks(first.position[idx], rad, corner.astype(dtype), c, dtype)
        held_sigma = sigma if settings.held_model_error else None
        model_g = img.model_at(model, cen)
        m = _measure_one(model_g, later, confusion, corner, cn, cb, ce, cv, keep, cen,
                         first.ext_lh[g] > settings.extended_min_ext_lh, first.count_rate[g], held_sigma)
        if deblend:
            m = _deblend(model_g, later, confusion, corner, cn, cb, ce, cv, keep, m, held_sigma)
        dist = jnp.hypot(*(done_pos - m.position[None, :]).T)
        dup = jnp.any(done_valid & ((dist < same_r) | (done_ext & (dist < done_reach))))
        ok = ~dup & (m.fit.det_lh >= settings.min_det_lh)
        return m, ok

    def step(carry, r):
        models, valid, pos, reach, ext = carry
        g = order[r]
        empty = jax.eval_shape(lambda: measure(g, models, valid, pos, reach, ext))
        m, ok = jax.lax.cond(first.valid[g], lambda: measure(g, models, valid, pos, reach, ext),
                             lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), empty))
        ext_g = (m.fit.c_extended < m.fit.c_point) & (m.fit.ext_lh > cuts.ext_lh_c1) & (m.fit.extent > cuts.extent_min)
        models = _Models(models.counts.at[g].set(jnp.where(ok, m.model_counts, 0.0)), models.corner.at[g].set(m.corner),
                         models.rel_err.at[g].set(_rel_err(m.err_total, jnp.sum(m.count_rate))))
        carry = (models, valid.at[g].set(ok), pos.at[g].set(m.position),
                 reach.at[g].set(jnp.maximum(m.fit.extent / model.pixel_arcsec, 2.0)), ext.at[g].set(ext_g))
        return carry, (m, ok)

    first_rel = _rel_err(first.total_err, first.count_rate_total)
    models0 = _Models(jnp.zeros_like(first.model_counts), first.cutout_corner, jnp.zeros((n_slot,), dtype))
    carry0 = (models0, jnp.zeros((n_slot,), bool), first.position, jnp.zeros((n_slot,), dtype), jnp.zeros((n_slot,), bool))
    _, (m, ok) = jax.lax.scan(step, carry0, jnp.arange(n_slot))
    back = lambda a: a[rank]  # noqa: E731 (scan order → slot order)
    return _catalogue(jax.tree.map(back, m), back(ok) & first.valid, cuts)


def render_models(catalogue: MeasuredCatalogue, shape: tuple[int, int]) -> Float[Array, "n_band n m"]:
    """The expected counts of every valid source's model (`model_counts` at `cutout_corner`) on the (n, m) image."""
    if catalogue.model_counts is None:
        raise ValueError("catalogue has no model_counts (measure_catalogue's and refine_catalogue's have)")
    s, nb, c, _ = catalogue.model_counts.shape
    n, m = shape
    yy = jnp.arange(c, dtype=catalogue.cutout_corner.dtype)
    rows = catalogue.cutout_corner[:, 0, None] + c + yy[None, :]  # (s, c) in the image padded by c
    cols = catalogue.cutout_corner[:, 1, None] + c + yy[None, :]
    img = jnp.zeros((nb, n + 2 * c, m + 2 * c), catalogue.model_counts.dtype)
    vals = jnp.moveaxis(catalogue.model_counts, 1, 0)  # (nb, s, c, c)
    img = img.at[:, rows[:, :, None], cols[:, None, :]].add(vals)
    return img[:, c: c + n, c: c + m]


class _Models(eqx.Module):
    counts: Float[Array, "s nb c c"]
    corner: Int[Array, "s 2"]
    rel_err: Float[Array, " s"]  # σ_CR / CR of each model (its normalisation's relative error)


def _rel_err(err, cr):
    return jnp.where((cr > 0) & jnp.isfinite(err), err / jnp.where(cr > 0, cr, 1.0), 0.0)


def measure_two_pass(
    counts: Float[ArrayLike, "n_band n m"],
    exposure: Float[ArrayLike, "n_band n m"],
    background: Float[ArrayLike, "n_band n m"],
    segmentation: Int[ArrayLike, "n m"],
    model: SourceModel,
    max_sources: int,
    settings: FitSettings | None = None,
    background_rel_var: Float[ArrayLike, "n_band n m"] | None = None,
    cuts: ClassCuts | None = None,
    *,
    confusion: Confusion | None = None,
    detection: DetectionSettings | None = None,
    background_template: Float[ArrayLike, "n_band n m"] | None = None,
    psf_maps: tuple[Float[ArrayLike, "n m"], ...] | None = None,
) -> MeasuredCatalogue:
    """`measure_catalogue` (every source alone, neighbours masked), then `refine_catalogue` (brightest first,
    the brighter neighbours' models held fixed, with the confusion term); jit-able. Arguments as
    `measure_catalogue`, and

    Args:
        detection: the `detection.DetectionSettings` that estimated an "image" background: after the
            second pass it is estimated again with the kept sources' models subtracted
            (`detection.estimate_background(sources=…)`) and the second pass is run again on it (from its own
            catalogue); None: the background is kept.
        background_template: the background's expected shape for that estimate
            (`detection.estimate_background`'s `template`).
        psf_maps: as in `measure_catalogue`.
    """
    settings = FitSettings() if settings is None else settings
    first = measure_catalogue(counts, exposure, background, segmentation, model, max_sources, settings.first_pass(),
                              background_rel_var, cuts, psf_maps=psf_maps)
    return later_passes(counts, exposure, background, first, model, settings, background_rel_var, cuts,
                        confusion=confusion, detection=detection, background_template=background_template,
                        psf_maps=psf_maps)


def later_passes(
    counts: Float[ArrayLike, "n_band n m"],
    exposure: Float[ArrayLike, "n_band n m"],
    background: Float[ArrayLike, "n_band n m"],
    first: MeasuredCatalogue,
    model: SourceModel,
    settings: FitSettings,
    background_rel_var: Float[ArrayLike, "n_band n m"] | None = None,
    cuts: ClassCuts | None = None,
    *,
    confusion: Confusion | None = None,
    detection: DetectionSettings | None = None,
    background_template: Float[ArrayLike, "n_band n m"] | None = None,
    psf_maps: tuple[Float[ArrayLike, "n m"], ...] | None = None,
) -> MeasuredCatalogue:
    """Passes 2 and 3 after a first pass over every source of the image (`measure_two_pass`; a survey
    field's chunks, `observation.field.measure_field`); jit-able. Arguments as `measure_two_pass`."""
    second = refine_catalogue(counts, exposure, background, first, model, settings, background_rel_var, cuts,
                              psf_maps=psf_maps)
    if detection is not None and detection.background == "image":
        from .detection import estimate_background, filter_kernels

        # the background again, with the models of the sources the second pass kept subtracted
        kernels = filter_kernels(model, detection.scales_arcsec, second.count_rate.dtype) if detection.scales_arcsec else None
        background, background_rel_var = estimate_background(jnp.asarray(counts), jnp.asarray(exposure), detection,
                                                             kernels, render_models(second, jnp.shape(counts)[1:]),
                                                             background_template)
    return refine_catalogue(counts, exposure, background, second, model, settings, background_rel_var, cuts,
                            confusion=confusion, model_fainter=True, deblend=settings.blends is not None,
                            psf_maps=psf_maps)
