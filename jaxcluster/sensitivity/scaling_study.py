r"""The CR–M relation as a function of θ_sim: fits on a grid, and its autodiff gradient (seed 001 §5.3, Fig. 13, App. B).

For a θ_sim and K box keys, `fit_at` detects the clusters of the K boxes
(`clusters.box_clusters`), stacks them and fits (A, B, σ)
(`scaling_fit.fit_scaling_relation`, soft mass cut). `scaling_grid` does
so at θ with one parameter moved to each grid value, the **same keys** at
every grid point (common random numbers: the same initial conditions, so
the differences between grid points are not drowned by cosmic variance).

`fit_gradient` differentiates the fit at θ with the segmentations of θ held
fixed (the soft path: masses and count rates summed in fixed masks, the
soft mass cut) by reverse mode: three outputs, three pullbacks.
`grid_derivative` compares it with the grid's central difference
(X(θ + δ) − X(θ − δ)) / 2δ, whose Monte-Carlo error is a delete-one-box
jackknife over the K keys (both ends refitted without the same box).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, Key

from ..baryons.eldl import ExtendedLDL
from ..params import ThetaSim
from ..xray.emissivity import EmissivityTable
from .clusters import BoxClusters, ScalingBoxConfig, box_clusters
from .scaling_fit import ScalingFit, fit_scaling_relation

__all__ = ["boxes_at", "fit_clusters", "fit_gradient", "jackknife_fits", "scaling_grid", "run_scaling_study"]


def boxes_at(
    theta: Float[Array, " 6"],
    keys: Key[Array, " n_key"],
    config: ScalingBoxConfig,
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    segmentations: Int[Array, "n_key nx ny"] | None = None,
) -> BoxClusters:
    """Clusters of K boxes at θ (array in PARAM_NAMES order), leading axis the key (`lax.map`)."""

    def one(args):
        k, seg = args
        return box_clusters(ThetaSim.from_array(theta), k, config, eldl=eldl, table=table, segmentation=seg)

    return jax.lax.map(one, (keys, segmentations))


def fit_clusters(clusters: BoxClusters, config: ScalingBoxConfig) -> ScalingFit:
    """Fit of all the clusters (any leading axes) with the configuration's soft mass cut and pivot."""
    lm, lc = clusters.log10()
    w = clusters.sample_weights(config)
    return fit_scaling_relation(lm.reshape(-1), lc.reshape(-1), w.reshape(-1), config.log10_pivot)


def jackknife_fits(clusters: BoxClusters, config: ScalingBoxConfig) -> Float[Array, "n_key 3"]:
    """(A, B, σ) of the K delete-one-box samples (clusters with a leading key axis)."""
    k = clusters.mass.shape[0]
    w_all = clusters.sample_weights(config)
    lm, lc = clusters.log10()

    def drop(i):
        w = jnp.where(jnp.arange(k)[:, None] == i, 0.0, w_all)
        return fit_scaling_relation(lm.reshape(-1), lc.reshape(-1), w.reshape(-1), config.log10_pivot).params

    return jax.vmap(drop)(jnp.arange(k))


def fit_gradient(
    theta: Float[Array, " 6"],
    keys: Key[Array, " n_key"],
    segmentations: Int[Array, "n_key nx ny"],
    config: ScalingBoxConfig,
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
) -> tuple[Float[Array, " 3"], Float[Array, "3 6"]]:
    """(A, B, σ) at θ and ∂(A, B, σ)/∂θ_sim with the segmentations held fixed (reverse mode, 3 pullbacks)."""

    def f(t):
        return fit_clusters(boxes_at(t, keys, config, eldl=eldl, table=table, segmentations=segmentations), config).params

    val, pull = jax.vjp(f, theta)
    (jac,) = jax.vmap(pull)(jnp.eye(3, dtype=val.dtype))
    return val, jac


