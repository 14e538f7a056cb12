r"""Fisher matrix of the Poisson XOD likelihood, marginal errors, figure of merit, plots.

For independent Poisson bins with expectations $λ_i(θ)$ (seed 001 eq. 8),

$$ F_{αβ} = \sum_{i:\,λ_i > λ_{\min}} \frac{1}{λ_i}\,\frac{∂λ_i}{∂θ_α}\frac{∂λ_i}{∂θ_β}
   = J^T \mathrm{diag}(1/λ)\, J, \qquad J = \texttt{jax.jacfwd}(λ)(θ_0), $$

bins with $λ_i ≤ λ_{\min}$ (default 10⁻⁸) are masked (they carry no
information and would divide by zero). A Gaussian prior of widths $σ_p$ adds
$\mathrm{diag}(1/σ_p^2)$. The forecast covariance is $F^{-1}$, marginal errors
$\sqrt{(F^{-1})_{αα}}$ and the figure of merit of (Ω_m, σ_8)
$\mathrm{FoM} = 1/\sqrt{\det \mathrm{Cov}(Ω_m, σ_8)}$.
"""

from __future__ import annotations

import math
import os

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..cosmology import Cosmology
from .counts import SurveySpec, XODBinning, expected_xod
from .scaling import NUISANCE_NAMES, SCALING_NAMES, ScalingRelations, XrayTables

__all__ = [
    "ANALYTIC_PARAM_NAMES",
    "COSMO_NAMES",
    "AnalyticModel",
    "fisher_matrix",
    "fisher_covariance",
    "marginal_errors",
    "figure_of_merit",
    "plot_fisher_corner",
]

COSMO_NAMES: tuple[str, ...] = ("Omega_m", "sigma_8")
# Seed 001 §4.1 analytic model: 2 cosmological + 6 scaling-relation parameters.
ANALYTIC_PARAM_NAMES: tuple[str, ...] = COSMO_NAMES + NUISANCE_NAMES
_COSMO_FIELDS = ("Omega_m", "sigma_8", "Omega_b", "h", "n_s", "w0", "wa")


