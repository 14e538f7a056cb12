r"""Calibration diagnostics of posterior samples: SBC ranks, expected coverage, TARP, intervals, FoM, plots.

All functions take posterior draws, so they apply to any posterior (NPE,
NUTS, an analytic one). Shapes: ``theta_true`` (n_test, d) parameters the
test observations were simulated from (drawn from the prior); ``samples``
(n_test, L, d) L posterior draws for each test observation.

* **Rank histograms** (simulation-based calibration, Talts et al. 2018;
  seed 001 Appendix A): the rank $r = \#\{l: θ^{(l)}_j < θ_{{\rm true},j}\}$
  of the truth among the L draws is uniform on {0, …, L} for every
  parameter j if the posterior is calibrated. Each histogram bin count is then
  Binomial(n_test, 1/n_bins): the band is its central 99 % interval. The
  Kolmogorov–Smirnov test compares $(r + ½)/(L + 1)$ with U(0, 1).
* **Expected coverage** (highest-posterior-density regions, Hermans et al.
  2022): the credibility of the smallest HPD region that contains the truth,
  $α_i = \#\{l: \ln q(θ^{(l)}) > \ln q(θ_{\rm true})\}/L$, is uniform for a
  calibrated posterior, so the fraction of tests with $α_i ≤ c$ equals c.
  Marginal central intervals give a per-parameter version.
* **TARP** (tests of accuracy with random points, Lemos et al. 2023): with a
  random reference point $θ_{\rm ref}$ per test, the fraction
  $f_i$ of draws closer to it than the truth is uniform for a calibrated
  posterior (necessary *and* sufficient over reference distributions); the
  expected coverage probability ECP(α) = mean($f_i < α$) lies on the diagonal.
* **Table 3 figures** (seed 001): 68 % central credible intervals of Ω_m and
  σ_8 (half-width Δθ and Δθ/θ with θ the posterior median), and
  FoM = 1/√det Cov(Ω_m, σ_8) (seed 001 writes Cov(Ω_m, σ_8)⁻¹; the square
  root is the usual convention, and `jaxcluster.analytic.figure_of_merit`'s).

References:
    Talts et al. 2018, arXiv:1804.06788; Hermans et al. 2022, arXiv:2110.06581;
    Lemos et al. 2023, ICML, arXiv:2302.03026.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import ArrayLike, Float, Int
from scipy import ndimage, stats

__all__ = [
    "sbc_ranks",
    "rank_histogram",
    "hpd_credibility",
    "expected_coverage",
    "marginal_coverage",
    "tarp",
    "credible_intervals",
    "figure_of_merit",
    "table3_summary",
    "plot_rank_histograms",
    "plot_coverage",
    "corner_plot",
]


def _check(theta_true, samples) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(theta_true, np.float64)
    s = np.asarray(samples, np.float64)
    if t.ndim != 2 or s.ndim != 3 or s.shape[0] != t.shape[0] or s.shape[2] != t.shape[1]:
        raise ValueError(f"theta_true must be (n_test, d) and samples (n_test, L, d); got {t.shape} and {s.shape}")
    return t, s


def sbc_ranks(theta_true: Float[ArrayLike, "n d"], samples: Float[ArrayLike, "n L d"]) -> Int[np.ndarray, "n d"]:
    """Rank of each true parameter among its posterior draws: #{draws < truth}, in {0, …, L}."""
    t, s = _check(theta_true, samples)
    return np.sum(s < t[:, None, :], axis=1)


def rank_histogram(ranks: Int[ArrayLike, "n d"], n_samples: int, n_bins: int = 20,
                   band: float = 0.99) -> dict[str, np.ndarray]:
    """Histogram of SBC ranks, the binomial band of a uniform histogram, KS p-values.

    Args:
        ranks: (n_test, d) ranks from `sbc_ranks`.
        n_samples: L, the number of draws per test (ranks lie in {0, …, L}).
        n_bins: histogram bins over [0, L + 1).
        band: probability content of the per-bin binomial band.

    Returns:
        dict with ``counts`` (n_bins, d), ``edges`` (n_bins + 1,), ``lower`` and
        ``upper`` (the band, scalars), ``expected`` (n_test / n_bins) and
        ``ks_pvalue`` (d,).
    """
    r = np.asarray(ranks)
    if r.ndim != 2:
        raise ValueError(f"ranks must be (n_test, d), got shape {r.shape}")
    if not isinstance(n_samples, int | np.integer) or n_samples < 1:
        raise ValueError(f"n_samples = {n_samples!r} is outside its allowed range: an integer >= 1")
    if np.any(r < 0) or np.any(r > n_samples):
        raise ValueError(f"ranks must lie in [0, n_samples = {n_samples}]")
    if not 0 < band < 1:
        raise ValueError(f"band = {band} is outside its allowed range (0, 1)")
    n = r.shape[0]
    edges = np.linspace(0, n_samples + 1, n_bins + 1)
    counts = np.stack([np.histogram(r[:, j], bins=edges)[0] for j in range(r.shape[1])], axis=1)
    lo, hi = stats.binom.ppf([(1 - band) / 2, (1 + band) / 2], n, 1.0 / n_bins)
    pit = (r + 0.5) / (n_samples + 1)
    ks = np.array([stats.kstest(pit[:, j], "uniform").pvalue for j in range(r.shape[1])])
    return dict(counts=counts, edges=edges, lower=np.asarray(lo), upper=np.asarray(hi),
                expected=np.asarray(n / n_bins), ks_pvalue=ks)