def scaling_grid(
    theta: ThetaSim,
    keys: Key[Array, " n_key"],
    config: ScalingBoxConfig,
    offsets: Float[Array, "6 n_grid"],
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    params: Sequence[int] = tuple(range(6)),
) -> dict:
    """Fits on a one-parameter-at-a-time grid around θ, same keys everywhere.

    Args:
        theta: the centre.
        keys: (K,) box keys.
        config: `ScalingBoxConfig`.
        offsets: (6, n_grid) offsets of each parameter from θ (include 0 for the centre).
        eldl: baryon painter.
        table: count-rate table.
        params: which parameters to scan.

    Returns:
        {name: {"values": (n_grid,), "fit": (n_grid, 3), "fit_err": (n_grid, 3) Hessian errors,
        "jackknife": (n_grid, K, 3), "n_eff": (n_grid,)}} as numpy arrays.
    """
    th = np.asarray(theta.to_array(), dtype=np.float64)
    run = jax.jit(lambda t, k: boxes_at(t, k, config, eldl=eldl, table=table))
    out = {}
    for a in params:
        rows = dict(values=[], fit=[], fit_err=[], jackknife=[], n_eff=[])
        for d in np.asarray(offsets[a]):
            t = th.copy()
            t[a] += d
            cl = run(jnp.asarray(t), keys)
            fit = fit_clusters(cl, config)
            rows["values"].append(t[a])
            rows["fit"].append(np.asarray(fit.params))
            rows["fit_err"].append(np.asarray(fit.errors))
            rows["jackknife"].append(np.asarray(jackknife_fits(cl, config)))
            rows["n_eff"].append(float(fit.n_eff))
        out[ThetaSim.names[a]] = {k: np.asarray(v) for k, v in rows.items()}
    return out


def _jackknife_se(jk: np.ndarray) -> np.ndarray:
    """Delete-one standard error of the full-sample estimate from the K delete-one estimates (K, ...)."""
    k = jk.shape[0]
    return np.sqrt((k - 1) / k * np.sum((jk - jk.mean(axis=0)) ** 2, axis=0))


