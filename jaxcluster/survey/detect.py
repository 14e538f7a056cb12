r"""Source detection on the [0.5–2] keV count-rate maps, and source measurement.

Detection returns a **segmentation**: an int32 map whose value s ∈ 1..max_sources
marks the pixels of source s (0: background), sources ranked by decreasing
[0.5–2] keV count rate. Measurement (`measure_sources`) then sums the count
rate of each band in each segment in JAX, so with the segmentation held
fixed the catalogue is differentiable in the maps, hence in θ_sim (seed 001
§2.3: "we sum the CR in its corresponding segmentation mask").

Two detectors share `DetectionConfig` and this ranking:

* `segment_sep`: sep 1.4 (Barbary 2016, SExtractor's engine; seed 001's
  choice) through `jax.pure_callback`, so it runs inside `jit` and `vmap`
  (sequentially, on the host). Outputs are fixed-size: the segmentation
  has the map's shape and at most `max_sources` labels (the brightest).
* `jaxcluster.survey.components.segment_components`: threshold, 8-connected
  components by label propagation and deblending at peaks, in plain JAX
  (runs on a GPU).

**Defaults** (the maps are noiseless, as in seed 001: no Poisson noise, no
background, no AGN):

* threshold: 1×10⁻⁴ counts s⁻¹ arcmin⁻² in [0.5–2] keV (EPIC-pn), i.e.
  the pixel threshold is this times the pixel area (1×10⁻⁴ counts s⁻¹ for
  1′ pixels). In seed 001's 10 ks depth that is one count per arcmin², about
  the faintest isophote such an exposure traces. On our maps it sits a
  factor ~3 above the diffuse emission of filaments (99th percentile of
  the pixels ≈ 3×10⁻⁵ counts s⁻¹), and a β-model cluster of 0.02 counts s⁻¹
  with a 0.3′ core keeps ≳ 95 % of its count rate inside this isophote
  (tests/test_survey_detect.py). As the maps have no noise the threshold is
  absolute (no `err`).
* minimum area: 3 pixels (8-connected) above the threshold.
* deblending: sep's defaults, 32 levels and a minimum contrast of 0.005.
* no detection filter (`filter_kernel=None`) and no cleaning: both fight
  noise, which the maps do not have.
* `max_sources` = 256 per box map; if more are found, the brightest are kept.

The CR cut (`cr_min`, default 0.02 counts s⁻¹ in [0.5–2] keV) is applied
in the XOD (`jaxcluster.survey.xod`), not here.

**Soft isophotes** (`measure_sources(..., isophote=(I_thr, s))`). With the
segmentation held fixed a source's count rate ignores that its isophote
moves: when θ_sim brightens a source, pixels of its rim cross the threshold
and join it in the hard pipeline, each bringing ≈ I_thr. The soft measure
adds that response: every pixel of the source and of its one-pixel rim
(`dilate_labels`) counts with the weight σ((log₁₀ I − log₁₀ I_thr)/s)
(`isophote_weights`, I the [0.5–2] keV pixel count rate), whose derivative
at the threshold is the rim's growth. As s → 0 the weights tend to the hard
masks (up to rim pixels two steps out), so the expected derivative over
realisations tends to that of the expected hard measurement, at a variance
that grows as 1/s. The hard `count_rate` is kept; the soft one is
`Catalogue.count_rate_soft`, which the soft XOD uses.
"""

from __future__ import annotations

from typing import SupportsFloat, SupportsInt

import dataclasses
import math
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .lightcone import ARCMIN_RAD, LightconeGeometry

__all__ = ["DETECTORS", "DetectionConfig", "Catalogue", "segment_sep", "segment", "measure_sources", "relabel_by_flux",
           "dilate_labels", "isophote_weights"]

DETECTORS = ("sep", "jax")


