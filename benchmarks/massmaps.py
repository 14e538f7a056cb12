r"""Mass-map reconstruction on the SYNTHETIC cutout set: U-Net vs diffusion posterior mean vs a scaling baseline.

The figures and numbers of ``docs/validation/massmaps.md``. Data: the cutouts
made by `jaxcluster.fields.make_cutout_dataset` (synthetic gas painted on PM
halos; 32 × 32 pixels of 0.39 h⁻¹ Mpc), inputs (Compton-y, X-ray SB) →
projected dark matter, all in the set's global log-min-max normalisation
(seed 002 §3.1), split by cluster. Three methods on the same test cutouts:

* ``unet``: `MultiViewUNet` (both views observed at test time), L1 loss;
* ``diffusion``: `ScoreModel(NCSNpp)` on the VE SDE, the posterior mean (and
  standard deviation) of ``--n-samples`` predictor–corrector samples;
* ``baseline``: a per-pixel power-law scaling relation, a least-squares fit in
  the normalised (log) space ``t_DM = a + b t_y + c t_X`` on the training pixels,
  per annulus of radius (a Wiener-filter-like linear map without spatial mixing).

Metrics (`jaxcluster.fields.massmaps`) are computed on the physical
(de-normalised) DM maps, for ``--n-test`` test cutouts. Training runs a few
minutes on one core; both networks checkpoint into ``--work-dir`` and resume.

Usage: ``python benchmarks/massmaps.py [--data PATH] [--quick]``; writes
``benchmarks/results/massmaps.json`` and ``docs/validation/figures/massmaps_*.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "validation" / "figures"
DEFAULT_DATA = "/work/synth2/cutouts/cutouts_z0.100_32px.h5"


def _pct(x):
    x = np.asarray(x).ravel()
    x = x[np.isfinite(x)]
    p16, p50, p84 = np.percentile(x, [16, 50, 84])
    return {"median": float(p50), "p16": float(p16), "p84": float(p84)}


def baseline_fit(t_in, t_out, n_ann=8):
    """Per-annulus least squares t_out = a + b t_y + c t_X (normalised log space)."""
    from jaxcluster.fields.massmaps import radial_distance

    n = t_in.shape[-1]
    r = np.asarray(radial_distance((n, n)))
    edges = np.linspace(0, r.max() + 1e-3, n_ann + 1)
    ann = np.digitize(r, edges) - 1
    coef = np.zeros((n_ann, 3))
    for a in range(n_ann):
        m = ann == a
        X = np.stack([np.ones(m.sum() * t_in.shape[0]), t_in[:, 0][:, m].ravel(), t_in[:, 1][:, m].ravel()], 1)
        coef[a] = np.linalg.lstsq(X, t_out[:, 0][:, m].ravel(), rcond=None)[0]
    return ann, coef


def baseline_predict(t_in, ann, coef):
    c = coef[ann]  # (n, n, 3)
    return (c[..., 0] + c[..., 1] * t_in[:, 0] + c[..., 2] * t_in[:, 1])[:, None]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--work-dir", default="/tmp/jaxcluster_massmaps", help="checkpoints")
    ap.add_argument("--unet-steps", type=int, default=400)
    ap.add_argument("--diffusion-steps", type=int, default=800)
    ap.add_argument("--n-test", type=int, default=16, help="test cutouts evaluated")
    ap.add_argument("--n-samples", type=int, default=50, help="diffusion posterior samples per cutout")
    ap.add_argument("--sampler-steps", type=int, default=50)
    ap.add_argument("--sampler", choices=("pc", "em"), default="pc", help="predictor-corrector or Euler-Maruyama")
    ap.add_argument("--quick", action="store_true", help="tiny run (plumbing check), writes massmaps_quick.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.unet_steps, args.diffusion_steps, args.n_test, args.n_samples, args.sampler_steps = 20, 20, 4, 4, 10

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxcluster.fields import (
        NCSNpp, VESDE, FitConfig, MultiViewUNet, ScoreModel, denormalise, dsm_loss, fit, load_cutouts,
        euler_maruyama, posterior_samples, predictor_corrector, unet_loss,
    )
    from jaxcluster.fields import massmaps as mm

    s = load_cutouts(args.data)
    if not s.metadata.get("synthetic", False):
        raise SystemExit("this page is for the synthetic set; got a set not marked synthetic")
    norm = s.normalisation
    t = {sp: np.asarray(s.normalised(sp), np.float32) for sp in ("train", "val", "test")}
    x_tr, y_tr = t["train"][:, :2], t["train"][:, 3:4]
    x_va, y_va = t["val"][:, :2], t["val"][:, 3:4]
    idx_test = s.select("test")[: args.n_test]
    x_te, y_te = t["test"][: args.n_test, :2], t["test"][: args.n_test, 3:4]
    work = Path(args.work_dir) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    timing = {}

    # --- U-Net
    t0 = time.time()
    unet = eqx.filter_jit(lambda k: MultiViewUNet(2, 1, base_channels=8, depth=2, key=k))(jax.random.key(0))

    def l_unet(m, b, k):
        return unet_loss(m, b[0], b[1], key=k, p_keep=0.75)

    res_u = fit(unet, l_unet, (jnp.asarray(x_tr), jnp.asarray(y_tr)), (jnp.asarray(x_va), jnp.asarray(y_va)),
                FitConfig(max_steps=args.unet_steps, batch_size=16, learning_rate=3e-3, eval_every=50, patience=8),
                checkpoint=work / "unet.eqx", progress=True)
    timing["unet_train_s"] = time.time() - t0
    pred_u = np.asarray(eqx.filter_jit(jax.vmap(lambda m, v: m(v), in_axes=(None, 0)))(res_u.model, jnp.asarray(x_te)))

    # --- diffusion
    t0 = time.time()
    sde = VESDE(1e-3, 1.0)
    score = eqx.filter_jit(lambda k: ScoreModel(NCSNpp(1, 2, base_channels=8, channel_mult=(1, 2), key=k), sde))(
        jax.random.key(1))

    def l_dsm(m, b, k):
        return dsm_loss(m, b[1], b[0], key=k)

    res_d = fit(score, l_dsm, (jnp.asarray(x_tr), jnp.asarray(y_tr)), (jnp.asarray(x_va), jnp.asarray(y_va)),
                FitConfig(max_steps=args.diffusion_steps, batch_size=16, learning_rate=2e-3, eval_every=100,
                          patience=10), checkpoint=work / "diffusion.eqx", progress=True)
    timing["diffusion_train_s"] = time.time() - t0
    t0 = time.time()
    sampler = predictor_corrector if args.sampler == "pc" else euler_maruyama
    draw = eqx.filter_jit(lambda m, c, k: posterior_samples(m, c, key=k, n_samples=args.n_samples,
                                                            sampler=sampler, n_steps=args.sampler_steps))
    samples = np.stack([np.asarray(draw(res_d.model, jnp.asarray(c), jax.random.key(100 + i)))
                        for i, c in enumerate(x_te)])  # (n_test, n_samples, 1, n, n)
    timing["diffusion_sampling_s"] = time.time() - t0
    pred_d = samples.mean(axis=1)

    # --- baseline
    ann, coef = baseline_fit(x_tr, y_tr)
    pred_b = baseline_predict(x_te, ann, coef).astype(np.float32)

    # --- metrics on physical DM maps (the normalisation's inverse on the DM channel)
    def phys(tmap):
        full = np.zeros((tmap.shape[0], 4) + tmap.shape[-2:], np.float32)
        full[:, 3] = tmap[:, 0]
        return np.asarray(denormalise(full, norm))[:, 3]

    true = phys(y_te)
    preds = {"unet": phys(pred_u), "diffusion": phys(pred_d), "baseline": phys(pred_b)}
    px = s.pixel_size
    r500 = s.halo["R500c"][idx_test] / px
    r200 = s.halo["R200c"][idx_test] / px
    n = true.shape[-1]
    edges = np.arange(0.0, n / 2 + 1e-3, 1.0, dtype=np.float32)
    k_edges = mm.k_edges_2d((n, n), px)
    metrics, curves = {}, {}
    for name, p in preds.items():
        pj, tj = jnp.asarray(p), jnp.asarray(true)
        bias_r = np.array([np.asarray(mm.radial_mass_bias(pj[i], tj[i], jnp.asarray([r500[i], r200[i]], jnp.float32)))
                           for i in range(len(p))])
        k, b = mm.bias_k(pj, tj, px, k_edges)
        _, r = mm.cross_correlation_k(pj, tj, px, k_edges)
        _, pr = mm.power_ratio(pj, tj, px, k_edges)
        prof = np.asarray(mm.radial_profile_fractional_error(pj, tj, edges))
        nk = len(k)
        large, small = slice(0, max(nk // 4, 1)), slice(nk // 2, nk)
        metrics[name] = {
            "pixel_relative_difference": _pct(mm.pixel_relative_difference(pj, tj)),
            "pixel_relative_difference_R500": _pct(np.concatenate(
                [np.asarray(mm.pixel_relative_difference(pj[i], tj[i], aperture=float(r500[i]))) for i in range(len(p))])),
            "mass_bias_R500": _pct(bias_r[:, 0]),
            "mass_bias_R200": _pct(bias_r[:, 1]),
            "total_mass_fractional_error": _pct(mm.total_mass_fractional_error(pj, tj)),
            "profile_fractional_error_abs_mean": float(np.nanmean(np.abs(np.nanmedian(prof, axis=0)))),
            "b_k_large_scales": float(np.mean(np.median(np.asarray(b), axis=0)[large])),
            "b_k_small_scales": float(np.mean(np.median(np.asarray(b), axis=0)[small])),
            "r_k_large_scales": float(np.mean(np.median(np.asarray(r), axis=0)[large])),
            "r_k_small_scales": float(np.mean(np.median(np.asarray(r), axis=0)[small])),
            "power_ratio_minus_1_median": float(np.median(np.asarray(pr))),
            "mmd2_normalised_maps": float(mm.maximum_mean_discrepancy(
                jnp.asarray({"unet": pred_u, "diffusion": pred_d, "baseline": pred_b}[name]), jnp.asarray(y_te))),
        }
        curves[name] = {"k": np.asarray(k), "b": np.median(np.asarray(b), 0), "r": np.median(np.asarray(r), 0),
                        "prof": np.nanpercentile(prof, [16, 50, 84], axis=0),
                        "D": np.asarray(mm.pixel_relative_difference(pj, tj))}
    eps = np.asarray(mm.standardised_pixel_errors(jnp.asarray(np.moveaxis(samples[:, :, 0], 1, 0)), jnp.asarray(y_te[:, 0])))
    metrics["diffusion"]["standardised_pixel_error_normalised"] = {**_pct(eps), "std": float(np.std(eps)),
                                                                   "frac_within_1": float(np.mean(np.abs(eps) < 1))}
    # the networks' own loss on the validation set, for the record
    metrics["unet"]["valid_l1_normalised"] = float(res_u.valid_loss.min())
    metrics["diffusion"]["valid_dsm"] = float(res_d.valid_loss.min())

    # --- figures
    FIGURES.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    order = np.argsort(s.halo["M200c"][idx_test])
    pick = [order[0], order[len(order) // 2], order[-1]]
    fig, axs = plt.subplots(len(pick), 6, figsize=(13, 2.3 * len(pick)), constrained_layout=True)
    cols = [("y (norm.)", x_te[:, 0]), ("X-ray SB (norm.)", x_te[:, 1]), ("DM truth", y_te[:, 0]),
            ("U-Net", pred_u[:, 0]), ("diffusion mean", pred_d[:, 0]), ("baseline", pred_b[:, 0])]
    for row, i in enumerate(pick):
        for c, (title, arr) in enumerate(cols):
            ax = axs[row, c]
            ax.imshow(arr[i], origin="lower", vmin=0, vmax=1, cmap="magma")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
        axs[row, 0].set_ylabel(f"M200c = {s.halo['M200c'][idx_test][i]:.2g}", fontsize=8)
    fig.suptitle("SYNTHETIC cutouts: inputs, truth and reconstructions (normalised log scale)", fontsize=10)
    fig.savefig(FIGURES / f"massmaps_examples{suffix}.png", dpi=90)
    plt.close(fig)

    fig, axs = plt.subplots(1, 4, figsize=(15, 3.4), constrained_layout=True)
    colors = {"unet": "C0", "diffusion": "C3", "baseline": "C7"}
    for name, cv in curves.items():
        d = cv["D"]
        axs[0].hist(np.clip(d, -1, 1), bins=80, range=(-1, 1), histtype="step", density=True, color=colors[name], label=name)
        rc = 0.5 * (edges[1:] + edges[:-1]) * px
        axs[1].plot(rc, cv["prof"][1], color=colors[name], label=name)
        axs[1].fill_between(rc, cv["prof"][0], cv["prof"][2], color=colors[name], alpha=0.15)
        axs[2].plot(cv["k"], cv["b"], color=colors[name], label=name)
        axs[3].plot(cv["k"], cv["r"], color=colors[name], label=name)
    axs[0].set(xlabel=r"$D = (\hat I - I)/I$ (all pixels)", ylabel="density")
    axs[1].set(xlabel=r"r [$h^{-1}$ Mpc]", ylabel="profile fractional error", ylim=(-0.5, 0.5))
    axs[2].set(xlabel=r"k [h Mpc$^{-1}$]", ylabel=r"$b(k)=\sqrt{P_{gen}/P_{sim}}$", xscale="log")
    axs[3].set(xlabel=r"k [h Mpc$^{-1}$]", ylabel="r(k)", xscale="log")
    for ax in axs[1:]:
        ax.axhline(1.0 if ax in axs[2:] else 0.0, color="k", lw=0.6, ls="--")
    axs[0].legend(fontsize=8)
    fig.suptitle(f"SYNTHETIC test set ({len(idx_test)} cutouts): projected DM reconstruction metrics", fontsize=10)
    fig.savefig(FIGURES / f"massmaps_metrics{suffix}.png", dpi=90)
    plt.close(fig)

    out = {
        "benchmark": "massmaps", "synthetic": True, "data": str(args.data),
        "n_train": int(len(x_tr)), "n_val": int(len(x_va)), "n_test_evaluated": int(len(idx_test)),
        "pixel_size_Mpc_h": px, "n_pix": int(n),
        "unet": {"base_channels": 8, "depth": 2, "steps": int(res_u.steps), "stopped_early": bool(res_u.stopped_early)},
        "diffusion": {"ncsnpp": "base 8, channel_mult (1, 2), 1 res block", "sde": [1e-3, 1.0],
                      "steps": int(res_d.steps), "sampler": args.sampler, "sampler_steps": args.sampler_steps,
                      "n_samples": args.n_samples},
        "baseline": "per-annulus least squares t_DM = a + b t_y + c t_X in normalised log space (8 annuli)",
        "timing_s": timing, "metrics": metrics,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"massmaps{suffix}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(metrics, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
