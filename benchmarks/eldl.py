r"""eLDL painter: cost against a PM step, and the validation of seed 001 §3 on held-out synthetic boxes.

**Cost.** `paint_time_over_pm_step`: painting one box (n_e and T, the
`ExtendedLDL.__call__` of the shipped weights, jit-ed) over one FastPM step
(one force on the mesh, kick and drift) on the same work: 128³ particles and
a 128³ mesh in 50 h⁻¹ Mpc, float32. The PM step is the difference of two
jit-ed `nbody` runs of 12 and 4 steps, divided by 8 (so start-up and the
first force cancel). Median of three interleaved repetitions after a warm-up.
The same painter is also timed with cheaper displacement layers
(`layer_variants`: the fd4 gradient, and the source painted from every 7th
particle), with the shipped parameters; their cluster figures and
`displacement_fidelity` (each variant's displacement operator against the
exact, unstrided one on a held-out PM box) say what the saving costs.

**Validation** (`--cv`, `--lh`: a synthetic training set; held out = boxes the
shipped weights were not trained on, read from their metadata):

* voxels (seed 001 Fig. 5): n_e against ρ_DM/ρ_c in collapsed voxels
  (ρ_DM/ρ_c ≥ 200, ρ_DM from the PM particles, i.e. all matter), a power
  law fitted to truth and to the painted field, the correlation of the
  voxels' deviations from them (`voxel_dev_corr`);
* clusters (Fig. 6): halos with M_200c ≥ 10¹³ h⁻¹ M☉ of the stored SO
  catalogue; [0.5–2] keV EPIC-pn count rate of the voxels within R_200c
  (box placed at its redshift; gas below the emissivity table's 0.1 keV
  does not emit, as in the survey stage); a power-law CR–M relation fitted to each,
  the correlation of the deviations (`cluster_dev_corr`) and the standard
  deviation of log10(CR_eLDL / CR_true) (`cluster_cr_err_dex`), on the
  CV boxes at z = 0.21, for the conditioned model and the base model
  (at the fiducial point they are one model: the hypernetworks are anchored
  there), and at two other redshifts where the conditioned model's T heads
  carry the redshift evolution the base model lacks;
* fields: P(k) of n_e² T^½ and its cross-correlation r(k) with the truth;
* θ_sim response: the clusters' summed CR and emission-weighted T between the
  low and high ends of each parameter's prior on one held-out box, against
  the synthetic truth repainted on the same dark matter (feedback parameters;
  for Ω_m and σ_8 the dark matter itself would change, so only the painter's
  direct response at fixed dark matter is shown);
* LH: on held-out LH boxes (θ_sim across the prior), the box-total count
  rate and the emission log-correlation, conditioned against base.

Writes `benchmarks/results/eldl.json` and, with `--figures DIR`, the PNGs of
`docs/validation/eldl.md`.

Usage: `python benchmarks/eldl.py --cv DIR --lh DIR [--weights FILE] [--figures DIR] [--quick] [--out NAME]`
(`--quick`: timing on 64³, two CV boxes, four LH boxes; writes eldl_quick.json;
`--out`: another results file, e.g. for weights other than the shipped ones).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxcluster as jc
from jaxcluster.baryons.synthetic import SyntheticGasModel, synthetic_gas
from jaxcluster.baryons.train import mean_electron_density
from jaxcluster.baryons.validation import cluster_count_rates, cluster_deviations, voxel_deviations
from jaxcluster.baryons.ldl import DisplacementLayer
from jaxcluster.baryons.weights import load_eldl
from jaxcluster.baryons.training_sets import stored_halos
from jaxcluster.cosmology import RHO_CRIT0_MSUN_H2_MPC3
from jaxcluster.halos.so import critical_density_comoving
from jaxcluster.io import load_run
from jaxcluster.nbody.power import correlation_coefficient, power_spectrum
from jaxcluster.survey.maps import voxel_count_rates
from jaxcluster.xray.emissivity import default_emissivity_table

ROOT = Path(__file__).resolve().parent
M_MIN = 1e13  # smallest cluster M_200c [h⁻¹ M☉]
RHO_MIN = 200.0  # collapsed voxels: ρ_DM / ρ_c ≥ 200
PRIOR_ENDS = {"Omega_m": (0.1, 0.5), "sigma_8": (0.6, 1.0), "A_SN1": (0.25, 4.0), "A_SN2": (0.5, 2.0),
              "A_AGN1": (0.25, 4.0), "A_AGN2": (0.5, 2.0)}


# ---------------------------------------------------------------------- timing


def _median_times(fns: dict, reps: int) -> dict:
    for f in fns.values():  # warm-up: compile + run
        jax.block_until_ready(f())
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


# The displacement layers' cost options (`ldl.DisplacementLayer`): the shipped structure first.
LAYER_VARIANTS = {"exact_stride1": ("exact", 1), "fd4_stride1": ("fd4", 1), "fd4_stride7": ("fd4", 7)}


def with_layers(model, gradient: str, source_stride: int):
    """`model` with every displacement layer rebuilt with this gradient and source sub-sampling (same parameters)."""
    def rebuild(leaf):
        if isinstance(leaf, DisplacementLayer):
            return DisplacementLayer(leaf.gamma, leaf.alpha, leaf.filter, gradient, source_stride)
        return leaf

    return jax.tree_util.tree_map(rebuild, model, is_leaf=lambda x: isinstance(x, DisplacementLayer))


def timing(model, n_side: int, reps: int) -> dict:
    box = 50.0 * n_side / 128
    config = jc.PMConfig(box_size=box, particle_shape=(n_side,) * 3, mesh_shape=(n_side,) * 3)
    cosmo = jc.Cosmology.from_theta(jc.ThetaSim())
    growth = jc.growth_table(cosmo)
    delta = jc.linear_field(jc.white_noise(jax.random.key(0), config.particle_shape), cosmo, config)
    pos, p = jax.jit(lambda d: jc.lpt(d, cosmo, growth, config, a=0.5))(delta)
    pos, p = pos.astype(jnp.float32), p.astype(jnp.float32)
    runs = {n: jax.jit(lambda x, q, n=n: jc.run_nbody(x, q, cosmo, config, jc.step_grid(0.5, 0.8, n), growth=growth).pos)
            for n in (4, 12)}
    theta = jc.ThetaSim()
    fns = {"pm_4": lambda: runs[4](pos, p), "pm_12": lambda: runs[12](pos, p)}
    for name, (grad, stride) in LAYER_VARIANTS.items():
        f = jax.jit(lambda x, m=with_layers(model, grad, stride): m(x, theta, 0.21, box, config.mesh_shape))
        fns[name] = lambda f=f: f(pos)
    t = _median_times(fns, reps)
    step = (t["pm_12"] - t["pm_4"]) / 8
    shipped = _shipped_variant(model)
    variants = {name: dict(gradient=g, source_stride=s, paint_seconds=t[name], paint_time_over_pm_step=t[name] / step)
                for name, (g, s) in LAYER_VARIANTS.items()}
    return dict(n_side=n_side, paint_seconds=t[shipped], pm_step_seconds=step, pm_4_steps_seconds=t["pm_4"],
                pm_12_steps_seconds=t["pm_12"], paint_time_over_pm_step=t[shipped] / step, target_max=3.0,
                shipped_layers=shipped, layer_variants=variants)


def _shipped_variant(model) -> str:
    d = model.n_e_base.displacements[0]
    for name, (g, s) in LAYER_VARIANTS.items():
        if (d.gradient, d.source_stride) == (g, s):
            return name
    raise SystemExit(f"shipped layers ({d.gradient}, stride {d.source_stride}) are not in LAYER_VARIANTS")


def displacement_fidelity(box: "Box") -> dict:
    """Each variant's displacement operator (α = 1, γ = 1, Ô = 1/k²) against the exact, unstrided one, on one PM box."""
    ref = None
    out = {}
    for name, (grad, stride) in LAYER_VARIANTS.items():
        layer = DisplacementLayer(alpha=1.0, gradient=grad, source_stride=stride)
        d = np.asarray(jax.jit(lambda x, layer=layer: layer.displacement(x, box.box, box.shape))(box.pos), np.float64)
        if ref is None:
            ref = d
        out[name] = dict(corr=float(np.corrcoef(d.ravel(), ref.ravel())[0, 1]), rms_ratio=float(d.std() / ref.std()))
    return dict(box=box.name, against="exact_stride1", variants=out)


