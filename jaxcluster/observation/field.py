r"""A survey field through the realistic chain: resample → `observe` → `detect` → `measure_catalogue`.

This is the glue `jaxcluster simulate --mode observed` and the observation
benchmark use; the physics is in `photons`, `detection` and `measure`.

**Resampling** (`upsample_count_rate`). The lightcone's count-rate maps have
the survey pixel (1′ by default), coarser than the EPIC-pn PSF (≈ 6″ FWHM on
axis, `measure` docstring) and than the extents that separate clusters from
point sources (XXL's C1 cut: EXT > 5″, `classes`). Each survey pixel is split
into f × f observation pixels: the surface brightness is interpolated
bilinearly between survey-pixel centres, then rescaled in every survey pixel so
that its f × f sub-pixels hold exactly its count rate (flux conserved pixel by
pixel; the interpolation only shapes the light inside each pixel). Structure
below the survey pixel is not invented: at seed 001's 0.39 h⁻¹ Mpc cells
(≈ 1.6′ at z = 0.3) the simulated cores are not resolved anyway.

**Detection settings in arcsec.** `FieldSettings` holds the detection engineer's
settings with their sizes in arcsec (background mesh 128″, cutout 192″ —
32 and 48 pixels of 4″, the pixel of their injection–recovery), converted to
pixels for the chosen observation pixel; the image is padded with zero exposure
to a multiple of the background box (nothing is detected where the exposure is 0).

**Cost.** The measurement dominates (templates for every core radius of the
extent fit, per source): the defaults here (2 sub-pixels per pixel, 17 core
radii) cost ≈ 4 ms per source slot on a CPU core against ≈ 18 ms for the
injection–recovery's (3 sub-pixels, 33 radii; measured on a 272² field of 7.5″
pixels), which keeps the chain a small fraction of the simulation
(`benchmarks/observations.py`). The selection table was built with the finer
settings; the two agree on what is C1 only to the precision of the fit.

**Chunked measurement.** `measure_catalogue` fits every slot at once (`vmap`);
a survey field holds hundreds of sources, so the slots are measured `chunk` at a
time (`lax.map`): label ℓ goes to chunk ⌊(ℓ − 1)/chunk⌋; a source's first fit masks the
other detections of its chunk. Memory then scales with `chunk`, not with the
number of sources; what every chunk reads (the padded images, all segment
centroids) is computed once per field.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..xray.response import BandResponse
from .confusion import Confusion, agn_confusion
from .detection import Detection, DetectionSettings, detect
from .classes import ClassCuts
from .measure import FitSettings, MeasuredCatalogue, SourceModel, _measure_sources, _sources, later_passes
from .photons import Observation, ObservationConfig, band_mean_energy_keV, observe
from .psf import PSF_ZONE_THETA_ARCMIN, king_parameters, king_profile

__all__ = ["FIELD_CORE_RADII_ARCSEC", "FieldSettings", "FieldResult", "upsample_count_rate", "field_source_model", "observe_and_detect",
           "field_confusion", "measure_chunk", "measure_field", "measure_field_host", "crop_detection", "observe_field",
           "observation_factor"]

# The extent-fit grid for survey fields: 2″–80″ (XXL's C1 extents) in 17 steps of 26 % (the fit refines between
# nodes by a parabola). `FitSettings`' default has 33 (12 %); half the nodes halve the measurement's cost.
FIELD_CORE_RADII_ARCSEC = tuple(float(r) for r in np.geomspace(2.0, 80.0, 17))


def upsample_count_rate(count_rate: Float[Array, "n m n_band"], factor: int) -> Float[Array, "nf mf n_band"]:
    """Split each pixel into factor × factor pixels, conserving each pixel's count rate (module docstring).

    Args:
        count_rate: (n, m, n_band) count rate per pixel [counts s⁻¹], ≥ 0.
        factor: sub-pixels per pixel side, ≥ 1 (static).

    Returns:
        (n·factor, m·factor, n_band) count rate per sub-pixel [counts s⁻¹]; its f × f
        blocks sum to `count_rate`.
    """
    if not (isinstance(factor, (int, np.integer)) and factor >= 1):
        raise ValueError(f"factor = {factor!r}: must be an int >= 1")
    factor = int(factor)
    if factor == 1:
        return count_rate
    n, m, nb = count_rate.shape
    fine = jax.image.resize(count_rate, (n * factor, m * factor, nb), method="linear")
    fine = jnp.maximum(fine, 0.0)
    block = fine.reshape(n, factor, m, factor, nb).sum(axis=(1, 3))
    ratio = jnp.where(block > 0, count_rate / jnp.where(block > 0, block, 1.0), 0.0)
    # a pixel whose interpolated light vanished (all neighbours 0) but which holds flux: spread it evenly
    flat = jnp.where(block > 0, 0.0, count_rate / factor**2)
    up = lambda a: jnp.repeat(jnp.repeat(a, factor, axis=0), factor, axis=1)  # noqa: E731
    return fine * up(ratio) + up(flat)


class FieldSettings(eqx.Module):
    """Settings of the field chain (static), sizes in arcsec (module docstring).

    Args:
        pixel_arcsec: observation pixel [arcsec], (0, 60].
        background_box_arcsec: background mesh side [arcsec], > 0 (rounded to pixels, at least 4).
        cutout_arcsec: fit cutout side [arcsec], > 0 (rounded to an even number of pixels, at least 16).
        supersample: template sub-pixels per pixel side, [1, 8] (2: ≈ 3.7″ sub-pixels at 7.5″).
        threshold: detection threshold [Gaussian σ], > 0.
        background: "image", "sep" or "model" (`detection` docstring).
        detector: "sep" or "jax".
        max_sources: detection slots for the whole field, ≥ 1.
        chunk: slots measured at once, ≥ 1.
        fit: extent-fit and aperture settings (default `FitSettings` with the 17 core radii
            `FIELD_CORE_RADII_ARCSEC`).
        point_first: segment the PSF-scale significance first (`DetectionSettings.point_first`; default
            True: with the second measurement pass, fragments of AGN wings no longer become false
            extended sources, docs/validation/observations.md).

    Raises:
        ValueError: a value outside its range (named).
    """

    pixel_arcsec: float = eqx.field(static=True)
    background_box_arcsec: float = eqx.field(static=True)
    cutout_arcsec: float = eqx.field(static=True)
    supersample: int = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    background: str = eqx.field(static=True)
    detector: str = eqx.field(static=True)
    max_sources: int = eqx.field(static=True)
    chunk: int = eqx.field(static=True)
    fit: FitSettings = eqx.field(static=True)
    point_first: bool = eqx.field(static=True)

    def __init__(self, pixel_arcsec: float = 8.0, background_box_arcsec: float = 128.0, cutout_arcsec: float = 192.0,
                 supersample: int = 2, threshold: float = 4.0, background: str = "image", detector: str = "sep",
                 max_sources: int = 256, chunk: int = 16, fit: FitSettings | None = None, point_first: bool = True):
        from ..params import check_scalar

        self.pixel_arcsec = float(check_scalar("pixel_arcsec", pixel_arcsec, 0.0, 60.0, low_open=True))
        self.background_box_arcsec = float(check_scalar("background_box_arcsec", background_box_arcsec,
                                                        0.0, 1e5, low_open=True))
        self.cutout_arcsec = float(check_scalar("cutout_arcsec", cutout_arcsec, 0.0, 1e5, low_open=True))
        self.supersample = int(check_scalar("supersample", supersample, 1, 8, integer=True))
        self.threshold = float(check_scalar("threshold", threshold, 0.0, math.inf, low_open=True))
        self.background, self.detector = background, detector
        self.max_sources = int(check_scalar("max_sources", max_sources, 1, 65535, integer=True))
        self.chunk = int(check_scalar("chunk", chunk, 1, 65535, integer=True))
        self.fit = FitSettings(core_radii_arcsec=FIELD_CORE_RADII_ARCSEC) if fit is None else fit
        self.point_first = bool(point_first)
        self.detection  # validates background and detector now

    @property
    def box_pixels(self) -> int:
        """Background mesh side [pixels]."""
        return max(4, round(self.background_box_arcsec / self.pixel_arcsec))

    @property
    def cutout_pixels(self) -> int:
        """Fit cutout side [pixels] (even)."""
        return max(16, 2 * round(self.cutout_arcsec / self.pixel_arcsec / 2))

    @property
    def n_chunks(self) -> int:
        return -(-self.max_sources // self.chunk)

    @property
    def detection(self) -> DetectionSettings:
        """The `DetectionSettings` for this pixel (slots rounded up to whole chunks)."""
        return DetectionSettings(background=self.background, background_box=self.box_pixels,
                                 threshold=self.threshold, method=self.detector,
                                 max_sources=self.n_chunks * self.chunk, point_first=self.point_first)


def field_source_model(settings: FieldSettings, response: BandResponse) -> SourceModel:
    """`SourceModel` with the pn King PSF at the mean count-weighted energy of the bands and an off-axis angle
    (`psf_args`; default θ = 2.5′, `observe`'s innermost PSF zone, as the selection table's injections). The
    measurement gives each source the angle of its pixel (`Observation.psf_off_axis_arcmin`): with the
    innermost zone's PSF everywhere, the 30″ aperture of a point source 12.5′ off axis was corrected for
    5 % too much encircled energy, and bright AGN fluxes came out ≈ 3 % low.

    The PSF is normalised over the whole plane: `observe`'s kernel, normalised on its FFT grid (twice the
    field), differs from it by ≲ 0.2 % for fields ≥ 1° (King wings beyond 1°)."""
    with jax.ensure_compile_time_eval():  # static numbers, also when called under jit
        e = float(jnp.mean(band_mean_energy_keV(response)))

        def psf(r, theta):
            rc, alpha = king_parameters(e, theta)
            return king_profile(r, rc.astype(r.dtype), alpha.astype(r.dtype))

        return SourceModel(psf, settings.pixel_arcsec, cutout=settings.cutout_pixels, supersample=settings.supersample,
                           psf_args=(PSF_ZONE_THETA_ARCMIN[0],))


class FieldResult(eqx.Module):
    """A field observed, detected and measured.

    Attributes:
        observation: the `Observation` (n_band, n, m) at the observation pixel.
        detection: the `Detection` (segmentation labels 1..max_sources, background used).
        catalogue: the `MeasuredCatalogue` (max_sources slots; positions (row, col) in
            observation pixels, centres at integers; row along ξ_x).
        count_rate: (n, m, n_band) the resampled noiseless cluster count rate [counts s⁻¹]
            (unabsorbed, as `observe` takes it).
    """

    observation: Observation
    detection: Detection
    catalogue: MeasuredCatalogue
    count_rate: Float[Array, "n m n_band"]


def measure_chunk(
    padded: Observation, detection: Detection, settings: FieldSettings, response: BandResponse, chunk: Int[Array, ""]
) -> MeasuredCatalogue:
    """First measurement pass over the sources of labels chunk·K + 1 … (chunk + 1)·K (K = ``settings.chunk``);
    jit-able. `measure_field` runs it over every chunk, then the second pass over the whole field.

    Args:
        padded: the observation padded to the background mesh (`observe_and_detect`).
        detection: its `Detection` (padded).
        settings: `FieldSettings`.
        response: band response (the PSF's mean energy).
        chunk: chunk index (may be traced).

    Returns:
        `MeasuredCatalogue` of K slots (slot s holds label chunk·K + s + 1).
    """
    return _measure_chunk(padded, detection, settings, field_source_model(settings, response), chunk)


def _measure_chunk(padded, detection, settings, model, chunk):
    return _chunk_of(_field_sources(padded, detection, settings), settings, model, chunk)


def _field_sources(padded, detection, settings):
    """What every chunk reads, computed once per field: the images padded for cutouts and the segment
    centroids of all slots (the first pass's starting positions) [image pixels]."""
    return _sources(padded.counts, padded.exposure, detection.background, detection.segmentation,
                    detection.background_rel_var, settings.cutout_pixels, settings.n_chunks * settings.chunk,
                    (padded.psf_off_axis_arcmin,))


def _chunk_of(sources, settings, model, chunk):
    # chunk c holds labels c·K + 1 … (c + 1)·K; each source's fit masks the other detections of its chunk only
    img, centroid, area = sources
    k = settings.chunk
    cen = jax.lax.dynamic_slice_in_dim(centroid, chunk * k, k)
    valid = jax.lax.dynamic_slice_in_dim(area, chunk * k, k) > 0
    return _measure_sources(img, cen, valid, model, settings.fit.first_pass(), ClassCuts())


def _refine(padded, detection, settings, model, first, confusion):
    return later_passes(padded.counts, padded.exposure, detection.background, first, model, settings.fit,
                        detection.background_rel_var, confusion=confusion, detection=settings.detection,
                        background_template=padded.background, psf_maps=(padded.psf_off_axis_arcmin,))


def field_confusion(settings: FieldSettings, config: ObservationConfig, response: BandResponse) -> Confusion | None:
    """The unresolved AGN's `Confusion` for this field's pixel and detection (None when AGN are off)."""
    d = settings.detection
    return agn_confusion(config, response, settings.pixel_arcsec, d.threshold, d.min_area,
                         modelled_det_lh=settings.fit.neighbour_min_det_lh)


def _flat(cats: MeasuredCatalogue) -> MeasuredCatalogue:
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), cats)