def hpd_credibility(log_prob_true: Float[ArrayLike, " n"], log_prob_samples: Float[ArrayLike, "n L"]) -> np.ndarray:
    """α_i: credibility of the smallest HPD region holding the truth (fraction of draws of higher density)."""
    lt = np.asarray(log_prob_true, np.float64)
    ls = np.asarray(log_prob_samples, np.float64)
    if ls.ndim != 2 or lt.shape != ls.shape[:1]:
        raise ValueError(f"log_prob_true must be (n,) and log_prob_samples (n, L); got {lt.shape}, {ls.shape}")
    return np.mean(ls > lt[:, None], axis=1)


def expected_coverage(log_prob_true: Float[ArrayLike, " n"], log_prob_samples: Float[ArrayLike, "n L"],
                      levels: Float[ArrayLike, " k"] | None = None) -> dict[str, np.ndarray]:
    """Empirical coverage of the HPD regions at each credibility level (diagonal = calibrated).

    Args:
        log_prob_true: (n_test,) ln q(θ_true | x) of each test.
        log_prob_samples: (n_test, L) ln q of L posterior draws for the same x.
        levels: credibility levels in [0, 1] (default 0, 0.01, …, 1).

    Returns:
        dict with ``levels`` (k,), ``coverage`` (k,), ``alpha`` (n_test,) the HPD
        credibility of each truth, and ``ks_pvalue`` of α against U(0, 1).
    """
    alpha = hpd_credibility(log_prob_true, log_prob_samples)
    levels = np.linspace(0, 1, 101) if levels is None else np.asarray(levels, np.float64)
    cov = np.mean(alpha[:, None] <= levels[None, :], axis=0)
    return dict(levels=levels, coverage=cov, alpha=alpha, ks_pvalue=np.asarray(stats.kstest(alpha, "uniform").pvalue))


def marginal_coverage(theta_true: Float[ArrayLike, "n d"], samples: Float[ArrayLike, "n L d"],
                      levels: Float[ArrayLike, " k"] | None = None) -> dict[str, np.ndarray]:
    """Per-parameter coverage of central credible intervals: fraction of tests whose truth lies inside.

    Returns:
        dict with ``levels`` (k,) and ``coverage`` (k, d).
    """
    t, s = _check(theta_true, samples)
    levels = np.linspace(0, 1, 51) if levels is None else np.asarray(levels, np.float64)
    # the truth is inside the central c interval iff |2 F(θ_true) − 1| ≤ c, F the marginal CDF
    F = np.mean(s < t[:, None, :], axis=1)
    cov = np.mean(np.abs(2 * F[:, None, :] - 1) <= levels[None, :, None], axis=0)
    return dict(levels=levels, coverage=cov)