# ------------------------------------------------------------------ validation


class Box:
    """One stored synthetic box with its truth, halos and cosmology."""

    def __init__(self, path: Path):
        run = load_run(path)
        self.name = f"{path.parent.name}/{path.name}"
        self.pos = jnp.asarray(run.pos, dtype=jnp.float32)
        self.n_e = np.asarray(run.fields["n_e_cm3"], np.float32)
        self.T = np.asarray(run.fields["T_keV"], np.float32)
        self.rho = np.asarray(run.fields["rho_dm"], np.float64)
        self.theta, self.z = run.theta, float(run.z)
        self.cosmo = jc.Cosmology.from_theta(self.theta)
        self.box = tuple(float(b) for b in run.config.box_size)
        self.shape = self.n_e.shape
        self.halos = stored_halos(run.fields)
        M = np.asarray(self.halos.M200c)
        self.clusters = np.asarray(self.halos.valid) & (M >= M_MIN)

    @property
    def voxel_volume(self) -> float:
        return float(np.prod(self.box) / np.prod(self.shape))

    def rho_over_rho_c(self) -> np.ndarray:
        rho_c = float(critical_density_comoving(self.cosmo, 1.0 / (1.0 + self.z)))  # comoving, like ρ_m
        return self.rho / self.rho.mean() * float(self.cosmo.Omega_m) * RHO_CRIT0_MSUN_H2_MPC3 / rho_c

    def count_rate(self, n_e_cm3, T_keV) -> np.ndarray:
        """[0.5–2] keV EPIC-pn count rate per voxel [counts s⁻¹] (no emission below the table's 0.1 keV, as in the survey)."""
        cr = voxel_count_rates(TABLE, jnp.asarray(n_e_cm3, jnp.float32), jnp.asarray(T_keV, jnp.float32), self.z,
                        self.voxel_volume, self.cosmo)
        return np.asarray(jnp.sum(cr, -1))

    def cluster_cr(self, cr) -> np.ndarray:
        return np.asarray(cluster_count_rates(jnp.asarray(cr), self.halos.pos, self.halos.R200c, jnp.asarray(self.box)))


