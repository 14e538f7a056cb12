r"""`jaxcluster simulate --mode observed`: the lightcone's maps through XMM-Newton EPIC-pn and the detection chain.

The noiseless pipeline runs as in the idealised mode (seed 001: maps, noiseless
detection, ``catalogue.ecsv``, ``xod.npz``); then, per lightcone, the count-rate
maps summed over the boxes are observed (`jaxcluster.observation.observe`: 10 ks
pointings on XXL's 20′ grid, vignetting, King PSF, Galactic absorption, particle
and sky backgrounds, AGN, Poisson photons), detected and measured
(`jaxcluster.observation.field`) on a pixel of ``--obs-pixel`` (rounded so that
it divides the survey pixel). Outputs (`jaxcluster.observation.products`):

* ``observation.fits``: the mosaic's photon counts, exposure, background and
  expected counts per band, and the segmentation (2-D RA/Dec TAN images);
* ``pointings/lc<l>_p<kkk>.fits``: each pointing's photons, exposure and background;
* ``observed_catalogue.ecsv``: every detection with its fitted position, DET_LH,
  EXT_LH, extent, count rates and errors per band, HR and error, C1/C2 class,
  and the truth it matches (z of the box, noiseless CR, AGN flux);
* ``observation.png``: the noiseless map beside the photon image, detections
  marked by class.

The observation's key is `fold_in(key(seed), OBSERVATION_STREAM)`: independent
of the initial conditions' keys (`pipeline.box_keys` splits `key(seed)`), so the
same seed gives the same universe in both modes.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

__all__ = ["OBSERVED_PRODUCTS", "OBSERVATION_STREAM", "add_observation_options", "check_observation_options",
           "observation_config", "field_settings", "run_observation", "write_observation_products"]

OBSERVATION_STREAM = 0x0B5E  # fold_in constant of the observation's PRNG stream
OBSERVED_PRODUCTS = frozenset({"observation.fits", "pointings", "observed_catalogue.ecsv", "observation.png"})
AGN_MATCH_ARCSEC = 10.0  # an input AGN within this distance of a detection is its counterpart


def add_observation_options(ap) -> None:
    """The observation-mode options of `jaxcluster simulate`."""
    from ..observation.absorption import NH_XXL_NORTH_CM2
    from ..observation.pointings import XXL_EXPOSURE_S

    g = ap.add_argument_group("observation mode (--mode observed)")
    g.add_argument("--mode", choices=("ideal", "observed"), default="ideal",
                   help="ideal: seed 001's noiseless maps and detection only; observed: also XMM-Newton EPIC-pn "
                        "photon images (exposure, vignetting, PSF, absorption, backgrounds, AGN), detection and "
                        "measurement on them")
    g.add_argument("--exposure", type=float, default=XXL_EXPOSURE_S, help="exposure per pointing [s] (XXL: 10 ks)")
    g.add_argument("--nh", type=float, default=NH_XXL_NORTH_CM2,
                   help="Galactic column density N_H [cm⁻²] (default: XXL-N's)")
    g.add_argument("--no-background", action="store_true",
                   help="no particle, cosmic or Galactic-foreground background")
    g.add_argument("--agn", choices=("random", "haloes", "off"), default="random",
                   help="AGN from the logN–logS: at random positions, in the clusters of the noiseless detection, "
                        "or none")
    g.add_argument("--no-psf", action="store_true", help="no PSF (photons stay in their pixel)")
    g.add_argument("--obs-pixel", type=float, default=7.5,
                   help="observation pixel [arcsec], rounded so that it divides the survey pixel (--pixel)")
    g.add_argument("--obs-threshold", type=float, default=4.0,
                   help="detection threshold on the photon images [Gaussian σ of the filtered significance]")


def check_observation_options(args) -> None:
    """Refuse bad observation options naming the option (before any work)."""
    if not (math.isfinite(args.exposure) and 0 < args.exposure <= 1e7):
        raise ValueError(f"--exposure {args.exposure!r} is outside its allowed range (0, 1e7] [s]")
    if not (math.isfinite(args.nh) and 0 <= args.nh <= 1e24):
        raise ValueError(f"--nh {args.nh!r} is outside its allowed range [0, 1e24] [cm⁻²]")
    if not (math.isfinite(args.obs_pixel) and 0 < args.obs_pixel <= 60):
        raise ValueError(f"--obs-pixel {args.obs_pixel!r} is outside its allowed range (0, 60] [arcsec]")
    if not (math.isfinite(args.obs_threshold) and args.obs_threshold > 0):
        raise ValueError(f"--obs-threshold {args.obs_threshold!r} must be > 0 [σ]")


def observation_config(args):
    """`ObservationConfig` from the options."""
    from ..observation import ObservationConfig

    return ObservationConfig(exposure_s=float(args.exposure), nh_cm2=float(args.nh), agn=args.agn, psf=not args.no_psf,
                             particle_background=not args.no_background, cosmic_background=not args.no_background)


def field_settings(args, map_pixel_arcmin: float, area_deg2: float):
    """`FieldSettings` for the run: the observation pixel that divides the survey pixel, slots for the area."""
    from ..observation.field import FieldSettings

    factor = max(1, round(map_pixel_arcmin * 60.0 / args.obs_pixel))
    # ~250 detections per deg² at 10 ks in our chain (measured); 3× that, plus a margin, in chunks of 16
    slots = int(min(65535, math.ceil(750.0 * area_deg2) + 64))
    return FieldSettings(pixel_arcsec=map_pixel_arcmin * 60.0 / factor, threshold=args.obs_threshold,
                         max_sources=slots, detector=args.detector)


def _truth(cat, obs, seg_ideal, cat_ideal, z_boxes, factor: int, pixel_arcmin: float) -> dict[str, np.ndarray]:
    """Per measured slot: z of the box whose noiseless segment (largest CR) covers the position, that CR, AGN flux."""
    pos = np.asarray(cat.position, np.float64)
    n_slot = pos.shape[0]
    n_pix = seg_ideal.shape[-1]
    ij = np.clip(np.round(pos).astype(int) // factor, 0, n_pix - 1)
    cr_tot = np.asarray(cat_ideal.count_rate_total, np.float64)  # (box, s)
    labels = seg_ideal[:, ij[:, 0], ij[:, 1]]  # (box, slot)
    cr_at = np.where(labels > 0, np.take_along_axis(cr_tot, np.maximum(labels - 1, 0), axis=1), -np.inf)
    best = np.argmax(cr_at, axis=0)
    hit = np.isfinite(cr_at[best, np.arange(n_slot)])
    z_true = np.where(hit, np.asarray(z_boxes, np.float64)[best], np.nan)
    cr_true = np.where(hit, cr_at[best, np.arange(n_slot)], np.nan)
    agn = obs.agn
    a_pos = np.asarray(agn.position_arcmin, np.float64)
    a_ok = np.asarray(agn.valid)
    a_flux = np.where(a_ok, np.asarray(agn.flux_cgs, np.float64), 0.0)
    det_arcmin = (pos + 0.5) * pixel_arcmin
    d = np.hypot(*(det_arcmin[:, None, :] - a_pos[None, :, :]).transpose(2, 0, 1)) * 60.0  # [arcsec]
    near = (d <= AGN_MATCH_ARCSEC) & a_ok[None, :]
    flux = np.where(near, a_flux[None, :], 0.0).max(axis=1) if a_pos.shape[0] else np.zeros(n_slot)
    return dict(z_true=z_true, cr_true=cr_true, agn_flux=np.where(flux > 0, flux, np.nan))


def run_observation(args, *, maps, seg, cat, config, z_boxes, progress=None) -> dict:
    """Observe, detect and measure every lightcone's field (host loop over the chunks holding detections).

    Args:
        args: the parsed options.
        maps: `BoxMaps` with leading axes (n_lightcones, n_boxes).
        seg: (n_lightcones, n_boxes, n_pix, n_pix) noiseless segmentations.
        cat: noiseless `Catalogue` with leading axes (n_lightcones, n_boxes, max_sources).
        config: `SurveyConfig`.
        z_boxes: (n_boxes,) box redshifts.
        progress: optional callable(str) for status lines.

    Returns:
        dict(config, settings, factor, pixel_arcmin, fields: list per lightcone of dict(observation,
        detection, catalogue, truth, count_rate), timings [s]).
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from ..observation.field import crop_detection, field_confusion, field_source_model, measure_field_host, observe_and_detect
    from ..xray.emissivity import default_band_response

    g = config.geometry
    map_pixel_arcmin = math.degrees(g.pixel_rad) * 60.0
    obs_config = observation_config(args)
    settings = field_settings(args, map_pixel_arcmin, g.area_deg2)
    factor = max(1, round(map_pixel_arcmin * 60.0 / settings.pixel_arcsec))
    response = default_band_response()
    half = 0.5 * g.n_pix * map_pixel_arcmin

    @eqx.filter_jit
    def stage1(key, cr, halo_pos, halo_ok):
        return observe_and_detect(key, cr, map_pixel_arcmin, obs_config, settings, response,
                                  halo_position_arcmin=halo_pos, halo_valid=halo_ok)

    model = field_source_model(settings, response)  # one object: the measurement compiles once for every field
    confusion = field_confusion(settings, obs_config, response)

    key0 = jax.random.fold_in(jax.random.key(args.seed), OBSERVATION_STREAM)
    fields = []
    t_obs = t_meas = 0.0
    for i in range(config.n_lightcones):
        cr = jnp.sum(maps.count_rate[i], axis=0)  # (n_pix, n_pix, n_band), summed over the boxes
        xi = np.asarray(cat.xi[i], np.float64).reshape(-1, 2)
        halo_pos = jnp.asarray(np.degrees(xi) * 60.0 + half)
        halo_ok = jnp.asarray(np.asarray(cat.valid[i]).reshape(-1))
        t0 = time.perf_counter()
        obs, padded, det, cr_fine = jax.block_until_ready(stage1(jax.random.fold_in(key0, i), cr, halo_pos, halo_ok))
        t1 = time.perf_counter()
        n_det = int(jnp.max(det.segmentation))
        meas = jax.block_until_ready(measure_field_host(padded, det, settings, model, confusion))
        meas = dataclasses.replace(meas, model_counts=None, cutout_corner=None)  # the fit's internals, not products
        t_meas += time.perf_counter() - t1
        t_obs += t1 - t0
        det = crop_detection(det, cr_fine.shape[:2])
        truth = _truth(meas, obs, np.asarray(seg[i]), jax.tree.map(lambda a: a[i], cat), z_boxes, factor,
                       map_pixel_arcmin / factor)
        fields.append(dict(observation=obs, detection=det, catalogue=meas, truth=truth, count_rate=cr_fine,
                           n_detected=n_det, slots_full=n_det >= settings.detection.max_sources))
        if progress is not None:
            progress(f"lightcone {i}: {n_det} sources on the photon image")
    return dict(config=obs_config, settings=settings, factor=factor, pixel_arcmin=map_pixel_arcmin / factor,
                fields=fields, timings=dict(observe_and_detect_s=t_obs, measure_s=t_meas))


