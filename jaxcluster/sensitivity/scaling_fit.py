r"""Maximum-likelihood fit of a power-law scaling relation with intrinsic scatter.

The CR–M relation of seed 001 (§4.2, §5.3, Fig. 13) in decimal logarithms,

$$ \log_{10}\mathrm{CR} = A + B\,(\log_{10} M − \log_{10} M_{\rm piv}) + ε,\qquad ε \sim \mathcal N(0, σ^2), $$

normalisation A (log10 CR at the pivot mass), slope B, intrinsic scatter σ
[dex]. The masses and count rates of the simulated clusters carry no
measurement error (noiseless maps), so the likelihood of N clusters with
weights $w_s$ (1 for a selected cluster; a logistic weight for a soft mass
cut, which keeps the fit differentiable) is

$$ -\ln L = \sum_s w_s\Big[\frac{(y_s − A − B x_s)^2}{2σ^2} + \ln σ\Big] + \mathrm{const}, $$

maximised in closed form by the weighted least-squares line and
$\hat σ^2 = \sum w r^2 / \sum w$ (the maximum-likelihood, not the
unbiased, variance: its bias is a factor (N−2)/N, quoted with the fit).
Uncertainties: the inverse of the Hessian of −ln L at the maximum
(`FitResult.cov`: $σ^2 (X^TWX)^{-1}$ for (A, B), $σ^2/(2N_{\rm eff})$ for σ,
uncorrelated), or a bootstrap over clusters (`bootstrap_fit`), which does
not assume the Gaussian scatter. Everything is a smooth function of the
inputs, so ∂(A, B, σ)/∂θ_sim follows by autodiff through the catalogue.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = ["ScalingFit", "fit_scaling_relation", "bootstrap_fit"]


class ScalingFit(eqx.Module):
    """Fitted (normalisation, slope, scatter) and their covariance.

    Attributes:
        norm: A = log10 CR at the pivot mass [log10 counts s⁻¹].
        slope: B.
        scatter: σ, intrinsic scatter of log10 CR at fixed mass [dex].
        cov: (3, 3) covariance of (A, B, σ) from the Hessian of −ln L.
        n_eff: Σ w, the (effective) number of clusters.
        log10_pivot: log10 of the pivot mass [log10 h⁻¹ M☉].
    """

    norm: Float[Array, ""]
    slope: Float[Array, ""]
    scatter: Float[Array, ""]
    cov: Float[Array, "3 3"]
    n_eff: Float[Array, ""]
    log10_pivot: Float[Array, ""]

    @property
    def params(self) -> Float[Array, " 3"]:
        """(A, B, σ) stacked."""
        return jnp.stack([self.norm, self.slope, self.scatter])

    @property
    def errors(self) -> Float[Array, " 3"]:
        """1σ errors √diag(cov) of (A, B, σ)."""
        return jnp.sqrt(jnp.diag(self.cov))


def fit_scaling_relation(
    log10_M: Float[ArrayLike, " n"],
    log10_CR: Float[ArrayLike, " n"],
    weights: Float[ArrayLike, " n"] | None = None,
    log10_pivot: float | Float[ArrayLike, ""] = 14.0,
) -> ScalingFit:
    """Maximum-likelihood (A, B, σ) of log10 CR = A + B (log10 M − pivot) ± σ (module docstring).

    Args:
        log10_M: (n,) log10 masses [log10 h⁻¹ M☉].
        log10_CR: (n,) log10 count rates [log10 counts s⁻¹].
        weights: (n,) weights in [0, 1] (0: not in the sample); default all 1.
            Entries with weight 0 may hold any finite value.
        log10_pivot: pivot mass [log10 h⁻¹ M☉].

    Returns:
        `ScalingFit`. Needs Σw > 2 and two distinct masses (not checked under jit:
        the result is then NaN).
    """
    x = jnp.asarray(log10_M)
    y = jnp.asarray(log10_CR)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"log10_M and log10_CR must be 1-D of the same length, got {x.shape} and {y.shape}")
    w = jnp.ones_like(x) if weights is None else jnp.asarray(weights, dtype=x.dtype)
    if w.shape != x.shape:
        raise ValueError(f"weights shape {w.shape} != {x.shape}")
    piv = jnp.asarray(log10_pivot, dtype=x.dtype)
    xc = jnp.where(w > 0, x - piv, 0.0)
    yc = jnp.where(w > 0, y, 0.0)
    sw = jnp.sum(w)
    sx, sy = jnp.sum(w * xc), jnp.sum(w * yc)
    sxx, sxy = jnp.sum(w * xc * xc), jnp.sum(w * xc * yc)
    det = sw * sxx - sx * sx
    slope = (sw * sxy - sx * sy) / det
    norm = (sy - slope * sx) / sw
    r = yc - norm - slope * xc
    var = jnp.sum(w * r * r) / sw
    scatter = jnp.sqrt(var)
    # inverse Hessian of −ln L at the maximum: σ²(XᵀWX)⁻¹ for (A, B); σ²/(2Σw) for σ
    cov_ab = var / det * jnp.array([[sxx, -sx], [-sx, sw]])
    cov = jnp.zeros((3, 3), x.dtype).at[:2, :2].set(cov_ab).at[2, 2].set(var / (2.0 * sw))
    return ScalingFit(norm=norm, slope=slope, scatter=scatter, cov=cov, n_eff=sw, log10_pivot=piv)


def bootstrap_fit(
    log10_M: Float[ArrayLike, " n"],
    log10_CR: Float[ArrayLike, " n"],
    weights: Float[ArrayLike, " n"] | None = None,
    log10_pivot: float = 14.0,
    *,
    key: PRNGKeyArray,
    n_boot: int = 200,
) -> Float[Array, "n_boot 3"]:
    """(A, B, σ) of `n_boot` bootstrap resamplings of the clusters (with replacement, weights kept).

    Args:
        log10_M: (n,) log10 masses.
        log10_CR: (n,) log10 count rates.
        weights: (n,) sample weights (default 1); resampling draws clusters with
            probability ∝ their weight, so weight-0 slots are never drawn.
        log10_pivot: pivot mass [log10 h⁻¹ M☉].
        key: PRNG key.
        n_boot: number of resamplings, ≥ 2.

    Returns:
        (n_boot, 3) fitted parameters; their standard deviations are bootstrap errors.
    """
    if int(n_boot) != n_boot or n_boot < 2:
        raise ValueError(f"n_boot = {n_boot!r} is outside its allowed range [2, inf) (integer)")
    x, y = jnp.asarray(log10_M), jnp.asarray(log10_CR)
    w = jnp.ones_like(x) if weights is None else jnp.asarray(weights, dtype=x.dtype)
    n_eff = jnp.round(jnp.sum(w))
    p = w / jnp.sum(w)
    idx_all = jax.random.choice(key, x.shape[0], shape=(n_boot, x.shape[0]), p=p)
    keep = (jnp.arange(x.shape[0], dtype=x.dtype) < n_eff).astype(x.dtype)  # draw Σw clusters per resampling

    def one(idx, kw):
        return fit_scaling_relation(x[idx], y[idx], kw, log10_pivot).params

    return jax.vmap(one, in_axes=(0, None))(idx_all, keep)