TABLE = default_emissivity_table()
N_E_MEAN = mean_electron_density()


def paint(model, box: Box, theta=None, base: bool = False):
    """(n_e [cm⁻³], T [keV]) of the conditioned model, or of the base LDLs."""
    theta = box.theta if theta is None else theta
    if base:
        n_e = model.n_e_base(box.pos, box.box, box.shape)
        T = model.T_base(box.pos, box.box, box.shape)
    else:
        n_e, T = model(box.pos, theta, box.z, box.box, box.shape)
    return np.asarray(n_e) * N_E_MEAN, np.asarray(T)


def _stats_dict(st) -> dict:
    return {k: (float(v) if not isinstance(v, int) else v) for k, v in st._asdict().items()}


def cluster_validation(model, boxes: list[Box], base: bool) -> tuple[dict, dict]:
    M, ct, cp = [], [], []
    for b in boxes:
        n_e, T = paint(model, b, base=base)
        ct.append(b.cluster_cr(b.count_rate(b.n_e, b.T))[b.clusters])
        cp.append(b.cluster_cr(b.count_rate(n_e, T))[b.clusters])
        M.append(np.asarray(b.halos.M200c)[b.clusters])
    M, ct, cp = (np.concatenate(v) for v in (M, ct, cp))
    st, dt, dp = cluster_deviations(M, ct, cp)
    return _stats_dict(st), dict(M=M, cr_true=ct, cr_pred=cp, dev_true=dt, dev_pred=dp)