def write_observation_products(out, result: dict, *, centre_deg, record, cards, maps, wcs_maps, theta, seed,
                               figures: bool) -> tuple[list[str], dict]:
    """Write the observed mode's files in `out`; return (names written, summary entries)."""
    import jax
    import jax.numpy as jnp

    from ..io.provenance import clean_json
    from ..observation import exposure_maps, grid_pointings
    from ..observation.background import particle_rate
    from ..observation.classes import C1, C2
    from ..observation.photons import band_mean_energy_keV
    from ..observation import products as op
    from ..xray.emissivity import default_band_response

    cfg, st = result["config"], result["settings"]
    pix = result["pixel_arcmin"]
    obs_cards = list(cards) + op.observation_cards(cfg, st.pixel_arcsec)
    fields = result["fields"]
    bands = fields[0]["observation"].bands_keV
    shape = tuple(fields[0]["observation"].counts.shape[1:])
    op.write_observation(out / "observation.fits",
                         [dict(counts=f["observation"].counts, exposure=f["observation"].exposure,
                               background=f["observation"].background, model=f["observation"].model,
                               segmentation=f["detection"].segmentation) for f in fields],
                         bands_keV=bands, pixel_arcmin=pix, centre_deg=centre_deg, cards=obs_cards)
    # per pointing: the mosaic's photons shared among the pointings (products docstring)
    from astropy.wcs import WCS

    wcs_obs = WCS(op.image_wcs_header(shape, pix, centre_deg))
    response = default_band_response()
    e_band = band_mean_energy_keV(response)
    (out / "pointings").mkdir()
    pointing_rows = []
    for lc, f in enumerate(fields):
        o = f["observation"]
        pts = grid_pointings((shape[0] * pix, shape[1] * pix), cfg.pointing_spacing_arcmin, cfg.exposure_s,
                             cfg.fov_radius_arcmin)
        vig, plain = [], []
        for p in range(pts.n_point):
            one = type(pts)(pts.centres_arcmin[p:p + 1], pts.exposure_s[p:p + 1], pts.fov_radius_arcmin)
            v, t = exposure_maps(one, shape, pix, e_band)
            vig.append(v[0])
            plain.append(t)
        vig, plain = jnp.stack(vig), jnp.stack(plain)
        particle = (jnp.asarray(particle_rate(response.bands_keV))[:, None, None] * pix**2 * jnp.sum(plain, 0)[None]
                    if cfg.particle_background else jnp.zeros_like(o.model))
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), OBSERVATION_STREAM + 1), lc)
        counts_p, mu_p = op.split_counts_by_pointing(key, o.counts, o.model, particle, vig, plain)
        bkg_share = jnp.where(o.model > 0, o.background / jnp.where(o.model > 0, o.model, 1.0), 0.0)
        centres = np.asarray(pts.centres_arcmin, np.float64)
        for p in range(pts.n_point):
            rows, cols, origin = op.pointing_cutout(centres[p], pix, cfg.fov_radius_arcmin, shape)
            ra, dec = wcs_obs.pixel_to_world_values(centres[p, 0] / pix - 0.5, centres[p, 1] / pix - 0.5)
            name = f"lc{lc}_p{p:03d}.fits"
            cut = lambda a: np.asarray(a)[:, rows, cols]  # noqa: E731
            # background per pointing: the pointing's expected counts × the background's share of the model
            op.write_pointing(out / "pointings" / name, counts=cut(counts_p[p]), exposure=cut(vig[p]),
                              background=cut(mu_p[p] * bkg_share), bands_keV=bands, shape=shape, origin=origin,
                              pixel_arcmin=pix, centre_deg=centre_deg, pointing_deg=(float(ra), float(dec)),
                              pointing_id=p, cards=obs_cards)
            pointing_rows.append(dict(file=f"pointings/{name}", lightcone=lc, pointing=p, ra=float(ra), dec=float(dec),
                                      counts=float(np.sum(counts_p[p])),
                                      expected_background=float(np.sum(mu_p[p] * bkg_share))))
    table = op.observed_catalogue_table([f["catalogue"] for f in fields], pixel_arcmin=pix, shape=shape,
                                        centre_deg=centre_deg, bands_keV=bands,
                                        truth=[f["truth"] for f in fields], record=record,
                                        meta=dict(observation=_settings_dict(cfg, st)))
    with op.atomic_path(out / "observed_catalogue.ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv")
    names = ["observation.fits", "pointings", "observed_catalogue.ecsv"]
    if figures:
        from ..observation.figures import observation_figure

        f0 = fields[0]
        cat0 = table[table["lightcone"] == 0]
        observation_figure(out / "observation.png", noiseless=np.asarray(maps.count_rate[0]).sum(axis=(0, -1)),
                           counts=np.asarray(f0["observation"].counts).sum(0), wcs_maps=wcs_maps.celestial,
                           wcs_obs=wcs_obs, ra=np.asarray(cat0["ra"]), dec=np.asarray(cat0["dec"]),
                           source_class=np.asarray(cat0["source_class"]),
                           title=f"seed {seed}; {_settings_text(cfg, st)}", theta=theta)
        names.append("observation.png")
    cls = np.asarray(table["source_class"])
    summary = dict(
        mode="observed", observation=_settings_dict(cfg, st),
        n_detected_observed=len(table), n_c1=int(np.sum(cls == C1)), n_c2=int(np.sum(cls == C2)),
        observed_slots_full=[bool(f["slots_full"]) for f in fields],
        observation_wall_time_s=clean_json(result["timings"]), pointings=pointing_rows,
    )
    return names, summary


def _settings_dict(cfg, st) -> dict:
    return dict(exposure_s=float(cfg.exposure_s), nh_cm2=float(cfg.nh_cm2), agn=cfg.agn, psf=cfg.psf,
                particle_background=cfg.particle_background, cosmic_background=cfg.cosmic_background,
                pixel_arcsec=st.pixel_arcsec, threshold_sigma=st.threshold, background_method=st.background,
                detector=st.detector, max_sources=st.detection.max_sources,
                pointing_spacing_arcmin=cfg.pointing_spacing_arcmin, fov_radius_arcmin=cfg.fov_radius_arcmin,
                units=dict(exposure_s="s", nh_cm2="cm-2", pixel_arcsec="arcsec", pointing_spacing_arcmin="arcmin",
                           fov_radius_arcmin="arcmin"))


def _settings_text(cfg, st) -> str:
    bkg = "backgrounds" if cfg.particle_background else "no background"
    return (f"{float(cfg.exposure_s) / 1e3:g} ks, N_H = {float(cfg.nh_cm2):.2g} cm$^{{-2}}$, AGN {cfg.agn}, "
            f"{'PSF' if cfg.psf else 'no PSF'}, {bkg}, {st.pixel_arcsec:.3g}″ pixels")