def measure_field(
    padded: Observation,
    detection: Detection,
    settings: FieldSettings,
    response: BandResponse,
    confusion: Confusion | None = None,
) -> MeasuredCatalogue:
    """Both measurement passes over every slot; jit-able.

    The first pass fits every source alone, its neighbours masked (`lax.map` over the chunks); the
    later passes (`measure.later_passes`) refit them brightest first with the brighter neighbours'
    models held fixed, estimate the image background again without the kept sources, and refit them
    with every neighbour modelled and the confusion term.

    Args:
        padded: `observe_and_detect`'s padded observation.
        detection: `observe_and_detect`'s padded detection.
        settings: `FieldSettings`.
        response: band response (concrete: the PSF's mean energy).
        confusion: the unresolved AGN (`field_confusion`); None: no confusion term.

    Returns:
        `MeasuredCatalogue` of ``settings.n_chunks × settings.chunk`` slots (slot s: label s + 1).
    """
    model = field_source_model(settings, response)
    chunks = jnp.arange(settings.n_chunks)
    sources = _field_sources(padded, detection, settings)
    first = _flat(jax.lax.map(lambda c: _chunk_of(sources, settings, model, c), chunks))
    return _refine(padded, detection, settings, model, first, confusion)


_sources_jit = eqx.filter_jit(_field_sources)
_chunk_jit = eqx.filter_jit(_chunk_of)
_refine_jit = eqx.filter_jit(_refine)


