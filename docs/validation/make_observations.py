"""Figures and numbers of docs/validation/observations.md: AGN logN–logS recovered, CR pulls, background per pointing.

    python docs/validation/make_observations.py [--fields 12] [--side 60]
    python docs/validation/make_observations.py --survey DIR   # a `jaxcluster simulate --mode observed` run

The logN–logS: `--fields` AGN-only fields (no clusters) of `--side`′ × `--side`′
observed as `jaxcluster simulate --mode observed` does (7.5″ pixels, 10 ks,
XXL-N N_H, backgrounds, PSF; `observation.field`), detected and measured;
detections are matched to the input AGN within 10″ (the brightest input within
the radius). Measured fluxes are CR[0.5–2] / ECF (the same power-law ECF that
made the input count rates, `observation.agn.energy_conversion_factor`).
Completeness = matched fraction of the input per flux bin. The recovered N(>S)
is that of the **point-source catalogue**: every detection not classified C1 or
C2 (matched or not, as a real survey would count it), by its measured flux,
against the input N(>S) of the drawn sources; every detection's N(>S) and the
false C1/C2 per deg² (there are no clusters) are recorded too. The CR pulls and
the background per pointing are read from benchmarks/results/observations.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).parent


def lognlogs(fields: int, side_arcmin: float, seed: int) -> dict:
    from jaxcluster.observation import ObservationConfig, energy_conversion_factor
    from jaxcluster.observation.field import (FieldSettings, field_confusion, field_source_model, measure_field_host,
                                              observe_and_detect)
    from jaxcluster.xray.emissivity import default_band_response

    response = default_band_response()
    map_pix = 1.0  # survey pixel [arcmin], split 8 × 8 into 7.5″ observation pixels
    n = int(round(side_arcmin / map_pix))
    area = (n * map_pix / 60.0) ** 2
    settings = FieldSettings(pixel_arcsec=7.5, max_sources=int(750 * area + 64))
    config = ObservationConfig()
    ecf = float(jnp.sum(energy_conversion_factor(jnp.asarray(config.nh_cm2), response, config.agn_photon_index)))
    stage1 = eqx.filter_jit(lambda k, c: observe_and_detect(k, c, map_pix, config, settings, response))
    model = field_source_model(settings, response)
    confusion = field_confusion(settings, config, response)
    zero = jnp.zeros((n, n, 2))
    s_in, s_det, s_all, s_matched_in, s_ratio, s_ratio_in = [], [], [], [], [], []
    n_c1 = n_c2 = 0
    for f in range(fields):
        obs, padded, det, _ = stage1(jax.random.fold_in(jax.random.key(seed), f), zero)
        cat = measure_field_host(padded, det, settings, model, confusion)
        v = np.asarray(cat.valid)
        pos = (np.asarray(cat.position)[v] + 0.5) * settings.pixel_arcsec / 60.0  # [arcmin]
        flux = np.asarray(cat.count_rate_total)[v] / ecf
        cls = np.asarray(cat.source_class)[v]
        n_c1, n_c2 = n_c1 + int(np.sum(cls == 1)), n_c2 + int(np.sum(cls == 2))
        a_ok = np.asarray(obs.agn.valid)
        a_pos = np.asarray(obs.agn.position_arcmin)[a_ok]
        a_flux = np.asarray(obs.agn.flux_cgs)[a_ok]
        d = np.hypot(*(pos[:, None, :] - a_pos[None, :, :]).transpose(2, 0, 1)) * 60.0
        near = d <= 10.0
        matched = np.zeros(a_flux.size, bool)
        for k in range(pos.shape[0]):
            cand = np.nonzero(near[k])[0]
            if cand.size:
                best = cand[np.argmax(a_flux[cand])]
                matched[best] = True
                s_ratio.append(np.asarray([flux[k] / a_flux[best]]))
                s_ratio_in.append(np.asarray([a_flux[best]]))
        s_in.append(a_flux)
        s_matched_in.append(a_flux[matched])
        s_det.append(flux[cls == 0])
        s_all.append(flux)
    s_in, s_det, s_all, s_m = (np.concatenate(x) for x in (s_in, s_det, s_all, s_matched_in))
    edges = np.geomspace(1e-15, 1e-12, 16)
    n_in, _ = np.histogram(s_in, edges)
    n_m, _ = np.histogram(s_m, edges)
    comp = np.where(n_in > 0, n_m / np.maximum(n_in, 1), np.nan)
    centres = np.sqrt(edges[1:] * edges[:-1])
    # 90 % completeness flux: the lowest bin edge above which every bin is ≥ 0.9 complete
    ok = np.nan_to_num(comp, nan=1.0) >= 0.9
    first = next((i for i in range(ok.size) if ok[i:].all()), ok.size - 1)
    s90 = float(edges[first])
    grid = np.geomspace(s90, 1e-13, 6)
    total_area = fields * area
    n_gt_in = np.array([np.sum(s_in > s) for s in grid]) / total_area
    n_gt_det = np.array([np.sum(s_det > s) for s in grid]) / total_area
    n_gt_all = np.array([np.sum(s_all > s) for s in grid]) / total_area
    # the same detections counted by the *input* flux of their matched AGN (no flux boosting), and the measured /
    # input flux of the matched detections above S90 (Eddington bias / flux boosting of a steep N(>S))
    n_gt_matched_in = np.array([np.sum(s_m > s) for s in grid]) / total_area
    ratio_m = np.concatenate(s_ratio) if s_ratio else np.zeros(0)
    above = np.concatenate(s_ratio_in) > s90 if s_ratio_in else np.zeros(0, bool)
    return dict(fields=fields, area_deg2_total=total_area, ecf_cts_per_cgs=ecf, n_input=int(s_in.size),
                n_detected=int(s_det.size), n_matched=int(s_m.size), flux_bin_centres=centres, completeness=comp,
                s90_cgs=s90, s_grid=grid, n_gt_input_deg2=n_gt_in, n_gt_detected_deg2=n_gt_det,
                ratio_detected_over_input=n_gt_det / np.maximum(n_gt_in, 1e-30),
                poisson_error_of_ratio=1.0 / np.sqrt(np.maximum(n_gt_in * total_area, 1.0)),
                n_gt_all_detections_deg2=n_gt_all, ratio_all_detections_over_input=n_gt_all / np.maximum(n_gt_in, 1e-30),
                false_c1_per_deg2=n_c1 / total_area, false_c2_per_deg2=n_c2 / total_area,
                n_gt_matched_by_input_flux_deg2=n_gt_matched_in,
                ratio_matched_input_flux_over_input=n_gt_matched_in / np.maximum(n_gt_in, 1e-30),
                matched_above_s90=int(above.sum()),
                median_measured_over_input_flux_above_s90=float(np.median(ratio_m[above])) if above.any() else None,
                mean_measured_over_input_flux_above_s90=float(np.mean(ratio_m[above])) if above.any() else None)


def fiducial_survey(out: Path) -> dict:
    """C1 surface density and dN/dz of a `jaxcluster simulate --mode observed` run (directory `out`) against its
    own noiseless catalogue (the ideal chain on the same lightcones: `catalogue.ecsv`, CR > cr_min)."""
    from astropy.table import Table

    summary = json.loads((out / "summary.json").read_text())
    obs = Table.read(out / "observed_catalogue.ecsv")
    ideal = Table.read(out / "catalogue.ecsv")
    n_cones = int(summary.get("n_lightcones", len(set(np.asarray(obs["lightcone"]).tolist()))))
    area = float(summary["area_deg2_total"])
    c1 = np.asarray(obs["c1"], bool)
    c2 = np.asarray(obs["c2"], bool)
    z_true = np.asarray(obs["z_true"], np.float64)
    cluster = np.isfinite(z_true) & (z_true > 0)  # unmatched detections are written with z_true = 0 (or NaN)
    agn = np.asarray(obs["agn_flux"], np.float64)
    extent = np.asarray(obs["extent"], np.float64)
    edges = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    sel = np.asarray(ideal["selected"], bool)
    per_cone = [int(np.sum(c1 & (np.asarray(obs["lightcone"]) == k))) for k in range(n_cones)]
    return dict(
        directory=str(out), area_deg2=area, n_lightcones=n_cones,
        n_c1=int(c1.sum()), n_c2=int(c2.sum()), c1_per_deg2=c1.sum() / area, c1_per_lightcone=per_cone,
        c1_on_a_cluster=int(np.sum(c1 & cluster)), c1_without_cluster=int(np.sum(c1 & ~cluster)),
        c1_without_cluster_near_an_agn=int(np.sum(c1 & ~cluster & (np.nan_to_num(agn) > 0))),
        c1_without_cluster_at_the_largest_extent=int(np.sum(c1 & ~cluster & (extent >= 0.99 * np.nanmax(extent)))),
        c1_on_a_cluster_true_cr=np.sort(np.asarray(obs["cr_true"], np.float64)[c1 & cluster]),
        n_ideal_selected=int(sel.sum()), ideal_selected_per_deg2=sel.sum() / area,
        z_edges=edges, dndz_c1=np.histogram(z_true[c1 & cluster], edges)[0],
        dndz_ideal_selected=np.histogram(np.asarray(ideal["z"], np.float64)[sel], edges)[0],
    )


def figures(res: dict, bench: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    ax = axes[0]
    ax.semilogx(res["flux_bin_centres"], res["completeness"], "o-", color="#0072B2")
    ax.axhline(0.9, ls=":", color="0.4")
    ax.axvline(res["s90_cgs"], ls="--", color="#D55E00", label=f"90 % completeness: {res['s90_cgs']:.2g}")
    ax.set(xlabel="input AGN flux, 0.5–2 keV [erg s$^{-1}$ cm$^{-2}$]", ylabel="fraction recovered (10″ match)",
           title=f"point-source completeness, {res['area_deg2_total']:.2g} deg², 10 ks")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.loglog(res["s_grid"], res["n_gt_input_deg2"], "k-", label="input (drawn AGN)")
    ax.loglog(res["s_grid"], res["n_gt_detected_deg2"], "o", color="#0072B2", label="point-source catalogue, measured flux")
    ax.loglog(res["s_grid"], res["n_gt_all_detections_deg2"], "x", color="0.4", label="all detections, measured flux")
    ax.loglog(res["s_grid"], res["n_gt_matched_by_input_flux_deg2"], "s", mfc="none", color="#D55E00",
              label="matched, input flux")
    ax.set(xlabel="S [erg s$^{-1}$ cm$^{-2}$]", ylabel="N(>S) [deg$^{-2}$]", title="logN–logS above S$_{90}$")
    ax.legend(fontsize=8)
    ax = axes[2]
    if bench and bench.get("cr_pull"):
        p = np.asarray(bench["cr_pull"]["selection_settings"]["pulls"])
        q = np.asarray(bench["cr_pull"]["survey_chain_settings"]["pulls"])
        bins = np.linspace(-5, 5, 26)
        ax.hist(p, bins, histtype="step", color="#0072B2", lw=1.6,
                label=f"injection–recovery settings: mean {p.mean():.2f}, sd {p.std(ddof=1):.2f}")
        ax.hist(q, bins, histtype="step", color="#D55E00", lw=1.6, ls="--",
                label=f"survey-chain settings: mean {q.mean():.2f}, sd {q.std(ddof=1):.2f}")
        x = np.linspace(-5, 5, 200)
        ax.plot(x, p.size * (bins[1] - bins[0]) * np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), "k:", label="N(0, 1)")
        inj = bench["cr_pull"]["injected"]
        ax.set(xlabel="(CR$_{meas}$ − CR$_{true}$) / σ$_{CR}$", ylabel="injections",
               title=f"β-model CR = {inj['count_rate']} s$^{{-1}}$, r$_c$ = {inj['core_radius_arcsec']}″")
        ax.legend(fontsize=7)
    fig.savefig(HERE / "observations_recovery.png", dpi=100)


def main(argv=None) -> None:
    from jaxcluster.io.provenance import clean_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=12)
    ap.add_argument("--side", type=float, default=60.0, help="field side [arcmin]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--survey", default=None, help="a `jaxcluster simulate --mode observed` output directory: "
                    "write observations_fiducial.json (C1 density and dN/dz against its ideal catalogue) and stop")
    args = ap.parse_args(argv)
    if args.survey is not None:
        fid = clean_json(fiducial_survey(Path(args.survey)))
        (HERE / "observations_fiducial.json").write_text(json.dumps(fid, indent=1))
        print(json.dumps(fid, indent=1))
        return
    res = lognlogs(args.fields, args.side, args.seed)
    bench_path = HERE.parent.parent / "benchmarks" / "results" / "observations.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else None
    figures(res, bench)
    (HERE / "observations_lognlogs.json").write_text(json.dumps(clean_json(res), indent=1))
    print(json.dumps(clean_json({k: v for k, v in res.items() if k not in ("flux_bin_centres",)}), indent=1))


if __name__ == "__main__":
    main()