def voxel_and_power(model, boxes: list[Box]) -> tuple[dict, dict]:
    x, yt, yp, pk_t, pk_p, rk = [], [], [], [], [], []
    for b in boxes:
        n_e, T = paint(model, b)
        r = b.rho_over_rho_c()
        sel = r >= RHO_MIN
        x.append(r[sel]), yt.append(b.n_e[sel]), yp.append(n_e[sel])
        ft, fp = b.n_e**2 * np.sqrt(b.T), n_e**2 * np.sqrt(T)
        dt, dp = jnp.asarray(ft / ft.mean() - 1.0), jnp.asarray(fp / fp.mean() - 1.0)
        k, p1, _ = power_spectrum(dt, b.box)
        _, p2, _ = power_spectrum(dp, b.box)
        _, r_k, _ = correlation_coefficient(dt, dp, b.box)
        pk_t.append(np.asarray(p1)), pk_p.append(np.asarray(p2)), rk.append(np.asarray(r_k))
    x, yt, yp = (np.concatenate(v) for v in (x, yt, yp))
    st, dt, dp = voxel_deviations(x, yt, yp, rho_min=RHO_MIN)
    k = np.asarray(k)
    pk_t, pk_p, rk = (np.mean(v, 0) for v in (pk_t, pk_p, rk))
    kmask = k <= 1.0
    power = dict(k=k.tolist(), P_true=pk_t.tolist(), P_pred=pk_p.tolist(), r=rk.tolist(),
                 r_at_k_le_1=float(np.mean(rk[kmask])), P_ratio_at_k_le_1=float(np.mean((pk_p / pk_t)[kmask])))
    rng = np.random.default_rng(0)
    pick = rng.choice(x.size, size=min(20000, x.size), replace=False)
    return dict(stats=_stats_dict(st), power=power), dict(x=x[pick], yt=yt[pick], yp=yp[pick], dt=dt[pick], dp=dp[pick])


def theta_response(model, box: Box) -> dict:
    out = {}
    gas_model = SyntheticGasModel()
    key = jax.random.key(0)
    for name, (lo, hi) in PRIOR_ENDS.items():
        res = {}
        for end, v in (("low", lo), ("high", hi)):
            theta = jc.ThetaSim(**{**{n: float(getattr(box.theta, n)) for n in jc.PARAM_NAMES}, name: v})
            n_e, T = paint(model, box, theta)
            cr = box.cluster_cr(box.count_rate(n_e, T))[box.clusters]
            w = n_e**2
            res[end] = dict(cr=float(cr.sum()), T_ew=float((w * T).sum() / w.sum()))
            if name.startswith("A_"):
                gas = synthetic_gas(box.pos, box.halos, theta, box.z, key, box.box, box.shape, gas_model, cosmo=box.cosmo)
                ne_t, T_t = np.asarray(gas.n_e), np.asarray(gas.T_keV)
                cr_t = box.cluster_cr(box.count_rate(ne_t, T_t))[box.clusters]
                res[end].update(cr_true=float(cr_t.sum()), T_ew_true=float((ne_t**2 * T_t).sum() / (ne_t**2).sum()))
        entry = dict(cr_ratio_eldl=res["high"]["cr"] / res["low"]["cr"], T_ratio_eldl=res["high"]["T_ew"] / res["low"]["T_ew"])
        if "cr_true" in res["low"]:
            entry.update(cr_ratio_true=res["high"]["cr_true"] / res["low"]["cr_true"],
                         T_ratio_true=res["high"]["T_ew_true"] / res["low"]["T_ew_true"])
        out[name] = dict(prior_ends=[lo, hi], **entry)
    return out


def lh_validation(model, boxes: list[Box]) -> dict:
    rows = []
    for b in boxes:
        crt = b.count_rate(b.n_e, b.T)
        sel = crt > np.quantile(crt, 0.99)
        row = dict(box=b.name, theta=[float(getattr(b.theta, n)) for n in jc.PARAM_NAMES])
        for kind, base in (("conditioned", False), ("base", True)):
            crp = b.count_rate(*paint(model, b, base=base))
            row[kind] = dict(total_cr_log10_ratio=float(np.log10(crp.sum() / crt.sum())),
                             bright_log_corr=float(np.corrcoef(np.log(crt[sel]), np.log(np.maximum(crp[sel], 1e-30)))[0, 1]))
        rows.append(row)
    summary = {kind: dict(mean_abs_total_cr_dex=float(np.mean([abs(r[kind]["total_cr_log10_ratio"]) for r in rows])),
                          mean_bright_log_corr=float(np.mean([r[kind]["bright_log_corr"] for r in rows])))
               for kind in ("conditioned", "base")}
    return dict(n_boxes=len(rows), summary=summary, boxes=rows)