def tarp(theta_true: Float[ArrayLike, "n d"], samples: Float[ArrayLike, "n L d"], *, seed: int = 0,
         lo: Float[ArrayLike, " d"] | None = None, hi: Float[ArrayLike, " d"] | None = None,
         n_bootstrap: int = 0) -> dict[str, np.ndarray]:
    """TARP expected coverage probability (Lemos et al. 2023).

    Parameters are rescaled to [0, 1] with (lo, hi) (default: the range of the
    true values), reference points are uniform in that unit box, distances Euclidean.

    Args:
        theta_true: (n_test, d) true parameters.
        samples: (n_test, L, d) posterior draws.
        seed: numpy seed of the reference points (and bootstrap).
        lo: (d,) lower corner of the rescaling box (finite).
        hi: (d,) upper corner, > lo.
        n_bootstrap: if > 0, resample the tests this many times for an ECP band (16–84 %).

    Returns:
        dict with ``alpha`` (k,), ``ecp`` (k,), ``f`` (n_test,) the fractions, ``ks_pvalue``
        of f against U(0, 1), ``max_abs_deviation`` max |ECP − α| and, with a bootstrap,
        ``ecp_lower``/``ecp_upper``.
    """
    t, s = _check(theta_true, samples)
    lo = t.min(0) if lo is None else np.asarray(lo, np.float64)
    hi = t.max(0) if hi is None else np.asarray(hi, np.float64)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise ValueError("lo and hi must be finite with hi > lo (use a box around the test parameters)")
    rng = np.random.default_rng(seed)
    tn, sn = (t - lo) / (hi - lo), (s - lo) / (hi - lo)
    ref = rng.uniform(size=tn.shape)
    d_true = np.linalg.norm(tn - ref, axis=-1)
    d_smp = np.linalg.norm(sn - ref[:, None, :], axis=-1)
    f = np.mean(d_smp < d_true[:, None], axis=1)
    alpha = np.linspace(0, 1, 101)
    ecp = np.mean(f[:, None] < alpha[None, :], axis=0)
    out = dict(alpha=alpha, ecp=ecp, f=f, ks_pvalue=np.asarray(stats.kstest(f, "uniform").pvalue),
               max_abs_deviation=np.asarray(np.max(np.abs(ecp - alpha))))
    if n_bootstrap > 0:
        boots = np.stack([np.mean(f[rng.integers(0, f.size, f.size)][:, None] < alpha[None, :], axis=0)
                          for _ in range(n_bootstrap)])
        out["ecp_lower"], out["ecp_upper"] = np.percentile(boots, [16, 84], axis=0)
    return out


def credible_intervals(samples: Float[ArrayLike, "L d"], level: float = 0.68) -> dict[str, np.ndarray]:
    """Central credible interval of each parameter from draws: median, lower, upper, half-width."""
    s = np.asarray(samples, np.float64)
    if s.ndim != 2:
        raise ValueError(f"samples must be (L, d), got shape {s.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level = {level} is outside its allowed range (0, 1)")
    lo, med, hi = np.percentile(s, [50 * (1 - level), 50, 50 * (1 + level)], axis=0)
    return dict(median=med, lower=lo, upper=hi, half_width=(hi - lo) / 2)


def figure_of_merit(samples: Float[ArrayLike, "L d"], i: int = 0, j: int = 1) -> float:
    """FoM = 1/√det Cov(θ_i, θ_j) from draws (default (Ω_m, σ_8), the first two parameters)."""
    s = np.asarray(samples, np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"samples must be (L, d >= 2), got shape {s.shape}")
    cov = np.cov(s[:, [i, j]].T)
    return float(1.0 / np.sqrt(np.linalg.det(cov)))


def table3_summary(samples: Float[ArrayLike, "L d"], names: Sequence[str], level: float = 0.68) -> dict[str, Any]:
    """Seed 001 Table 3 figures of one posterior: FoM of the first two parameters, Δθ and Δθ/θ of each."""
    ci = credible_intervals(samples, level)
    out: dict[str, Any] = dict(fom=figure_of_merit(samples))
    for k, n in enumerate(names):
        out[n] = dict(median=float(ci["median"][k]), half_width=float(ci["half_width"][k]),
                      relative=float(ci["half_width"][k] / abs(ci["median"][k])))
    return out


def _plt(path):
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_rank_histograms(ranks: Int[ArrayLike, "n d"], n_samples: int, names: Sequence[str], *, n_bins: int = 20,
                         path: str | os.PathLike | None = None) -> Any:
    """Rank histograms with the 99 % binomial band and KS p-values in the titles; returns the Figure.

    Panel titles are the typeset parameter names (`jaxcluster.plotting.param_label`).
    """
    from ..plotting import param_label

    plt = _plt(path)
    h = rank_histogram(ranks, n_samples, n_bins)
    d = h["counts"].shape[1]
    if len(names) != d:
        raise ValueError(f"names has {len(names)} entries, ranks {d} columns")
    n_col = min(d, 4)  # rows of at most four panels: eight parameters stay readable
    n_row = -(-d // n_col)
    fig, axes = plt.subplots(n_row, n_col, figsize=(3.2 * n_col, 2.6 * n_row), squeeze=False)
    for ax in axes.ravel()[d:]:
        ax.axis("off")
    for j, ax in enumerate(axes.ravel()[:d]):
        ax.axhspan(h["lower"], h["upper"], color="0.85", label="99 % binomial band")
        ax.axhline(h["expected"], color="k", ls="--", lw=0.8)
        ax.stairs(h["counts"][:, j], h["edges"], color="C0", lw=1.5)
        ax.set_title(f"{param_label(names[j])}  (KS p = {h['ks_pvalue'][j]:.2f})", fontsize=9)
        ax.set_xlabel("rank")
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, loc="lower center")
    fig.tight_layout()
    if path is not None:
        _savefig(fig, path)
    return fig