class AnalyticModel(eqx.Module):
    """λ(θ) for a vector θ of named free parameters (the rest fixed at `cosmo`/`scaling`).

    Attributes:
        cosmo: base cosmology (values of the non-free parameters).
        scaling: base scaling relations.
        tables: X-ray tables.
        survey: survey and quadrature settings (static).
        binning: XOD bins (static).
        names: free parameters in θ's order (static): Cosmology fields
            among ('Omega_m', 'sigma_8', 'Omega_b', 'h', 'n_s', 'w0', 'wa')
            and `ScalingRelations` fields.
    """

    cosmo: Cosmology
    scaling: ScalingRelations
    tables: XrayTables
    survey: SurveySpec
    binning: XODBinning
    names: tuple[str, ...] = eqx.field(static=True)

    def __init__(
        self,
        names: Sequence[str] = ANALYTIC_PARAM_NAMES,
        cosmo: Cosmology | None = None,
        scaling: ScalingRelations | None = None,
        tables: XrayTables | None = None,
        survey: SurveySpec | None = None,
        binning: XODBinning | None = None,
    ):
        names = tuple(names)
        allowed = _COSMO_FIELDS + SCALING_NAMES
        for n in names:
            if n not in allowed:
                raise ValueError(f"parameter name {n!r} is not allowed; choose from {allowed}")
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"names must be non-empty and unique, got {names}")
        self.names = names
        self.cosmo = Cosmology() if cosmo is None else cosmo
        self.scaling = ScalingRelations() if scaling is None else scaling
        self.tables = XrayTables.default() if tables is None else tables
        self.survey = SurveySpec() if survey is None else survey
        self.binning = XODBinning() if binning is None else binning

    @property
    def n_param(self) -> int:
        return len(self.names)

    def theta0(self) -> Float[Array, " n_param"]:
        """The base values of the free parameters, in `names` order."""
        return jnp.stack([getattr(self.cosmo if n in _COSMO_FIELDS else self.scaling, n) for n in self.names])

    def unpack(self, theta: Float[Array, " n_param"]) -> tuple[Cosmology, ScalingRelations]:
        """(cosmology, scaling relations) with the free parameters set to θ."""
        theta = jnp.asarray(theta)
        if theta.shape != (self.n_param,):
            raise ValueError(f"theta must have shape ({self.n_param},) for names {self.names}, got {theta.shape}")
        cn = [n for n in self.names if n in _COSMO_FIELDS]
        sn = [n for n in self.names if n not in _COSMO_FIELDS]
        cosmo, scaling = self.cosmo, self.scaling
        dtype = cosmo.Omega_m.dtype
        if cn:
            vals = [theta[self.names.index(n)].astype(dtype) for n in cn]
            cosmo = eqx.tree_at(lambda c: [getattr(c, n) for n in cn], cosmo, vals)
        if sn:
            scaling = scaling.replace(tuple(sn), jnp.stack([theta[self.names.index(n)] for n in sn]))
        return cosmo, scaling

    def check_theta(self, theta: Float[ArrayLike, " n_param"]) -> Float[Array, " n_param"]:
        """θ, validated: finite, cosmological parameters inside `cosmology.COSMO_RANGES` (Ω_m in [0.001, 1], …),
        slopes and scatters of the scaling relations > 0.

        Concrete values raise a `ValueError` naming the parameter and its range;
        traced ones (under `jit`, `grad`, `vmap`) raise through `eqx.error_if`
        with the same message, so λ(θ) is never a silent NaN or a finite but
        meaningless number for an impossible θ.
        """
        from ..cosmology import COSMO_RANGES
        from .scaling import _POSITIVE

        theta = jnp.asarray(theta)
        if theta.shape != (self.n_param,):
            raise ValueError(f"theta must have shape ({self.n_param},) for names {self.names}, got {theta.shape}")
        ranges = {n: COSMO_RANGES[n] if n in COSMO_RANGES else ((0.0, math.inf) if n in _POSITIVE else None)
                  for n in self.names}
        if not isinstance(theta, jax.core.Tracer):
            for i, n in enumerate(self.names):
                v = float(theta[i])
                lo, hi = ranges[n] or (-math.inf, math.inf)
                open_low = n in _POSITIVE
                if not math.isfinite(v) or v > hi or (v <= lo if open_low else v < lo):
                    where = ("(0, inf)" if open_low else f"[{lo}, {hi}]") if ranges[n] else "(-inf, inf) (finite)"
                    raise ValueError(f"{n} = {v!r} is outside its allowed range {where} (AnalyticModel θ)")
            return theta
        checked = []
        for i, n in enumerate(self.names):
            v = theta[i]
            if ranges[n] is None:
                bad, where = ~jnp.isfinite(v), "(-inf, inf) (finite)"
            elif n in _POSITIVE:
                bad, where = ~((v > 0) & jnp.isfinite(v)), "(0, inf)"
            else:
                lo, hi = ranges[n]
                bad, where = ~((v >= lo) & (v <= hi)), f"[{lo}, {hi}]"
            checked.append(eqx.error_if(v, bad, f"{n} is outside its allowed range {where} (AnalyticModel θ)"))
        return jnp.stack(checked)

    def __call__(self, theta: Float[Array, " n_param"]) -> Float[Array, "n_cr n_hr n_z"]:
        """Expected XOD λ(θ), (n_cr, n_hr, n_z); θ outside its allowed ranges raises (`check_theta`)."""
        cosmo, scaling = self.unpack(self.check_theta(theta))
        return expected_xod(cosmo, scaling, self.tables, self.survey, self.binning)


