"""``jaxcluster sensitivity --out DIR [options]``: gradients of the survey observables, simulation Fisher, CR–M vs θ.

Writes into DIR:

* ``sensitivity.json``: per parameter, the mean ∂/∂θ of the soft dN/dz, CR
  and HR distributions and total counts with their Monte-Carlo errors;
  finite differences with common random numbers (segmentation fixed: same
  function; re-detected hard pipeline: hard and soft XOD) and their
  deviations in standard errors; the simulation Fisher matrix (errors, FoM,
  MC-noise term) beside the analytic model's; its dependence on the
  softness and on the number of keys; timings.
* ``derivatives_<param>.png``: autodiff vs finite differences per parameter.
* ``fisher_simulation.png``, ``fisher_analytic.png``, ``fisher_om_s8.png``.
* ``scaling.json``, ``scaling_cr_m.png``, ``scaling_theta.png`` (unless ``--skip-scaling``).
* ``stage_*.npz``: per-stage results; a rerun with the same options resumes from them.
* ``settings.json`` (the first write): the options the stages depend on and
  the digests of the eLDL weights and emission table used; a rerun with
  others is refused, naming the difference. Every file is written
  atomically (temporary name, fsync, rename): a kill leaves whole files, and
  a rerun ends with the same stage files; an unreadable stage file is
  recomputed (the rerun says so).

Defaults are a small configuration for a CPU (2 deg², 4 boxes, 2 h⁻¹ Mpc
cells, 3′ pixels, 3 PM steps, coarse XOD bins, thresholds scaled to the
coarse maps); ``--area 20 --boxes 12 --cell-size 0.39 --pixel 1
--threshold 1e-4 --cr-min 0.02 --steps 10`` is seed 001's survey, for a GPU.
All results use the shipped eLDL, trained on SYNTHETIC baryons.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np


def _parser():
    from ..clihelp import HelpFormatter, seed_type

    p = argparse.ArgumentParser(prog="jaxcluster sensitivity", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--out", type=pathlib.Path, required=True, help="output directory (created; a rerun resumes from "
                   "its stage_*.npz)")
    p.add_argument("--area", type=float, default=2.0, help="lightcone area [deg²]")
    p.add_argument("--boxes", type=int, default=4, help="boxes per lightcone")
    p.add_argument("--cell-size", type=float, default=2.0, help="voxel [h⁻¹ Mpc]")
    p.add_argument("--pixel", type=float, default=3.0, help="map pixel [arcmin]")
    p.add_argument("--steps", type=int, default=3, help="PM steps per box")
    p.add_argument("--threshold", type=float, default=2e-9, help="detection threshold [counts s⁻¹ arcmin⁻²]")
    p.add_argument("--cr-min", type=float, default=2e-7, help="CR[0.5–2] cut [counts s⁻¹]")
    p.add_argument("--cr-bins", type=int, default=4, help="log CR bins over [--cr-min, 1000 × --cr-min]")
    p.add_argument("--hr-bins", type=int, default=3, help="log HR bins over [--hr-min, --hr-max]")
    p.add_argument("--hr-min", type=float, default=0.03, help="lowest HR edge (coarse cells make soft spectra)")
    p.add_argument("--hr-max", type=float, default=1.0, help="highest HR edge")
    p.add_argument("--z-bins", type=int, default=2, help="z bins over [0.1, 0.5]")
    p.add_argument("--max-sources", type=int, default=16, help="sources kept per box map")
    p.add_argument("--softness", type=float, default=0.02, help="soft-XOD scale in log10 CR, HR [dex]")
    p.add_argument("--softness-z", type=float, default=0.005, help="soft-XOD scale in redshift")
    p.add_argument("--isophote-softness", type=float, default=0.05,
                   help="soft isophotes' scale in log10 pixel count rate [dex]; 0: hard masks (no isophote response)")
    p.add_argument("--keys", type=int, default=6, help="lightcone realisations (≥ 2: Monte-Carlo errors)")
    p.add_argument("--fd-fraction", type=float, default=0.05, help="FD step, fraction of each prior width")
    p.add_argument("--fisher-area", type=float, default=200.0, help="survey area the Fisher matrix is scaled to [deg²]")
    p.add_argument("--skip-fd", action="store_true", help="no finite-difference check of the derivatives")
    p.add_argument("--skip-scaling", action="store_true", help="no CR–M study (scaling.json and its figures)")
    p.add_argument("--scaling-keys", type=int, default=4, help="boxes per θ for the CR–M fits (≥ 2)")
    p.add_argument("--scaling-box", type=float, nargs=3, default=(64.0, 64.0, 32.0), help="box of the CR–M study, 3 sides [h⁻¹ Mpc]")
    p.add_argument("--scaling-cell", type=float, default=1.0, help="cell of the CR–M study's boxes [h⁻¹ Mpc]")
    p.add_argument("--scaling-steps", type=int, default=5, help="PM steps of the boxes")
    p.add_argument("--scaling-fraction", type=float, default=0.1, help="grid step, fraction of each prior width")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the lightcone and box keys")
    return p


# Options the stage files depend on (the others: what is done with them afterwards).
_STAGE_OPTIONS = ("area", "boxes", "cell_size", "pixel", "steps", "threshold", "cr_min", "cr_bins", "hr_bins", "hr_min",
                  "hr_max", "z_bins", "max_sources", "softness", "softness_z", "isophote_softness", "keys", "fd_fraction",
                  "seed")

FIXED_FD_FRACTION = np.array([1e-3, 1e-3, 1e-2, 1e-2, 1e-2, 1e-2])  # of the hard FD step, PARAM_NAMES order


def _read_stage(path: pathlib.Path) -> dict | None:
    """A stage file's arrays (every member read, so the zip's CRC-32s are checked), or None if it is unreadable."""
    import zipfile
    import zlib

    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:  # our handle: closed on a bad zip too
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError) as err:
        print(f"jaxcluster sensitivity: {path} is unreadable ({type(err).__name__}: {err}); recomputing it",
              file=sys.stderr, flush=True)
        return None


def _stage(out: pathlib.Path, name: str, fn):
    """Run fn() → dict of arrays, or load it if a previous run saved it (resume after a kill)."""
    from ..io.atomic import atomic_path

    path = out / f"stage_{name}.npz"
    if path.exists():
        res = _read_stage(path)
        if res is not None:
            return res
    res = {k: np.asarray(v) for k, v in fn().items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **res)
    return res


def _savefig(fig, path: pathlib.Path, dpi: int) -> None:
    """``fig.savefig``, atomically."""
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix[1:])


def _write_json(path: pathlib.Path, obj) -> None:
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.keys < 2 or args.scaling_keys < 2:
        print("jaxcluster sensitivity: error: --keys and --scaling-keys must be >= 2 (Monte-Carlo errors)", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except ValueError as err:  # bad user input: one clear line
        print(f"jaxcluster sensitivity: error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import jax

    from ..baryons import default_eldl

    eldl = default_eldl()  # float32 weights, read before x64
    jax.config.update("jax_enable_x64", True)  # opt-in at the entry point: FD differences in float64
    import equinox as eqx
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..analytic import AnalyticModel, figure_of_merit, fisher_covariance, fisher_matrix, marginal_errors, plot_fisher_corner
    from ..analytic.hmc import NUISANCE_PRIOR_SIGMA
    from ..params import PARAM_NAMES, ThetaSim
    from ..survey import SurveyConfig
    from ..xray import default_emissivity_table
    from .fisher import simulation_fisher
    from .gradients import (OBSERVABLES, default_steps, finite_difference_jacobians, project, reference_segmentations, richardson,
                            xod_sensitivity)
    from .montecarlo import mc_estimate, paired_sigma

    from ..io.provenance import clean_json, provenance

    def say(text: str) -> None:
        print(f"jaxcluster sensitivity: {text}", flush=True)

    def resumed(name: str) -> str:
        return " (resumed from stage_%s.npz)" % name if (out / f"stage_{name}.npz").exists() else " …"

    from ..io.atomic import record_settings
    from ..io.chunks import pytree_digest

    out = args.out
    table = default_emissivity_table()
    if any(out.glob("stage_*.npz")) and not (out / "settings.json").exists():
        raise ValueError(f"{out} holds stage files from a version that recorded no settings.json: they cannot be "
                         "checked against these options; remove them or use another --out")
    out.mkdir(parents=True, exist_ok=True)
    record_settings(out / "settings.json", {**{k: getattr(args, k) for k in _STAGE_OPTIONS},
                                            "eldl_sha256": pytree_digest(eldl), "emissivity_table_sha256": pytree_digest(table)})
    theta = ThetaSim()
    h = np.asarray(default_steps(args.fd_fraction, theta))
    om = float(theta.Omega_m)
    config = SurveyConfig(
        area_deg2=args.area, n_boxes=args.boxes, cell_size=args.cell_size, pixel_arcmin=args.pixel,
        n_steps=args.steps, threshold=args.threshold, cr_min=args.cr_min, max_sources=args.max_sources,
        cr_edges=np.geomspace(args.cr_min, 1e3 * args.cr_min, args.cr_bins + 1),
        hr_edges=np.geomspace(args.hr_min, args.hr_max, args.hr_bins + 1), z_edges=np.linspace(0.1, 0.5, args.z_bins + 1),
        softness=args.softness, softness_z=args.softness_z, isophote_softness=args.isophote_softness or None,
        omega_m_min=om - 1.01 * h[0], omega_m_max=om + 1.01 * h[0],
    )
    keys = jax.random.split(jax.random.key(args.seed), args.keys)
    timings = {}

    def seg_stage():
        t0 = time.perf_counter()
        segs = reference_segmentations(theta, keys, config, eldl=eldl, table=table)
        timings["segmentations_s"] = time.perf_counter() - t0
        return {"segs": segs}

    t_start = time.perf_counter()
    say(f"{args.keys} lightcones of {args.area:g} deg² ({args.boxes} boxes, {args.cell_size:g} h⁻¹ Mpc cells): "
        f"reference segmentations{resumed('segmentations')}")
    segs = jnp.asarray(_stage(out, "segmentations", seg_stage)["segs"])
    say(f"[{time.perf_counter() - t_start:.0f} s] forward-mode derivatives of the soft XOD{resumed('autodiff')}")

    def ad_stage():
        t0 = time.perf_counter()
        sens, cats = xod_sensitivity(theta, keys, config, eldl=eldl, table=table, segmentations=segs, method="jvp")
        timings["autodiff_s"] = time.perf_counter() - t0
        res = {"xod": sens.xod, "jac": sens.jacobian}
        for s in (0.5 * args.softness, 2.0 * args.softness):
            xs = [c.soft_xod(config, softness=s, softness_z=args.softness_z * s / args.softness) for c in cats]
            res[f"xod_s{s:g}"] = jnp.stack([x[0] for x in xs])
            res[f"jac_s{s:g}"] = jnp.stack([x[1] for x in xs])
        return res

    ad = _stage(out, "autodiff", ad_stage)
    xod_k, jac_k = ad["xod"], ad["jac"]
    result = dict(
        label="SYNTHETIC baryons (shipped eLDL); small CPU configuration, not seed 001's numbers",
        config=dict(vars(args) | {"out": str(out), "scaling_box": list(args.scaling_box)}),
        theta=dict(zip(PARAM_NAMES, np.asarray(theta.to_array()).tolist())), fd_steps=dict(zip(PARAM_NAMES, h.tolist())),
        n_keys=int(args.keys), xod_shape=list(config.binning.shape),
        mean_total_counts=float(mc_estimate(project(xod_k, "total")).mean),
        mean_total_counts_err=float(mc_estimate(project(xod_k, "total")).stderr),
        derivatives={},
    )
    for a, name in enumerate(PARAM_NAMES):
        d = {}
        for obs in OBSERVABLES[1:]:
            est = mc_estimate(project(jac_k[:, a], obs))
            d[obs] = dict(mean=np.asarray(est.mean).tolist(), stderr=np.asarray(est.stderr).tolist())
        result["derivatives"][name] = d

    if not args.skip_fd:
        def fd_stage():
            t0 = time.perf_counter()
            # Steps: 0.1 % of the hard step for Ω_m, σ_8, which move particles across CIC cells (kinks) fastest;
            # 1 % for the feedback amplitudes, where 0.1 % drowns in the float32 round-off of faint rim pixels
            fixed = finite_difference_jacobians(theta, keys, config, FIXED_FD_FRACTION * h, policy="fixed", soft=True,
                                                eldl=eldl, table=table, segmentations=segs)
            hard, soft_re = finite_difference_jacobians(theta, keys, config, h, policy="redetect", both=True,
                                                        eldl=eldl, table=table)
            # half steps: (4 D(h/2) − D(h)) / 3 removes the O(h²) truncation of the soft FD, 5-20 % at h = 5 %
            soft_half = finite_difference_jacobians(theta, keys, config, h / 2, policy="redetect", soft=True,
                                                    eldl=eldl, table=table)
            timings["finite_differences_s"] = time.perf_counter() - t0
            return {"fixed": fixed, "hard": hard, "soft_redetect": soft_re, "soft_redetect_half": soft_half}

        say(f"[{time.perf_counter() - t_start:.0f} s] finite differences (fixed segmentation, re-detected, "
            f"half steps){resumed('fd')}")
        fd = _stage(out, "fd", fd_stage)
        kinds = ["hard", "soft_redetect"]
        if "soft_redetect_half" in fd:  # runs saved before the half steps have none
            fd["soft_redetect_richardson"] = np.asarray(richardson(fd["soft_redetect"], fd["soft_redetect_half"]))
            kinds.append("soft_redetect_richardson")
        marginals = ("dndz", "cr", "hr", "total")
        agree = {}
        for a, name in enumerate(PARAM_NAMES):
            scale = float(np.abs(fd["fixed"][:, a]).max()) or 1.0
            row = dict(fixed_max_rel_diff=float(np.abs(jac_k[:, a] - fd["fixed"][:, a]).max() / scale))
            # the hard FD counts bin-edge crossings: its variance is floored at their Poisson variance
            # (paired_sigma's count_step); the sample-variance-only figure is kept beside it
            tests = [("hard_sigma", "hard", 2.0 * h[a]), ("hard_sigma_sample_variance", "hard", None)]
            tests += [(f"{kind}_sigma", kind, None) for kind in kinds[1:]]
            for label, kind, step in tests:
                sig = {obs: np.asarray(paired_sigma(project(jac_k[:, a], obs), project(fd[kind][:, a], obs),
                                                    count_step=step)).tolist() for obs in marginals}
                row[label] = sig
                row[f"{label}_max"] = float(np.nanmax(np.concatenate([np.ravel(v) for v in sig.values()])))
            for kind in kinds:
                row[f"{kind}_mean"] = {obs: np.asarray(mc_estimate(project(fd[kind][:, a], obs)).mean).tolist()
                                       for obs in marginals}
            agree[name] = row
        result["finite_differences"] = agree
        result["fd_agreement_sigma"] = {n: agree[n]["hard_sigma_max"] for n in PARAM_NAMES}
        _plot_derivatives(plt, out, PARAM_NAMES, jac_k, fd, project)

    # --- simulation Fisher, beside the analytic one
    if not result["mean_total_counts"] > 0:
        say("warning: no cluster in the soft XODs (every derivative and the simulation Fisher matrix are zero): "
            "lower --threshold or --cr-min, or use finer --cell-size/--pixel")
    say(f"[{time.perf_counter() - t_start:.0f} s] simulation Fisher matrix, the analytic one beside it, figures …")
    scale = args.fisher_area / config.area_deg2
    F, N = simulation_fisher(xod_k, jac_k, area_scale=scale)
    F, N = np.asarray(F), np.asarray(N)
    res_f = dict(area_deg2=args.fisher_area, fisher=F.tolist(), noise_term=N.tolist())
    for label, M in (("raw", F), ("noise_corrected", F - N)):
        try:
            err = np.asarray(marginal_errors(jnp.asarray(M)))
            fom = float(figure_of_merit(jnp.asarray(M)))
        except Exception:  # noqa: BLE001 a singular matrix: report NaN
            err, fom = np.full(6, np.nan), float("nan")
        res_f[label] = dict(marginal_errors=dict(zip(PARAM_NAMES, err.tolist())), fom_Omega_m_sigma_8=fom,
                            eigenvalues=np.linalg.eigvalsh(M).tolist())
    table_rows = []
    for nk in sorted({2, max(2, args.keys // 2), args.keys}):
        for s in (0.5 * args.softness, args.softness, 2.0 * args.softness):
            xs = xod_k if s == args.softness else ad[f"xod_s{s:g}"]
            js = jac_k if s == args.softness else ad[f"jac_s{s:g}"]
            Fs, Ns = simulation_fisher(xs[:nk], js[:nk], area_scale=scale)
            e = np.asarray(marginal_errors(Fs))
            table_rows.append(dict(n_keys=nk, softness=s, sigma_Omega_m=float(e[0]), sigma_sigma_8=float(e[1]),
                                   fom=float(figure_of_merit(Fs)), noise_fraction=_ratio(np.trace(np.asarray(Ns)), np.trace(np.asarray(Fs)))))
    res_f["softness_and_keys"] = table_rows
    model = AnalyticModel()
    Fa, _ = eqx.filter_jit(fisher_matrix)(model)
    prior = jnp.array([NUISANCE_PRIOR_SIGMA.get(n, jnp.inf) for n in model.names])
    ea = np.asarray(marginal_errors(Fa, prior))
    res_f["analytic"] = dict(names=list(model.names), marginal_errors=dict(zip(model.names, ea.tolist())),
                             fom_Omega_m_sigma_8=float(figure_of_merit(Fa, prior_sigma=prior)), area_deg2=model.survey.area_deg2)
    result["fisher"] = res_f
    th0 = np.asarray(theta.to_array())
    try:
        cov_s = np.asarray(fisher_covariance(jnp.asarray(F)))
        fig = plot_fisher_corner(cov_s, th0, PARAM_NAMES)
        _savefig(fig, out / "fisher_simulation.png", 110)
        plt.close(fig)
        cov_a = np.asarray(fisher_covariance(Fa, prior))
        fig = plot_fisher_corner(cov_a, np.asarray(model.theta0()), model.names)
        _savefig(fig, out / "fisher_analytic.png", 110)
        plt.close(fig)
        _plot_om_s8(plt, out, cov_s[:2, :2], cov_a[:2, :2], th0[:2])
    except Exception as err:  # noqa: BLE001 plots of a singular matrix
        result["fisher"]["plot_error"] = str(err)
    result["timings"] = timings
    th_named = dict(zip(PARAM_NAMES, np.asarray(theta.to_array()).tolist()))
    result["provenance"] = provenance("sensitivity", seed=args.seed, theta=th_named, settings=result["config"])
    _write_json(out / "sensitivity.json", clean_json(result))

    if not args.skip_scaling:
        from .scaling_study import run_scaling_study

        say(f"[{time.perf_counter() - t_start:.0f} s] CR–M study: {args.scaling_keys} boxes at each point of a 3-point grid per θ_sim parameter, "
            "fits and their autodiff gradient …")
        run_scaling_study(args, theta, eldl, table, out, plt)
    say(f"wrote {out}/ in {time.perf_counter() - t_start:.0f} s (SYNTHETIC baryons)")
    return 0


def _ratio(a: float, b: float) -> float:
    """a / b, NaN (without a warning) when b is 0: an empty XOD has a zero Fisher matrix."""
    return float(a / b) if b != 0 else float("nan")


def _plot_derivatives(plt, out, names, jac_k, fd, project):
    from .montecarlo import mc_estimate

    for a, name in enumerate(names):
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for ax, obs, xl in zip(axes, ("dndz", "cr", "hr"), ("z bin", "CR bin", "HR bin")):
            ad = mc_estimate(project(jac_k[:, a], obs))
            x = np.arange(np.asarray(ad.mean).size)
            ax.errorbar(x - 0.1, ad.mean, ad.stderr, fmt="o", label="autodiff (soft, segmentation fixed)")
            for dx, kind, lab in ((0.0, "soft_redetect", "FD soft, re-detected"), (0.1, "hard", "FD hard, re-detected")):
                e = mc_estimate(project(fd[kind][:, a], obs))
                ax.errorbar(x + dx, e.mean, e.stderr, fmt="s" if kind == "hard" else "^", label=lab)
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_xlabel(xl)
            ax.set_title(f"∂({obs})/∂{name}")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{name}: mean over keys ± MC error (SYNTHETIC baryons, small configuration)", fontsize=9)
        fig.tight_layout()
        _savefig(fig, out / f"derivatives_{name}.png", 100)
        plt.close(fig)


def _plot_om_s8(plt, out, cov_s, cov_a, mean):
    from matplotlib.patches import Ellipse

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for cov, c, lab in ((cov_s, "C0", "simulation (6 θ_sim, synthetic)"), (cov_a, "C1", "analytic (2 + 6 nuisance, priors)")):
        vals, vecs = np.linalg.eigh(cov)
        ang = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
        for k in (1, 2):
            w, hgt = 2 * k * np.sqrt(np.maximum(vals[::-1], 0))
            ax.add_patch(Ellipse(mean, w, hgt, angle=ang, fill=False, color=c, label=lab if k == 1 else None))
    sd = np.sqrt(np.maximum(np.diag(cov_s), np.diag(cov_a)))
    ax.set_xlim(mean[0] - 3 * sd[0], mean[0] + 3 * sd[0])
    ax.set_ylim(mean[1] - 3 * sd[1], mean[1] + 3 * sd[1])
    ax.set_xlabel("Ω_m")
    ax.set_ylabel("σ_8")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, out / "fisher_om_s8.png", 110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
