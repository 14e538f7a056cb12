r"""Background estimation and source detection on Poisson photon images.

**Background** (`estimate_background`), three ways:

* ``"image"`` (the realistic default): the background is measured on the
  image itself. Per band, the counts are summed in boxes of `background_box`
  pixels, pixels near sources masked, over the sum of a background shape in
  the same pixels: the expected background map when one is given (what an
  observer builds from the exposure maps and the particle-background
  calibration; `Observation.background`), else the vignetted exposure. The
  ratio is bilinearly interpolated between box centres and multiplied by the
  shape. (Without the map, the cosmic background is vignetted and the
  particle background is not: the count rate per vignetted exposure steps
  where a pointing's field of view ends, and the boxes left ridges of excess
  along the edges.) The mask is
  iterated: pixels whose filtered significance against the current
  estimate exceeds `background_kappa` are masked, with a margin.
  Means, not modes: at 10 ks most pixels hold 0 or 1 photon, where sep's
  mode estimate (2.5 median − 1.5 mean) is meaningless.
  The relative variance of each box's estimate, 1/N_box (its counts), is
  returned so the photometry can carry it.
* ``"sep"``: sep's `Background` (SExtractor's mesh estimator, Bertin &
  Arnouts 1996) per band, through `jax.pure_callback`; no error term.
* ``"model"``: the observation model's expected background map, known
  exactly (an idealisation, useful to isolate the photometry).

**Detection.** The band-summed counts n and background b are filtered with
unit-sum kernels K: the PSF and β = 2/3 models ⊗ PSF of the core radii
`scales_arcsec` (matched filters for point and extended sources; XXL
detects on wavelet-filtered images for the same reason, Pacaud et al.
2006, §3.2). With $S = K ⊗ n$, $B = K ⊗ b$ and $\bar k = \sum K^2$, the
effective counts $S/\bar k$ have Poisson variance $B/\bar k$ under the
background-only hypothesis (exact for a flat-topped K), and the
significance is the Poisson likelihood-ratio one (Cash 1979):

$$ σ = \mathrm{sign}(S-B)\sqrt{2\big[S' \ln(S'/B') - (S' - B')\big]}, \quad S' = S/\bar k,\ B' = B/\bar k, $$

the maximum over the scales. sep (or the JAX connected-components
detector) extracts the pixels with σ > `threshold` (default 4, in Gaussian
σ), at least `min_area` of them connected.

**Point sources first** (`point_first`, on by default). The all-scales map is smooth
on the largest filter's scale (30″), and deblending it merges sources up to
≈ 1′ apart: a cluster next to a bright AGN became one segment, fitted at the
AGN (20–40 % of bright injections were lost this way). So the PSF-scale map
is segmented too; its segments are kept, and an all-scales segment is added
only where it holds none of them (faint diffuse emission). A cluster whose
core breaks into several PSF-scale segments is then measured more than once;
`measure_catalogue` drops the duplicates (its docstring). PSF-scale segments
also cut a bright AGN's wings into fragments, which a single measurement pass
fitted as large extended sources (77 false C1 in an AGN-only deg²): measure
with both passes (`measure.measure_two_pass`, `field.measure_field`), which
hold the brighter neighbours' models fixed (7 false C1 there;
docs/validation/observations.md).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, SupportsFloat, SupportsInt

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .measure import SourceModel, convolve_centred

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "BACKGROUND_METHODS",
    "DetectionSettings",
    "point_count_limit",
    "Detection",
    "poisson_significance",
    "filter_kernels",
    "significance_map",
    "estimate_background",
    "detect",
]

BACKGROUND_METHODS = ("image", "sep", "model")


class DetectionSettings(eqx.Module):
    """Detection settings (static); module docstring for the method.

    Args:
        background: "image" (default), "sep" or "model".
        background_box: box side [pixels] of the background mesh; must divide the image sides.
        background_kappa: masking threshold of the background iterations [σ], > 0.
        background_iterations: mask/estimate iterations, ≥ 1.
        threshold: detection threshold in significance [Gaussian σ], > 0.
        min_area: minimum connected pixels above the threshold, ≥ 1.
        scales_arcsec: core radii [arcsec] of the matched filters (0: the PSF alone);
            empty: no filter (pixel significance).
        method: "sep" or "jax" (connected components, `survey.components`).
        max_sources: catalogue slots (the most significant sources), [1, 65535].
        deblend_nthresh: sep's deblending thresholds, [1, 256].
        deblend_cont: sep's minimum deblending contrast, [0, 1].
        point_first: segment the PSF-scale significance separately and keep its segments, adding
            the all-scales segments that hold none of them (module docstring); needs the first
            scale to be 0 (the PSF).

    Raises:
        ValueError: a value outside its range (named).
    """

    background: str = eqx.field(static=True)
    background_box: int = eqx.field(static=True)
    background_kappa: float = eqx.field(static=True)
    background_iterations: int = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    min_area: int = eqx.field(static=True)
    scales_arcsec: tuple[float, ...] = eqx.field(static=True)
    method: str = eqx.field(static=True)
    max_sources: int = eqx.field(static=True)
    deblend_nthresh: int = eqx.field(static=True)
    deblend_cont: float = eqx.field(static=True)
    point_first: bool = eqx.field(static=True)

    def __init__(self, background: str = "image", background_box: SupportsInt = 32,
                 background_kappa: SupportsFloat = 4.0, background_iterations: SupportsInt = 3,
                 threshold: SupportsFloat = 4.0, min_area: SupportsInt = 3,
                 scales_arcsec: Sequence[SupportsFloat] = (0.0, 10.0, 30.0), method: str = "sep",
                 max_sources: SupportsInt = 32, deblend_nthresh: SupportsInt = 32,
                 deblend_cont: SupportsFloat = 0.005, point_first: bool = True):
        from ..params import check_scalar
        from ..survey.detect import DETECTORS

        if background not in BACKGROUND_METHODS:
            raise ValueError(f"background = {background!r} is not one of {BACKGROUND_METHODS}")
        if method not in DETECTORS:
            raise ValueError(f"method = {method!r} is not an allowed detector {DETECTORS}")
        self.background, self.method = background, method
        self.background_box = int(check_scalar("background_box", background_box, 1, 65536, integer=True))
        self.background_kappa = float(check_scalar("background_kappa", background_kappa, 0.0, math.inf, low_open=True))
        self.background_iterations = int(check_scalar("background_iterations", background_iterations, 1, 100,
                                                      integer=True))
        self.threshold = float(check_scalar("threshold", threshold, 0.0, math.inf, low_open=True))
        self.min_area = int(check_scalar("min_area", min_area, 1, 10**6, integer=True))
        scales = np.atleast_1d(np.asarray(scales_arcsec, dtype=np.float64)) if len(scales_arcsec) else np.zeros(0)
        if scales.ndim != 1 or not np.all(np.isfinite(scales)) or np.any(scales < 0):
            raise ValueError(f"scales_arcsec = {scales_arcsec!r} must be finite core radii >= 0 [arcsec]")
        self.scales_arcsec = tuple(float(s) for s in scales)
        self.max_sources = int(check_scalar("max_sources", max_sources, 1, 65535, integer=True))
        self.deblend_nthresh = int(check_scalar("deblend_nthresh", deblend_nthresh, 1, 256, integer=True))
        self.deblend_cont = float(check_scalar("deblend_cont", deblend_cont, 0.0, 1.0))
        self.point_first = bool(point_first)


class Detection(eqx.Module):
    """Output of `detect` for one image.

    Attributes:
        segmentation: (n, m) int32 labels 0..max_sources (1: the most significant source).
        significance: (n, m) filtered significance [Gaussian σ].
        background: (n_band, n, m) background counts per pixel used.
        background_rel_var: (n_band, n, m) relative variance of the background estimate.
        max_sources: number of label slots (static).
    """

    segmentation: Int[Array, "n m"]
    significance: Float[Array, "n m"]
    background: Float[Array, "n_band n m"]
    background_rel_var: Float[Array, "n_band n m"]
    max_sources: int = eqx.field(static=True)


def poisson_significance(s: Float[Array, "*p"], b: Float[Array, "*p"]) -> Float[Array, "*p"]:
    r"""Signed likelihood-ratio significance of s counts over a background b > 0 [Gaussian σ]."""
    bp = jnp.maximum(b, 1e-30)
    sp = jnp.maximum(s, 0.0)
    term = jnp.where(sp > 0, sp * jnp.log(jnp.where(sp > 0, sp, 1.0) / bp), 0.0) - (sp - bp)
    return jnp.sign(sp - bp) * jnp.sqrt(jnp.maximum(2.0 * term, 0.0))


def filter_kernels(model: SourceModel, scales_arcsec: tuple[float, ...], dtype=jnp.float64) -> Float[Array, "k c c"]:
    """Unit-sum matched-filter kernels (β = 2/3 ⊗ PSF, core radii `scales_arcsec`) on the cutout grid."""
    half = model.cutout // 2
    centre = jnp.full((2,), float(half), dtype)
    t = model.templates(centre, jnp.asarray(scales_arcsec, dtype))
    return t / jnp.sum(t, axis=(1, 2), keepdims=True)


def _convolve(image, kernel):
    # the kernels are templates centred on pixel (c/2, c/2) of even cutouts: convolve about that pixel
    return convolve_centred(image, kernel)


def significance_map(
    counts: Float[Array, "n m"], background: Float[Array, "n m"], kernels: Float[Array, "k c c"] | None
) -> Float[Array, "n m"]:
    """Maximum over the kernels of the filtered Poisson significance (module docstring); None: per pixel."""
    if kernels is None or kernels.shape[0] == 0:
        return poisson_significance(counts, background)

    def one(k):
        kbar = jnp.sum(k**2)
        return poisson_significance(_convolve(counts, k) / kbar, _convolve(background, k) / kbar)

    return jnp.max(jax.vmap(one)(kernels), axis=0)


def _box_sum(x, box):
    nb, n, m = x.shape
    return x.reshape(nb, n // box, box, m // box, box).sum(axis=(2, 4))


def _upsample(x, shape):
    # bilinear between box centres, constant beyond the outer centres
    return jax.image.resize(x, shape, method="linear")


def _sep_background_host(image, box):
    import sep

    data = np.array(image, dtype=np.float64, order="C", copy=True)
    return np.asarray(sep.Background(data, bw=box, bh=box, fw=3, fh=3).back(), dtype=np.float64)


def estimate_background(
    counts: Float[Array, "n_band n m"],
    exposure: Float[Array, "n_band n m"],
    settings: DetectionSettings,
    kernels: Float[Array, "k c c"] | None = None,
    sources: Float[Array, "n_band n m"] | None = None,
    template: Float[Array, "n_band n m"] | None = None,
) -> tuple[Float[Array, "n_band n m"], Float[Array, "n_band n m"]]:
    """Background counts per pixel and their relative variance, "image" or "sep" method (module docstring).

    Args:
        counts: (n_band, n, m) photon counts.
        exposure: (n_band, n, m) vignetted exposure [s].
        settings: `background`, `background_box`, `background_kappa`, `background_iterations`.
        kernels: matched-filter kernels for the source mask (None: per pixel).
        sources: (n_band, n, m) expected counts of the sources measured so far ("image" only): subtracted
            from the box sums, and the mask is then where they exceed half the background, not where the
            counts are significant (which selects upward fluctuations: around bright sources the boxes came
            out at 0.35–0.9 of the true background, and large false extended sources followed). The wings of
            bright AGN (≈ 25 % of their light beyond 24″) and of clusters then no longer raise the boxes around
            them either (`measure.render_models`, `measure.later_passes`).
        template: (n_band, n, m) the background's expected shape ("image" only; e.g. `Observation.background`,
            what an observer builds from the exposure maps and the particle-background calibration): the
            boxes then measure its normalisation, smooth, instead of the count rate per vignetted exposure,
            which steps where a pointing's field of view ends (the particle background is unvignetted), so
            the bilinear boxes left ridges of excess along the edges (false extended sources).

    Returns:
        (background, relative variance), each (n_band, n, m).
    """
    nb, n, m = counts.shape
    box = settings.background_box
    if settings.background == "sep":
        host = partial(_sep_background_host, box=box)
        shape = jax.ShapeDtypeStruct((n, m), counts.dtype)
        bkg = jnp.stack([jax.pure_callback(host, shape, jax.lax.stop_gradient(counts[b]), vmap_method="sequential")
                         for b in range(nb)])
        return jnp.maximum(bkg, 0.0), jnp.zeros_like(counts)
    if settings.background != "image":
        raise ValueError(f"background = {settings.background!r}: estimate_background makes 'image' or 'sep'")
    if n % box or m % box:
        raise ValueError(f"background_box = {box} must divide the image sides {(n, m)}")
    mask = jnp.ones((n, m), counts.dtype)
    grow = jnp.ones((5, 5), counts.dtype)  # masks 2 pixels beyond the significant ones (PSF wings)
    bkg = rel_var = None
    src_counts = jnp.zeros_like(counts) if sources is None else sources
    for _ in range(settings.background_iterations):
        c_box = _box_sum(counts * mask[None], box)
        s_box = _box_sum(src_counts * mask[None], box)
        shape_map = exposure if template is None else template
        e_box = _box_sum(shape_map * mask[None], box)
        ok = e_box > 0
        rate = jnp.where(ok, jnp.maximum(c_box - s_box, 0.0) / jnp.where(ok, e_box, 1.0), 0.0)
        bkg = _upsample(rate, (nb, n, m)) * shape_map
        rel_var = _upsample(1.0 / jnp.maximum(c_box - s_box, 1.0), (nb, n, m))
        if sources is None:
            sig = significance_map(counts.sum(0), bkg.sum(0), kernels)
            src = (sig > settings.background_kappa).astype(counts.dtype)
            mask = (_convolve(src, grow) < 0.5).astype(counts.dtype)
        else:
            # with the sources modelled, mask only where they dominate, whatever the counts: a mask made on the
            # counts (their significance) removes upward fluctuations and biases the boxes low near sources
            mask = (src_counts.sum(0) <= 0.5 * bkg.sum(0)).astype(counts.dtype)
    return bkg, rel_var


def point_count_limit(
    background: Float[Array, "n m"], model: SourceModel, threshold: float, min_area: int = 1, n_bisect: int = 32
) -> Float[Array, "n m"]:
    r"""Expected counts a point source needs to be detected: `min_area` pixels above `threshold` on the
    PSF-filtered significance map.

    With the unit-sum PSF filter K (`filter_kernels`, scale 0: the PSF over the cutout, which holds a
    fraction f of its light) and $\bar k = \sum K^2$, a point source of C expected counts raises the
    effective counts $S' = K ⊗ n / \bar k$ from the background's $B' = K ⊗ b / \bar k$ to $B' + f C$
    at its pixel (K matches the PSF), and to $B' + ρ f C$ at the pixel where the filtered PSF
    (K ⊗ PSF) has fallen to the `min_area`-th largest of its values, ρ times its peak; the limit solves
    `poisson_significance`(B' + ρ f C, B') = threshold, by `n_bisect` bisections of ln C on [ln 10⁻³, ln 10⁷]
    (32: 5 × 10⁻⁹ relative). B' is normalised by the
    part of K inside the image, so the edges see their own background.

    Args:
        background: (n, m) expected counts per pixel that a point source stands on (band sum), ≥ 0.
        model: PSF and pixel scale.
        threshold: detection threshold [Gaussian σ], > 0.
        min_area: connected pixels above the threshold, ≥ 1 (`DetectionSettings.min_area`).

    Returns:
        (n, m) limiting source counts (band sum).
    """
    dtype = background.dtype
    half = model.cutout // 2
    t = model.point_template(jnp.full((2,), float(half), dtype))  # `templates` at r_c = 0, without its β FFT
    frac = jnp.sum(t)
    k = t / frac
    kbar = jnp.sum(k**2)
    peak = jnp.sort(_convolve(t, k).reshape(-1))[::-1]
    rho = peak[min_area - 1] / peak[0]
    inside = _convolve(jnp.ones_like(background), k)
    b_eff = jnp.maximum(_convolve(background, k) / jnp.maximum(inside, 1e-6) / kbar, 1e-6)

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = poisson_significance(b_eff + rho * frac * jnp.exp(mid), b_eff) >= threshold
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo = jnp.full_like(b_eff, math.log(1e-3))
    hi = jnp.full_like(b_eff, math.log(1e7))
    lo, hi = jax.lax.fori_loop(0, n_bisect, step, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


def _point_first(seg_p: Int[Array, "n m"], seg_e: Int[Array, "n m"], max_sources: int) -> Int[Array, "n m"]:
    """Merge the PSF-scale segmentation with the all-scales one (module docstring): the PSF-scale segments,
    then the all-scales segments that hold no PSF-scale pixel; relabelled 1..max_sources in that order."""
    s = max_sources
    has_p = jax.ops.segment_max((seg_p > 0).astype(jnp.int32).reshape(-1), seg_e.reshape(-1), num_segments=s + 1)
    ext_only = (seg_e > 0) & (has_p[seg_e] == 0) & (seg_p == 0)
    lab = jnp.where(seg_p > 0, seg_p, jnp.where(ext_only, s + seg_e, 0)).astype(jnp.int32)  # 0..2s
    present = jax.ops.segment_max(jnp.ones(lab.size, jnp.int32), lab.reshape(-1), num_segments=2 * s + 1)
    present = present.at[0].set(0) > 0
    rank = jnp.cumsum(present.astype(jnp.int32))  # compact labels in order
    new = jnp.where(present & (rank <= s), rank, 0)
    return new[lab].astype(jnp.int32)


def detect(
    counts: Float[ArrayLike, "n_band n m"],
    exposure: Float[ArrayLike, "n_band n m"],
    model: SourceModel,
    settings: DetectionSettings | None = None,
    background_model: Float[ArrayLike, "n_band n m"] | None = None,
) -> Detection:
    """Background, significance map and segmentation of one photon image (module docstring); jit-able.

    Args:
        counts: (n_band, n, m) photon counts per pixel, ≥ 0.
        exposure: (n_band, n, m) vignetted exposure [s], ≥ 0.
        model: PSF and pixel scale (the filters).
        settings: detection settings (default `DetectionSettings()`).
        background_model: (n_band, n, m) expected background counts: the background for
            ``background="model"`` (required), the shape whose normalisation the boxes measure for
            ``"image"`` (`estimate_background`'s template; optional), ignored by ``"sep"``.

    Returns:
        A `Detection`.

    Raises:
        ValueError: shapes differ, or background="model" without `background_model`.
    """
    from ..survey.detect import DetectionConfig, segment_sep

    settings = DetectionSettings() if settings is None else settings
    counts = jnp.asarray(counts)
    exposure = jnp.asarray(exposure, counts.dtype)
    if counts.ndim != 3 or exposure.shape != counts.shape:
        raise ValueError(f"counts {counts.shape} and exposure {exposure.shape} must be the same (n_band, n, m)")
    counts = eqx.error_if(counts, ~jnp.all(counts >= 0), "counts must be >= 0")
    exposure = eqx.error_if(exposure, ~jnp.all(exposure >= 0), "exposure must be >= 0")
    kernels = filter_kernels(model, settings.scales_arcsec, counts.dtype) if settings.scales_arcsec else None
    if settings.background == "model":
        if background_model is None:
            raise ValueError("background = 'model' needs background_model, the expected background counts")
        bkg = jnp.asarray(background_model, counts.dtype)
        if bkg.shape != counts.shape:
            raise ValueError(f"background_model shape {bkg.shape} != counts shape {counts.shape}")
        rel_var = jnp.zeros_like(bkg)
    else:
        template = None if background_model is None else jnp.asarray(background_model, counts.dtype)
        bkg, rel_var = estimate_background(counts, exposure, settings, kernels, template=template)
    sig = significance_map(counts.sum(0), bkg.sum(0), kernels)
    inside = exposure.sum(0) > 0
    sig = jnp.where(inside, sig, 0.0)  # nothing is detected outside the field of view

    def segment(image):
        if settings.method == "sep":
            config = DetectionConfig("sep", threshold=1.0, min_area=settings.min_area,
                                     deblend_nthresh=settings.deblend_nthresh, deblend_cont=settings.deblend_cont,
                                     max_sources=settings.max_sources)
            return segment_sep(image, settings.threshold, config)
        from ..survey.components import segment_components

        return segment_components(jax.lax.stop_gradient(image), settings.threshold, settings.min_area,
                                  settings.max_sources, settings.deblend_cont)

    seg = segment(sig)
    if settings.point_first and kernels is not None and kernels.shape[0] > 1 and settings.scales_arcsec[0] == 0.0:
        sig_p = jnp.where(inside, significance_map(counts.sum(0), bkg.sum(0), kernels[:1]), 0.0)
        seg = _point_first(segment(sig_p), seg, settings.max_sources)
    return Detection(segmentation=seg, significance=sig, background=bkg, background_rel_var=rel_var,
                     max_sources=settings.max_sources)
