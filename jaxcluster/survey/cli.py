"""`jaxcluster simulate`: one mock X-ray survey, written as FITS maps, a catalogue, the XOD and figures.

Defaults: one 4 deg² lightcone, z = 0.1–0.5 in 12 boxes at seed 001's
0.39 h⁻¹ Mpc resolution (119 × 119 × 220 voxels and particles per box),
1′ pixels, sep detection, the 0.02 counts s⁻¹ cut, the shipped eLDL and the
EPIC-pn table. The boxes run one after another with a progress bar; on a
2-core CPU this takes about two minutes.

Outputs in `--out`:

* `maps.fits`: image cubes (box, y, x) with a TAN WCS centred on (0, 0):
  CR_0.5-1, CR_1-2 [counts s⁻¹ per pixel], COMPTON_Y, RHO_OVER_RHO_C,
  MASS [h⁻¹ M☉ per pixel], SEGMENTATION (int32); box redshifts in the headers.
* `catalogue.ecsv`: every detected source (box, z, position, CR per band,
  CR[0.5–2], HR, area, whether it passes the CR cut).
* `xod.npz`: hard and soft XODs and their bin edges; `summary.json`.
* `maps.png` (the [0.5–2] keV map of each box, detections circled, those
  above the cut in red), `xod.png` (CR–HR slices per z bin), `dndz.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np

__all__ = ["main"]


def _parser():
    from ..params import FIDUCIAL

    ap = argparse.ArgumentParser(prog="jaxcluster simulate", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="jaxcluster_survey", help="output directory")
    for name in ("Omega_m", "sigma_8", "A_SN1", "A_SN2", "A_AGN1", "A_AGN2"):
        ap.add_argument("--" + name.replace("_", "-").lower(), dest=name, type=float, default=FIDUCIAL[name],
                        help=f"θ_sim: {name} (default {FIDUCIAL[name]})")
    ap.add_argument("--area", type=float, default=4.0, help="area of each lightcone [deg²]")
    ap.add_argument("--lightcones", type=int, default=1, help="number of independent lightcones")
    ap.add_argument("--z-min", type=float, default=0.1)
    ap.add_argument("--z-max", type=float, default=0.5)
    ap.add_argument("--boxes", type=int, default=12, help="boxes per lightcone")
    ap.add_argument("--cell-size", type=float, default=0.39, help="voxel side [h⁻¹ Mpc] (0.39: seed 001)")
    ap.add_argument("--pixel", type=float, default=1.0, help="map pixel [arcmin]")
    ap.add_argument("--steps", type=int, default=10, help="PM steps from z = 6 to each box")
    ap.add_argument("--detector", choices=("sep", "jax"), default="sep")
    ap.add_argument("--threshold", type=float, default=1e-4, help="detection threshold [counts s⁻¹ arcmin⁻²]")
    ap.add_argument("--cr-min", type=float, default=0.02, help="CR[0.5–2] cut [counts s⁻¹]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eldl", default=None, help="eLDL weights (.eqx written by `jaxcluster eldl train`); default the shipped ones")
    ap.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    return ap


def _wcs_header(config, z_boxes):
    from astropy.io import fits

    g = config.geometry
    h = fits.Header()
    pix_deg = math.degrees(g.pixel_rad)  # tangent-plane pixel
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 0.0, 0.0
    h["CRPIX1"] = h["CRPIX2"] = 0.5 * g.n_pix + 0.5
    h["CDELT1"], h["CDELT2"] = -pix_deg, pix_deg
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    for b, z in enumerate(z_boxes):
        h[f"BOXZ{b}"] = (float(z), f"redshift of box {b}")
    return h


def _write_maps(path, maps, seg, config, z_boxes):
    from astropy.io import fits

    head = _wcs_header(config, z_boxes)

    def cube(a):  # (lc, box, ξx, ξy) → (lc·box, y, x): FITS x is the first axis (ξ_x)
        a = np.asarray(a)
        return np.ascontiguousarray(np.swapaxes(a.reshape(-1, *a.shape[-2:]), -1, -2))

    hdus = [fits.PrimaryHDU()]
    for name, arr, unit in (("CR_0.5-1", maps.count_rate[..., 0], "counts/s"), ("CR_1-2", maps.count_rate[..., 1], "counts/s"),
                            ("COMPTON_Y", maps.y, ""), ("RHO_OVER_RHO_C", maps.rho_over_rho_c, ""),
                            ("MASS", maps.mass, "Msun/h"), ("SEGMENTATION", seg, "")):
        hdu = fits.ImageHDU(cube(arr).astype(np.int32 if name == "SEGMENTATION" else np.float32), header=head.copy(), name=name)
        hdu.header["BUNIT"] = unit
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)


def _catalogue_table(cat, config, z_boxes):
    from astropy.table import Table

    v = np.asarray(cat.valid)
    n_lc, n_box = v.shape[:2]
    lc, box, _ = np.meshgrid(np.arange(n_lc), np.arange(n_box), np.arange(v.shape[-1]), indexing="ij")
    cr = np.asarray(cat.count_rate)
    tot = cr.sum(-1)
    t = Table()
    t["lightcone"], t["box"] = lc[v], box[v]
    t["z"] = np.asarray(cat.z)[v]
    t["xi_x_deg"] = np.degrees(np.asarray(cat.xi)[..., 0][v])
    t["xi_y_deg"] = np.degrees(np.asarray(cat.xi)[..., 1][v])
    t["cr_0.5_1"], t["cr_1_2"], t["cr_0.5_2"] = cr[..., 0][v], cr[..., 1][v], tot[v]
    t["hr"] = np.asarray(cat.hardness_ratio)[v]
    t["area_pix"] = np.asarray(cat.area)[v].astype(int)
    t["selected"] = tot[v] > config.cr_min
    for c in ("cr_0.5_1", "cr_1_2", "cr_0.5_2"):
        t[c].unit = "ct/s"
    t.meta["cr_min"] = config.cr_min
    return t


def _figures(out, maps, cat, xod, config, z_boxes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    g = config.geometry
    half = math.degrees(g.side_rad) / 2
    ext = (-half, half, -half, half)
    cr = np.asarray(maps.count_rate[0]).sum(-1)  # first lightcone
    n_box = cr.shape[0]
    ncol = min(4, n_box)
    nrow = math.ceil(n_box / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.2 * nrow), squeeze=False)
    pos = cr[cr > 0]
    vmin = max(float(np.quantile(pos, 0.5)) if pos.size else 1e-8, 1e-9)
    vmax = max(float(cr.max()), vmin * 10)
    xi = np.degrees(np.asarray(cat.xi[0]))
    valid = np.asarray(cat.valid[0])
    sel = valid & (np.asarray(cat.count_rate_total[0]) > config.cr_min)
    for b, ax in enumerate(axes.ravel()):
        if b >= n_box:
            ax.axis("off")
            continue
        ax.imshow(np.maximum(cr[b].T, vmin), origin="lower", extent=ext, norm=LogNorm(vmin, vmax), cmap="magma")
        for mask, colour in ((valid[b] & ~sel[b], "cyan"), (sel[b], "red")):
            ax.scatter(xi[b, mask, 0], xi[b, mask, 1], s=60, facecolors="none", edgecolors=colour, lw=0.8)
        ax.set_title(f"box {b}, z = {float(z_boxes[b]):.3f}", fontsize=9)
        ax.set_xlabel(r"$ξ_x$ [deg]", fontsize=8)
        ax.set_ylabel(r"$ξ_y$ [deg]", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("CR[0.5–2 keV] per 1′ pixel (EPIC-pn); red: CR > %.3g c/s, cyan: fainter detections" % config.cr_min)
    fig.tight_layout()
    fig.savefig(out / "maps.png", dpi=110)
    plt.close(fig)

    b = config.binning
    n_z = b.shape[2]
    fig, axes = plt.subplots(1, n_z, figsize=(3.2 * n_z + 1.2, 3.4), squeeze=False, sharey=True, layout="constrained")
    xod = np.asarray(xod)
    for k, ax in enumerate(axes[0]):
        im = ax.pcolormesh(b.cr_edges, b.hr_edges, xod[:, :, k].T, cmap="viridis", vmin=0, vmax=max(1.0, xod.max()))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("CR[0.5–2] [c/s]")
        ax.set_title(f"{b.z_edges[k]:.2f} ≤ z < {b.z_edges[k + 1]:.2f}", fontsize=9)
    axes[0, 0].set_ylabel("HR = CR[1–2] / CR[0.5–1]")
    fig.colorbar(im, ax=axes[0].tolist(), label="clusters")
    fig.suptitle(f"hard XOD, {config.area_deg2:g} deg², CR > {config.cr_min:g} c/s")
    fig.savefig(out / "xod.png", dpi=110)
    plt.close(fig)

    z_sel = np.asarray(cat.z)[np.asarray(cat.valid) & (np.asarray(cat.count_rate_total) > config.cr_min)]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    edges = np.linspace(g.z_min, g.z_max, 9)
    ax.hist(z_sel, bins=edges, histtype="stepfilled", alpha=0.6)
    ax.set_xlabel("z")
    ax.set_ylabel(f"N (CR > {config.cr_min:g} c/s) per Δz = {edges[1] - edges[0]:.2f}")
    ax.set_title(f"dN/dz, {config.area_deg2:g} deg², {z_sel.size} clusters")
    fig.tight_layout()
    fig.savefig(out / "dndz.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run `jaxcluster simulate` with `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _simulate(args)
    except ValueError as err:  # bad user input: one clear line
        print(f"jaxcluster simulate: error: {err}", file=sys.stderr)
        return 2


def _simulate(args) -> int:
    from ..params import ThetaSim
    from .pipeline import SurveyConfig

    theta = ThetaSim(args.Omega_m, args.sigma_8, args.A_SN1, args.A_SN2, args.A_AGN1, args.A_AGN2)  # validates
    config = SurveyConfig(
        area_deg2=args.area, z_min=args.z_min, z_max=args.z_max, n_boxes=args.boxes, cell_size=args.cell_size,
        pixel_arcmin=args.pixel, omega_m_min=args.Omega_m, omega_m_max=args.Omega_m, n_lightcones=args.lightcones,
        n_steps=args.steps, detector=args.detector, threshold=args.threshold, cr_min=args.cr_min,
    )
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from ..baryons import default_eldl
    from ..cosmology import Cosmology
    from ..xray import default_emissivity_table
    from .lightcone import box_layout
    from .pipeline import box_keys, simulate_box, survey_xods

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = config.geometry
    t0 = time.perf_counter()
    if args.eldl is None:
        eldl = default_eldl()
    else:
        from ..baryons import load_eldl

        eldl, _ = load_eldl(args.eldl)
    table = default_emissivity_table()
    layout = box_layout(Cosmology.from_theta(theta), g)
    keys = box_keys(jax.random.key(args.seed), config)
    box = eqx.filter_jit(lambda th, k, z, chi, d, e, t: simulate_box(th, k, z, chi, d, config, eldl=e, table=t))
    results = []
    n = config.n_lightcones * g.n_boxes
    print(f"jaxcluster simulate: {config.area_deg2:g} deg² in {config.n_lightcones} × {g.n_boxes} boxes of "
          f"{g.mesh_shape} voxels ({g.cell_size} h⁻¹ Mpc), {g.n_pix}² pixels of {math.degrees(g.pixel_rad) * 60:.3f}′")
    with tqdm(total=n, desc="boxes", unit="box") as bar:
        for i in range(config.n_lightcones):
            for b in range(g.n_boxes):
                res = box(theta, keys[i, b], layout.z[b], layout.chi[b], layout.depth, eldl, table)
                results.append(jax.block_until_ready(res))
                bar.update(1)
    stack = lambda *xs: jnp.stack(xs).reshape(config.n_lightcones, g.n_boxes, *xs[0].shape)  # noqa: E731
    maps = jax.tree.map(stack, *[r[0] for r in results])
    seg = stack(*[r[1] for r in results])
    cat = jax.tree.map(stack, *[r[2] for r in results])
    hard, soft = survey_xods(cat, config)
    wall = time.perf_counter() - t0

    steps = ["maps.fits", "catalogue.ecsv", "xod.npz"] + ([] if args.no_figures else ["figures"])
    with tqdm(total=len(steps), desc="writing", unit="file") as bar:
        _write_maps(out / "maps.fits", maps, seg, config, np.asarray(layout.z))
        bar.update(1)
        tab = _catalogue_table(cat, config, np.asarray(layout.z))
        tab.write(out / "catalogue.ecsv", overwrite=True)
        bar.update(1)
        b = config.binning
        np.savez(out / "xod.npz", xod=np.asarray(hard), xod_soft=np.asarray(soft), cr_edges=b.cr_edges,
                 hr_edges=b.hr_edges, z_edges=b.z_edges, cr_min=config.cr_min)
        bar.update(1)
        if not args.no_figures:
            _figures(out, maps, cat, hard, config, np.asarray(layout.z))
            bar.update(1)
    n_sel = int(np.sum(tab["selected"]))
    summary = dict(
        theta={n: float(getattr(theta, n)) for n in ThetaSim.names}, seed=args.seed, eldl=args.eldl or "shipped default",
        area_deg2_per_lightcone=g.area_deg2, n_lightcones=config.n_lightcones, z_range=[g.z_min, g.z_max],
        n_boxes=g.n_boxes, mesh_per_box=list(g.mesh_shape), cell_size=g.cell_size, n_pix=g.n_pix,
        pixel_arcmin=math.degrees(g.pixel_rad) * 60, box_redshifts=np.asarray(layout.z).tolist(),
        box_depth=float(layout.depth), detector=config.detection.method, threshold=config.detection.threshold,
        cr_min=config.cr_min, n_detected=len(tab), n_selected=n_sel, xod_total=float(np.asarray(hard).sum()),
        wall_time_s_including_compile=wall,
        outputs=["maps.fits", "catalogue.ecsv", "xod.npz"] + ([] if args.no_figures else ["maps.png", "xod.png", "dndz.png"]),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"jaxcluster simulate: {len(tab)} sources detected, {n_sel} above {config.cr_min:g} c/s, "
          f"in {wall:.1f} s (with compilation); wrote {out}/")
    return 0