def fisher_matrix(
    model: AnalyticModel, theta: Float[ArrayLike, " n_param"] | None = None, lam_min: float = 1e-8
) -> tuple[Float[Array, "n_param n_param"], Float[Array, "n_cr n_hr n_z"]]:
    """Poisson Fisher matrix F = Jᵀ diag(1/λ) J at θ (default: `model.theta0()`).

    Args:
        model: the `AnalyticModel` (free parameters = its `names`).
        theta: (n_param,) point; default the fiducial.
        lam_min: bins with λ ≤ lam_min are masked.

    Returns:
        (F, λ): the (n_param, n_param) symmetric Fisher matrix and λ(θ).
    """
    if not lam_min >= 0:
        raise ValueError(f"lam_min = {lam_min} is outside its allowed range [0, inf)")
    theta = model.theta0() if theta is None else jnp.asarray(theta)
    lam = model(theta)
    jac = jax.jacfwd(model)(theta).reshape(-1, model.n_param)   # (n_bin, P)
    flat = lam.reshape(-1)
    keep = flat > lam_min
    w = jnp.where(keep, 1.0 / jnp.where(keep, flat, 1.0), 0.0)
    F = jac.T @ (w[:, None] * jac)
    return 0.5 * (F + F.T), lam


def _prior_fisher(n: int, prior_sigma, dtype):
    if prior_sigma is None:
        return jnp.zeros((n, n), dtype)
    s = jnp.asarray(prior_sigma, dtype=dtype)
    if s.shape != (n,):
        raise ValueError(f"prior_sigma must have shape ({n},), got {s.shape} (use inf for no prior)")
    return jnp.diag(1.0 / s**2)


def fisher_covariance(
    F: Float[ArrayLike, "n n"], prior_sigma: Float[ArrayLike, " n"] | None = None
) -> Float[Array, "n n"]:
    """Forecast covariance (F + diag(1/σ_p²))⁻¹; σ_p = inf means no prior on that parameter."""
    F = jnp.asarray(F)
    if F.ndim != 2 or F.shape[0] != F.shape[1]:
        raise ValueError(f"F must be a square matrix, got shape {F.shape}")
    Ft = F + _prior_fisher(F.shape[0], prior_sigma, F.dtype)
    return jnp.linalg.inv(Ft)


def marginal_errors(
    F: Float[ArrayLike, "n n"], prior_sigma: Float[ArrayLike, " n"] | None = None
) -> Float[Array, " n"]:
    """Marginalised 1σ errors √diag(Cov)."""
    return jnp.sqrt(jnp.diag(fisher_covariance(F, prior_sigma)))


def figure_of_merit(
    F: Float[ArrayLike, "n n"], i: int = 0, j: int = 1, prior_sigma: Float[ArrayLike, " n"] | None = None
) -> Float[Array, ""]:
    """FoM = 1/√det Cov[(i, j)] (default (Ω_m, σ_8), the first two parameters)."""
    cov = fisher_covariance(F, prior_sigma)
    sub = cov[jnp.array([i, j])][:, jnp.array([i, j])]
    return 1.0 / jnp.sqrt(jnp.linalg.det(sub))