def plot_coverage(curves: Mapping[str, tuple[ArrayLike, ArrayLike]], *, xlabel: str = "credibility level",
                  ylabel: str = "empirical coverage", path: str | os.PathLike | None = None) -> Any:
    """Coverage (or TARP ECP) curves against the diagonal; ``curves`` maps a label to (levels, coverage)."""
    plt = _plt(path)
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for label, (x, y) in curves.items():
        ax.plot(np.asarray(x), np.asarray(y), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_aspect("equal")
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        _savefig(fig, path)
    return fig


def _levels_2d(h: np.ndarray, probs=(0.68, 0.95)) -> list[float]:
    """Density thresholds enclosing the given probabilities of a 2-D histogram."""
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    return sorted(float(flat[min(np.searchsorted(cum, p), flat.size - 1)]) for p in probs)


def corner_plot(samples: Mapping[str, Float[ArrayLike, "L d"]], names: Sequence[str], *,
                truth: Float[ArrayLike, " d"] | None = None, bins: int = 30,
                path: str | os.PathLike | None = None, title: str | None = None) -> Any:
    """Corner plot of one or more sample sets: 1-D histograms and 68/95 % 2-D contours; returns the Figure.

    Axes are labelled with the typeset parameter names (`jaxcluster.plotting.param_label`);
    the legend names every sample set, the truth (black) when given, and the contour levels.
    """
    from ..plotting import param_label

    plt = _plt(path)
    sets = {k: np.asarray(v, np.float64) for k, v in samples.items()}
    d = len(names)
    for k, v in sets.items():
        if v.ndim != 2 or v.shape[1] != d:
            raise ValueError(f"samples[{k!r}] must be (L, {d}), got {v.shape}")
    allv = np.concatenate(list(sets.values()))
    lims = np.percentile(allv, [0.5, 99.5], axis=0)
    fig, axes = plt.subplots(d, d, figsize=(2.2 * d + 0.6, 2.2 * d + 0.6), squeeze=False)
    for r in range(d):
        for c in range(d):
            ax = axes[r, c]
            if c > r:
                ax.axis("off")
                continue
            for n_set, (label, v) in enumerate(sets.items()):
                col = f"C{n_set}"
                if r == c:
                    ax.hist(v[:, r], bins=bins, range=lims[:, r], density=True, histtype="step", color=col,
                            label=label)
                else:
                    h, xe, ye = np.histogram2d(v[:, c], v[:, r], bins=bins, range=[lims[:, c], lims[:, r]])
                    h = ndimage.gaussian_filter(h, 1.0)  # one-bin smoothing: contours of the density, not of noise
                    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
                    lv = _levels_2d(h)
                    if lv[0] < lv[1]:
                        ax.contour(xc, yc, h.T, levels=lv, colors=col, linewidths=1.0)
            if truth is not None:
                tv = np.asarray(truth, np.float64)
                if r == c:
                    ax.axvline(tv[r], color="k", lw=0.8)
                else:
                    ax.plot(tv[c], tv[r], "k+", ms=8)
            if r == c:
                ax.set_yticks([])
            if r == d - 1:
                ax.set_xlabel(param_label(names[c]))
                ax.tick_params(axis="x", labelrotation=45, labelsize=7)
            else:
                ax.set_xticklabels([])
            if c == 0 and r > 0:
                ax.set_ylabel(param_label(names[r]))
                ax.tick_params(axis="y", labelsize=7)
            elif c > 0 and r != c:
                ax.set_yticklabels([])
    fig.tight_layout(rect=(0, 0, 1, 0.96) if title else None)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{i}", label=label) for i, label in enumerate(sets)]
    if truth is not None:
        handles.append(Line2D([], [], color="k", marker="+", lw=0.8, label="truth"))
    handles.append(Line2D([], [], color="none", label="contours: 68 %, 95 %"))
    fig.legend(handles=handles, loc="upper right", fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, x=0.02, y=0.995, ha="left", va="top", fontsize=10)
    if path is not None:
        _savefig(fig, path)
    return fig


def _savefig(fig, path) -> None:
    """``fig.savefig(path)``, atomically (the format from the name's suffix, PNG by default)."""
    from pathlib import Path

    from ..io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix[1:] or "png")
