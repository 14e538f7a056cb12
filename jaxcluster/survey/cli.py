"""`jaxcluster simulate`: one mock X-ray survey, written as FITS maps, a catalogue, the XOD and figures.

Defaults: one 4 deg² lightcone, z = 0.1–0.5 in 12 boxes at seed 001's
0.39 h⁻¹ Mpc resolution (119 × 119 × 220 voxels and particles per box),
1′ pixels, sep detection, the 0.02 counts s⁻¹ cut, the shipped eLDL and the
EPIC-pn table, the field centred on XXL-N. The boxes run one after another
with a progress bar; on a shared 2-core CPU this took 1 min 37 s, of which
up to ~40 % is the SO halo finder behind the catalogue's `m500c` (`--no-halos`
skips it). It detects ~80 sources, ~3 of them above the cut: the XOD has
tens of clusters only from ~40 deg² on (0.45–0.75 clusters per deg² above
0.02 counts s⁻¹ at this resolution; 20 deg² took 6.5 min for 9), which is
beyond a few minutes on 2 cores; `--area` and `--lightcones` scale it up
(cost ∝ area). Coarser cells do not help: 40 deg² at 0.78 h⁻¹ Mpc took
1.5 min but gave 3 (presumably coarser cells smooth the cluster cores, where
the emission, ∝ n_e², peaks).

Outputs in `--out` (`survey.products` for the units and headers):

* `maps.fits`: image cubes (lightcone·box, y, x) with a 3-D WCS (RA---TAN,
  DEC--TAN, a linear BOX index; box redshifts in BOXZn):
  CR_0.5-1, CR_1-2 [ct s⁻¹ per pixel], COMPTON_Y, RHO_OVER_RHO_C,
  MASS [M☉ per pixel, physical; h in HUBBLE], SEGMENTATION (int32); the
  provenance (θ_sim, seed, version, date, settings) in every header.
* `catalogue.ecsv`: every detected source (box, z, RA/Dec, pixel position,
  CR per band and CR[0.5–2] [ct s⁻¹], HR, area, edge flag, whether it passes
  the CR cut, M_500c [M☉] of its halo), the provenance in its meta.
* `xod.npz`: hard and soft XODs, their bin edges, θ_sim, the area and the
  provenance (`jaxcluster.inference.observed.read_xod` reads it);
  `summary.json` (counts, settings, a `units` mapping, the provenance).
* with `--mode observed` (`survey.observed`; the default `--mode ideal` is seed
  001's noiseless chain alone): `observation.fits` (photon counts, exposure,
  background and expected counts per band, segmentation), `pointings/` (each
  pointing's photons, exposure and background), `observed_catalogue.ecsv`
  (fitted positions, DET_LH, EXT_LH, extent, CR and errors per band, HR and
  error, C1/C2 class, matched truth) and `observation.png`;
* `maps.png` (the [0.5–2] keV map of each box with its detections),
  `lightcone.png` (the whole lightcone projected, all detections),
  `xod.png` (CR–HR slices per z bin), `dndz.png`.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np

__all__ = ["main"]


def _parser():
    from ..clihelp import HelpFormatter, add_memory_check, seed_type
    from ..params import FIDUCIAL
    from .products import XXL_N_CENTRE_DEG

    ap = argparse.ArgumentParser(prog="jaxcluster simulate", description=__doc__.splitlines()[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--out", default="jaxcluster_survey", help="output directory")
    for name in ("Omega_m", "sigma_8", "A_SN1", "A_SN2", "A_AGN1", "A_AGN2"):
        ap.add_argument("--" + name.replace("_", "-").lower(), dest=name, type=float, default=FIDUCIAL[name],
                        help=f"θ_sim: {name}")
    ap.add_argument("--area", type=float, default=4.0, help="area of each lightcone [deg²]")
    ap.add_argument("--lightcones", type=int, default=1, help="number of independent lightcones")
    ap.add_argument("--z-min", type=float, default=0.1, help="near edge of the lightcone (redshift)")
    ap.add_argument("--z-max", type=float, default=0.5, help="far edge of the lightcone (redshift)")
    ap.add_argument("--boxes", type=int, default=12, help="boxes per lightcone")
    ap.add_argument("--cell-size", type=float, default=0.39, help="voxel side [h⁻¹ Mpc] (0.39: seed 001)")
    ap.add_argument("--pixel", type=float, default=1.0, help="map pixel [arcmin]")
    ap.add_argument("--steps", type=int, default=10, help="PM steps from z = 6 to each box")
    ap.add_argument("--detector", choices=("sep", "jax"), default="sep", help="source detector")
    ap.add_argument("--threshold", type=float, default=1e-4, help="detection threshold [counts s⁻¹ arcmin⁻²]")
    ap.add_argument("--cr-min", type=float, default=0.02, help="CR[0.5–2] cut [counts s⁻¹]")
    ap.add_argument("--ra", type=float, default=XXL_N_CENTRE_DEG[0],
                    help="RA of the field centre [deg]; the default is XXL-N's centre, 2h23m")
    ap.add_argument("--dec", type=float, default=XXL_N_CENTRE_DEG[1],
                    help="Dec of the field centre [deg]; the default is XXL-N's centre, −4°30′")
    ap.add_argument("--seed", type=seed_type, default=0, help="seed of the PRNG key (initial conditions)")
    ap.add_argument("--eldl", default=None,
                    help="eLDL weights (.eqx written by `jaxcluster eldl train`); default: the shipped ones")
    ap.add_argument("--no-halos", action="store_true",
                    help="skip the SO halo finder (the catalogue's m500c column is then empty)")
    ap.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    add_memory_check(ap)
    _add_observation_options(ap)
    from ..engines.distributed import add_distributed_options

    add_distributed_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run `jaxcluster simulate` with `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _simulate(args)
    except ValueError as err:  # bad user input: one clear line
        print(f"jaxcluster simulate: error: {err}", file=sys.stderr)
        return 2


def _check_centre(ra: float, dec: float) -> None:
    if not (math.isfinite(ra) and 0.0 <= ra < 360.0):
        raise ValueError(f"--ra {ra!r} is outside its allowed range [0, 360) [deg]")
    if not (math.isfinite(dec) and -90.0 < dec < 90.0):  # the TAN projection of a field on a pole is degenerate
        raise ValueError(f"--dec {dec!r} is outside its allowed range (-90, 90) [deg]")


def _simulate(args) -> int:
    from ..engines.distributed import initialize_from_args, is_writer

    distributed = initialize_from_args(args)  # before anything starts the XLA backend
    import jax

    from ..params import ThetaSim
    from .pipeline import SurveyConfig

    theta = ThetaSim(args.Omega_m, args.sigma_8, args.A_SN1, args.A_SN2, args.A_AGN1, args.A_AGN2)  # validates
    config = SurveyConfig(
        area_deg2=args.area, z_min=args.z_min, z_max=args.z_max, n_boxes=args.boxes, cell_size=args.cell_size,
        pixel_arcmin=args.pixel, omega_m_min=args.Omega_m, omega_m_max=args.Omega_m, n_lightcones=args.lightcones,
        n_steps=args.steps, detector=args.detector, threshold=args.threshold, cr_min=args.cr_min,
        perp_multiple=jax.device_count() if distributed else 1,
    )
    if distributed and args.mode == "observed":
        raise ValueError("--mode observed is not available with --distributed yet (run the observation on the "
                         "written maps instead)")
    writer = is_writer()
    _check_centre(args.ra, args.dec)
    _check_observation(args)
    from ..engines.memory import check_memory, estimate_survey_bytes

    g0 = config.geometry
    check_memory(estimate_survey_bytes(config) / (jax.device_count() if distributed else 1),
                 f"the survey of {config.area_deg2:g} deg² in {config.n_lightcones} × {g0.n_boxes} boxes of "
                 f"{g0.mesh_shape} voxels", enabled=not args.no_memory_check)
    import equinox as eqx
    import jax.numpy as jnp
    from astropy.wcs import WCS
    from tqdm import tqdm

    from ..baryons import default_eldl
    from ..cosmology import Cosmology
    from ..io.provenance import clean_json, fits_cards, provenance
    from ..xray import default_emissivity_table
    from . import products
    from .lightcone import box_layout
    from .pipeline import box_keys, box_particles, simulate_box, survey_xods
    from .truth import MAX_HALOS, BoxHaloFinder, match_detections

    from ..io.atomic import atomic_folder, check_replaceable

    final = pathlib.Path(args.out)
    if writer:
        check_replaceable(final, PRODUCTS)  # before the work: --out may only hold an earlier run's products
    g = config.geometry
    theta_dict = {n: getattr(args, n) for n in ThetaSim.names}  # as given (no float32 round trip)
    centre = (args.ra, args.dec)
    cosmo = Cosmology.from_theta(theta)
    hubble_h = float(cosmo.h)
    settings = {k: v for k, v in vars(args).items() if k not in ThetaSim.names and k != "seed"}
    settings |= dict(mesh_per_box=list(g.mesh_shape), n_pix=g.n_pix, pixel_arcmin_actual=math.degrees(g.pixel_rad) * 60)
    record = provenance("simulate", seed=args.seed, theta=theta_dict, settings=settings)
    t0 = time.perf_counter()
    if args.eldl is None:
        eldl = default_eldl()
    else:
        from ..baryons import load_eldl

        eldl, _ = load_eldl(args.eldl)
    table = default_emissivity_table()
    layout = box_layout(cosmo, g)
    keys = box_keys(jax.random.key(args.seed), config)

    @eqx.filter_jit
    def one_box(th, k, z, chi, d, e, t):
        pos = box_particles(th, k, z, config)
        return *simulate_box(th, k, z, chi, d, config, eldl=e, table=t, particles=pos), pos

    box = _decomposed_box(args, config, theta, eldl) if distributed else one_box
    if distributed:
        args.no_halos = True  # the SO finder needs a box's particles in one place; the catalogue's m500c is empty

    results = []
    n = config.n_lightcones * g.n_boxes
    m500 = np.full((config.n_lightcones, g.n_boxes, config.detection.max_sources), np.nan)
    offset = np.full_like(m500, np.nan)
    halo_note = ("most massive SO halo (M_500c, jaxcluster.halos.find_halos on the box's particles, the "
                 f"{MAX_HALOS} highest density peaks) whose projected centre lies in the source's segment; "
                 "masked: no such halo")
    halo_error = None
    halo_finder = BoxHaloFinder(g, theta)
    layout_note = ""
    if distributed:
        layout_note = (f", each over {jax.process_count()} processes and {jax.device_count()} devices "
                       f"(x-slabs, halo {box.halo} cells)")
    if writer:
        print(f"jaxcluster simulate: {config.area_deg2:g} deg² in {config.n_lightcones} × {g.n_boxes} boxes of "
              f"{g.mesh_shape} voxels ({g.cell_size} h⁻¹ Mpc), {g.n_pix}² pixels of "
              f"{math.degrees(g.pixel_rad) * 60:.3f}′{layout_note}")
    with tqdm(total=n, desc="boxes", unit="box", disable=not writer) as bar:
        for i in range(config.n_lightcones):
            for b in range(g.n_boxes):
                maps_b, seg_b, cat_b, pos = jax.block_until_ready(
                    box(theta, keys[i, b], layout.z[b], layout.chi[b], layout.depth, eldl, table))
                results.append((maps_b, seg_b, cat_b))
                if not args.no_halos and halo_error is None:
                    try:
                        halos = halo_finder(pos, float(layout.z[b]), float(layout.chi[b]), float(layout.depth))
                    except Exception as err:  # noqa: BLE001  # the halo column is auxiliary: say why, keep going
                        halo_error = f"{type(err).__name__}: {err}".splitlines()[0]
                        print(f"jaxcluster simulate: halo finder failed ({halo_error}); m500c left empty",
                              file=sys.stderr)
                    else:
                        idx = match_detections(np.asarray(seg_b), halos, config.detection.max_sources)
                        hit = (idx >= 0) & np.asarray(cat_b.valid)
                        m500[i, b, hit] = halos.M500c[idx[hit]]
                        d_xi = halos.xi[idx[hit]] - np.asarray(cat_b.xi, np.float64)[hit]
                        offset[i, b, hit] = np.hypot(d_xi[:, 0], d_xi[:, 1])
                del pos
                bar.update(1)
    if args.no_halos:
        halo_note = "not computed (--no-halos)"
        m500 = offset = None
    elif halo_error is not None:
        halo_note = f"not available: the halo finder failed ({halo_error})"
        m500 = offset = None
    stack = lambda *xs: jnp.stack(xs).reshape(config.n_lightcones, g.n_boxes, *xs[0].shape)  # noqa: E731
    maps = jax.tree.map(stack, *[r[0] for r in results])
    seg = np.asarray(stack(*[r[1] for r in results]))
    cat = jax.tree.map(stack, *[r[2] for r in results])
    hard, soft = survey_xods(cat, config)
    observed = _observe(args, maps, seg, cat, config, layout.z) if args.mode == "observed" else None
    wall = time.perf_counter() - t0
    if not writer:  # every process computed its share of each box; process 0 writes
        return 0

    z_boxes = np.asarray(layout.z, np.float64)
    wcs = WCS(products.wcs_header(g, z_boxes, config.n_lightcones, centre))
    outputs = ["maps.fits", "catalogue.ecsv", "xod.npz", "summary.json"]
    # every product goes to a staging folder that replaces --out at the end: never a mix of two runs
    with atomic_folder(final, PRODUCTS) as out, \
            tqdm(total=len(outputs) + (0 if args.no_figures else 1), desc="writing", unit="file") as bar:
        products.write_maps(out / "maps.fits", maps, seg, g, z_boxes, n_lightcones=config.n_lightcones,
                            centre_deg=centre, hubble_h=hubble_h, cards=fits_cards(record))
        bar.update(1)
        tab = products.catalogue_table(cat, seg, g, z_boxes, cr_min=config.cr_min, centre_deg=centre, wcs=wcs,
                                       hubble_h=hubble_h, halo_m500c=m500, halo_offset_rad=offset,
                                       halo_note=halo_note, record=record)
        products.write_catalogue(out / "catalogue.ecsv", tab)
        bar.update(1)
        products.write_xod(out / "xod.npz", hard=hard, soft=soft, binning=config.binning, cr_min=config.cr_min,
                           theta=[theta_dict[k] for k in ThetaSim.names], theta_names=ThetaSim.names,
                           area_deg2=config.area_deg2, record=record)
        bar.update(1)
        if not args.no_figures:
            outputs += _figures_written(out, maps, cat, hard, config, z_boxes, wcs, theta_dict, args.seed)
            bar.update(1)
        n_sel = int(np.sum(tab["selected"]))
        n_match = int(np.sum(~tab["m500c"].mask))
        summary = dict(
            theta=theta_dict, seed=args.seed, eldl=args.eldl or "shipped default",
            area_deg2_per_lightcone=g.area_deg2, area_deg2_total=config.area_deg2, n_lightcones=config.n_lightcones,
            z_range=[g.z_min, g.z_max], n_boxes=g.n_boxes, mesh_per_box=list(g.mesh_shape),
            hubble_h=hubble_h, cell_size_Mpc=g.cell_size / hubble_h, box_depth_Mpc=float(layout.depth) / hubble_h,
            n_pix=g.n_pix, pixel_arcmin=math.degrees(g.pixel_rad) * 60, field_centre_deg=list(centre),
            box_redshifts=z_boxes, detector=config.detection.method, threshold=config.detection.threshold,
            cr_min=config.cr_min, n_detected=len(tab), n_selected=n_sel, n_edge=int(np.sum(tab["edge"])),
            n_matched_to_halos=n_match, halo_matching=halo_note, xod_total=float(np.asarray(hard).sum()),
            wall_time_s_including_compile=wall, outputs=outputs,
            # astropy unit strings of the dimensional entries (h-scaled lengths given in physical Mpc, with hubble_h)
            units=dict(area_deg2_per_lightcone="deg2", area_deg2_total="deg2", cell_size_Mpc="Mpc",
                       box_depth_Mpc="Mpc", pixel_arcmin="arcmin", field_centre_deg="deg",
                       threshold="ct / (s arcmin2)", cr_min="ct / s", wall_time_s_including_compile="s"),
            provenance=record,
        )
        if args.mode == "observed":
            names, extra = _write_observed(out, args, observed, centre, record, maps, wcs, theta_dict)
            outputs += names
            summary |= extra
        else:
            summary["mode"] = "ideal"
        products.write_json(out / "summary.json", clean_json(summary))
        bar.update(1)
    print(f"jaxcluster simulate: {len(tab)} sources detected, {n_sel} above {config.cr_min:g} ct/s "
          f"({n_match} matched to halos), in {wall:.1f} s (with compilation); wrote {final}/")
    if observed is not None:
        print(f"jaxcluster simulate: observed: {summary['n_detected_observed']} sources on the photon images, "
              f"{summary['n_c1']} C1, {summary['n_c2']} C2")
    return 0


def _decomposed_box(args, config, theta, eldl):
    """The per-box function of `--distributed`: PM, eLDL and maps on x-slabs over every process's devices,
    then detection and measurement on the (small, replicated) maps, on each process's own device."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from ..cosmology import Cosmology
    from ..nbody.domain import SlabDecomposition, halo_for_box
    from .decomposed import box_maps_decomposed, box_particles_decomposed, check_decomposition
    from .pipeline import detect_and_measure

    g = config.geometry
    pm = g.pm_config(config.mesh_factor)
    # the nearest box has the largest displacements: the linear-theory halo at z_min
    halo = args.halo if args.halo is not None else halo_for_box(Cosmology.from_theta(theta), pm, 1.0 / (1.0 + g.z_min))
    dec = SlabDecomposition(halo=halo)
    check_decomposition(config, dec, eldl)
    replicated = NamedSharding(dec.mesh, PartitionSpec())

    @eqx.filter_jit
    def particles_of(th, k, z):
        pos = box_particles_decomposed(th, k, z, config, dec)
        return pos, jnp.all(jnp.isfinite(pos))  # NaN: a particle left the halo (nbody.domain)

    @eqx.filter_jit
    def maps_of(pos, th, z, chi, d, e, t):
        return jax.lax.with_sharding_constraint(box_maps_decomposed(pos, th, z, chi, d, config, e, t, dec), replicated)

    detect_in = eqx.filter_jit(lambda maps, z: detect_and_measure(maps, z, config))

    def box(th, k, z, chi, d, e, t):
        pos, finite = particles_of(th, k, z)
        if not bool(finite):
            raise ValueError(f"a particle moved more than the halo of {halo} cells ({halo * pm.cell_size:.3g} h⁻¹ "
                             f"Mpc) outside its slab in the box at z = {float(z):.3f}: rerun with a larger --halo")
        maps = maps_of(pos, th, z, chi, d, e, t)
        del pos
        local = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), maps)  # replicated: this process's copy
        seg, cat = detect_in(local, jnp.asarray(np.asarray(z)))
        return local, seg, cat, None

    box.halo = halo
    return box