# --------------------------------------------------------------------- figures


def figures(out: Path, vox: dict, clusters: dict, power: dict, response: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    kw = dict(s=2, alpha=0.3, rasterized=True)

    def fit_line(ax, x, y, color, label):
        lx = np.log10(x)
        b, a = np.polyfit(lx, np.log10(y), 1)
        xs = np.linspace(lx.min(), lx.max(), 20)
        ax.plot(10**xs, 10 ** (a + b * xs), color=color, lw=2, label=f"{label}: slope {b:.2f}")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.scatter(vox["x"], vox["yt"], color="C0", **kw)
    ax.scatter(vox["x"], vox["yp"], color="C3", **kw)
    fit_line(ax, vox["x"], vox["yt"], "C0", "synthetic truth")
    fit_line(ax, vox["x"], vox["yp"], "C3", "eLDL")
    ax.set(xscale="log", yscale="log", xlabel=r"$\rho_{DM}/\rho_c$", ylabel=r"$n_e$ [cm$^{-3}$, comoving]")
    ax.legend()
    ax = axes[1]
    ax.scatter(vox["dt"], vox["dp"], color="k", **kw)
    ax.set(xlabel="truth deviation [dex]", ylabel="eLDL deviation [dex]",
           title=f"voxel deviations: r = {np.corrcoef(vox['dt'], vox['dp'])[0, 1]:.2f}")
    fig.tight_layout()
    fig.savefig(out / "eldl_voxels.png", dpi=90)
    plt.close(fig)

    c = clusters
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    ax.scatter(c["M"], c["cr_true"], color="C0", s=10, label="synthetic truth")
    ax.scatter(c["M"], c["cr_pred"], color="C3", s=10, marker="x", label="eLDL")
    fit_line(ax, c["M"], c["cr_true"], "C0", "truth")
    fit_line(ax, c["M"], c["cr_pred"], "C3", "eLDL")
    ax.set(xscale="log", yscale="log", xlabel=r"$M_{200c}$ [$h^{-1} M_\odot$]", ylabel="CR [0.5–2 keV] [s$^{-1}$]")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.scatter(c["dev_true"], c["dev_pred"], s=10)
    lim = np.abs(np.concatenate([c["dev_true"], c["dev_pred"]])).max() * 1.1
    ax.plot([-lim, lim], [-lim, lim], "k--")
    ax.set(xlabel="truth deviation from its CR–M [dex]", ylabel="eLDL deviation [dex]",
           title=f"r = {np.corrcoef(c['dev_true'], c['dev_pred'])[0, 1]:.2f}")
    ax = axes[2]
    err = np.log10(c["cr_pred"] / c["cr_true"])
    ax.hist(err, bins=20)
    ax.set(xlabel=r"$\log_{10}(CR_{eLDL}/CR_{true})$", ylabel="clusters",
           title=f"mean {err.mean():+.3f}, std {err.std():.3f} dex")
    fig.tight_layout()
    fig.savefig(out / "eldl_clusters.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    k = np.asarray(power["k"])
    axes[0].loglog(k, power["P_true"], label="synthetic truth")
    axes[0].loglog(k, power["P_pred"], label="eLDL")
    axes[0].set(xlabel=r"$k$ [$h$ Mpc$^{-1}$]", ylabel=r"$P(k)$ of $n_e^2T^{1/2}$ [$h^{-3}$ Mpc$^3$]")
    axes[0].legend()
    axes[1].semilogx(k, power["r"])
    axes[1].set(xlabel=r"$k$ [$h$ Mpc$^{-1}$]", ylabel=r"$r(k)$", ylim=(0, 1.05))
    fig.tight_layout()
    fig.savefig(out / "eldl_power.png", dpi=90)
    plt.close(fig)

    names = list(response)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [response[n]["cr_ratio_eldl"] for n in names], 0.4, label="eLDL")
    ax.bar(x + 0.2, [response[n].get("cr_ratio_true", np.nan) for n in names], 0.4, label="synthetic truth")
    ax.axhline(1, color="k", lw=0.5)
    ax.set(xticks=x, xticklabels=names, yscale="log", ylabel="cluster CR, high / low prior end")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "eldl_theta_response.png", dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------ main


def _held_out(meta: dict, data_dir: Path, kind: str, z: float, quick: bool) -> list[Path]:
    used = meta.get("config_max_boxes", {}).get(kind)
    files = sorted(data_dir.glob(f"*/z{z:.3f}.h5"), key=lambda p: (len(p.parent.name), p.parent.name))
    held = files[used:] if used is not None else files
    if not held:
        raise SystemExit(f"no held-out {kind} boxes at z = {z} in {data_dir} (the weights used the first {used})")
    return held[: (2 if kind == "cv" else 4)] if quick else held


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True)
    ap.add_argument("--lh", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=None, help="eLDL .eqx (default: the shipped weights)")
    ap.add_argument("--figures", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="results file name (default eldl.json, eldl_quick.json with --quick)")
    args = ap.parse_args(argv)
    weights = args.weights or Path(jc.baryons.weights.__file__).parent.parent / "data" / "eldl_default.eqx"
    model, meta = load_eldl(weights)
    meta = meta.get("metadata", meta)

    t = timing(model, 64 if args.quick else 128, 2 if args.quick else 3)
    print(f"paint / PM step = {t['paint_time_over_pm_step']:.2f}", flush=True)

    cv = [Box(p) for p in _held_out(meta, args.cv, "cv", 0.21, args.quick)]
    cond, cl = cluster_validation(model, cv, base=False)
    base, _ = cluster_validation(model, cv, base=True)
    print(f"clusters: dev corr {cond['dev_corr']:.3f}, CR error {cond['err_dex_std']:.3f} dex (n = {cond['n']})", flush=True)
    # The cheaper layers with the shipped parameters (trained with the shipped layers, not retrained).
    for name, (g, st) in LAYER_VARIANTS.items():
        v, _ = cluster_validation(with_layers(model, g, st), cv, base=False)
        t["layer_variants"][name]["clusters_z021_shipped_parameters"] = dict(dev_corr=v["dev_corr"], err_dex_std=v["err_dex_std"])
    fidelity = displacement_fidelity(cv[0])
    vp, vox = voxel_and_power(model, cv)
    other_z = {}
    for z in (0.1, 0.47):
        boxes = [Box(p) for p in _held_out(meta, args.cv, "cv", z, args.quick)]
        other_z[f"{z:.2f}"] = dict(conditioned=cluster_validation(model, boxes, False)[0],
                                   base=cluster_validation(model, boxes, True)[0])
        del boxes
    response = theta_response(model, cv[0])
    lh = lh_validation(model, [Box(p) for p in _held_out(meta, args.lh, "lh", 0.21, args.quick)])
    if args.figures:
        figures(args.figures, vox, cl, vp["power"], response)

    dev = jax.devices()[0]
    result = dict(
        benchmark="eldl",
        paint_time_over_pm_step=t["paint_time_over_pm_step"],
        cluster_dev_corr=cond["dev_corr"],
        cluster_cr_err_dex=cond["err_dex_std"],
        voxel_dev_corr=vp["stats"]["dev_corr"],
        targets=dict(cluster_dev_corr_min=0.88, cluster_cr_err_dex_max=0.12, paint_time_over_pm_step_max=3.0),
        timing=t,
        displacement_fidelity=fidelity,
        held_out=dict(cv=[b.name for b in cv], n_clusters=cond["n"], M200c_min=M_MIN, rho_over_rho_c_min=RHO_MIN),
        clusters_z021=dict(conditioned=cond, base=base),
        clusters_other_z=other_z,
        voxels=vp["stats"],
        power=vp["power"],
        theta_response=response,
        lh=lh,
        weights=str(weights.name),
        training_data=meta.get("training_data"),
        device=f"{jax.default_backend()}: {dev.device_kind}, {os.cpu_count()} cores",
        note="absolute times are CPU times unless device says gpu; compare ratios",
        jax_version=jax.__version__,
        python=platform.python_version(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    path = ROOT / "results" / (args.out or ("eldl_quick.json" if args.quick else "eldl.json"))
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