def run_scaling_study(args, theta: ThetaSim, eldl: ExtendedLDL, table: EmissivityTable, out, plt) -> dict:
    """The CLI's CR–M study (`jaxcluster sensitivity`): grid fits, autodiff gradient, comparison, figures.

    Writes ``scaling.json``, ``scaling_cr_m.png`` and ``scaling_theta.png`` into `out`.
    """
    import time

    from ..params import PARAM_NAMES
    from .gradients import default_steps

    config = ScalingBoxConfig(box_size=tuple(args.scaling_box), cell_size=args.scaling_cell, n_steps=args.scaling_steps)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(args.seed), 1), args.scaling_keys)
    delta = np.asarray(default_steps(args.scaling_fraction, theta))
    offsets = np.stack([-delta, np.zeros(6), delta], axis=1)
    th = theta.to_array()
    t0 = time.perf_counter()
    grid = scaling_grid(theta, keys, config, offsets, eldl=eldl, table=table)
    t_grid = time.perf_counter() - t0
    centre = jax.jit(lambda t, k: boxes_at(t, k, config, eldl=eldl, table=table))(th, keys)
    t0 = time.perf_counter()
    val, jac = jax.jit(lambda t, k, s: fit_gradient(t, k, s, config, eldl=eldl, table=table))(th, keys, centre.segmentation)
    t_grad = time.perf_counter() - t0
    val, jac = np.asarray(val), np.asarray(jac)
    fit0 = fit_clusters(centre, config)
    res = dict(label="SYNTHETIC baryons (shipped eLDL); boxes at z = %.2f" % config.z,
               box_size=list(config.box_size), cell_size=config.cell_size, n_boxes_per_theta=int(args.scaling_keys),
               threshold=config.threshold, log10_M_min=config.log10_M_min, log10_pivot=config.log10_pivot,
               fiducial=dict(norm=float(fit0.norm), slope=float(fit0.slope), scatter=float(fit0.scatter),
                             errors=np.asarray(fit0.errors).tolist(), n_eff=float(fit0.n_eff),
                             bootstrap_note="Hessian errors; bootstrap_fit gives the non-Gaussian alternative"),
               grid={}, gradient={}, seconds_grid=t_grid, seconds_gradient_with_compile=t_grad)
    for a, name in enumerate(PARAM_NAMES):
        g = grid[name]
        fd = (g["fit"][2] - g["fit"][0]) / (2 * delta[a])
        fd_jk = (g["jackknife"][2] - g["jackknife"][0]) / (2 * delta[a])
        se = _jackknife_se(fd_jk)
        res["grid"][name] = dict(values=g["values"].tolist(), norm=g["fit"][:, 0].tolist(), slope=g["fit"][:, 1].tolist(),
                                 scatter=g["fit"][:, 2].tolist(), errors=g["fit_err"].tolist(), n_eff=g["n_eff"].tolist())
        res["gradient"][name] = dict(
            autodiff=dict(zip(("norm", "slope", "scatter"), jac[:, a].tolist())),
            grid_fd=dict(zip(("norm", "slope", "scatter"), fd.tolist())),
            grid_fd_jackknife_se=dict(zip(("norm", "slope", "scatter"), se.tolist())),
            deviation_sigma=dict(zip(("norm", "slope", "scatter"), (np.abs(jac[:, a] - fd) / np.where(se > 0, se, np.inf)).tolist())),
        )
    from ..io.provenance import clean_json, provenance

    res["provenance"] = provenance("sensitivity", seed=args.seed, theta=dict(zip(PARAM_NAMES, np.asarray(th).tolist())),
                                   settings={k: v for k, v in vars(args).items() if k.startswith("scaling") or k == "seed"})
    from .cli import _savefig, _write_json

    _write_json(out / "scaling.json", clean_json(res))
    # figures
    lm, lc = centre.log10()
    w = np.asarray(centre.sample_weights(config)).ravel()
    lm, lc = np.asarray(lm).ravel(), np.asarray(lc).ravel()
    ok = np.asarray(centre.valid).ravel()
    fig, ax = plt.subplots(figsize=(4.8, 4))
    ax.scatter(lm[ok], lc[ok], c=w[ok], s=12, cmap="viridis", vmin=0, vmax=1)
    xx = np.linspace(lm[ok].min(), lm[ok].max(), 10)
    ax.plot(xx, float(fit0.norm) + float(fit0.slope) * (xx - config.log10_pivot), "k-")
    ax.set_xlabel(r"log$_{10}$ M [h$^{-1}$ M$_\odot$] (projected, D > 200)")
    ax.set_ylabel(r"log$_{10}$ CR$_{[0.5-2]}$ [counts s$^{-1}$]")
    ax.set_title(f"B = {float(fit0.slope):.2f} ± {float(fit0.errors[1]):.2f}, σ = {float(fit0.scatter):.2f} dex "
                 "(SYNTHETIC)", fontsize=8)
    fig.tight_layout()
    _savefig(fig, out / "scaling_cr_m.png", 110)
    plt.close(fig)
    fig, axes = plt.subplots(2, 6, figsize=(15, 5), sharey="row")
    for a, name in enumerate(PARAM_NAMES):
        g = grid[name]
        for r, (i, lab) in enumerate(((1, "slope B"), (2, "scatter σ [dex]"))):
            ax = axes[r, a]
            ax.errorbar(g["values"], g["fit"][:, i], g["fit_err"][:, i], fmt="o")
            x0 = float(th[a])
            xs = np.array([x0 - 1.5 * delta[a], x0 + 1.5 * delta[a]])
            ax.plot(xs, val[i] + jac[i, a] * (xs - x0), "C3-", lw=1, label="autodiff tangent")
            if r == 1:
                ax.set_xlabel(name)
            if a == 0:
                ax.set_ylabel(lab)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("CR–M slope and scatter vs θ_sim (same keys at every point; SYNTHETIC baryons)", fontsize=9)
    fig.tight_layout()
    _savefig(fig, out / "scaling_theta.png", 100)
    plt.close(fig)
    return res