def plot_fisher_corner(
    cov: Float[ArrayLike, "n n"],
    mean: Float[ArrayLike, " n"],
    names: Sequence[str],
    samples: Float[ArrayLike, "n_sample n"] | None = None,
    path: str | os.PathLike | None = None,
    n_sigma: Sequence[float] = (1.0, 2.0),
    *,
    fiducial: Float[ArrayLike, " n"] | None = None,
    title: str | None = None,
) -> Any:  # a matplotlib Figure; matplotlib is imported lazily
    """Corner plot: Fisher ellipses (1σ, 2σ) and Gaussian marginals; optional MCMC samples overlaid.

    Axes carry the typeset parameter names (`jaxcluster.plotting.param_label`);
    a legend names the Fisher forecast, the NUTS samples (when given) and the
    fiducial point (black +: ``fiducial``, default ``mean``).

    Args:
        cov: (n, n) covariance (e.g. `fisher_covariance(F)`).
        mean: (n,) centre of the ellipses.
        names: n parameter names (``"Omega_m"``, …).
        samples: (n_sample, n) posterior samples drawn as points and histograms.
        path: if given, the figure is saved there.
        n_sigma: ellipse levels in units of σ (2-D Δχ² for 68 %, 95 % are 2.30, 6.17:
            the default levels are the 1σ, 2σ projections, as Fisher plots usually show).
        fiducial: (n,) the point marked as the fiducial (default ``mean``).
        title: optional figure title.

    Returns:
        The matplotlib `Figure` of the corner plot.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    from ..plotting import param_label

    cov, mean = np.asarray(cov, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    n = len(names)
    if cov.shape != (n, n) or mean.shape != (n,):
        raise ValueError(f"cov {cov.shape} and mean {mean.shape} must match {n} names")
    fid = mean if fiducial is None else np.asarray(fiducial, dtype=np.float64)
    if fid.shape != (n,):
        raise ValueError(f"fiducial must have shape ({n},), got {fid.shape}")
    sd = np.sqrt(np.diag(cov))
    smp = None if samples is None else np.asarray(samples, dtype=np.float64)
    if smp is not None and (smp.ndim != 2 or smp.shape[1] != n):
        raise ValueError(f"samples must be (n_sample, {n}), got {smp.shape}")
    fig, axes = plt.subplots(n, n, figsize=(1.9 * n + 1.2, 1.9 * n + 1.2), squeeze=False)
    for r in range(n):
        for c in range(n):
            ax = axes[r, c]
            if c > r:
                ax.axis("off")
                continue
            if r == c:
                x = np.linspace(mean[r] - 4 * sd[r], mean[r] + 4 * sd[r], 200)
                ax.plot(x, np.exp(-0.5 * ((x - mean[r]) / sd[r]) ** 2) / (sd[r] * np.sqrt(2 * np.pi)), "C0")
                if smp is not None:
                    ax.hist(smp[:, r], bins=30, density=True, histtype="step", color="C1")
                ax.axvline(fid[r], color="k", lw=0.8)
                ax.set_yticks([])
            else:
                sub = cov[np.ix_([c, r], [c, r])]
                vals, vecs = np.linalg.eigh(sub)
                angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
                if smp is not None:
                    ax.plot(smp[:, c], smp[:, r], ".", ms=1.5, color="C1", alpha=0.4)
                for k, ls in zip(n_sigma, ("-", "--", ":", "-.") * len(n_sigma)):
                    w, h = 2 * k * np.sqrt(np.maximum(vals[::-1], 0))
                    ax.add_patch(Ellipse((mean[c], mean[r]), w, h, angle=angle, fill=False, color="C0", ls=ls))
                ax.plot(fid[c], fid[r], "k+", ms=8)
                ax.set_xlim(mean[c] - 4 * sd[c], mean[c] + 4 * sd[c])
                ax.set_ylim(mean[r] - 4 * sd[r], mean[r] + 4 * sd[r])
            if r == n - 1:
                ax.set_xlabel(param_label(names[c]))
                ax.tick_params(axis="x", labelrotation=45, labelsize=7)
            else:
                ax.set_xticklabels([])
            if c == 0 and r > 0:
                ax.set_ylabel(param_label(names[r]))
                ax.tick_params(axis="y", labelsize=7)
            elif c > 0:
                ax.set_yticklabels([])
    fig.tight_layout(rect=(0, 0, 1, 0.96) if title else None)
    levels = ", ".join(f"{k:g}σ" for k in n_sigma)
    handles = [Line2D([], [], color="C0", label=f"Fisher forecast ({levels})")]
    if smp is not None:
        handles.append(Line2D([], [], color="C1", label=f"NUTS samples ({smp.shape[0]})"))
    handles.append(Line2D([], [], color="k", marker="+", lw=0.8, label="fiducial"))
    if n == 1:  # no empty upper triangle: the legend goes inside the single panel
        axes[0, 0].legend(handles=handles, loc="upper left", fontsize=6, frameon=False)
    else:
        fig.legend(handles=handles, loc="upper right", fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, x=0.02, ha="left", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