class DetectionConfig(eqx.Module):
    """Detection settings (static); module docstring for the defaults and why.

    Args:
        method: "sep" (SExtractor through a host callback) or "jax" (connected
            components, no deblending; runs on accelerators).
        threshold: detection threshold in [0.5–2] keV surface brightness
            [counts s⁻¹ arcmin⁻²], > 0.
        min_area: minimum number of connected pixels above the threshold, ≥ 1.
        deblend_nthresh: sep's number of deblending thresholds, [1, 256].
        deblend_cont: sep's minimum deblending contrast, [0, 1] (1: no deblending).
        max_sources: sources kept per map (the brightest), [1, 65535].

    Raises:
        ValueError: a value outside its range (the message names it).
    """

    method: str = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    min_area: int = eqx.field(static=True)
    deblend_nthresh: int = eqx.field(static=True)
    deblend_cont: float = eqx.field(static=True)
    max_sources: int = eqx.field(static=True)

    def __init__(
        self,
        method: str = "sep",
        threshold: SupportsFloat = 1e-4,
        min_area: SupportsInt = 3,
        deblend_nthresh: SupportsInt = 32,
        deblend_cont: SupportsFloat = 0.005,
        max_sources: SupportsInt = 256,
    ):
        if method not in DETECTORS:
            raise ValueError(f"method = {method!r} is not an allowed detector {DETECTORS}")
        from ..params import check_scalar

        threshold = check_scalar("threshold", threshold, 0.0, math.inf, low_open=True)
        min_area = check_scalar("min_area", min_area, 1, 10**6, integer=True)
        deblend_nthresh = check_scalar("deblend_nthresh", deblend_nthresh, 1, 256, integer=True)
        max_sources = check_scalar("max_sources", max_sources, 1, 65535, integer=True)
        deblend_cont = check_scalar("deblend_cont", deblend_cont, 0.0, 1.0)
        self.method, self.threshold, self.min_area = method, float(threshold), int(min_area)
        self.deblend_nthresh, self.deblend_cont, self.max_sources = int(deblend_nthresh), float(deblend_cont), int(max_sources)

    def pixel_threshold(self, geometry: LightconeGeometry) -> float:
        """The threshold per pixel [counts s⁻¹]: surface brightness × pixel area in arcmin²."""
        return self.threshold * (geometry.pixel_rad / ARCMIN_RAD) ** 2


def relabel_by_flux(labels: np.ndarray, image: np.ndarray, max_sources: int) -> np.ndarray:
    """Renumber a label map (0 background, 1..n) as 1..≤max_sources by decreasing summed `image` (numpy).

    Labels beyond `max_sources` become 0. Ties keep the original order.
    """
    n = int(labels.max(initial=0))
    out = np.zeros(labels.shape, np.int32)
    if n == 0:
        return out
    flux = np.bincount(labels.ravel(), weights=image.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-flux, kind="stable")[:max_sources]
    new = np.zeros(n + 1, np.int32)
    new[order + 1] = np.arange(1, order.size + 1, dtype=np.int32)
    return new[labels]


def _sep_host(image, threshold: float, min_area: int, nthresh: int, cont: float, max_sources: int) -> np.ndarray:
    import sep

    data = np.array(image, dtype=np.float64, order="C", copy=True)  # sep needs a writable buffer
    if not np.any(data > threshold):
        return np.zeros(data.shape, np.int32)
    if data.size > 300_000:  # sep's default pixel stack (a process-wide setting of the C library)
        sep.set_extract_pixstack(int(data.size))
    _, seg = sep.extract(
        data, threshold, minarea=min_area, filter_kernel=None, deblend_nthresh=nthresh,
        deblend_cont=cont, clean=False, segmentation_map=True,
    )
    return relabel_by_flux(np.asarray(seg), data, max_sources)