# everything `simulate` writes in --out (a folder holding only these may be replaced by a new run)
PRODUCTS = frozenset({"maps.fits", "catalogue.ecsv", "xod.npz", "summary.json", "maps.png", "lightcone.png",
                      "xod.png", "dndz.png"}) | frozenset({"observation.fits", "pointings", "observed_catalogue.ecsv",
                                                          "observation.png"})  # --mode observed (survey.observed)


def _figures_written(out, maps, cat, hard, config, z_boxes, wcs, theta, seed) -> list[str]:
    from .figures import survey_figures

    return survey_figures(out, maps=maps, cat=cat, hard_xod=hard, config=config, z_boxes=z_boxes, wcs=wcs,
                          theta=theta, seed=seed, pixel_arcmin=math.degrees(config.geometry.pixel_rad) * 60)


# ---- --mode observed (jaxcluster.survey.observed): kept apart from the idealised pipeline above


def _add_observation_options(ap) -> None:
    from .observed import add_observation_options

    add_observation_options(ap)


def _check_observation(args) -> None:
    from .observed import check_observation_options

    check_observation_options(args)


def _observe(args, maps, seg, cat, config, z_boxes):
    from .observed import run_observation

    print("jaxcluster simulate: observing the field (XMM-Newton EPIC-pn), detecting and measuring on the photons",
          file=sys.stderr)
    return run_observation(args, maps=maps, seg=np.asarray(seg), cat=cat, config=config,
                           z_boxes=np.asarray(z_boxes, np.float64),
                           progress=lambda line: print(f"jaxcluster simulate: {line}", file=sys.stderr))


def _write_observed(out, args, observed, centre, record, maps, wcs, theta):
    from ..io.provenance import fits_cards
    from .observed import write_observation_products

    return write_observation_products(out, observed, centre_deg=centre, record=record, cards=fits_cards(record),
                                      maps=maps, wcs_maps=wcs, theta=theta, seed=args.seed,
                                      figures=not args.no_figures)