def measure_field_host(
    padded: Observation,
    detection: Detection,
    settings: FieldSettings,
    model: SourceModel,
    confusion: Confusion | None = None,
) -> MeasuredCatalogue:
    """`measure_field` on the host: the first pass over the chunks that hold detections only (concrete arrays).

    Args:
        padded: as in `measure_field`.
        detection: as in `measure_field`.
        settings: as in `measure_field`.
        model: `field_source_model(settings, response)`; pass the same object for every field of a
            run so the measurement compiles once.
        confusion: as in `measure_field`.

    Returns:
        `MeasuredCatalogue` of ⌈n_detected / K⌉ × K slots (slot s: label s + 1), K = ``settings.chunk``;
        one empty chunk when nothing was detected.
    """
    n_det = int(jnp.max(detection.segmentation))
    used = max(1, -(-n_det // settings.chunk))
    sources = _sources_jit(padded, detection, settings)
    first = [_chunk_jit(sources, settings, model, jnp.asarray(c)) for c in range(used)]
    first = jax.tree.map(lambda *a: jnp.concatenate(a), *first)
    # padded to every slot of the field, so the second pass compiles once whatever the number of detections
    total = settings.n_chunks * settings.chunk
    first = jax.tree.map(lambda a: jnp.concatenate([a, jnp.zeros((total - a.shape[0],) + a.shape[1:], a.dtype)]), first)
    out = _refine_jit(padded, detection, settings, model, first, confusion)
    return jax.tree.map(lambda a: a[: used * settings.chunk], out)


def observe_and_detect(
    key: PRNGKeyArray,
    count_rate_maps: Float[Array, "n m n_band"],
    map_pixel_arcmin: float,
    config: ObservationConfig,
    settings: FieldSettings,
    response: BandResponse | None = None,
    *,
    halo_position_arcmin: Float[Array, "n_halo 2"] | None = None,
    halo_valid: Bool[Array, " n_halo"] | None = None,
) -> tuple[Observation, Observation, Detection, Float[Array, "nf mf n_band"]]:
    """Resample, observe and detect (no measurement); jit-able. Arguments as `observe_field`.

    Returns:
        (observation, padded observation, padded detection, resampled count rate
        (n·f, m·f, n_band) [counts s⁻¹]); pass the padded pair to `measure_chunk`.
    """
    response = _response(response)
    factor = observation_factor(map_pixel_arcmin, settings.pixel_arcsec)
    cr = upsample_count_rate(count_rate_maps, factor)
    obs = observe(key, cr, map_pixel_arcmin / factor, config, response, halo_position_arcmin=halo_position_arcmin,
                  halo_valid=halo_valid)
    n, m = cr.shape[:2]
    box = settings.box_pixels
    pad = ((0, 0), (0, -n % box), (0, -m % box))
    padded = eqx.tree_at(lambda o: (o.counts, o.exposure, o.background, o.model, o.psf_off_axis_arcmin), obs,
                         tuple(jnp.pad(a, pad) for a in (obs.counts, obs.exposure, obs.background, obs.model))
                         + (jnp.pad(obs.psf_off_axis_arcmin, pad[1:], mode="edge"),))
    det = detect(padded.counts, padded.exposure, field_source_model(settings, response), settings.detection,
                 padded.background)
    return obs, padded, det, cr


def _response(response):
    if response is not None:
        return response
    from ..xray.emissivity import default_band_response

    with jax.ensure_compile_time_eval():  # concrete arrays, also under jit (the PSF model needs numbers)
        return default_band_response()


def crop_detection(det: Detection, shape: tuple[int, int]) -> Detection:
    """The detection maps cropped to the observation's (n, m) (the padding removed)."""
    n, m = shape
    return Detection(segmentation=det.segmentation[:n, :m], significance=det.significance[:n, :m],
                     background=det.background[:, :n, :m], background_rel_var=det.background_rel_var[:, :n, :m],
                     max_sources=det.max_sources)


def observe_field(
    key: PRNGKeyArray,
    count_rate_maps: Float[Array, "n m n_band"],
    map_pixel_arcmin: float,
    config: ObservationConfig,
    settings: FieldSettings,
    response: BandResponse | None = None,
    *,
    halo_position_arcmin: Float[Array, "n_halo 2"] | None = None,
    halo_valid: Bool[Array, " n_halo"] | None = None,
) -> FieldResult:
    """Observe a survey field's summed count-rate map, detect and measure its sources; jit-able.

    Every slot is measured, in two passes (`measure_field`); on the host, `observe_and_detect` +
    `field_confusion` + `measure_field_host` give the same catalogue for less work.

    Args:
        key: PRNG key (AGN, photons).
        count_rate_maps: (n, m, n_band) unabsorbed cluster count rate per survey pixel
            [counts s⁻¹] (`BoxMaps.count_rate` summed over the boxes), ≥ 0.
        map_pixel_arcmin: survey pixel [arcmin]; must be an integer multiple (to 1e-6) of
            ``settings.pixel_arcsec`` (static).
        config: `ObservationConfig`.
        settings: `FieldSettings`.
        response: band response (default EPIC-pn, `xray.default_band_response`).
        halo_position_arcmin: (n_halo, 2) halo positions (field coordinates [arcmin]) for
            ``config.agn == "haloes"``.
        halo_valid: (n_halo,) mask of the valid haloes, for ``config.agn == "haloes"``.

    Returns:
        `FieldResult`.

    Raises:
        ValueError: the survey pixel is not a multiple of the observation pixel.
    """
    response = _response(response)
    obs, padded, det, cr = observe_and_detect(key, count_rate_maps, map_pixel_arcmin, config, settings, response,
                                              halo_position_arcmin=halo_position_arcmin, halo_valid=halo_valid)
    cat = measure_field(padded, det, settings, response, field_confusion(settings, config, response))
    return FieldResult(observation=obs, detection=crop_detection(det, cr.shape[:2]), catalogue=cat, count_rate=cr)


def observation_factor(map_pixel_arcmin: float, pixel_arcsec: float) -> int:
    """Observation pixels per survey pixel side: round(map pixel / observation pixel), checked to 1e-6."""
    ratio = map_pixel_arcmin * 60.0 / pixel_arcsec
    f = max(1, round(ratio))
    if abs(ratio - f) > 1e-6 * ratio:
        raise ValueError(f"the survey pixel ({map_pixel_arcmin * 60:g}″) must be an integer multiple of the "
                         f"observation pixel pixel_arcsec = {pixel_arcsec:g}″")
    return f