def segment_sep(image: Float[Array, "n m"], pixel_threshold: float, config: DetectionConfig) -> Int[Array, "n m"]:
    """Segmentation of one [0.5–2] keV map by sep, inside `jit`/`vmap` (`jax.pure_callback`).

    Args:
        image: (n, m) count rate per pixel [counts s⁻¹]; no gradient passes.
        pixel_threshold: absolute threshold per pixel [counts s⁻¹].
        config: detection settings.

    Returns:
        (n, m) int32 labels 0..max_sources, 1 the brightest source.
    """
    image = jax.lax.stop_gradient(image)
    host = partial(_sep_host, threshold=float(pixel_threshold), min_area=config.min_area,
                   nthresh=config.deblend_nthresh, cont=config.deblend_cont, max_sources=config.max_sources)
    out = jax.ShapeDtypeStruct(image.shape, jnp.int32)
    return jax.pure_callback(host, out, image, vmap_method="sequential")


def segment(image: Float[Array, "n m"], geometry: LightconeGeometry, config: DetectionConfig) -> Int[Array, "n m"]:
    """Segmentation of one map with the configured detector (`config.method`)."""
    thr = config.pixel_threshold(geometry)
    if config.method == "sep":
        return segment_sep(image, thr, config)
    from .components import segment_components

    return segment_components(jax.lax.stop_gradient(image), thr, config.min_area, config.max_sources, config.deblend_cont)


class Catalogue(eqx.Module):
    """Sources of one map (or, with leading axes, of many), padded to `max_sources`.

    Attributes:
        count_rate: (*b, max_sources, n_band) count rate summed in each segment [counts s⁻¹].
        xi: (*b, max_sources, 2) flux-weighted centroid in tangent-plane coordinates
            (ξ_x, ξ_y) [rad] from the field centre.
        area: (*b, max_sources) segment area [pixels].
        z: (*b, max_sources) redshift (that of the box).
        valid: (*b, max_sources) whether the slot holds a detected source.
        count_rate_soft: (*b, max_sources, n_band) count rate in soft isophotes
            [counts s⁻¹] (module docstring), which the soft XOD uses; None: not measured.
    """

    count_rate: Float[Array, "*b s n_band"]
    xi: Float[Array, "*b s 2"]
    area: Float[Array, "*b s"]
    z: Float[Array, "*b s"]
    valid: Bool[Array, "*b s"]
    count_rate_soft: Float[Array, "*b s n_band"] | None = None

    @property
    def soft_measured(self) -> "Catalogue":
        """The catalogue with `count_rate_soft` as its count rate (itself if there is none): what the soft XOD sees."""
        if self.count_rate_soft is None:
            return self
        return dataclasses.replace(self, count_rate=self.count_rate_soft, count_rate_soft=None)

    @property
    def count_rate_total(self) -> Float[Array, "*b s"]:
        """CR summed over the bands ([0.5–2] keV for the default table) [counts s⁻¹]."""
        return jnp.sum(self.count_rate, axis=-1)

    @property
    def hardness_ratio(self) -> Float[Array, "*b s"]:
        """HR = CR[1–2 keV] / CR[0.5–1 keV] (band 1 over band 0); 1 in empty slots."""
        soft, hard = self.count_rate[..., 0], self.count_rate[..., 1]
        ok = self.valid & (soft > 0)
        return jnp.where(ok, hard / jnp.where(ok, soft, 1.0), 1.0)

    def selected(self, cr_min: float) -> Bool[Array, "*b s"]:
        """Valid sources with CR[0.5–2] > cr_min [counts s⁻¹]."""
        return self.valid & (self.count_rate_total > cr_min)


def dilate_labels(seg: Int[Array, "n m"]) -> Int[Array, "n m"]:
    """Each background pixel 8-adjacent to a source takes its label (the largest, i.e. faintest, if several).

    The rim a source's isophote grows into. Sources dropped by `max_sources`
    are background here, so a bright source next to one would take its pixels:
    keep `max_sources` above the number of sources (the default 256 is).
    """
    n, m = seg.shape
    p = jnp.pad(seg, 1)
    nb = jnp.stack([p[1 + dx:1 + dx + n, 1 + dy:1 + dy + m] for dx in (-1, 0, 1) for dy in (-1, 0, 1)]).max(axis=0)
    return jnp.where(seg > 0, seg, nb)


def isophote_weights(image: Float[Array, "n m"], pixel_threshold: float, softness: float) -> Float[Array, "n m"]:
    """σ((log₁₀ I − log₁₀ I_thr) / s) per pixel, 0 where I ≤ 0 (module docstring, soft isophotes).

    Args:
        image: (n, m) [0.5–2] keV count rate per pixel [counts s⁻¹] (differentiated).
        pixel_threshold: I_thr [counts s⁻¹ per pixel], > 0.
        softness: s [dex], > 0.
    """
    ok = image > 0
    u = jnp.log10(jnp.where(ok, image, 1.0)) - math.log10(pixel_threshold)
    return jnp.where(ok, jax.nn.sigmoid(u / softness), 0.0)


def measure_sources(
    seg: Int[Array, "n m"],
    count_rate: Float[Array, "n m n_band"],
    geometry: LightconeGeometry,
    z: Float[ArrayLike, ""],
    max_sources: int,
    isophote: tuple[float, float] | None = None,
) -> Catalogue:
    """Sum each band's count rate in each segment; centroids; areas (differentiable in `count_rate`).

    Args:
        seg: (n, m) labels 0..max_sources (0: background), held fixed.
        count_rate: (n, m, n_band) count rate per pixel [counts s⁻¹].
        geometry: gives the pixel → ξ mapping.
        z: the box redshift.
        max_sources: number of slots.
        isophote: (pixel threshold [counts s⁻¹], softness [dex]) to also measure
            `count_rate_soft` in soft isophotes (module docstring); None: not.

    Returns:
        A `Catalogue` with `max_sources` slots.
    """
    n, m, n_band = count_rate.shape
    dtype = count_rate.dtype
    ids = seg.reshape(-1)
    nseg = max_sources + 1
    cr = jax.ops.segment_sum(count_rate.reshape(-1, n_band), ids, num_segments=nseg)[1:]
    area = jax.ops.segment_sum(jnp.ones(ids.shape, dtype), ids, num_segments=nseg)[1:]
    det = jax.lax.stop_gradient(jnp.sum(count_rate, axis=-1)).reshape(-1)
    centres = (jnp.arange(n, dtype=dtype) + 0.5 - 0.5 * geometry.n_pix) * geometry.pixel_rad
    xi_x = jnp.broadcast_to(centres[:, None], (n, m)).reshape(-1)
    xi_y = jnp.broadcast_to(centres[None, :m], (n, m)).reshape(-1)
    wsum = jax.ops.segment_sum(det, ids, num_segments=nseg)[1:]
    sx = jax.ops.segment_sum(det * xi_x, ids, num_segments=nseg)[1:]
    sy = jax.ops.segment_sum(det * xi_y, ids, num_segments=nseg)[1:]
    valid = area > 0
    safe = jnp.where(wsum > 0, wsum, 1.0)
    xi = jnp.stack([sx / safe, sy / safe], axis=-1)
    zz = jnp.full((max_sources,), jnp.asarray(z).astype(dtype))
    cr_soft = None
    if isophote is not None:
        thr, softness = isophote
        if not (thr > 0 and softness > 0):
            raise ValueError(f"isophote = {isophote!r}: the pixel threshold and the softness must be > 0")
        w = isophote_weights(jnp.sum(count_rate, axis=-1), thr, softness)
        rim = dilate_labels(seg).reshape(-1)
        cr_soft = jax.ops.segment_sum((count_rate * w[..., None]).reshape(-1, n_band), rim, num_segments=nseg)[1:]
    return Catalogue(count_rate=cr, xi=xi, area=area, z=zz, valid=valid, count_rate_soft=cr_soft)
